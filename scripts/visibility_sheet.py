"""Contact sheet of held-out lesion pairs ordered by visibility: how the visible-lesion floor was chosen.

.venv/bin/python scripts/visibility_sheet.py [--task fracture] [--out docs/visibility.png] [--cols 8]

One row per held-out set (other CT, unseen chain, unseen lesion style; ``train/evaluate.py --held-out``'s
sets, rendered once and cached). Each tile is a 64-px crop around the lesion box, shown 3x: the
lesion-free render on the left, the same render with its lesion on the right, the visibility
(:func:`bonecls.training.held_out.lesion_visibility`) written under it and a red bar under the pairs below
:data:`~bonecls.training.held_out.VISIBILITY_FLOOR`. The tiles are spread evenly over the lowest
``--span`` share of each set's visibilities, where the floor has to be decided.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bonecls.paths import cache_root  # noqa: E402
from bonecls.training.held_out import (  # noqa: E402
    EVAL_SEED,
    VISIBILITY_FLOOR,
    HeldOut,
    lesion_visibility,
    pair_sets,
)

CROP, ZOOM, LABEL_H = 64, 3, 14


def _crop(image: np.ndarray, cx: int, cy: int) -> np.ndarray:
    out = np.zeros((CROP, CROP), dtype=np.uint8)
    y0, x0 = max(0, cy - CROP // 2), max(0, cx - CROP // 2)
    patch = image[y0 : y0 + CROP, x0 : x0 + CROP]
    out[: patch.shape[0], : patch.shape[1]] = patch
    return out


def main(argv: list[str] | None = None) -> int:
    from PIL import Image, ImageDraw

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="fracture", choices=("fracture", "threeclass", "pneumonia"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "visibility.png"))
    ap.add_argument("--cols", type=int, default=8)
    ap.add_argument("--span", type=float, default=0.5, help="share of the lowest visibilities shown")
    ap.add_argument("--pairs", type=int, default=100, help="pairs per held-out set (as --held-out)")
    args = ap.parse_args(argv)

    tile_w, tile_h = 2 * CROP * ZOOM + 6, CROP * ZOOM + LABEL_H
    sets = pair_sets(args.task, HeldOut.for_task(args.task), args.pairs, EVAL_SEED, cache_root() / "held-out")
    sheet = Image.new("RGB", (args.cols * tile_w, len(sets) * (tile_h + LABEL_H)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for row, ps in enumerate(sets):
        vis = lesion_visibility(ps, ps.negative)
        base = ps.lesion_free_twins(ps.negative)
        order = [int(i) for i in np.argsort(vis) if not np.isnan(vis[i])]
        picks = [order[int(k)] for k in np.linspace(0, args.span * (len(order) - 1), args.cols)]
        top = row * (tile_h + LABEL_H)
        draw.text((4, top), f"{ps.name}: lesion-free | with lesion, by visibility", fill=(0, 0, 0))
        for col, i in enumerate(picks):
            x0, y0, x1, y1 = ps.boxes[i][0]
            cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
            pair = [_crop(ps.images[j], cx, cy) for j in (base[int(ps.groups[i])], i)]
            tile = np.concatenate([pair[0], np.full((CROP, 2), 255, np.uint8), pair[1]], axis=1)
            tile = np.kron(tile, np.ones((ZOOM, ZOOM), dtype=np.uint8))
            left = col * tile_w
            sheet.paste(Image.fromarray(tile).convert("RGB"), (left, top + LABEL_H))
            below = vis[i] < VISIBILITY_FLOOR
            draw.text(
                (left + 4, top + LABEL_H + CROP * ZOOM + 1),
                f"{vis[i]:.2f}" + ("  below the floor" if below else ""),
                fill=(200, 0, 0) if below else (0, 0, 0),
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out}: {len(sets)} sets x {args.cols} pairs (floor {VISIBILITY_FLOOR})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
