"""Temperature scaling, the card's decision thresholds, ECE and reliability bins.

* :func:`fit_temperature` -- one scalar ``T`` minimizing the NLL of ``softmax(logits / T)`` on the
  validation logits (LBFGS on ``log T``, so ``T > 0``; Guo et al. 2017). It never changes the argmax.
* :func:`choose_thresholds` -- on the (calibrated) suspicion = sum of the positive classes'
  probabilities: ``negative_below`` is the highest cut that still keeps ``>= sensitivity`` of the
  validation positives at or above it (a "negative" call misses few findings), ``positive_at`` the
  lowest cut with ``>= specificity`` of the validation negatives below it. Scores in between are
  "uncertain". When the two targets can both be met by one cut (well separated classes) the two
  thresholds meet in the middle of the gap, so always ``negative_below <= positive_at``.
* :func:`reliability` -- ECE (equal-width confidence bins on the top-class probability) and the
  bins for a reliability diagram.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from bonecls.training.metrics import binary_rates, is_positive, nll, softmax_np, suspicion

T_MIN, T_MAX = 0.05, 20.0  # a separable validation set drives T -> 0; keep it finite


def fit_temperature(
    logits: np.ndarray | torch.Tensor, labels: Sequence[int] | np.ndarray, max_iter: int = 100
) -> float:
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    if len(y) == 0:
        return 1.0
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp().clamp(T_MIN, T_MAX))
    # LBFGS on a flat or separable problem may wander: keep T only if it does not make NLL worse.
    return t if nll(z.numpy(), y.numpy(), t) <= nll(z.numpy(), y.numpy(), 1.0) + 1e-12 else 1.0


def choose_thresholds(
    score: np.ndarray,
    positive: np.ndarray,
    sensitivity: float = 0.95,
    specificity: float = 0.95,
) -> dict:
    """``{"negative_below", "positive_at"}`` on ``score`` in [0, 1] plus what they achieve on this set."""
    s = np.clip(np.asarray(score, dtype=np.float64), 0.0, 1.0)
    pos = np.asarray(positive, dtype=bool)
    sp, sn = np.sort(s[pos]), np.sort(s[~pos])
    notes = []
    if len(sp):
        k = int(np.floor((1.0 - sensitivity) * len(sp) + 1e-9))
        neg_below = float(sp[min(k, len(sp) - 1)])
    else:
        neg_below = 0.5
        notes.append("no positives in the calibration set")
    if len(sn):
        m = int(np.ceil(specificity * len(sn) - 1e-9))
        pos_at = float(np.nextafter(sn[max(m, 1) - 1], np.inf))
    else:
        pos_at = 0.5
        notes.append("no negatives in the calibration set")
    if neg_below > pos_at:  # one cut meets both targets: meet in the middle of [pos_at, neg_below]
        mid = 0.5 * (neg_below + pos_at)
        neg_below = pos_at = mid
        notes.append("classes separated on the calibration set: one cut, no uncertain band")
    neg_below, pos_at = float(np.clip(neg_below, 0, 1)), float(np.clip(pos_at, 0, 1))
    return {
        "negative_below": neg_below,
        "positive_at": pos_at,
        "targets": {"sensitivity": sensitivity, "specificity": specificity},
        "at_negative_below": binary_rates(pos, s, neg_below),
        "at_positive_at": binary_rates(pos, s, pos_at),
        "uncertain_fraction": float(((s >= neg_below) & (s < pos_at)).mean()) if len(s) else 0.0,
        "notes": notes,
    }


def reliability(probs: np.ndarray, labels: Sequence[int] | np.ndarray, n_bins: int = 15) -> dict:
    """ECE and reliability bins on the top-class confidence (equal-width bins in [0, 1])."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = []
    ece = 0.0
    for i in range(n_bins):
        lo, hi = edges[i], edges[i + 1]
        m = (conf > lo) & (conf <= hi) if i else (conf >= lo) & (conf <= hi)
        n = int(m.sum())
        acc = float(correct[m].mean()) if n else None
        mc = float(conf[m].mean()) if n else None
        if n:
            ece += n / max(1, len(y)) * abs(acc - mc)
        bins.append({"lower": float(lo), "upper": float(hi), "count": n, "confidence": mc, "accuracy": acc})
    return {"ece": float(ece), "n_bins": n_bins, "bins": bins}


def calibrate(
    val_logits: np.ndarray,
    val_labels: np.ndarray,
    class_names: Sequence[str],
    positive_classes: Sequence[str],
    sensitivity: float = 0.95,
    specificity: float = 0.95,
) -> dict:
    """Temperature + thresholds from validation; NLL/ECE before and after for the card."""
    t = fit_temperature(val_logits, val_labels)
    probs = softmax_np(val_logits, t)
    s = suspicion(probs, class_names, positive_classes)
    pos = is_positive(val_labels, class_names, positive_classes)
    th = choose_thresholds(s, pos, sensitivity, specificity)
    return {
        "temperature": t,
        "temperature_at_bound": t in (T_MIN, T_MAX),
        "thresholds": th,
        "val_nll_before": nll(val_logits, val_labels, 1.0),
        "val_nll_after": nll(val_logits, val_labels, t),
        "val_ece_before": reliability(softmax_np(val_logits, 1.0), val_labels)["ece"],
        "val_ece_after": reliability(probs, val_labels)["ece"],
    }
