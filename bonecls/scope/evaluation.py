"""The gate measured as failure detection: risk against coverage, and the area under that curve (AURC).

A gate is worth what it removes of the wrong answers for what it costs in right ones. Rank every
image by the gate's score (nearest to the training images first), keep the first share of them
(coverage) and count the errors among the answers kept (risk). On a mix of held-out in-distribution
images (an answer is an error when it is wrong) and out-of-scope images (every answer is an error),
a useful gate keeps risk low until coverage reaches the in-distribution share; a gate that reads
nothing has the mix's error rate at every coverage. AURC is the mean risk over all coverages, i.e.
1 - AURRA, which ``pytorch-ood`` computes (``pytorch_ood.metrics.functional.aurra``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["aurc", "risk_coverage"]


def risk_coverage(scope_scores: np.ndarray, errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(coverage, risk)`` arrays when answers are kept in order of increasing scope score."""
    scores = np.asarray(scope_scores, dtype=np.float64).reshape(-1)
    wrong = np.asarray(errors, dtype=np.float64).reshape(-1)
    if scores.shape != wrong.shape or scores.size == 0:
        raise ValueError("risk_coverage needs as many errors as scores, and at least one.")
    order = np.argsort(np.nan_to_num(scores, nan=np.inf, posinf=np.inf), kind="stable")
    kept = np.arange(1, scores.size + 1, dtype=np.float64)
    return kept / scores.size, np.cumsum(wrong[order]) / kept


def aurc(scope_scores: np.ndarray, errors: np.ndarray) -> float:
    """Area under the risk-coverage curve (lower is better): 1 - AURRA with confidence = -score."""
    import torch
    from pytorch_ood.metrics.functional import aurra

    scores = np.nan_to_num(np.asarray(scope_scores, dtype=np.float64).reshape(-1), nan=np.inf)
    confidence = -np.clip(scores, -1e300, 1e300)
    correct = 1.0 - np.asarray(errors, dtype=np.float64).reshape(-1)
    return 1.0 - aurra(torch.as_tensor(confidence), torch.as_tensor(correct))
