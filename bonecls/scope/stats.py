"""The learned scope score: class-conditional Mahalanobis distance with a shared covariance.

Fitted on the pooled features of the model's own training images (Lee et al. 2018, NeurIPS, as
implemented by ``pytorch-ood``'s :class:`~pytorch_ood.detector.Mahalanobis`): one centre per class and
one covariance shared by all classes; an image's score is half its squared distance to the nearest
centre, so larger means farther from anything the model was trained on. ``pytorch-ood`` fits the
centres and the precision matrix and scores new features from them; this module only stores them.

The statistics are saved as safetensors (no pickle) beside the weights and their sha256 goes on
the card; :func:`load_stats` checks the bytes against it before parsing them, as the weights are.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bonecls.errors import WeightsError
from bonecls.weights import sha256_bytes

__all__ = [
    "MIN_IMAGES_PER_ANSWER",
    "ScopeStats",
    "choose_threshold",
    "choose_thresholds_by_answer",
    "fit_stats",
    "load_stats",
    "save_stats",
    "within_thresholds",
]

METHOD = "mahalanobis"

#: An answer with fewer threshold images than this gets the pooled threshold: a 97.5% quantile of
#: a handful of scores is noise.
MIN_IMAGES_PER_ANSWER = 40


@dataclass(frozen=True)
class ScopeStats:
    """Class centres (K, D) and shared precision (D, D); ``layers`` names what the D features are."""

    means: torch.Tensor
    precision: torch.Tensor
    layers: tuple[str, ...]
    method: str = METHOD

    def __post_init__(self) -> None:
        k, d = self.means.shape
        if self.precision.shape != (d, d) or k < 1:
            raise WeightsError(
                f"The scope statistics are inconsistent (centres {tuple(self.means.shape)}, precision "
                f"{tuple(self.precision.shape)}); refit the model's scope."
            )

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def _detector(self):
        from pytorch_ood.detector import Mahalanobis

        detector = Mahalanobis(None)
        detector.mu = self.means
        detector.precision = self.precision
        return detector

    def score(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
        """Outlier scores (N,) of features (N, D): larger is farther from the training images."""
        z = torch.as_tensor(np.asarray(features, dtype=np.float32)).reshape(-1, self.dim)
        finite = torch.isfinite(z).all(dim=1)
        scores = np.full(z.shape[0], np.inf)
        if bool(finite.any()):
            scores[finite.numpy()] = self._detector().predict_features(z[finite]).double().numpy()
        return scores  # a row with a non-finite feature is infinitely far: never in scope


def fit_stats(
    features: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, layers: tuple[str, ...]
) -> ScopeStats:
    """Fit centres and shared precision on in-distribution features (N, D) with labels 0..K-1."""
    from pytorch_ood.detector import Mahalanobis

    z = torch.as_tensor(np.asarray(features, dtype=np.float32))
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    present = sorted(set(y.tolist()))
    if present != list(range(len(present))):  # pytorch-ood needs contiguous labels: renumber
        remap = {c: i for i, c in enumerate(present)}
        y = torch.tensor([remap[int(c)] for c in y.tolist()], dtype=torch.int64)
    if z.ndim != 2 or z.shape[0] != y.shape[0] or z.shape[0] <= z.shape[1]:
        raise ValueError(
            f"fit_stats needs more images than feature dimensions; got features {tuple(z.shape)}, "
            f"{y.shape[0]} labels."
        )
    detector = Mahalanobis(None).fit_features(z, y)
    return ScopeStats(
        detector.mu.float().contiguous(), detector.precision.float().contiguous(), tuple(layers)
    )


def choose_threshold(in_distribution_scores: np.ndarray, in_scope_rate: float) -> float:
    """The score under which ``in_scope_rate`` of held-out in-distribution images fall (at or below)."""
    scores = np.asarray(in_distribution_scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        raise ValueError("choose_threshold needs at least one finite score.")
    if not 0.0 < in_scope_rate <= 1.0:
        raise ValueError(f"in_scope_rate must be in (0, 1]; got {in_scope_rate}.")
    # the smallest score that keeps at least that share: the ceil(rate * n)-th smallest
    rank = max(1, int(np.ceil(in_scope_rate * scores.size - 1e-9)))
    return float(np.sort(scores)[rank - 1])


def choose_thresholds_by_answer(
    scores: np.ndarray,
    answers: np.ndarray,
    n_classes: int,
    in_scope_rate: float,
    min_images: int = MIN_IMAGES_PER_ANSWER,
) -> list[float] | None:
    """One threshold per answer (class index 0..n_classes-1): the score under which ``in_scope_rate`` of
    the held-out in-distribution images given that answer fall (class-conditional, "Mondrian",
    calibration: each answer keeps its share, instead of one pooled threshold that the answers with a
    finding, whose images lie farther out, miss more often). An answer with fewer than ``min_images``
    images gets the pooled threshold; None when no answer has that many (nothing to condition on)."""
    scores = np.asarray(scores, dtype=np.float64)
    answers = np.asarray(answers, dtype=np.int64)
    if scores.shape != answers.shape:
        raise ValueError(f"scores {scores.shape} and answers {answers.shape} differ in shape.")
    pooled = choose_threshold(scores, in_scope_rate)
    out, conditioned = [], False
    for k in range(n_classes):
        mine = scores[(answers == k) & np.isfinite(scores)]
        conditioned |= mine.size >= min_images
        out.append(choose_threshold(mine, in_scope_rate) if mine.size >= min_images else pooled)
    return out if conditioned else None


def within_thresholds(
    scores: np.ndarray,
    threshold: float,
    answer_thresholds: Sequence[float] | None = None,
    answers: np.ndarray | None = None,
) -> np.ndarray:
    """Whether each learned score (N,) is under the threshold it is judged against: its answer's
    (``answer_thresholds`` by class index, ``answers`` the images' argmax classes) where both are given,
    else the pooled ``threshold``; a non-finite score never is. The one rule behind the gate
    (:meth:`bonecls.scope.gate.ScopeGate.in_scope`) and the in-scope rates a fit reports."""
    scores = np.asarray(scores, dtype=np.float64)
    limits: float | np.ndarray = threshold
    if answer_thresholds is not None and answers is not None:
        limits = np.asarray(answer_thresholds, dtype=np.float64)[np.asarray(answers, dtype=np.int64)]
    return np.isfinite(scores) & (scores <= limits)


def save_stats(stats: ScopeStats, path: str | os.PathLike) -> str:
    """Write ``stats`` as safetensors at ``path``; returns the file's sha256 (for the card)."""
    import safetensors.torch as st

    metadata = {"method": stats.method, "layers": json.dumps(list(stats.layers)), "format": "bonecls-scope"}
    data = st.save({"means": stats.means.contiguous(), "precision": stats.precision.contiguous()}, metadata)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return sha256_bytes(data)


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of safetensors bytes (an 8-byte little-endian header length, then JSON),
    read from the verified bytes themselves, not by opening the file a second time."""
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    return dict(header.get("__metadata__") or {})


def load_stats(path: str | os.PathLike, sha256: str, model_id: str = "") -> ScopeStats:
    """Read the statistics at ``path`` after checking their sha256 (``WeightsError`` when they differ)."""
    import safetensors.torch as st

    who = f"model '{model_id}'" if model_id else "this model"
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError:
        raise WeightsError(
            f"The scope statistics of {who} ({path.name}) are missing; "
            "reinstall the model or refit its scope."
        ) from None
    if sha256_bytes(data) != sha256:
        raise WeightsError(
            f"The scope statistics of {who} do not match the checksum on its card; they may be corrupted "
            "or tampered with. Reinstall the model."
        )
    try:
        tensors = st.load(data)
        metadata = _metadata(data)
        layers = tuple(json.loads(metadata.get("layers", "[]")))
        return ScopeStats(
            tensors["means"].float(), tensors["precision"].float(), layers, metadata.get("method", METHOD)
        )
    except WeightsError:
        raise
    except Exception as exc:
        raise WeightsError(
            f"The scope statistics of {who} are not a readable safetensors file ({type(exc).__name__}); "
            "reinstall the model."
        ) from exc
