"""Classification metrics on gathered predictions (exact: computed once over every example).

``classification_metrics(y_true, probs, class_names, positive_classes)`` returns a JSON-ready dict:
accuracy, balanced accuracy, per-class precision/recall/F1, macro F1, ROC-AUC (binary: of the positive
class; multiclass: one-vs-rest macro) and the "suspicion" view the app uses -- the sum of the positive
classes' probabilities against "any positive class" -- with its AUC, the confusion matrix and counts.
Undefined values (a class absent from ``y_true``) are ``None``, never NaN, so the JSON stays valid.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence

import numpy as np


def _f(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def suspicion(probs: np.ndarray, class_names: Sequence[str], positive_classes: Sequence[str]) -> np.ndarray:
    """Sum of the positive classes' probabilities per example (what the card's thresholds apply to)."""
    cols = [list(class_names).index(c) for c in positive_classes]
    return np.asarray(probs)[:, cols].sum(axis=1)


def is_positive(
    y_true: np.ndarray, class_names: Sequence[str], positive_classes: Sequence[str]
) -> np.ndarray:
    pos = [list(class_names).index(c) for c in positive_classes]
    return np.isin(np.asarray(y_true), pos)


def roc_auc(y_true_binary: np.ndarray, score: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y_true_binary).astype(int)
    if len(y) == 0 or y.min() == y.max():
        return None
    return _f(roc_auc_score(y, score))


def classification_metrics(
    y_true: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    positive_classes: Sequence[str] | None = None,
) -> dict:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    k = len(class_names)
    if p.ndim != 2 or p.shape != (len(y), k):
        raise ValueError(f"probs must be (n, {k}); got {p.shape} for {len(y)} labels.")
    pred = p.argmax(axis=1)
    labels = list(range(k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prec, rec, f1, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    present = support > 0
    cm = confusion_matrix(y, pred, labels=labels)
    out: dict = {
        "n": len(y),
        "accuracy": _f((pred == y).mean()) if len(y) else None,
        "balanced_accuracy": _f(rec[present].mean()) if present.any() else None,
        "precision_macro": _f(prec.mean()),
        "recall_macro": _f(rec.mean()),
        "f1_macro": _f(f1.mean()),
        "per_class": {
            c: {"precision": _f(prec[i]), "recall": _f(rec[i]), "f1": _f(f1[i]), "support": int(support[i])}
            for i, c in enumerate(class_names)
        },
        "confusion_matrix": cm.tolist(),
        "class_names": list(class_names),
    }
    if k == 2:
        out["precision"], out["recall"], out["f1"] = _f(prec[1]), _f(rec[1]), _f(f1[1])
        out["roc_auc"] = roc_auc(y == 1, p[:, 1])
    else:
        if present.all() and len(y):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pn = p / p.sum(axis=1, keepdims=True)
                out["roc_auc"] = _f(roc_auc_score(y, pn, multi_class="ovr", average="macro", labels=labels))
        else:
            out["roc_auc"] = None
        out["roc_auc_per_class"] = {c: roc_auc(y == i, p[:, i]) for i, c in enumerate(class_names)}
    if positive_classes:
        s = suspicion(p, class_names, positive_classes)
        pos = is_positive(y, class_names, positive_classes)
        out["suspicion_auc"] = roc_auc(pos, s)
        out["positive_classes"] = list(positive_classes)
    return out


def binary_rates(pos: np.ndarray, score: np.ndarray, threshold: float) -> dict:
    """Sensitivity/specificity of ``score >= threshold`` against boolean ``pos``."""
    pos = np.asarray(pos, dtype=bool)
    flag = np.asarray(score) >= threshold
    tp, fn = int((flag & pos).sum()), int((~flag & pos).sum())
    tn, fp = int((~flag & ~pos).sum()), int((flag & ~pos).sum())
    return {
        "threshold": float(threshold),
        "sensitivity": _f(tp / (tp + fn)) if tp + fn else None,
        "specificity": _f(tn / (tn + fp)) if tn + fp else None,
        "tp": tp,
        "fn": fn,
        "tn": tn,
        "fp": fp,
    }


def softmax_np(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    p = softmax_np(logits, temperature)
    return float(-np.log(np.clip(p[np.arange(len(y)), np.asarray(y)], 1e-12, 1)).mean())


# ----------------------------------------------------------------------- headline metrics with 95% CIs

#: The card's operating points: "doubt" flags anything not confidently negative (score >= the card's
#: ``negative_below``, chosen for a target sensitivity), "positive" flags a finding (score >= its
#: ``positive_at``, chosen for a target specificity).
OPERATING_POINTS = ("doubt", "positive")
HEADLINE = (
    "roc_auc",
    "pr_auc",
    "sensitivity_doubt",
    "specificity_doubt",
    "sensitivity_positive",
    "specificity_positive",
    "accuracy",
    "f1_macro",
)
N_BOOTSTRAP = 1000


def rank_auc(pos: np.ndarray, score: np.ndarray) -> float | None:
    """ROC-AUC as the Mann-Whitney statistic on average ranks (ties count half): the value sklearn's
    ``roc_auc_score`` gives, at a fraction of its cost inside a 1,000-fold bootstrap."""
    from scipy.stats import rankdata

    pos = np.asarray(pos, dtype=bool)
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if not n1 or not n0:
        return None
    ranks = rankdata(score)
    return _f((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def weighted_mean(rows: Iterable[dict], key: str, weight: Callable[[dict], float]) -> float | None:
    """The mean of ``row[key]`` weighted by ``weight(row)``, over the rows that have the figure and a
    non-zero weight (None when none has): how held-out sets' figures are pooled."""
    kept = [(r[key], weight(r)) for r in rows if r.get(key) is not None and weight(r)]
    return float(sum(v * w for v, w in kept) / sum(w for _, w in kept)) if kept else None


def macro_f1(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    """Macro-F1 over ``k`` classes from the confusion counts (a class never true nor predicted: F1 0, as
    sklearn's ``zero_division=0``)."""
    cm = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(float)
    denom = cm.sum(axis=0) + cm.sum(axis=1)
    return float(np.mean(np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)))


def _headline_point(
    y: np.ndarray, probs: np.ndarray, pos: np.ndarray, score: np.ndarray, thresholds: dict[str, float]
) -> dict[str, float | None]:
    """The headline figures of one (re)sample; ``None`` where undefined (a class absent)."""
    from sklearn.metrics import average_precision_score

    out: dict[str, float | None] = {"roc_auc": rank_auc(pos, score)}
    out["pr_auc"] = _f(average_precision_score(pos, score)) if pos.any() and not pos.all() else None
    for point in OPERATING_POINTS:
        rates = binary_rates(pos, score, thresholds[point])
        out[f"sensitivity_{point}"] = rates["sensitivity"]
        out[f"specificity_{point}"] = rates["specificity"]
    pred = probs.argmax(axis=1)
    out["accuracy"] = _f((pred == y).mean()) if len(y) else None
    out["f1_macro"] = macro_f1(y, pred, probs.shape[1]) if len(y) else None
    return out


def _resample(n: int, groups: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of one bootstrap resample: of items, or of whole groups (patients/studies) with all their
    items, so correlated views of one patient are not counted as independent evidence."""
    if groups is None:
        return rng.integers(0, n, n)
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    picks = rng.integers(0, len(uniq), len(uniq))
    return np.concatenate([members[g] for g in picks])


def headline_metrics(
    y_true: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    positive_classes: Sequence[str],
    thresholds: dict[str, float],
    *,
    groups: Sequence[str] | np.ndarray | None = None,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
) -> dict[str, dict]:
    """Every headline metric with its 95% percentile-bootstrap confidence interval.

    ``thresholds`` maps ``"doubt"`` and ``"positive"`` to suspicion cuts (the card's ``negative_below``
    and ``positive_at``). ROC-AUC, PR-AUC (average precision) and the sensitivities/specificities are
    of "any positive class" against the suspicion score; accuracy and macro-F1 of the argmax class.
    With ``groups`` the bootstrap resamples whole groups (a patient's images together). Returns
    ``{metric: {"value", "ci95": [low, high]}}`` plus ``"bootstrap": {"resamples", "unit", "seed"}``;
    an interval is ``None`` where fewer than half the resamples define the metric.
    """
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    score = suspicion(p, class_names, positive_classes)
    pos = is_positive(y, class_names, positive_classes)
    g = None if groups is None else np.asarray([str(v) for v in groups])
    point = _headline_point(y, p, pos, score, thresholds)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in HEADLINE}
    for _ in range(n_bootstrap):
        idx = _resample(len(y), g, rng)
        for k, v in _headline_point(y[idx], p[idx], pos[idx], score[idx], thresholds).items():
            if v is not None:
                draws[k].append(v)
    out: dict[str, dict] = {}
    for k in HEADLINE:
        ok = len(draws[k]) >= n_bootstrap / 2 and point[k] is not None
        ci = [float(np.percentile(draws[k], 2.5)), float(np.percentile(draws[k], 97.5))] if ok else None
        out[k] = {"value": point[k], "ci95": ci}
    out["bootstrap"] = {
        "resamples": n_bootstrap,
        "unit": "group" if g is not None else "image",
        "seed": seed,
        "method": "percentile",
    }
    out["thresholds"] = {k: float(thresholds[k]) for k in OPERATING_POINTS}
    out["n"] = len(y)
    out["n_positive"] = int(pos.sum())
    return out


def format_headline(metrics: dict[str, dict]) -> str:
    """``ROC-AUC 0.91 (0.87-0.94), ...`` -- one line a reader compares across cards."""
    names = {
        "roc_auc": "ROC-AUC",
        "pr_auc": "PR-AUC",
        "sensitivity_doubt": "sens@doubt",
        "specificity_doubt": "spec@doubt",
        "sensitivity_positive": "sens@positive",
        "specificity_positive": "spec@positive",
        "accuracy": "accuracy",
        "f1_macro": "macro-F1",
    }
    parts = []
    for key, label in names.items():
        m = metrics.get(key) or {}
        if m.get("value") is None:
            parts.append(f"{label} n/a")
        elif m.get("ci95"):
            parts.append(f"{label} {m['value']:.3f} ({m['ci95'][0]:.3f}-{m['ci95'][1]:.3f})")
        else:
            parts.append(f"{label} {m['value']:.3f}")
    return ", ".join(parts)


# --------------------------------------------------------------------------------------- study level

#: How image suspicions become a study's: the rule's name is written on the card.
STUDY_RULES = {
    "max": "a study's suspicion is the highest suspicion of its images (one suspicious view flags it)",
    "mean": "a study's suspicion is the mean suspicion of its images",
}


def study_level(
    y_true: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    studies: Sequence[str],
    class_names: Sequence[str],
    positive_classes: Sequence[str],
    rule: str = "max",
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per study: (labels, probabilities, study keys), aggregated by ``rule``.

    The study's probabilities are those of its most suspicious image (``max``) or the mean over its
    images (``mean``); its label is the highest label among its images (a study is positive when any
    image is; MURA's images all carry their study's label anyway). The result feeds
    :func:`headline_metrics` unchanged, so study metrics carry the same confidence intervals.
    """
    if rule not in STUDY_RULES:
        raise ValueError(f"Unknown study rule {rule!r}; expected one of {', '.join(STUDY_RULES)}.")
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    score = suspicion(p, class_names, positive_classes)
    keys = [str(s) for s in studies]
    order = list(dict.fromkeys(keys))
    members: dict[str, list[int]] = {k: [] for k in order}
    for i, k in enumerate(keys):
        members[k].append(i)
    labels = np.empty(len(order), dtype=np.int64)
    out = np.empty((len(order), p.shape[1]))
    for j, k in enumerate(order):
        idx = np.asarray(members[k])
        labels[j] = y[idx].max()
        out[j] = p[idx[np.argmax(score[idx])]] if rule == "max" else p[idx].mean(axis=0)
    return labels, out, order
