"""The scope gate: may this model answer for this image? One verdict from three kinds of evidence.

1. the declared scope against the DICOM header (:mod:`bonecls.scope.declared`): a leg film offered
   to a chest model is refused before any feature is computed;
2. the image heuristics of :mod:`bonecls.ood` (colour, screenshot/document, tiny, non-radiograph
   modality);
3. the learned score (:mod:`bonecls.scope.stats`): the distance of the image's pooled features from
   the model's training images, against the threshold on the card.

Any one of them refuses. The reasons are sentences for the reader; the app, CLI and reports show
them instead of a result.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bonecls import ood
from bonecls.errors import WeightsError
from bonecls.scope.declared import header_reasons
from bonecls.scope.stats import ScopeStats, load_stats
from bonecls.weights import ModelCard, ScopeSection

__all__ = ["ScopeGate", "ScopeVerdict"]


@dataclass(frozen=True)
class ScopeVerdict:
    """``in_scope``: the model may answer. ``score`` is the learned distance (``None`` when the image was
    refused before its features were computed); ``reasons`` are sentences for the reader (empty when in
    scope)."""

    in_scope: bool
    score: float | None
    threshold: float
    reasons: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        return " ".join(self.reasons)


class ScopeGate:
    """The gate of one model: its card's scope section and the verified statistics it names."""

    def __init__(self, stats: ScopeStats, section: ScopeSection, model_id: str = "") -> None:
        self.stats = stats
        self.section = section
        self.model_id = model_id

    @property
    def threshold(self) -> float:
        return float(self.section.threshold)

    @property
    def layers(self) -> tuple[str, ...]:
        return self.stats.layers

    @classmethod
    def from_card(cls, card: ModelCard, card_dir: str | os.PathLike) -> ScopeGate:
        """The gate named on ``card`` (statistics checked against the card's sha256 before use)."""
        if card.scope is None:
            raise WeightsError(
                f"Model '{card.id}' has no learned scope on its card, so nothing tells when it cannot "
                "know; refit its scope (python -m bonecls.scope.fit) before using it."
            )
        stats = load_stats(Path(card_dir) / card.scope.stats_file, card.scope.sha256, card.id)
        return cls(stats, card.scope, card.id)

    def precheck(self, image: Any) -> tuple[str, ...]:
        """Reasons to refuse ``image`` before running the model: header rules, then image heuristics."""
        reasons = list(header_reasons(self.section.declared, image))
        if hasattr(image, "pixels"):
            reasons.extend(r for r in ood.check(image).reasons if r not in reasons)
        return tuple(reasons)

    def verdict(self, image: Any, features: Any | None = None) -> ScopeVerdict:
        """The verdict on ``image`` from its header and pixels, and from its pooled ``features`` (1, D)
        when given (taken during the model's forward pass; see :class:`bonecls.scope.features.FeatureTap`).

        Without ``features`` only the header rules and heuristics are applied, and an image they pass is
        not in scope: the learned part has not been asked.
        """
        reasons = list(self.precheck(image))
        score = None
        if features is not None:
            score = float(self.stats.score(features)[0])
            if not (math.isfinite(score) and score <= self.threshold):
                reasons.append(self._distance_reason(score))
        elif not reasons:
            reasons.append(
                "The model's learned scope was not checked for this image, so its answer is not shown."
            )
        return ScopeVerdict(not reasons, score, self.threshold, tuple(reasons))

    def verdict_from_score(self, score: float, prior_reasons: tuple[str, ...] = ()) -> ScopeVerdict:
        """A verdict from an already computed learned score and the precheck's reasons."""
        reasons = list(prior_reasons)
        if not (math.isfinite(score) and score <= self.threshold):
            reasons.append(self._distance_reason(score))
        return ScopeVerdict(not reasons, float(score), self.threshold, tuple(reasons))

    def _distance_reason(self, score: float) -> str:
        ratio = score / self.threshold if self.threshold > 0 and np.isfinite(score) else float("inf")
        how = f"{ratio:.1f} times the limit" if math.isfinite(ratio) else "beyond any limit"
        return (
            "This image does not resemble the images this model was trained on (its features lie "
            f"{how} that {self.section.in_scope_rate:.1%} of held-out training-like images stay within), "
            "so any answer would be a guess."
        )
