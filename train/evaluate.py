"""Score installed model cards on a split of a prepared dataset (see bonecls/training/evaluation.py).

    python train/evaluate.py --data data/prep-three-xl --card weights/threeclass runs/out-threeclass-xl
    python train/evaluate.py --data data/prep-frac-big --card fracture --split val --json out.json

One line per card (n, accuracy, macro-F1, ROC-AUC, suspicion AUC, ECE); --json writes every metric.
"""

from __future__ import annotations

import argparse
import json
import sys

from bonecls.errors import BoneclsError
from bonecls.training.evaluation import evaluate_card, summary_line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--data", required=True, help="prepared dataset folder (train/prepare.py output)")
    p.add_argument("--card", required=True, nargs="+", help="card folder(s) or installed model id(s)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--json", help="write every metric of every card to this file")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    results = []
    try:
        for card in args.card:
            r = evaluate_card(
                card,
                args.data,
                split=args.split,
                batch_size=args.batch_size,
                threads=args.threads,
                progress=not args.no_progress,
            )
            print(summary_line(r), flush=True)
            results.append(r)
    except BoneclsError as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
