"""The command line of ``train/prepare.py``: prepare a dataset once into uint8 shards + ``index.json``.

The work is :func:`bonecls.prepare.prepare` (Dask over a LocalCluster, an existing scheduler, or
threads); this module only turns the command line into its arguments and a data error into exit
status 2 with the sentence that fixes it.
"""

from __future__ import annotations

import argparse
import logging
import sys

from bonecls.data import LAYOUTS as READ_LAYOUTS
from bonecls.errors import BoneclsError
from bonecls.prepare import DEFAULT_SHARD_SIZE, DEFAULT_SIZE_CAP, prepare

DESCRIPTION = "Prepare a dataset once into uint8 shards + index.json with Dask (see bonecls/prepare.py)."
LAYOUTS = ["auto", *READ_LAYOUTS]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=DESCRIPTION, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--source",
        required=True,
        help="dataset folder (class folders, FracAtlas, RSNA, YOLO, MURA or GRAZPEDWRI-DX)",
    )
    p.add_argument("--out", required=True, help="output folder for shards + index.json")
    p.add_argument("--layout", default="auto", choices=LAYOUTS)
    p.add_argument("--size", default="auto", help="square size in px, or 'auto' for the recommended one")
    p.add_argument("--size-cap", type=int, default=DEFAULT_SIZE_CAP, help="cap of the recommended size")
    p.add_argument(
        "--split",
        type=float,
        nargs=3,
        default=(0.8, 0.1, 0.1),
        metavar=("TRAIN", "VAL", "TEST"),
        help="fractions for datasets without splits (by patient where it names patients; stratified, seeded)",
    )
    p.add_argument("--seed", type=int, default=0, help="split seed")
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, help="images per .npy shard")
    p.add_argument("--chunk-size", type=int, default=32, help="images per Dask task")
    p.add_argument(
        "--scheduler",
        default=None,
        help="tcp://host:port of a running Dask scheduler, or 'threads'/'sync'; default: a LocalCluster",
    )
    p.add_argument(
        "--workers", type=int, default=None, help="LocalCluster worker processes (default: cores, max 8)"
    )
    p.add_argument("--force", action="store_true", help="prepare again even if up to date")
    p.add_argument(
        "--allow-leakage",
        action="store_true",
        help="prepare even when the test split copies training/validation images or shares their "
        "patients (the leakage report in leakage.json and on the card says so)",
    )
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """``train/prepare.py``: 0 when the dataset is prepared (or already up to date), 2 on a data error."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        prepare(
            args.source,
            args.out,
            size=args.size,
            layout=args.layout,
            fractions=tuple(args.split),
            seed=args.seed,
            shard_size=args.shard_size,
            chunk_size=args.chunk_size,
            size_cap=args.size_cap,
            scheduler=args.scheduler,
            n_workers=args.workers,
            force=args.force,
            allow_leakage=args.allow_leakage,
            progress=not args.no_progress,
        )
    except BoneclsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
