"""Score installed model cards on a split of a prepared dataset (see bonecls/training/evaluation.py).

    python train/evaluate.py --data data/prep-three-xl --card weights/threeclass runs/out-threeclass-xl
    python train/evaluate.py --data data/prep-frac-big --card fracture --split val --json out.json

One line per card (n, accuracy, macro-F1, ROC-AUC, suspicion AUC, ECE); --json writes every metric.
"""

from __future__ import annotations

import sys

from bonecls.training.evaluation import main

if __name__ == "__main__":
    sys.exit(main())
