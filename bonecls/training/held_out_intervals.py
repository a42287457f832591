"""95% intervals for the held-out figures, pooled and per set: a bootstrap over render groups in each set.

Why: an exam holds 100 pairs per held-out set, and two exams of the same model on fresh renders of the
same variants (seeds 9101 and 9102) differ by 0.01-0.03 in ROC-AUC, lift and pointing. A figure 0.004
under a target, or a ship rule missed by 0.0004, says nothing without its interval beside it.

The unit of resampling is the render group (one render with and without its lesion, and for three
classes both lesions): the images of a group share everything but the lesion, so they are not
independent, and the paired lift is defined within a group. Groups are drawn with replacement inside
each set (the sets stay the size they were), every figure of each set is computed on the draw, and the
sets are pooled exactly as :func:`bonecls.training.held_out.pooled_figures` pools them (image-weighted
ROC-AUC and macro-F1, pair-weighted lift, explained-image-weighted pointing). Percentile intervals
(2.5th and 97.5th) over ``resamples`` draws; a figure a draw cannot define (no lesion-free image left,
say) is left out of that draw, and the interval is None when fewer than half the draws define it.

Two models scored on the same sets are compared the same way, with the same draws for both
(:func:`paired_differences`, ``train/evaluate.py --held-out --compare``): the interval of a difference
on shared images is narrower than the two models' intervals side by side suggest.

A detector's figures are drawn the same way from its boxes
(:func:`bonecls.detection.held_out.detector_intervals`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bonecls.training.metrics import macro_f1, rank_auc, weighted_mean

__all__ = [
    "BOOTSTRAP_UNIT",
    "INTERVAL_KEYS",
    "N_RESAMPLES",
    "SetOutputs",
    "bootstrap_intervals",
    "group_members",
    "paired_differences",
    "pooled_intervals",
    "set_intervals",
]

N_RESAMPLES = 1000
BOOTSTRAP_UNIT = "render group (one render with and without its lesion), drawn within each held-out set"
#: pooled figure -> (per-set figure it pools, the weight it is pooled with)
INTERVAL_KEYS: dict[str, tuple[str, str]] = {
    "roc_auc_mean": ("roc_auc", "n"),
    "f1_macro_mean": ("f1_macro", "n"),
    "lift": ("lift", "pairs"),
    "pointing": ("pointing", "images"),
}


@dataclass(frozen=True)
class SetOutputs:
    """What one held-out set's figures are computed from, per image, per pair and per explained lesion.

    ``groups``, ``labels``, ``predicted`` (argmax class), ``positive`` (a lesion class) and ``score``
    (the suspicion the ROC-AUC ranks) per image; ``pair_groups`` and ``pair_rises`` (suspicion logit
    of the lesion image minus its lesion-free twin's) per pair; ``hit_groups`` and ``hits`` (the heat
    map's peak on the lesion) per explained lesion image; ``n_classes`` for the macro-F1."""

    groups: np.ndarray
    labels: np.ndarray
    predicted: np.ndarray
    positive: np.ndarray
    score: np.ndarray
    pair_groups: np.ndarray
    pair_rises: np.ndarray
    hit_groups: np.ndarray
    hits: np.ndarray
    n_classes: int

    def figures(self, drawn: np.ndarray | None = None) -> dict[str, float | int | None]:
        """The set's figures on the groups ``drawn`` (with repeats; None: every group once)."""
        if drawn is None:
            img, pair, hit = (np.arange(len(a)) for a in (self.groups, self.pair_groups, self.hit_groups))
        else:
            img, pair, hit = (
                group_members(a, drawn) for a in (self.groups, self.pair_groups, self.hit_groups)
            )
        rises, hits = self.pair_rises[pair], self.hits[hit]
        return {
            "n": int(img.size),
            "roc_auc": rank_auc(self.positive[img], self.score[img]) if img.size else None,
            "f1_macro": macro_f1(self.labels[img], self.predicted[img], self.n_classes) if img.size else None,
            "pairs": int(rises.size),
            "lift": float(np.mean(rises > 0)) if rises.size else None,
            "images": int(hits.size),
            "pointing": float(np.mean(hits)) if hits.size else None,
        }


def group_members(ids: np.ndarray, drawn: np.ndarray) -> np.ndarray:
    """Indices of the rows of ``ids`` in each drawn group, a drawn-twice group's rows twice."""
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    lo = np.searchsorted(sorted_ids, drawn, side="left")
    hi = np.searchsorted(sorted_ids, drawn, side="right")
    return np.concatenate([order[a:b] for a, b in zip(lo, hi, strict=True)] or [np.zeros(0, np.int64)])


def _pooled(rows: Sequence[dict[str, float | int | None]]) -> dict[str, float | None]:
    """The pooled figures of :data:`INTERVAL_KEYS` from per-set figures (held_out.pooled_figures' means)."""
    return {
        key: weighted_mean(rows, figure, lambda r, w=weight: r[w])
        for key, (figure, weight) in INTERVAL_KEYS.items()
    }


def bootstrap_intervals(
    figures_of: Callable[[list[np.ndarray]], dict[str, float | None]],
    groups: Sequence[np.ndarray],
    resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> dict[str, dict]:
    """``{"ci95": {figure: [low, high] or None}, "bootstrap": {...}}``: ``figures_of(drawn)`` over
    ``resamples`` draws of each set's render ``groups`` with replacement (``drawn``: one array of group
    ids per set); an interval is None where fewer than half the draws define the figure. The one loop
    behind the classifiers' (:func:`pooled_intervals`) and the detectors' intervals."""
    rng = np.random.default_rng(seed)
    unique = [np.unique(g) for g in groups]
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        drawn = [rng.choice(g, size=g.size, replace=True) for g in unique]
        for key, value in figures_of(drawn).items():
            kept = draws.setdefault(key, [])
            if value is not None:
                kept.append(float(value))
    return {
        "ci95": {
            key: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]
            if len(v) >= resamples / 2
            else None
            for key, v in draws.items()
        },
        "bootstrap": {"resamples": resamples, "unit": BOOTSTRAP_UNIT, "seed": seed},
    }


def pooled_intervals(
    outputs: Sequence[SetOutputs], resamples: int = N_RESAMPLES, seed: int = 0
) -> dict[str, dict]:
    """``{"ci95": {pooled figure: [low, high] or None}, "bootstrap": {...}}`` for the held-out sets'
    ``outputs`` (see the module docstring)."""

    def figures_of(drawn: list[np.ndarray]) -> dict[str, float | None]:
        return _pooled([o.figures(d) for o, d in zip(outputs, drawn, strict=True)])

    return bootstrap_intervals(figures_of, [o.groups for o in outputs], resamples, seed)


def set_intervals(outputs: SetOutputs, resamples: int = N_RESAMPLES, seed: int = 0) -> dict[str, list[float]]:
    """95% intervals of one set's own figures (``roc_auc``, ``f1_macro``, ``lift``, ``pointing``): the
    pooled bootstrap on that set alone; a figure no draw defines is left out."""
    ci95 = pooled_intervals([outputs], resamples, seed)["ci95"]
    return {figure: ci95[key] for key, (figure, _) in INTERVAL_KEYS.items() if ci95[key] is not None}


def paired_differences(
    base: Sequence[SetOutputs], other: Sequence[SetOutputs], resamples: int = N_RESAMPLES, seed: int = 0
) -> dict[str, dict]:
    """``other`` against ``base`` on the very same held-out images: per pooled figure the two values,
    their difference (other - base), its 95% interval over draws of the render groups shared by both,
    and the share of draws in which ``other`` is higher. Raises ``ValueError`` when the two were not
    scored on the same sets (same groups and labels, in the same order)."""
    if len(base) != len(other) or any(
        not (np.array_equal(a.groups, b.groups) and np.array_equal(a.labels, b.labels))
        for a, b in zip(base, other, strict=False)
    ):
        raise ValueError("the two models were not scored on the same held-out sets")
    rng = np.random.default_rng(seed)
    unique = [np.unique(o.groups) for o in base]
    point_a = _pooled([o.figures() for o in base])
    point_b = _pooled([o.figures() for o in other])
    diffs: dict[str, list[float]] = {key: [] for key in INTERVAL_KEYS}
    for _ in range(resamples):
        drawn = [rng.choice(g, size=g.size, replace=True) for g in unique]
        a = _pooled([o.figures(d) for o, d in zip(base, drawn, strict=True)])
        b = _pooled([o.figures(d) for o, d in zip(other, drawn, strict=True)])
        for key in INTERVAL_KEYS:
            if a[key] is not None and b[key] is not None:
                diffs[key].append(b[key] - a[key])
    out: dict[str, dict] = {}
    for key, v in diffs.items():
        defined = len(v) >= resamples / 2 and point_a[key] is not None and point_b[key] is not None
        out[key] = {
            "base": point_a[key],
            "other": point_b[key],
            "difference": None if not defined else float(point_b[key] - point_a[key]),  # type: ignore[operator]
            "ci95": [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if defined else None,
            "other_higher": float(np.mean(np.asarray(v) > 0)) if defined else None,
        }
    return out
