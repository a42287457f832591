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
from collections.abc import Sequence

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
