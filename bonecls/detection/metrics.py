"""Detection metrics in plain numpy: IoU, average precision, mAP, the RSNA Pneumonia score and FROC.

Conventions (all functions):

* Boxes are ``(N, 4)`` arrays ``x0, y0, x1, y1`` in pixels with **continuous** coordinates: the area of a
  box is ``(x1 - x0) * (y1 - y0)`` (no VOC-style ``+ 1``). Use :func:`xywh_to_xyxy` for RSNA's
  ``x, y, width, height`` rows. A degenerate box (zero width or height) has zero area and IoU 0 with all.
* A dataset is given as parallel per-image sequences: ``pred_boxes[i]`` (N_i, 4), ``pred_scores[i]``
  (N_i,) and ``gt_boxes[i]`` (M_i, 4). An image without predictions or ground truth has an empty array
  (``np.zeros((0, 4))``, or ``[]``).
* Matching is greedy in descending confidence (ties keep input order; a stable sort): each prediction is
  matched to the not-yet-matched ground-truth box it overlaps most; it is a true positive if that IoU
  passes the threshold, otherwise a false positive. Each ground-truth box is matched at most once. This is
  COCO's rule (VOC differs only in that a prediction whose best box is already taken is not offered
  the next best one).

Average precision (:func:`average_precision`) accumulates the matches of all images at one IoU threshold
(a match needs ``IoU >= threshold``, as in COCO) and integrates the precision/recall curve:

* ``interpolation="coco101"`` (default): COCO-style 101-point interpolation — the precision envelope
  (precision made monotone non-increasing from the right) is sampled at recall 0, 0.01, ..., 1 and
  averaged; a recall the detector never reaches counts as precision 0. Ultralytics' validator uses the
  same 101-point rule, so mAP@0.5 here is comparable with its logs.
* ``interpolation="all-point"``: VOC 2010+ style exact area under the same precision envelope.

The RSNA Pneumonia Detection Challenge score (:func:`rsna_image_score`, :func:`rsna_score`) follows the
challenge's evaluation page: for one image and each IoU threshold t in 0.40, 0.45, ..., 0.75 the
"precision" is ``TP(t) / (TP(t) + FP(t) + FN(t))``, predictions being checked for a match in descending
confidence; the image's score is the mean over the eight thresholds, and the dataset score is the mean
over images. A match needs an IoU strictly **above** t (the page's wording, "an IoU above the
threshold"). An image with no ground-truth box and at least one predicted box scores 0 and counts; an
image with neither ground truth nor predictions is **excluded** from the mean (``rsna_image_score``
returns ``None``): the page says predictions on an empty image make it "included" with a score of zero,
and the community reference implementation of the metric returns ``None`` for empty/empty images and
leaves them out. Because every prediction counts as a false positive unless it matches, this score
depends on the confidence threshold used to keep boxes; choose it on validation data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = [
    "FROC_FP_RATES",
    "RSNA_IOU_THRESHOLDS",
    "average_precision",
    "box_iou",
    "froc",
    "match_predictions",
    "mean_average_precision",
    "precision_recall_counts",
    "rsna_image_score",
    "rsna_score",
    "xywh_to_xyxy",
]

RSNA_IOU_THRESHOLDS: tuple[float, ...] = (0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75)
COCO_IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))

Interpolation = Literal["coco101", "all-point"]


def _as_boxes(boxes) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if arr.ndim == 1 and arr.shape[0] == 4:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"Boxes must have shape (N, 4), got {arr.shape}.")
    return arr


def _as_scores(scores, n: int) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"Got {arr.shape[0]} scores for {n} boxes.")
    return arr


def xywh_to_xyxy(boxes) -> np.ndarray:
    """Convert ``x, y, width, height`` rows (RSNA's CSV layout, x, y top-left) to ``x0, y0, x1, y1``."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    arr = arr.reshape(-1, 4)
    return np.concatenate([arr[:, :2], arr[:, :2] + arr[:, 2:]], axis=1)


def box_iou(boxes1, boxes2) -> np.ndarray:
    """Pairwise IoU of two sets of ``x0, y0, x1, y1`` boxes: an ``(N, M)`` float64 array in [0, 1]."""
    a, b = _as_boxes(boxes1), _as_boxes(boxes2)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou


def match_predictions(
    pred_boxes, pred_scores, gt_boxes, iou_threshold: float, *, strict: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of one image's predictions to its ground truth at one IoU threshold.

    Returns ``(order, is_tp)``: ``order`` is the prediction indices sorted by descending confidence
    (stable) and ``is_tp[k]`` tells whether prediction ``order[k]`` matched a ground-truth box. A match
    needs ``IoU >= iou_threshold`` (``IoU > iou_threshold`` when ``strict``).
    """
    p = _as_boxes(pred_boxes)
    s = _as_scores(pred_scores, len(p))
    g = _as_boxes(gt_boxes)
    order = np.argsort(-s, kind="stable")
    is_tp = np.zeros(len(p), dtype=bool)
    if len(p) == 0 or len(g) == 0:
        return order, is_tp
    iou = box_iou(p[order], g)
    taken = np.zeros(len(g), dtype=bool)
    for k in range(len(order)):
        cand = np.where(taken, -1.0, iou[k])
        j = int(np.argmax(cand))
        best = cand[j]
        if best < 0:
            break  # every ground-truth box is already matched
        ok = best > iou_threshold if strict else best >= iou_threshold
        if ok:
            taken[j] = True
            is_tp[k] = True
    return order, is_tp


def _check_dataset(pred_boxes, pred_scores, gt_boxes) -> None:
    if not (len(pred_boxes) == len(pred_scores) == len(gt_boxes)):
        raise ValueError(
            f"Per-image sequences differ in length: {len(pred_boxes)} prediction box sets, "
            f"{len(pred_scores)} score sets, {len(gt_boxes)} ground-truth sets."
        )


def _interpolated_ap(recall: np.ndarray, precision: np.ndarray, interpolation: Interpolation) -> float:
    """Area under the precision envelope of a PR curve (points in descending-confidence order)."""
    if interpolation == "coco101":
        # COCO: precision made monotone from the right, read at the first point whose recall reaches r
        env = np.flip(np.maximum.accumulate(np.flip(precision)))
        idx = np.searchsorted(recall, np.linspace(0.0, 1.0, 101), side="left")
        vals = np.where(idx < len(env), env[np.minimum(idx, len(env) - 1)], 0.0)
        return float(vals.mean())
    if interpolation == "all-point":
        # VOC 2010+: exact area under the envelope of the curve extended by (0, 1) and (1, 0)
        mrec = np.concatenate([[0.0], recall, [1.0]])
        mpre = np.flip(np.maximum.accumulate(np.flip(np.concatenate([[1.0], precision, [0.0]]))))
        i = np.where(mrec[1:] != mrec[:-1])[0]
        return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))
    raise ValueError(f"Unknown interpolation {interpolation!r}; use 'coco101' or 'all-point'.")


def average_precision(
    pred_boxes: Sequence,
    pred_scores: Sequence,
    gt_boxes: Sequence,
    iou_threshold: float = 0.5,
    interpolation: Interpolation = "coco101",
) -> float:
    """Single-class average precision over a dataset at one IoU threshold.

    Returns ``nan`` when the dataset holds no ground-truth box (AP is undefined then), 0.0 when there
    are ground-truth boxes but no prediction.
    """
    _check_dataset(pred_boxes, pred_scores, gt_boxes)
    all_scores: list[np.ndarray] = []
    all_tp: list[np.ndarray] = []
    n_gt = 0
    for pb, ps, gb in zip(pred_boxes, pred_scores, gt_boxes, strict=True):
        g = _as_boxes(gb)
        n_gt += len(g)
        order, is_tp = match_predictions(pb, ps, g, iou_threshold)
        s = _as_scores(ps, len(_as_boxes(pb)))
        all_scores.append(s[order])
        all_tp.append(is_tp)
    if n_gt == 0:
        return float("nan")
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    tp = np.concatenate(all_tp) if all_tp else np.zeros(0, dtype=bool)
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp = tp[order]
    ctp = np.cumsum(tp)
    cfp = np.cumsum(~tp)
    recall = ctp / n_gt
    precision = ctp / (ctp + cfp)
    return _interpolated_ap(recall, precision, interpolation)


def mean_average_precision(
    pred_boxes: Sequence,
    pred_scores: Sequence,
    gt_boxes: Sequence,
    *,
    pred_labels: Sequence | None = None,
    gt_labels: Sequence | None = None,
    iou_thresholds: float | Sequence[float] = 0.5,
    interpolation: Interpolation = "coco101",
) -> float:
    """mAP: AP averaged over the classes that have ground truth, and over ``iou_thresholds``.

    ``iou_thresholds=0.5`` gives mAP@0.5; ``COCO_IOU_THRESHOLDS`` gives mAP@[.5:.95]. Without labels all
    boxes are one class (the pneumonia "opacity" detector), so mAP equals AP. Returns ``nan`` when no
    ground truth exists at all.
    """
    _check_dataset(pred_boxes, pred_scores, gt_boxes)
    if np.isscalar(iou_thresholds):
        thresholds = [float(iou_thresholds)]
    else:
        thresholds = [float(t) for t in iou_thresholds]
    if (pred_labels is None) != (gt_labels is None):
        raise ValueError("Give both pred_labels and gt_labels, or neither.")
    if pred_labels is None:
        per_t = [average_precision(pred_boxes, pred_scores, gt_boxes, t, interpolation) for t in thresholds]
        return float(np.mean(per_t))
    pl = [np.asarray(x).reshape(-1) for x in pred_labels]
    gl = [np.asarray(x).reshape(-1) for x in gt_labels]
    classes = sorted({int(c) for arr in gl for c in arr})
    if not classes:
        return float("nan")
    aps = []
    for c in classes:
        pb = [_as_boxes(b)[lab == c] for b, lab in zip(pred_boxes, pl, strict=True)]
        ps = [
            np.asarray(s, dtype=np.float64).reshape(-1)[lab == c]
            for s, lab in zip(pred_scores, pl, strict=True)
        ]
        gb = [_as_boxes(b)[lab == c] for b, lab in zip(gt_boxes, gl, strict=True)]
        aps.append(np.mean([average_precision(pb, ps, gb, t, interpolation) for t in thresholds]))
    return float(np.mean(aps))


def precision_recall_counts(
    pred_boxes: Sequence, pred_scores: Sequence, gt_boxes: Sequence, iou_threshold: float = 0.5
) -> dict[str, int]:
    """Total TP / FP / FN over a dataset at one IoU threshold (precision and recall at a fixed confidence)."""
    _check_dataset(pred_boxes, pred_scores, gt_boxes)
    tp = fp = fn = 0
    for pb, ps, gb in zip(pred_boxes, pred_scores, gt_boxes, strict=True):
        _, is_tp = match_predictions(pb, ps, gb, iou_threshold)
        n_tp = int(is_tp.sum())
        tp += n_tp
        fp += len(is_tp) - n_tp
        fn += len(_as_boxes(gb)) - n_tp
    return {"tp": tp, "fp": fp, "fn": fn}


def rsna_image_score(
    pred_boxes, pred_scores, gt_boxes, thresholds: Sequence[float] = RSNA_IOU_THRESHOLDS
) -> float | None:
    """RSNA challenge score of one image; ``None`` when the image has neither ground truth nor predictions.

    For each threshold t: ``TP / (TP + FP + FN)`` with predictions checked in descending confidence and a
    match needing ``IoU > t``; the mean over thresholds is returned. No ground truth but some prediction
    gives 0.0.
    """
    p = _as_boxes(pred_boxes)
    g = _as_boxes(gt_boxes)
    s = _as_scores(pred_scores, len(p))
    if len(p) == 0 and len(g) == 0:
        return None
    if len(g) == 0 or len(p) == 0:
        return 0.0
    vals = []
    for t in thresholds:
        _, is_tp = match_predictions(p, s, g, t, strict=True)
        tp = int(is_tp.sum())
        fp = len(p) - tp
        fn = len(g) - tp
        vals.append(tp / (tp + fp + fn))
    return float(np.mean(vals))


def rsna_score(
    pred_boxes: Sequence,
    pred_scores: Sequence,
    gt_boxes: Sequence,
    thresholds: Sequence[float] = RSNA_IOU_THRESHOLDS,
) -> float:
    """Mean :func:`rsna_image_score` over the images that are not excluded; ``nan`` if all are excluded."""
    _check_dataset(pred_boxes, pred_scores, gt_boxes)
    scores = [
        rsna_image_score(pb, ps, gb, thresholds)
        for pb, ps, gb in zip(pred_boxes, pred_scores, gt_boxes, strict=True)
    ]
    kept = [x for x in scores if x is not None]
    return float(np.mean(kept)) if kept else float("nan")


#: False positives per image at which :func:`froc` reports the lesion sensitivity (LUNA16's seven rates).
FROC_FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def froc(
    pred_boxes: Sequence,
    pred_scores: Sequence,
    gt_boxes: Sequence,
    iou_threshold: float = 0.5,
    fp_rates: Sequence[float] = FROC_FP_RATES,
) -> dict:
    """Lesion-level FROC over a dataset: the share of ground-truth boxes found against the false-positive
    boxes per image, as the confidence cut falls.

    Matching is :func:`match_predictions` per image, class-agnostic (a lesion is found when any box
    overlaps it by ``IoU >= iou_threshold``; a second box on a found lesion is a false positive). The
    curve is evaluated only between distinct confidences (boxes of equal confidence enter together).
    Returns ``sensitivity`` at each rate of ``fp_rates`` (the best reached with at most that many false
    positives per image), the confidence cut that reaches it (``cut``; None where nothing is kept),
    ``cpm`` (their mean), and the counts. A dataset without lesions has sensitivities None.
    """
    _check_dataset(pred_boxes, pred_scores, gt_boxes)
    n_images = len(gt_boxes)
    n_lesions = int(sum(len(_as_boxes(g)) for g in gt_boxes))
    scores, hits = [], []
    for p, s, g in zip(pred_boxes, pred_scores, gt_boxes, strict=True):
        order, is_tp = match_predictions(p, s, g, iou_threshold)
        scores.append(_as_scores(s, len(_as_boxes(p)))[order])
        hits.append(is_tp)
    score = np.concatenate(scores) if scores else np.zeros(0)
    tp = np.concatenate(hits) if hits else np.zeros(0, dtype=bool)
    order = np.argsort(-score, kind="stable")
    score, tp = score[order], tp[order]
    last_of_tie = np.r_[score[1:] != score[:-1], True] if len(score) else np.zeros(0, dtype=bool)
    sens_curve = np.r_[0.0, np.cumsum(tp)[last_of_tie] / max(n_lesions, 1)]
    fp_curve = np.r_[0.0, np.cumsum(~tp)[last_of_tie] / max(n_images, 1)]
    cuts = np.r_[np.inf, score[last_of_tie]]
    out: dict = {
        "iou_threshold": float(iou_threshold),
        "n_images": n_images,
        "n_lesions": n_lesions,
        "sensitivity": {},
        "cut": {},
    }
    for rate in fp_rates:
        ok = np.flatnonzero(fp_curve <= rate + 1e-12)  # fp_curve rises, so ok is a prefix
        k = int(ok[-1])
        key = f"{rate:g}"
        out["sensitivity"][key] = float(sens_curve[k]) if n_lesions else None
        out["cut"][key] = None if not np.isfinite(cuts[k]) else float(cuts[k])
    values = [v for v in out["sensitivity"].values() if v is not None]
    out["cpm"] = float(np.mean(values)) if values else None
    return out
