"""Evaluation that a model cannot pass by learning the renderer: held-out rendering variants.

A card's test metrics come from the same generator that trained the model, so a model that learned
the generator's look (its CT, its processing, its one way of drawing a fracture) scores as well as
one that sees fractures. Here a model is scored on phantoms of the varied recipe
(:mod:`bonecls.phantom.varied`) in which exactly one thing was never in training:

* ``ct=lung1`` - the other chest CT (leave one CT out);
* ``chain=log`` - a processing chain (spectrum, scatter, noise, curves, enhancement, JPEG);
* ``style=buckle`` - a lesion style (``bronchogram`` for pneumonia).

Each set is rendered ``--paired``: every render once with and once without its lesion, everything
else equal. Per set this module reports

* the classification metrics (ROC-AUC of the suspicion, macro-F1, sensitivity and specificity at
  the card's thresholds), with the card's own temperature and thresholds;
* the **paired lift**: over the with/without pairs, the share in which the lesion raises the
  model's suspicion logit, and the median rise. A model that reacts to the lesion scores near 1;
  one that reads only the render scores about half (ties count as no rise, so a constant model
  scores 0);
* the **pointing game**: the share of lesion images whose Grad-CAM peak (the app's default
  explanation, for the true class) lies inside a lesion box grown by a margin, beside the chance
  level of a uniformly random peak;
* what the **scope gate** does with these images (``scope``): the share it answers (lesion-free and
  lesion images apart: a gate that refuses lesions more often hides findings) and the ROC-AUC and lift
  over the answered images only. The figures above are the raw model's on every image; a reader of the
  app gets answers only where the gate lets the image through, and on an unseen CT that can be a
  fraction of the images;
* the same figures over the **visible lesions** only: the renderer draws some lesions so faint that no
  reader could see them either (a hairline gap in a thin rib seen end-on), so a model cannot be asked to
  find them. A lesion's visibility is the strongest local with/without difference in its box (the
  absolute difference averaged over 3x3 pixels, its maximum in the box) over the grey-level standard
  deviation of the lesion-free image: a pixel measure of the with/without difference in the box, as the
  issue's independent renderer used to redraw its lesions until they were as visible as this project's.
  A thin crisp line scores as high as a broad one, which a mean over the box would not. The lesions below
  :data:`VISIBILITY_FLOOR` (and their pairs) are left out of ``visible``; every negative stays. The
  headline figures above keep every lesion, and the issue's targets are on those.

The pooled figures carry 95% intervals (``ci95``: a bootstrap over the render groups within each set,
:mod:`bonecls.training.held_out_intervals`): two exams of 100 pairs per set differ by 0.01-0.03.

:func:`held_out_report` runs all of it for one predictor; ``train/evaluate.py --held-out`` is its
command line and can write the figures onto the card (``evaluation.held_out_variants``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bonecls.phantom import TASK_CLASSES, generate
from bonecls.phantom.varied import OPACITY_STYLES, Variants
from bonecls.training.held_out_intervals import SetOutputs, pooled_intervals, set_intervals
from bonecls.training.metrics import (
    binary_rates,
    classification_metrics,
    is_positive,
    rank_auc,
    softmax_np,
    weighted_mean,
)

EVAL_SEED = 9101  # no training set of the project uses it (they use 101, 201, 301 and 4xx)
RENDER_SIZE = 256  # the phantoms' side, as every training set was rendered; the card resizes
POINTING_MARGIN = 8.0  # px at RENDER_SIZE added around each box (bench/bench_cam_pointing.py)
SET_FORMAT = 2  # bump when the stored pair sets change meaning (2: lung1 smoothed along the body axis)
LESION_FREE_CLASSES = ("not fractured", "healthy", "normal")  # the phantom tasks' classes without a lesion
# Strongest 3x3-averaged |with - without| in the box over the lesion-free image's std. Looked at side by side
# (scripts/visibility_sheet.py, docs/visibility.png), most pairs below about 0.2 look identical and most from
# 0.3 up show the lesion; around the floor eye and measure disagree both ways (a gap at 0.15 is seen, pairs at
# 0.27 and 0.34 are not): a rough filter, not a reader study. 0.25 leaves out a fifth to a third of the
# held-out fracture lesions.
VISIBILITY_FLOOR = 0.25
VISIBILITY_WINDOW = 3  # px: the difference is averaged over this square before its maximum is taken


@dataclass(frozen=True)
class HeldOut:
    """The three variants held out of training (one CT, one processing chain, one lesion style)."""

    ct: str = "lung1"
    chain: str = "log"
    style: str = "buckle"

    @classmethod
    def for_task(cls, task: str, ct: str = "lung1", chain: str = "log", style: str | None = None) -> HeldOut:
        """The defaults of ``task``: pneumonia holds out an opacity style (``bronchogram``)."""
        return cls(ct, chain, style or ("bronchogram" if task == "pneumonia" else "buckle"))

    @property
    def names(self) -> tuple[str, str, str]:
        return (self.ct, self.chain, self.style)

    def exclude_arg(self, *more: str) -> str:
        """The ``bonecls phantom --exclude`` value of a training set that never sees these variants."""
        return ",".join((*self.names, *more))

    def report_basis(self, recipe: str, seed: int) -> dict[str, Any]:
        """What every card section scored on these sets states about them (classifier and detector alike)."""
        return {
            "held_out": {"ct": self.ct, "chain": self.chain, "lesion_style": self.style},
            "recipe": recipe,
            "set_format": SET_FORMAT,
            "seed": seed,
            "render_size": RENDER_SIZE,
        }

    def variant_sets(self, task: str) -> dict[str, Variants]:
        """One :class:`Variants` per held-out factor; the other factors are the training pool's."""
        pool = Variants.varied().narrowed(exclude=self.names)
        styles = (self.style,)
        if task == "threeclass" and self.style != "comminuted":
            styles = (self.style, "comminuted")  # beyond repair has the one style
        if task == "pneumonia" and self.style not in OPACITY_STYLES:
            raise ValueError(f"pneumonia holds out an opacity style {OPACITY_STYLES}, not {self.style!r}")
        return {
            f"ct={self.ct}": Variants((self.ct,), pool.chains, pool.lesion_styles),
            f"chain={self.chain}": Variants(pool.cts, (self.chain,), pool.lesion_styles),
            f"style={self.style}": Variants(pool.cts, pool.chains, styles),
        }


@dataclass
class PairSet:
    """Rendered groups: the images of one group share a render and differ only by the lesion.

    ``images`` (N, S, S) uint8; ``labels`` (N,) class indices of ``class_names``; ``groups`` (N,)
    group ids; ``boxes`` per image, ``(x0, y0, x1, y1)`` in pixels (empty without a lesion).
    """

    name: str
    class_names: tuple[str, ...]
    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    boxes: list[list[tuple[float, float, float, float]]]

    @property
    def negative(self) -> list[int]:
        """Indices of the lesion-free classes among ``class_names`` (:data:`LESION_FREE_CLASSES`)."""
        return [i for i, c in enumerate(self.class_names) if c in LESION_FREE_CLASSES]

    def lesion_free_twins(self, negative: Sequence[int]) -> dict[int, int]:
        """Group id -> index of the group's lesion-free image (a class of ``negative``)."""
        return {int(g): i for i, g in enumerate(self.groups) if self.labels[i] in negative}

    def save(self, path: Path) -> None:
        flat = [(i, *b) for i, bs in enumerate(self.boxes) for b in bs]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(
            tmp,
            images=self.images,
            labels=self.labels,
            groups=self.groups,
            boxes=np.asarray(flat, dtype=np.float64).reshape(-1, 5),
            meta=np.asarray(json.dumps({"name": self.name, "class_names": list(self.class_names)})),
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> PairSet:
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            boxes: list[list[tuple[float, float, float, float]]] = [[] for _ in range(len(z["labels"]))]
            for i, *b in z["boxes"].tolist():
                boxes[int(i)].append(tuple(b))  # type: ignore[arg-type]
            return cls(meta["name"], tuple(meta["class_names"]), z["images"], z["labels"], z["groups"], boxes)


def render_pair_set(
    task: str, name: str, variants: Variants, n_pairs: int, seed: int, size: int = RENDER_SIZE
) -> PairSet:
    """At least ``n_pairs`` with/without pairs of ``task`` drawn from ``variants`` (paired phantoms)."""
    classes = TASK_CLASSES[task]
    k = len(classes)
    n_groups = math.ceil(n_pairs / (k - 1))
    images, labels, groups, boxes = [], [], [], []
    for s in generate(task, n_groups * k, size, seed, paired=True, variants=variants):
        images.append(s.to_uint8())
        labels.append(classes.index(s.class_name))
        groups.append(s.meta["index"] // k)
        boxes.append([(b.x0, b.y0, b.x1, b.y1) for b in s.boxes])
    return PairSet(name, tuple(classes), np.stack(images), np.asarray(labels), np.asarray(groups), boxes)


def pair_sets(
    task: str,
    held_out: HeldOut,
    n_pairs: int,
    seed: int = EVAL_SEED,
    cache_dir: Path | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> list[PairSet]:
    """The held-out sets of ``task``, rendered once and kept in ``cache_dir``: every model of a task is then
    scored on the very same images (rendering itself is quick once the CT volumes are cached: about 20 ms
    per 256-px image on one core, 3-4 s for a set of 100 fracture pairs)."""
    out = []
    for i, (name, variants) in enumerate(held_out.variant_sets(task).items()):
        key = hashlib.sha256(
            repr((SET_FORMAT, task, name, variants, n_pairs, seed, RENDER_SIZE)).encode()
        ).hexdigest()[:16]
        path = None if cache_dir is None else Path(cache_dir) / f"{task}-{name.replace('=', '-')}-{key}.npz"
        if path is not None and path.is_file():
            out.append(PairSet.load(path))
            continue
        log(f"rendering {task} {name}: {n_pairs} pairs")
        ps = render_pair_set(task, name, variants, n_pairs, seed + 1000 * i)
        if path is not None:
            ps.save(path)
        out.append(ps)
    return out


# ---------------------------------------------------------------------------------------------- figures


def suspicion_logits(
    logits: np.ndarray, class_names: Sequence[str], positive: Sequence[str], temperature: float = 1.0
) -> np.ndarray:
    """log(P(any positive class) / P(no positive class)) per row, exactly (log-sum-exp, no rounding
    of probabilities near 0 or 1)."""
    from scipy.special import logsumexp

    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    pos = [list(class_names).index(c) for c in positive]
    neg = [i for i in range(len(class_names)) if i not in pos]
    return logsumexp(z[:, pos], axis=1) - logsumexp(z[:, neg], axis=1)


def pair_rises(
    score: np.ndarray, labels: np.ndarray, groups: np.ndarray, negative: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """(group, rise) of each lesion image that has a lesion-free twin in its group: its ``score`` minus
    the twin's."""
    score = np.asarray(score, dtype=np.float64)
    neg = np.isin(labels, list(negative))
    base = {int(g): float(score[i]) for i, g in enumerate(groups) if neg[i]}
    pairs = [(int(g), score[i] - base[int(g)]) for i, g in enumerate(groups) if not neg[i] and int(g) in base]
    return np.asarray([g for g, _ in pairs], dtype=np.int64), np.asarray(
        [r for _, r in pairs], dtype=np.float64
    )


def paired_lift(score: np.ndarray, labels: np.ndarray, groups: np.ndarray, negative: Sequence[int]) -> dict:
    """Each lesion image against the lesion-free image of its group: the share whose ``score`` rises
    (strictly: a tie is no rise) and the median rise."""
    return lift_figures(pair_rises(score, labels, groups, negative)[1])


def lift_figures(rises: np.ndarray) -> dict:
    """The paired lift's figures from the pairs' rises (:func:`pair_rises`)."""
    if rises.size == 0:
        return {"pairs": 0, "lift": None, "median_logit_rise": None}
    return {
        "pairs": int(rises.size),
        "lift": float(np.mean(rises > 0)),
        "median_logit_rise": float(np.median(rises)),
    }


def box_cover(shape: tuple[int, int], boxes: Sequence[Sequence[float]], margin: float) -> np.ndarray:
    """Boolean mask of ``boxes`` (x0, y0, x1, y1) grown by ``margin`` px, clipped to the image."""
    h, w = shape
    covered = np.zeros((h, w), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        c0, r0 = max(0, int(x0 - margin)), max(0, int(y0 - margin))
        c1, r1 = min(w, int(np.ceil(x1 + margin)) + 1), min(h, int(np.ceil(y1 + margin)) + 1)
        covered[r0:r1, c0:c1] = True
    return covered


def pointing_hits(
    heatmaps: Sequence[np.ndarray], boxes: Sequence[Sequence[Sequence[float]]], margin: float
) -> tuple[list[bool], list[float]]:
    """Per heat map: whether its maximum lies in one of its image's grown boxes, and the share of the
    image those boxes cover (the chance of a hit)."""
    hits, chance = [], []
    for heat, bs in zip(heatmaps, boxes, strict=True):
        covered = box_cover(heat.shape, bs, margin)
        y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
        hits.append(bool(covered[y, x]))
        chance.append(float(covered.mean()))
    return hits, chance


def pointing_game(
    heatmaps: Sequence[np.ndarray], boxes: Sequence[Sequence[Sequence[float]]], margin: float
) -> dict:
    """Share of heat maps whose maximum lies in one of their image's grown boxes, and the chance level
    (the mean share of the image the grown boxes cover)."""
    return pointing_figures(*pointing_hits(heatmaps, boxes, margin))


def pointing_figures(hits: Sequence[bool], chance: Sequence[float]) -> dict:
    """The pointing game's figures from :func:`pointing_hits`."""
    if not hits:
        return {"images": 0, "pointing": None, "chance": None}
    return {"images": len(hits), "pointing": float(np.mean(hits)), "chance": float(np.mean(chance))}


def pair_visibility(
    with_lesion: np.ndarray,
    without: np.ndarray,
    boxes: Sequence[Sequence[float]],
    measure: str = "peak",
) -> float:
    """How visible a lesion is: the |with - without| difference inside ``boxes`` over the grey-level
    standard deviation of ``without``. ``measure="peak"`` (the cards') takes the largest difference
    averaged over :data:`VISIBILITY_WINDOW` px squares, so a thin crisp line counts as much as a broad
    one; ``"mean"`` averages it over the boxes, which ranks thin lines below faint broad shadows."""
    if measure not in ("peak", "mean"):
        raise ValueError(f"measure must be 'peak' or 'mean'; got {measure!r}")
    from scipy.ndimage import uniform_filter

    base = np.asarray(without, dtype=np.float64)
    diff = np.abs(np.asarray(with_lesion, dtype=np.float64) - base)
    covered = box_cover(base.shape, boxes, 0.0)
    if not covered.any():
        raise ValueError("the lesion boxes cover no pixel of the image")
    value = (
        uniform_filter(diff, VISIBILITY_WINDOW)[covered].max() if measure == "peak" else diff[covered].mean()
    )
    return float(value) / max(float(base.std()), 1e-6)


def lesion_visibility(ps: PairSet, negative: Sequence[int]) -> np.ndarray:
    """Per image of ``ps``: :func:`pair_visibility` (peak) of its lesion against its group's lesion-free
    image (``negative`` classes); NaN for a lesion-free image and for a lesion image without a box or a
    lesion-free partner."""
    neg = np.isin(ps.labels, list(negative))
    base = ps.lesion_free_twins(negative)
    out = np.full(len(ps.labels), np.nan)
    for i, g in enumerate(ps.groups):
        if neg[i] or not ps.boxes[i] or int(g) not in base:
            continue
        out[i] = pair_visibility(ps.images[i], ps.images[base[int(g)]], ps.boxes[i])
    return out


def set_figures(predictor: Any, ps: PairSet, **options: Any) -> dict:
    """The figures of :func:`set_figures_and_outputs` (same ``options``) without the outputs."""
    return set_figures_and_outputs(predictor, ps, **options)[0]


def set_figures_and_outputs(
    predictor: Any,
    ps: PairSet,
    *,
    margin: float = POINTING_MARGIN,
    cams: int | None = None,
    floor: float = VISIBILITY_FLOOR,
) -> tuple[dict, SetOutputs]:
    """Metrics, paired lift and pointing game of ``predictor`` (a
    :class:`bonecls.inference.predictor.Predictor`) on one pair set, over every lesion and (``visible``)
    over the lesions at or above ``floor`` (:func:`lesion_visibility`); ``cams`` caps the lesion images
    explained (None: all of them). With them, the per-image, per-pair and per-lesion outputs they were
    computed from (:class:`bonecls.training.held_out_intervals.SetOutputs`, for the pooled intervals)."""
    card = predictor.card
    if tuple(card.class_names) != ps.class_names:
        raise ValueError(f"the set's classes {ps.class_names} are not the model's {card.class_names}")
    logits, scope_scores = batch_logits_and_scope(predictor, ps.images)
    probs = softmax_np(logits, card.temperature)
    m = classification_metrics(ps.labels, probs, card.class_names, card.positive_classes)
    pos = is_positive(ps.labels, card.class_names, card.positive_classes)
    score = probs[:, [card.class_names.index(c) for c in card.positive_classes]].sum(axis=1)
    figures: dict[str, Any] = {
        "n": len(ps.labels),
        "roc_auc": m.get("suspicion_auc"),
        "f1_macro": m["f1_macro"],
        "accuracy": m["accuracy"],
        "at_negative_below": binary_rates(pos, score, card.thresholds.negative_below),
        "at_positive_at": binary_rates(pos, score, card.thresholds.positive_at),
    }
    negative = [i for i, c in enumerate(card.class_names) if c not in card.positive_classes]
    sl = suspicion_logits(logits, card.class_names, card.positive_classes, card.temperature)
    pair_groups, rises = pair_rises(sl, ps.labels, ps.groups, negative)
    figures.update(lift_figures(rises))
    lesion = [i for i in range(len(ps.labels)) if pos[i] and ps.boxes[i]][:cams]
    heat = [predictor.explain(ps.images[i], target_class=int(ps.labels[i])).heatmap for i in lesion]
    hits, chance = pointing_hits(heat, [ps.boxes[i] for i in lesion], margin)
    figures.update(pointing_figures(hits, chance))
    predicted = probs.argmax(axis=1)  # each image's answer: its figures, and its threshold at the gate
    outputs = SetOutputs(
        groups=np.asarray(ps.groups),
        labels=np.asarray(ps.labels),
        predicted=predicted,
        positive=pos,
        score=score,
        pair_groups=pair_groups,
        pair_rises=rises,
        hit_groups=np.asarray([ps.groups[i] for i in lesion], dtype=np.int64),
        hits=np.asarray(hits, dtype=bool),
        n_classes=len(card.class_names),
    )
    # scope_scores is None when the guard is off or has no learned part: then there is nothing to say
    figures["scope"] = gate_figures(
        predictor.scope_guard.gate, scope_scores, ps, pos, score, sl, negative, predicted
    )

    vis = lesion_visibility(ps, negative)
    seen = vis[~np.isnan(vis)]
    figures["visibility"] = (
        {
            "p25": float(np.quantile(seen, 0.25)),
            "median": float(np.median(seen)),
            "p75": float(np.quantile(seen, 0.75)),
        }
        if seen.size
        else None
    )
    keep = ~pos | (vis >= floor)  # NaN compares False: a lesion image of unknown visibility is left out
    shown = [(h, i) for h, i in zip(heat, lesion, strict=True) if keep[i]]
    vm = classification_metrics(ps.labels[keep], probs[keep], card.class_names, card.positive_classes)
    visible: dict[str, Any] = {
        "floor": float(floor),
        "n": int(keep.sum()),
        "n_lesions": int((pos & keep).sum()),
        "roc_auc": vm.get("suspicion_auc"),
        "f1_macro": vm["f1_macro"],
    }
    visible.update(paired_lift(sl[keep], ps.labels[keep], ps.groups[keep], negative))
    visible.update(pointing_game([h for h, _ in shown], [ps.boxes[i] for _, i in shown], margin))
    figures["visible"] = visible
    return figures, outputs


def batch_logits_and_scope(
    predictor: Any, images: np.ndarray, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw logits (N, classes) of ``predictor`` on uint8 images, through its own preprocessing, and the
    learned scope scores (N,) of the same forward passes (None when its gate has no learned part)."""
    import torch

    rows, scores = [], []
    for start in range(0, len(images), batch_size):
        x = torch.cat([predictor.preprocess(img) for img in images[start : start + batch_size]])
        logits, features = predictor.logits_and_features(x)
        rows.append(logits.numpy())
        scores.append(predictor.scope_guard.scores(features))  # None when the guard has no learned part
    learned = all(s is not None for s in scores) and scores
    return np.concatenate(rows).astype(np.float64), (np.concatenate(scores) if learned else None)


def gate_figures(
    gate: Any,
    scores: np.ndarray | None,
    ps: PairSet,
    pos: np.ndarray,
    score: np.ndarray,
    rise: np.ndarray,
    negative: Sequence[int],
    answers: np.ndarray | None = None,
) -> dict | None:
    """What a learned scope ``gate`` (:class:`bonecls.scope.gate.ScopeGate`) does with a held-out set,
    from its ``scores`` of the set's images (None without a gate) and the model's ``answers`` (argmax
    class of each image: its threshold on a card with answer thresholds; None for detectors): the share
    of images it answers, of lesion-free and of lesion images (``pos``), and over the answered images
    only the ROC-AUC of ``score`` and the paired lift of ``rise`` (pairs whose two images are both
    answered). Shared by the classifiers (suspicion, suspicion logit) and the detectors (top box score
    for both)."""
    if gate is None or scores is None:
        return None
    answered = gate.in_scope(scores, answers)
    pair = paired_lift(rise[answered], ps.labels[answered], ps.groups[answered], negative)
    return {
        "threshold": float(gate.threshold),
        "by_answer": gate.section.answer_thresholds is not None and answers is not None,
        "n": len(answered),
        "n_lesion": int(pos.sum()),
        "answered": float(answered.mean()),
        "answered_lesion_free": float(answered[~pos].mean()) if (~pos).any() else None,
        "answered_lesion": float(answered[pos].mean()) if pos.any() else None,
        "n_answered": int(answered.sum()),
        "roc_auc_answered": rank_auc(pos[answered], score[answered]),
        "lift_answered": pair["lift"],
        "pairs_answered": pair["pairs"],
    }


def pooled_scope(per_set: dict[str, dict]) -> dict | None:
    """The sets' ``scope`` figures pooled: image-weighted shares, answered-image-weighted ROC-AUC and
    pair-weighted lift; None when no set has a learned gate."""
    rows = [f["scope"] for f in per_set.values() if f.get("scope")]
    if not rows:
        return None

    def mean(key: str, weight: Callable[[dict], float]) -> float | None:
        return weighted_mean(rows, key, weight)

    return {
        "threshold": rows[0]["threshold"],
        "by_answer": bool(rows[0].get("by_answer")),
        "n": sum(r["n"] for r in rows),
        "answered": mean("answered", lambda r: r["n"]),
        "answered_lesion_free": mean("answered_lesion_free", lambda r: r["n"] - r["n_lesion"]),
        "answered_lesion": mean("answered_lesion", lambda r: r["n_lesion"]),
        "n_answered": sum(r["n_answered"] for r in rows),
        "roc_auc_answered": mean("roc_auc_answered", lambda r: r["n_answered"]),
        "lift_answered": mean("lift_answered", lambda r: r["pairs_answered"]),
        "pairs_answered": sum(r["pairs_answered"] for r in rows),
    }


def pooled_figures(per_set: dict[str, dict]) -> dict:
    """The sets' figures pooled: image-weighted means of the rates (pairs for the lift, explained
    images for the pointing game) and the smallest ROC-AUC, so one weak variant is not hidden."""

    def mean(key: str, weight: str) -> float | None:
        return weighted_mean(per_set.values(), key, lambda f: f.get(weight))

    aucs = [f["roc_auc"] for f in per_set.values() if f.get("roc_auc") is not None]
    out: dict[str, Any] = {
        "roc_auc_mean": mean("roc_auc", "n"),
        "roc_auc_min": min(aucs) if aucs else None,
        "f1_macro_mean": mean("f1_macro", "n"),
        "lift": mean("lift", "pairs"),
        "pairs": sum(int(f.get("pairs") or 0) for f in per_set.values()),
        "pointing": mean("pointing", "images"),
        "chance": mean("chance", "images"),
    }
    scope = pooled_scope(per_set)
    if scope:
        out["scope"] = scope
    visible = {name: f["visible"] for name, f in per_set.items() if f.get("visible")}
    if visible:
        out["visible"] = {"floor": next(iter(visible.values()))["floor"], **pooled_figures(visible)}
    return out


def held_out_report(
    predictor: Any,
    held_out: HeldOut,
    n_pairs: int,
    *,
    seed: int = EVAL_SEED,
    cache_dir: Path | None = None,
    cams: int | None = None,
    log: Callable[[str], None] = lambda _m: None,
    outputs: list[SetOutputs] | None = None,
) -> dict:
    """The card's ``evaluation.held_out_variants`` section: per held-out set and pooled. ``outputs``: a
    list that receives each set's :class:`SetOutputs` (for a paired comparison with another model)."""
    task = predictor.card.task
    per_set, kept = {}, []
    for ps in pair_sets(task, held_out, n_pairs, seed, cache_dir, log):
        per_set[ps.name], set_outputs = set_figures_and_outputs(predictor, ps, cams=cams)
        kept.append(set_outputs)
        log(f"{predictor.card.id} {ps.name}: {figure_line(per_set[ps.name])}")
    for i, (figures, set_outputs) in enumerate(zip(per_set.values(), kept, strict=True)):
        figures["ci95"] = set_intervals(set_outputs, seed=1 + i)  # each set's own figures too
    recipe = "bonecls phantom --recipe varied --paired, one held-out variant per set"
    report = {
        **held_out.report_basis(recipe, seed),
        "pointing_margin_px": POINTING_MARGIN,
        "cam": "gradcam, true class",
        "sets": per_set,
        "pooled": {**pooled_figures(per_set), **pooled_intervals(kept)},
    }
    if outputs is not None:
        outputs.extend(kept)
    return report


def figure_text(f: dict, key: str) -> str:
    """``f[key]`` to three decimals, or n/a; with its 95% interval where ``f["ci95"]`` has one."""
    v = f.get(key)
    interval = (f.get("ci95") or {}).get(key)
    return ("n/a" if v is None else f"{v:.3f}") + (
        f" [{interval[0]:.3f}-{interval[1]:.3f}]" if interval else ""
    )


def scope_line(f: dict) -> str:
    """What the scope gate does with the set (``f["scope"]``) as a clause for a figure line ("" without)."""
    sc = f.get("scope")
    if not sc:
        return ""
    return (
        f"; the scope gate answers {figure_text(sc, 'answered')} "
        f"(lesion-free {figure_text(sc, 'answered_lesion_free')}, "
        f"lesion {figure_text(sc, 'answered_lesion')}), "
        f"answered only: ROC-AUC {figure_text(sc, 'roc_auc_answered')}, "
        f"lift {figure_text(sc, 'lift_answered')} over {sc.get('pairs_answered', 0)} pairs"
    )


def figure_line(f: dict) -> str:
    """ROC-AUC, macro-F1, lift, median logit rise and pointing of one set (or pooled), what the scope
    gate does with its images, and the same over the visible lesions, on one line."""

    def g(key: str) -> str:
        return figure_text(f, key)

    auc = g("roc_auc") if "roc_auc" in f else f"{g('roc_auc_mean')} (min {g('roc_auc_min')})"
    f1 = g("f1_macro") if "f1_macro" in f else g("f1_macro_mean")
    rise = f", median logit rise {g('median_logit_rise')}" if "median_logit_rise" in f else ""
    line = (
        f"ROC-AUC {auc}, macro-F1 {f1}, lift {g('lift')} over {f.get('pairs', 0)} pairs{rise}, "
        f"pointing {g('pointing')} (chance {g('chance')})"
    )
    line += scope_line(f)
    if f.get("visible"):
        v = f["visible"]
        line += f"; visible lesions only (visibility >= {v['floor']:g}): {figure_line(v)}"
    return line
