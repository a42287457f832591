"""Does the heat map point at the lesion? The pointing game on fresh phantoms, for the shipped models.

    .venv/bin/python bench/bench_cam_pointing.py [--models fracture threeclass] [--n 400] [--margin 8]

For each model, ``--n`` phantoms of its task are rendered at the card's input size with a seed no
shipped model trained on (``--seed``, default 7; the training sets used 201 and 301), in the layout
the phantom writer uses for that task. Every image with a lesion box is explained with the app's
default method (Grad-CAM, ``Predictor.explain``) for its *true* class, and scores a hit when the heat
map's maximum lies inside one of its boxes grown by ``--margin`` px. The chance level is what a
uniformly random peak would score: the mean share of the image the grown boxes cover. The
radiologist's question behind it: when the model says "fracture", is it looking at the fracture?

Prints a Markdown table with the machine line. Not a test.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from _common import ROOT, add_repo_to_path, load_average, machine

add_repo_to_path()

LAYOUTS = {"fracture": "kaggle", "threeclass": "threeclass"}


def pointing(card_dir: Path, data: Path, margin: float) -> tuple[int, int, float]:
    """(hits, boxed images, chance) for one model on one rendered dataset."""
    from bonecls.imaging import load_radiograph
    from bonecls.inference.predictor import Predictor

    predictor = Predictor.from_card(card_dir)
    manifest = json.loads((data / "manifest.json").read_text())
    hits = total = 0
    chance = []
    for sample in manifest["samples"]:
        if not sample["boxes"]:
            continue
        rg = load_radiograph((data / sample["file"]).read_bytes())
        heat = predictor.explain(rg, target_class=sample["class"]).heatmap
        h, w = heat.shape
        y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
        covered = np.zeros((h, w), dtype=bool)
        for b in sample["boxes"]:
            x0, y0 = max(0, int(b["x0"] - margin)), max(0, int(b["y0"] - margin))
            x1, y1 = min(w, int(np.ceil(b["x1"] + margin)) + 1), min(h, int(np.ceil(b["y1"] + margin)) + 1)
            covered[y0:y1, x0:x1] = True
        hits += bool(covered[y, x])
        total += 1
        chance.append(covered.mean())
    return hits, total, float(np.mean(chance)) if chance else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["fracture", "threeclass"])
    parser.add_argument("--n", type=int, default=400, help="phantoms rendered per model")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--margin", type=float, default=8.0, help="px added around each box")
    args = parser.parse_args()

    import torch

    from bonecls.phantom import write_dataset
    from bonecls.weights import load_card

    torch.set_num_threads(1)
    print(machine(threads=1))
    rows = [
        "| model | boxed images | CAM peak in a box | hit rate | chance (random peak) |",
        "|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="bonecls-pointing-") as tmp:
        for model in args.models:
            card_dir = ROOT / "weights" / model
            card, _ = load_card(card_dir)
            data = write_dataset(
                card.task,
                LAYOUTS[card.task],
                Path(tmp) / model,
                n=args.n,
                size=card.input_size,
                seed=args.seed,
                progress=False,
            )
            hits, total, chance = pointing(card_dir, data, args.margin)
            rows.append(f"| `{model}` | {total} | {hits} | {hits / total:.3f} | {chance:.3f} |")
    print("\n".join(rows))
    print(f"\n(Grad-CAM, true class; boxes grown by {args.margin:g} px; load average {load_average()})")


if __name__ == "__main__":
    main()
