"""Serial vs torchrun data-parallel scaling: same model, data, global batch and epochs.

    python train/scaling.py --data data/prepared/fracture-64 --ranks 1 2 --epochs 3 --global-batch 32
    python train/scaling.py --data ... --ranks 1 2 4 8 --device cuda --model resnet18 -- --amp

Writes scaling.md (table), scaling.json and scaling.png to --out. Arguments after ``--`` go to
train/classify.py unchanged. See bonecls/training/scaling.py for how the comparison is kept fair.
"""

from __future__ import annotations

import argparse
import sys

from bonecls.errors import BoneclsError
from bonecls.training.scaling import benchmark


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="prepared dataset (train/prepare.py)")
    p.add_argument("--out", default="runs/scaling")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--global-batch", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--model", default="simple_cnn")
    p.add_argument(
        "--lr", type=float, default=1e-3, help="learning rate at the global batch (same for all runs)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--no-serial-all-cores", action="store_true", help="skip the serial run on all cores")
    a = p.parse_args(argv)
    try:
        benchmark(
            a.data,
            a.out,
            ranks=sorted(set(a.ranks)),
            global_batch=a.global_batch,
            epochs=a.epochs,
            model=a.model,
            lr=a.lr,
            seed=a.seed,
            device=a.device,
            extra=extra,
            include_serial_all_cores=not a.no_serial_all_cores,
        )
    except BoneclsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((__import__("pathlib").Path(a.out) / "scaling.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
