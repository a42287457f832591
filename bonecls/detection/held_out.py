"""Detector cards on held-out rendering variants: boxes scored on phantoms the detector never saw.

The classifiers' held-out evaluation (:mod:`bonecls.training.held_out`) renders paired phantoms of a CT,
a processing chain and a lesion style that training never used. A detector is scored on the very same
cached sets (a ``fracture-det`` card on the three-class sets, whose fractured and beyond-repair images
carry a simple and a comminuted fracture box; ``pneumonia-det`` on the pneumonia sets), per set:

* **FROC** (lesion level, class-agnostic): the share of lesion boxes found (IoU >= 0.5) at 0.5 false
  positive boxes per image, and at the other LUNA16 rates; the issue's target is >= 0.85 at 0.5;
* **mAP@0.5** (COCO 101-point, per class then averaged, as the card's test metrics) and its
  class-agnostic counterpart;
* **image-level ROC-AUC** of the top box score (0 without a box), and the sensitivity and specificity at
  the card's two cuts (``negative_below``: doubt, ``positive_at``: definite);
* the **paired lift**: the share of with/without pairs where the lesion raises the top box score;
* for a fracture detector, the **three-class answer from its boxes**: no box at the cut -> healthy, a
  comminuted box -> beyond repair, otherwise fractured; its macro-F1 is comparable with the three-class
  classifier's on the same sets.

The pooled FROC sensitivity, mAP@0.5, ROC-AUC and lift carry 95% intervals (``ci95``,
:func:`detector_intervals`): the classifiers' bootstrap over render groups within each set, each draw's
images scored together as the pooled figures are.

:func:`detector_held_out_report` is what ``train/evaluate.py --held-out`` runs for a detector card.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bonecls.detection import metrics as dm
from bonecls.training.held_out import (
    EVAL_SEED,
    HeldOut,
    PairSet,
    figure_text,
    gate_figures,
    lift_figures,
    pair_rises,
    pair_sets,
    pooled_scope,
    scope_line,
)
from bonecls.training.held_out_intervals import N_RESAMPLES, bootstrap_intervals, group_members
from bonecls.training.metrics import binary_rates, macro_f1, rank_auc, weighted_mean

__all__ = [
    "PAIR_TASK",
    "boxes_to_threeclass",
    "detector_figure_line",
    "detector_held_out_report",
    "detector_intervals",
    "detector_set_figures",
]

#: The phantom task whose held-out pair sets score each detector task.
PAIR_TASK = {"fracture-det": "threeclass", "pneumonia-det": "pneumonia"}
#: Class of the pair sets whose lesion is boxed as ``comminuted`` (the rest are the detector's class 0).
_COMMINUTED_SOURCE = "beyond_repair"
_FLOOR = 0.001  # the confidence floor of the boxes scored (as the card's mAP)


def _detections(detect: Callable[[np.ndarray], list], images: np.ndarray, class_names: Sequence[str]):
    """Per image: (N, 4) boxes, (N,) scores and (N,) class indices of ``detect`` at the floor."""
    index = {n: i for i, n in enumerate(class_names)}
    pb, ps, pl = [], [], []
    for image in images:
        boxes = detect(image)
        pb.append(np.array([b.xyxy() for b in boxes], dtype=np.float64).reshape(-1, 4))
        ps.append(np.array([b.confidence for b in boxes], dtype=np.float64))
        pl.append(np.array([index.get(b.label, -1) for b in boxes], dtype=int))
    return pb, ps, pl


def _ground_truth(ps: PairSet, class_names: Sequence[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The sets' boxes with the detector's class indices (comminuted where the card has that class)."""
    comminuted = list(class_names).index("comminuted") if "comminuted" in class_names else 0
    gb, gl = [], []
    for label, boxes in zip(ps.labels, ps.boxes, strict=True):
        cls = comminuted if ps.class_names[int(label)] == _COMMINUTED_SOURCE else 0
        gb.append(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
        gl.append(np.full(len(boxes), cls, dtype=int))
    return gb, gl


def boxes_to_threeclass(
    scores: Sequence[np.ndarray], labels: Sequence[np.ndarray], comminuted: int, cut: float
) -> np.ndarray:
    """Three-class answers (0 healthy, 1 fractured, 2 beyond repair) from each image's boxes at ``cut``:
    no box at or above it -> healthy; a comminuted box among them -> beyond repair; else fractured."""
    out = np.zeros(len(scores), dtype=int)
    for i, (s, c) in enumerate(zip(scores, labels, strict=True)):
        kept = np.asarray(c)[np.asarray(s) >= cut]
        if len(kept):
            out[i] = 2 if np.any(kept == comminuted) else 1
    return out


def _top_scores(scores: Sequence[np.ndarray]) -> np.ndarray:
    return np.asarray([float(s.max()) if len(s) else 0.0 for s in scores], dtype=np.float64)


def detector_set_figures(detector: Any, ps: PairSet) -> tuple[dict, dict]:
    """Figures of ``detector`` (a :class:`~bonecls.detection.detector.Detector` or ``OnnxDetector``) on one
    pair set, and the raw per-image arrays (for pooling across sets)."""
    card = detector.card
    names = list(card.class_names)
    gate_scores: list[float | None] = []

    def detect(image: np.ndarray) -> list:
        boxes, score = detector.detect_and_score(image, conf=_FLOOR, max_det=100)
        gate_scores.append(score)  # None without a learned gate: no scope figures
        return boxes

    pb, pscore, pl = _detections(detect, ps.images, names)
    gb, gl = _ground_truth(ps, names)
    negative = ps.negative
    pos = ~np.isin(ps.labels, negative)
    top = _top_scores(pscore)
    cuts = card.thresholds
    figures: dict[str, Any] = {
        "n": len(ps.labels),
        "n_lesions": int(sum(len(g) for g in gb)),
        "froc": dm.froc(pb, pscore, gb, 0.5),
        "froc_sensitivity_at_0.5_fp": None,
        "map50": dm.mean_average_precision(pb, pscore, gb, pred_labels=pl, gt_labels=gl, iou_thresholds=0.5),
        "map50_any_class": dm.mean_average_precision(pb, pscore, gb, iou_thresholds=0.5),
        "roc_auc": rank_auc(pos, top),
        "at_negative_below": binary_rates(pos, top, cuts.negative_below),
        "at_positive_at": binary_rates(pos, top, cuts.positive_at),
    }
    figures["froc_sensitivity_at_0.5_fp"] = figures["froc"]["sensitivity"]["0.5"]
    pair_groups, rises = pair_rises(top, ps.labels, ps.groups, negative)
    lift = lift_figures(rises)
    figures.update(pairs=lift["pairs"], lift=lift["lift"], median_score_rise=lift["median_logit_rise"])
    learned = gate_scores and all(v is not None for v in gate_scores)
    scores = np.asarray(gate_scores, dtype=np.float64) if learned else None
    figures["scope"] = gate_figures(detector.scope_gate, scores, ps, pos, top, top, negative)
    if "comminuted" in names and len(ps.class_names) == 3:
        com = names.index("comminuted")
        for key, cut in (("negative_below", cuts.negative_below), ("positive_at", cuts.positive_at)):
            pred = boxes_to_threeclass(pscore, pl, com, cut)
            figures[f"threeclass_f1_macro_at_{key}"] = macro_f1(ps.labels, pred, 3)
    raw = {"pb": pb, "ps": pscore, "pl": pl, "gb": gb, "gl": gl, "top": top, "pos": pos}
    raw.update(groups=np.asarray(ps.groups), pair_groups=pair_groups, pair_rises=rises)
    return figures, raw


def _pooled(per_set: dict[str, dict], raws: list[dict]) -> dict:
    """All sets' images together (FROC, mAP, ROC-AUC on the union), the lift over all pairs, the
    smallest per-set ROC-AUC, and image-weighted means of the three-class macro-F1 (as the classifiers'
    pooled ``f1_macro_mean``)."""

    def cat(key: str) -> list:
        return [x for r in raws for x in r[key]]

    pb, ps, pl, gb, gl = cat("pb"), cat("ps"), cat("pl"), cat("gb"), cat("gl")
    top = np.concatenate([r["top"] for r in raws])
    pos = np.concatenate([r["pos"] for r in raws])
    froc = dm.froc(pb, ps, gb, 0.5)
    pairs = sum(int(f["pairs"] or 0) for f in per_set.values())
    out: dict[str, Any] = {
        "n": len(top),
        "froc": froc,
        "froc_sensitivity_at_0.5_fp": froc["sensitivity"]["0.5"],
        "map50": dm.mean_average_precision(pb, ps, gb, pred_labels=pl, gt_labels=gl, iou_thresholds=0.5),
        "map50_any_class": dm.mean_average_precision(pb, ps, gb, iou_thresholds=0.5),
        "roc_auc": rank_auc(pos, top),
        "roc_auc_min": min(
            (f["roc_auc"] for f in per_set.values() if f["roc_auc"] is not None), default=None
        ),
        "lift": weighted_mean(per_set.values(), "lift", lambda f: f["pairs"]),
        "pairs": pairs,
    }
    scope = pooled_scope(per_set)
    if scope:
        out["scope"] = scope
    for key in ("threeclass_f1_macro_at_negative_below", "threeclass_f1_macro_at_positive_at"):
        value = weighted_mean(per_set.values(), key, lambda f: f["n"])
        if value is not None:
            out[key.replace("f1_macro", "f1_macro_mean")] = value
    return out


def _union_figures(raws: list[dict], drawn: list[np.ndarray]) -> dict[str, float | None]:
    """The pooled FROC sensitivity, mAP@0.5, ROC-AUC and lift of the render groups ``drawn`` from each
    set (repeats included), all sets' drawn images together."""
    images = [group_members(r["groups"], d) for r, d in zip(raws, drawn, strict=True)]

    def cat(key: str) -> list:
        return [r[key][i] for r, idx in zip(raws, images, strict=True) for i in idx]

    pb, ps, gb = cat("pb"), cat("ps"), cat("gb")
    top = np.concatenate([r["top"][idx] for r, idx in zip(raws, images, strict=True)])
    pos = np.concatenate([r["pos"][idx] for r, idx in zip(raws, images, strict=True)])
    rises = np.concatenate(
        [r["pair_rises"][group_members(r["pair_groups"], d)] for r, d in zip(raws, drawn, strict=True)]
    )
    return {
        "froc_sensitivity_at_0.5_fp": dm.froc(pb, ps, gb, 0.5)["sensitivity"]["0.5"],
        "map50": dm.mean_average_precision(
            pb, ps, gb, pred_labels=cat("pl"), gt_labels=cat("gl"), iou_thresholds=0.5
        ),
        "roc_auc": rank_auc(pos, top),
        "lift": float(np.mean(rises > 0)) if rises.size else None,
    }


def detector_intervals(raws: list[dict], resamples: int = N_RESAMPLES, seed: int = 0) -> dict[str, dict]:
    """``{"ci95": {figure: [low, high] or None}, "bootstrap": {...}}`` of the pooled detector figures
    over ``resamples`` draws of the render groups within each set (``raws`` of
    :func:`detector_set_figures`; :func:`bonecls.training.held_out_intervals.bootstrap_intervals`)."""
    return bootstrap_intervals(
        lambda drawn: _union_figures(raws, drawn), [r["groups"] for r in raws], resamples, seed
    )


def detector_held_out_report(
    detector: Any,
    held_out: HeldOut,
    n_pairs: int,
    *,
    seed: int = EVAL_SEED,
    cache_dir: Path | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> dict:
    """The detector card's ``evaluation.held_out_variants`` section: per held-out set and pooled."""
    card = detector.card
    task = PAIR_TASK[card.task]
    per_set, raws = {}, []
    for ps in pair_sets(task, held_out, n_pairs, seed, cache_dir, log):
        per_set[ps.name], raw = detector_set_figures(detector, ps)
        raws.append(raw)
        log(f"{card.id} {ps.name}: {detector_figure_line(per_set[ps.name])}")
    for i, (figures, raw) in enumerate(zip(per_set.values(), raws, strict=True)):
        intervals = detector_intervals([raw], seed=1 + i)["ci95"]  # each set's own figures too
        figures["ci95"] = {k: v for k, v in intervals.items() if v is not None}
    recipe = f"bonecls phantom --task {task} --recipe varied --paired, one held-out variant per set"
    return {
        **held_out.report_basis(recipe, seed),
        "scores": "boxes at confidence > 0.001 (NMS IoU 0.5, 100 per image); an image's score is its top box",
        "froc_match": "class-agnostic, IoU >= 0.5, greedy in descending confidence",
        "sets": per_set,
        "pooled": {**_pooled(per_set, raws), **detector_intervals(raws)},
    }


def detector_figure_line(f: dict) -> str:
    """FROC sensitivity at 0.5 FP/image, mAP@0.5, ROC-AUC, lift and three-class macro-F1 on one line
    (each with its 95% interval where the figures have one)."""

    def g(key: str) -> str:
        return figure_text(f, key)

    three = f.get("threeclass_f1_macro_at_positive_at", f.get("threeclass_f1_macro_mean_at_positive_at"))
    tail = "" if three is None else f", three-class macro-F1 from boxes {three:.3f}"
    return (
        f"FROC sensitivity {g('froc_sensitivity_at_0.5_fp')} at 0.5 FP/image, mAP@0.5 {g('map50')} "
        f"(any class {g('map50_any_class')}), ROC-AUC {g('roc_auc')}, lift {g('lift')} over "
        f"{f.get('pairs', 0)} pairs{tail}{scope_line(f)}"
    )
