"""Copy a paired phantom folder without the training lesions nobody could see (an experiment's input).

.venv/bin/python scripts/drop_faint_pairs.py SRC DST [--floor 0.04] [--measure mean|peak] [--per-image]

SRC is a folder written by ``bonecls phantom --paired`` in a class-folder layout (``kaggle``,
``threeclass``, ``class_folders``): images, ``variants.csv``, ``boxes.csv``, ``manifest.json``. Each
lesion image of the **train** split is compared with the lesion-free render of its set (the same
``seed`` in ``variants.csv``) by :func:`bonecls.training.held_out.pair_visibility`; below ``--floor``
the whole set is left out (or, with ``--per-image``, only that lesion image). Val and test are copied
whole, so a model trained on DST is still chosen and scored on every lesion. Images are hard-linked
(copied where links fail); ``variants.csv``, ``boxes.csv`` and ``manifest.json`` are rewritten to list
what was kept, and the manifest records the floor. Then ``train/prepare.py --source DST`` as usual.

This is how "fracture on visible pairs only" (BENCHMARKS, tried and not shipped) was made:
``--floor 0.04 --measure mean`` on the seed-311 fracture pairs.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bonecls.data import read_dataset  # noqa: E402
from bonecls.training.held_out import pair_visibility  # noqa: E402


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _write_csv(path: Path, rows: list[dict[str, str]], fields: list[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _grey(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.float64)


def faint_files(src: Path, floor: float, measure: str, per_image: bool) -> tuple[set[str], list[float]]:
    """The files of ``src``'s train split to leave out, and every train lesion's visibility."""
    rows = _read_csv(src / "variants.csv")
    dataset = read_dataset(src, verify=False, split=False)  # the project's reader: boxes.csv checked
    boxes = {
        rec.path.relative_to(dataset.root).as_posix(): [(b.x0, b.y0, b.x1, b.y1) for b in rec.boxes]
        for rec in dataset.records
        if rec.boxes
    }
    sets: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        if r["split"] == "train":
            sets.setdefault(r["seed"], []).append(r)
    drop: set[str] = set()
    seen: list[float] = []
    for members in sets.values():
        clear = [r for r in members if r["lesion_style"] == "none"]
        if not clear:
            continue
        without = _grey(src / clear[0]["file"])
        for r in members:
            if r["lesion_style"] == "none" or r["file"] not in boxes:
                continue
            v = pair_visibility(_grey(src / r["file"]), without, boxes[r["file"]], measure)
            seen.append(v)
            if v < floor:
                drop.update([r["file"]] if per_image else [m["file"] for m in members])
    return drop, seen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--floor", type=float, default=0.04)
    ap.add_argument("--measure", choices=("mean", "peak"), default="mean")
    ap.add_argument("--per-image", action="store_true", help="drop only the faint lesion image, not its set")
    args = ap.parse_args(argv)
    src, dst = args.src, args.dst
    for name in ("variants.csv", "boxes.csv", "manifest.json"):
        if not (src / name).is_file():
            print(
                f"{src} has no {name}: give a folder written by 'bonecls phantom --paired'.", file=sys.stderr
            )
            return 2
    if dst.exists() and any(dst.iterdir()):
        print(f"{dst} is not empty; choose a new folder.", file=sys.stderr)
        return 2
    drop, seen = faint_files(src, args.floor, args.measure, args.per_image)
    rows = _read_csv(src / "variants.csv")
    kept = [r for r in rows if r["file"] not in drop]
    for r in kept:
        target = dst / r["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src / r["file"], target)
        except OSError:
            shutil.copy2(src / r["file"], target)
    files = {r["file"] for r in kept}
    _write_csv(dst / "variants.csv", kept, list(rows[0].keys()))
    box_rows = _read_csv(src / "boxes.csv")
    box_fields = list(box_rows[0].keys()) if box_rows else ["file", "x0", "y0", "x1", "y1", "kind"]
    _write_csv(dst / "boxes.csv", [r for r in box_rows if r["file"] in files], box_fields)
    manifest = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
    manifest["samples"] = [s for s in manifest.get("samples", []) if s.get("file") in files]
    manifest["split_counts"] = {sp: sum(r["split"] == sp for r in kept) for sp in ("train", "val", "test")}
    manifest["faint_lesions_dropped"] = {
        "floor": args.floor,
        "measure": args.measure,
        "per_image": args.per_image,
        "train_images_dropped": len(drop),
        "source": str(src),
    }
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    if (src / "phantom.json").is_file():
        shutil.copy2(src / "phantom.json", dst / "phantom.json")
    q = np.quantile(seen, [0.1, 0.25, 0.5]) if seen else [float("nan")] * 3
    print(
        f"{len(seen)} train lesions, visibility ({args.measure}) p10 {q[0]:.3f} p25 {q[1]:.3f} "
        f"median {q[2]:.3f}; "
        f"dropped {len(drop)} train images below {args.floor:g}; kept {manifest['split_counts']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
