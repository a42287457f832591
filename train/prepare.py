"""Prepare a dataset once into uint8 shards + index.json with Dask (see bonecls/prepare.py).

    python train/prepare.py --source data/raw/fracatlas --out data/prepared/fracatlas-224 --size 224
    python train/prepare.py --source ... --out ... --scheduler tcp://scheduler:8786   # existing cluster

Re-running on unchanged input with the same parameters does nothing ("up to date"). The command line
is bonecls/training/prepare_cli.py.
"""

from __future__ import annotations

import sys

from bonecls.training.prepare_cli import main

if __name__ == "__main__":
    sys.exit(main())
