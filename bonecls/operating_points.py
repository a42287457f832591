"""Measure a card's two operating points on held-out phantoms made with its own recipe.

Why: the training run chose its thresholds on a small validation split (100 images for pneumonia-cls,
which separated perfectly, so both thresholds met at 0.66 and there was no doubt band). Re-measuring
on fresh phantoms, rendered with the recipe's task, layout, size and file format
(scripts/train_shipped.sh) but a dataset seed none of the models trained on, gives each card

* a **doubt** cut (``thresholds.negative_below``): the highest cut that keeps at least the target
  sensitivity (default 0.95) of the findings at or above it, and
* a **positive** cut (``thresholds.positive_at``): the lowest cut with at least the target specificity
  (default 0.95) of the normal images below it,

and writes the sensitivity and specificity measured at each on the card (``operating_points``).
Only ``card.json`` changes: the weights and their sha256 are never touched. A detector's score is its
highest box confidence on the image (an image counts as flagged when one box reaches the cut).

When one cut meets both targets (the classes separate on this set), the doubt cut is lowered to the
cut that keeps 99.5 % of the findings or lets 80 % of the normal images through (whichever is lower),
never above the positive cut: the band between them is where the model was less sure, even if right.

Usage::

    python -m bonecls.operating_points weights/fracture --n 2000 --seed 4242 --write
    python -m bonecls.operating_points weights/pneumonia-det --n 1000 --seed 4242
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bonecls.errors import BoneclsError
from bonecls.weights import ModelCard, OperatingPoints, load_card, write_card

__all__ = ["RECIPES", "Recipe", "choose_operating_points", "main", "measure_scores"]


@dataclass(frozen=True)
class Recipe:
    """How scripts/train_shipped.sh rendered a task's phantoms (what the model saw as files)."""

    phantom_task: str
    layout: str
    size: int
    file_format: str  # "JPEG" (the kaggle layout, quality 93) or "PNG" (compress level 6)
    varied_exclude: tuple[str, ...] | None = None  # --recipe varied --exclude these (None: classic)

    def phantom_args(self) -> str:
        """The ``bonecls phantom`` options that render this recipe (for the card's sentence)."""
        args = f"--task {self.phantom_task} --layout {self.layout} --size {self.size}"
        if self.varied_exclude is not None:
            args += " --recipe varied" + (
                f" --exclude {','.join(self.varied_exclude)}" if self.varied_exclude else ""
            )
        return args

    def variants(self) -> Any:
        """The varied recipe's :class:`~bonecls.phantom.varied.Variants`, or None for the classic one."""
        if self.varied_exclude is None:
            return None
        from bonecls.phantom.varied import Variants

        return Variants.varied().narrowed(exclude=self.varied_exclude)


RECIPES: dict[str, Recipe] = {
    "fracture": Recipe("fracture", "kaggle", 256, "JPEG"),
    "threeclass": Recipe("threeclass", "threeclass", 256, "PNG"),
    "pneumonia": Recipe("pneumonia", "yolo", 256, "PNG"),
    "pneumonia-det": Recipe("pneumonia", "yolo", 256, "PNG"),
    # the fracture detector's training recipe: varied phantoms without the held-out variants
    "fracture-det": Recipe("threeclass", "yolo", 256, "PNG", ("lung1", "log", "buckle")),
}
_FINDING_CLASSES = ("fractured", "beyond_repair", "pneumonia")


def _encode(img8: np.ndarray, file_format: str) -> bytes:
    """The phantom as the bytes its layout writes (bonecls.phantom.writers: JPEG q93 or PNG level 6)."""
    from PIL import Image

    buf = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(img8, dtype=np.uint8))
    if file_format == "JPEG":
        image.save(buf, format="JPEG", quality=93)
    else:
        image.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _phantoms(recipe: Recipe, n: int, seed: int) -> Iterator[tuple[Any, bool]]:
    """(Radiograph, has a finding) for ``n`` independent phantoms (unpaired: one pose per image) of
    ``recipe``: classic, or varied without its ``varied_exclude`` (a varied-recipe model's own)."""
    from bonecls.imaging import load_radiograph
    from bonecls.phantom import generate

    for sample in generate(recipe.phantom_task, n, recipe.size, seed, variants=recipe.variants()):
        rg = load_radiograph(_encode(sample.to_uint8(), recipe.file_format))
        yield rg, sample.class_name in _FINDING_CLASSES


def measure_scores(
    card_dir: str | Path, n: int, seed: int, batch: int = 32, recipe: Recipe | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, has a finding) of the card's model on ``n`` held-out phantoms of dataset ``seed``,
    rendered by ``recipe`` (default: the card task's entry in :data:`RECIPES`)."""
    card, folder = load_card(card_dir)
    recipe = recipe or RECIPES[card.task]
    scores: list[float] = []
    truth: list[bool] = []
    if card.framework == "ultralytics":
        from bonecls.detection.detector import OnnxDetector

        detector = OnnxDetector.from_card(folder)
        for rg, positive in _phantoms(recipe, n, seed):
            boxes = detector.detect(rg, conf=0.01)
            scores.append(max((float(b.confidence) for b in boxes), default=0.0))
            truth.append(positive)
    else:
        from bonecls.inference import load_classifier

        predictor = load_classifier(folder, engine="native")
        pending: list[Any] = []
        for rg, positive in _phantoms(recipe, n, seed):
            pending.append(rg)
            truth.append(positive)
            if len(pending) == batch:
                scores += [p.suspicion for p in predictor.predict_batch(pending)]
                pending = []
        if pending:
            scores += [p.suspicion for p in predictor.predict_batch(pending)]
    return np.asarray(scores, dtype=np.float64), np.asarray(truth, dtype=bool)


def _rates(score: np.ndarray, positive: np.ndarray, cut: float) -> tuple[float, float]:
    """(sensitivity, specificity) when ``score >= cut`` is called a finding."""
    flagged = score >= cut
    sens = float(flagged[positive].mean()) if positive.any() else float("nan")
    spec = float((~flagged[~positive]).mean()) if (~positive).any() else float("nan")
    return sens, spec


def _cut_keeping(sorted_positives: np.ndarray, sensitivity: float) -> float:
    """The highest cut that keeps at least ``sensitivity`` of the positives at or above it."""
    k = int(np.floor((1.0 - sensitivity) * len(sorted_positives) + 1e-9))
    return float(sorted_positives[min(k, len(sorted_positives) - 1)])


def choose_operating_points(
    score: np.ndarray,
    positive: np.ndarray,
    *,
    sensitivity: float = 0.95,
    specificity: float = 0.95,
    separated_sensitivity: float = 0.995,
    separated_specificity: float = 0.80,
) -> dict[str, Any]:
    """The doubt and positive cuts on ``score`` and the (sensitivity, specificity) at each."""
    s = np.clip(np.asarray(score, dtype=np.float64), 0.0, 1.0)
    pos = np.asarray(positive, dtype=bool)
    if not pos.any() or pos.all():
        raise ValueError("operating points need both images with and without the finding")
    sp, sn = np.sort(s[pos]), np.sort(s[~pos])
    m = int(np.ceil(specificity * len(sn) - 1e-9))
    positive_at = float(np.nextafter(sn[max(m, 1) - 1], np.inf))
    doubt_at = _cut_keeping(sp, sensitivity)
    separated = doubt_at > positive_at
    if separated:  # one cut meets both targets: the doubt band keeps the least sure findings instead,
        # down to the cut that keeps separated_sensitivity of them or lets separated_specificity of
        # the normal images through, whichever is lower (never above the positive cut)
        k = int(np.ceil(separated_specificity * len(sn) - 1e-9))
        spec_cut = float(np.nextafter(sn[max(k, 1) - 1], np.inf))
        doubt_at = min(_cut_keeping(sp, separated_sensitivity), spec_cut, positive_at)
    doubt_at, positive_at = float(np.clip(doubt_at, 0, 1)), float(np.clip(positive_at, 0, 1))
    d_sens, d_spec = _rates(s, pos, doubt_at)
    p_sens, p_spec = _rates(s, pos, positive_at)
    return {
        "doubt": {"threshold": doubt_at, "sensitivity": d_sens, "specificity": d_spec},
        "positive": {"threshold": positive_at, "sensitivity": p_sens, "specificity": p_spec},
        "n_positive": int(pos.sum()),
        "n_negative": int((~pos).sum()),
        "separated": separated,
        "doubt_fraction": float(((s >= doubt_at) & (s < positive_at)).mean()),
    }


def card_with_points(card: ModelCard, points: dict[str, Any], measured_on: str, command: str) -> ModelCard:
    """A copy of ``card`` whose thresholds are the two cuts and whose ``operating_points`` hold figures."""
    data = card.model_dump()
    data["thresholds"] = {
        "negative_below": points["doubt"]["threshold"],
        "positive_at": points["positive"]["threshold"],
    }
    data["operating_points"] = OperatingPoints(
        doubt=points["doubt"],
        positive=points["positive"],
        n_positive=points["n_positive"],
        n_negative=points["n_negative"],
        target_sensitivity=points["target_sensitivity"],
        target_specificity=points["target_specificity"],
        measured_on=measured_on,
        command=command,
    ).model_dump()
    return ModelCard.model_validate(data)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bonecls.operating_points", description=__doc__.split("\n")[0]
    )
    parser.add_argument("card", help="model folder (or card.json) to measure")
    parser.add_argument(
        "--n", type=int, default=2000, help="held-out phantoms (classes balanced; default 2000)"
    )
    parser.add_argument("--seed", type=int, default=4242, help="dataset seed no shipped model trained on")
    parser.add_argument("--sensitivity", type=float, default=0.95, help="target at the doubt cut")
    parser.add_argument("--specificity", type=float, default=0.95, help="target at the positive cut")
    parser.add_argument(
        "--separated-sensitivity",
        type=float,
        default=0.995,
        help="doubt cut's target when the classes separate",
    )
    parser.add_argument(
        "--exclude",
        metavar="NAMES",
        help="measure on the varied recipe (bonecls phantom --recipe varied) without these comma-separated "
        "CTs, chains or lesion styles (a model trained on the varied recipe: its held-out variants); "
        "default: the classic recipe",
    )
    parser.add_argument("--write", action="store_true", help="write the cuts and figures into card.json")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        card, folder = load_card(args.card)
        if card.task not in RECIPES:
            raise BoneclsError(f"No phantom recipe is known for task '{card.task}'.")
        recipe = RECIPES[card.task]
        if args.exclude is not None:
            names = tuple(n.strip() for n in args.exclude.split(",") if n.strip())
            recipe = dataclasses.replace(recipe, varied_exclude=names)
            recipe.variants()  # an unknown name raises ValueError here, before any phantom is drawn
        score, positive = measure_scores(folder, args.n, args.seed, recipe=recipe)
    except ValueError as exc:
        print(f"error: --exclude: {exc}", file=sys.stderr)
        return 2
    except BoneclsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    points = choose_operating_points(
        score,
        positive,
        sensitivity=args.sensitivity,
        specificity=args.specificity,
        separated_sensitivity=args.separated_sensitivity,
    )
    points.update(target_sensitivity=args.sensitivity, target_specificity=args.specificity)
    measured_on = (
        f"{len(score)} held-out phantoms (bonecls phantom {recipe.phantom_args()} --seed {args.seed}, "
        f"unpaired, read as {recipe.file_format} files); "
        "no shipped model trained on this seed. Synthetic images, not patients."
    )
    varied = f" --exclude {args.exclude}" if args.exclude is not None else ""
    command = f"python -m bonecls.operating_points {args.card} --n {args.n} --seed {args.seed}{varied}"
    command += " --write"
    print(json.dumps({"card": card.id, **points}, indent=2))
    if args.write:
        updated = card_with_points(card, points, measured_on, command)
        if updated.sha256 != card.sha256:  # pragma: no cover - model_dump keeps every field
            raise RuntimeError("the weights' sha256 changed")
        print(f"wrote {write_card(updated, folder)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
