"""Prepare a dataset once into uint8 shards + index.json with Dask (see bonecls/prepare.py).

    python train/prepare.py --source data/raw/fracatlas --out data/prepared/fracatlas-224 --size 224
    python train/prepare.py --source ... --out ... --scheduler tcp://scheduler:8786   # existing cluster

    python train/prepare.py --source data/raw/MURA-v1.1 --out data/prepared/mura-320 --size 320
    python train/prepare.py --source ... --out ... --allow-leakage   # keep a test split that copies train

Splits are by patient where the layout names patients. Exact and near copies (and shared patients)
between the splits are reported in <out>/leakage.json; a test split that copies training images is
refused unless --allow-leakage. Re-running on unchanged input with the same parameters does nothing
("up to date"). The command line is bonecls/training/prepare_cli.py.
"""

from __future__ import annotations

import sys

from bonecls.training.prepare_cli import main

if __name__ == "__main__":
    sys.exit(main())
