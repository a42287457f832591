"""Train a bonecls classifier on prepared shards; serial or data-parallel under torchrun.

    python train/classify.py --data data/prepared/fracture --output weights/fracture-resnet18 ...
    torchrun --nproc_per_node=4 train/classify.py --data ... --output ... --strategy ddp --amp
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29400
        train/classify.py ...

``--batch-size`` is per rank; the learning rate follows the global batch (``--lr`` at
``--lr-base-batch``). See ``python train/classify.py --help`` and bonecls/training/classify.py.
"""

from __future__ import annotations

import sys

from bonecls.training.classify import main

if __name__ == "__main__":
    sys.exit(main())
