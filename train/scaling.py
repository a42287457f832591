"""Serial vs torchrun data-parallel scaling: same model, data, global batch and epochs.

    python train/scaling.py --data data/prepared/fracture-64 --ranks 1 2 --epochs 3 --global-batch 32
    python train/scaling.py --data ... --ranks 1 2 4 8 --device cuda --model resnet18 -- --amp

Writes scaling.md (table), scaling.json and scaling.png to --out. Arguments after ``--`` go to
train/classify.py unchanged. See bonecls/training/scaling.py for how the comparison is kept fair.
"""

from __future__ import annotations

import sys

from bonecls.training.scaling import main

if __name__ == "__main__":
    sys.exit(main())
