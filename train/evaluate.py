"""Score installed model cards on a split of a prepared dataset (see bonecls/training/evaluation.py).

    python train/evaluate.py --data data/prep-three-xl --card weights/threeclass runs/out-threeclass-xl
    python train/evaluate.py --data data/prep-frac-big --card fracture --split val --json out.json

    python train/evaluate.py --external data/prep-site-b --card runs/fracatlas/model

One line per card (n, accuracy, macro-F1, ROC-AUC, suspicion AUC, ECE) and its headline metrics with
95% intervals; --json writes every metric. --external DATA scores every image of another site's
prepared set and records the result on each card (card.json only) as external validation.
"""

from __future__ import annotations

import sys

from bonecls.training.evaluation import main

if __name__ == "__main__":
    sys.exit(main())
