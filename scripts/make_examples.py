"""Write a few small phantom examples per class (8-bit PNG + 12-bit DX DICOM) and examples/index.json.

    .venv/bin/python scripts/make_examples.py [--out examples] [--size 256] [--per-class 2] [--seed 2024]

Files: ``examples/<task>/<class>_<i>.png|.dcm`` (spaces in class names become underscores);
``index.json`` lists every file with its task, true class, view, bone and boxes (pixels).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bonecls.phantom.render import TASK_CLASSES  # noqa: E402
from bonecls.phantom.samples import generate  # noqa: E402
from bonecls.phantom.writers import _png, write_dicom  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "examples"))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--per-class", type=int, default=2)
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args(argv)
    out = Path(args.out)
    entries = []
    for k, (task, classes) in enumerate(TASK_CLASSES.items()):
        folder = out / task
        folder.mkdir(parents=True, exist_ok=True)
        n = args.per_class * len(classes)
        counters = dict.fromkeys(classes, 0)
        for s in generate(task, n, args.size, args.seed + 1000 * k):  # type: ignore[arg-type]
            i = counters[s.class_name]
            counters[s.class_name] += 1
            stem = f"{s.class_name.replace(' ', '_')}_{i}"
            view = str(s.meta["view"])
            shoulder = view.startswith("shoulder")
            common = {
                "task": task,
                "class": s.class_name,
                "view": view,
                "bone": s.bone,
                "n_fragments": s.n_fragments,
                "seed": s.seed,
                "size": args.size,
                "pixel_spacing_mm": s.meta["pixel_spacing_mm"],
                "boxes": [b.to_dict() for b in s.boxes],
            }
            _png(folder / f"{stem}.png", s.to_uint8())
            write_dicom(
                folder / f"{stem}.dcm",
                s,
                view="AP" if shoulder else "PA",
                body_part="SHOULDER" if shoulder else "CHEST",
            )
            entries.append({"file": f"{task}/{stem}.png", "format": "PNG", **common})
            entries.append({"file": f"{task}/{stem}.dcm", "format": "DICOM", **common})
    index = {
        "description": "Synthetic phantom radiographs (DRRs of one public CT with simulated lesions); "
        "not patient data. Boxes are x0, y0, x1, y1 in pixels.",
        "generator": (
            f"scripts/make_examples.py --size {args.size} --per-class {args.per_class} --seed {args.seed}"
        ),
        "examples": entries,
    }
    (out / "index.json").write_text(json.dumps(index, indent=1), encoding="utf-8")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {len(entries)} files to {out} ({total / 2**20:.2f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
