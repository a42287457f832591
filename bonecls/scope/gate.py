"""The scope gate: may this model answer for this image? One verdict from three kinds of evidence.

1. the declared scope against the DICOM header (:mod:`bonecls.scope.declared`): a leg film offered
   to a chest model is refused before any feature is computed;
2. the image heuristics of :mod:`bonecls.ood` (colour, screenshot/document, tiny, non-radiograph
   modality);
3. the learned score (:mod:`bonecls.scope.stats`): the distance of the image's pooled features from
   the model's training images, against the threshold on the card for the model's answer (a
   classifier's card holds one per class, ``ScopeSection.answer_thresholds``: with one pooled
   threshold, images with a finding were refused more often than images without).

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
from bonecls.scope.stats import ScopeStats, load_stats, within_thresholds
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
    """The gate of one model: its card's scope section and the verified statistics it names.

    ``class_names``: the model's classes, so that an answer given by name finds its threshold."""

    def __init__(
        self,
        stats: ScopeStats,
        section: ScopeSection,
        model_id: str = "",
        class_names: tuple[str, ...] | list[str] = (),
    ) -> None:
        by_answer = section.answer_thresholds
        if by_answer is not None and len(by_answer) != len(class_names):
            raise WeightsError(
                f"The scope gate of '{model_id}' has {len(by_answer)} answer thresholds for "
                f"{len(class_names)} classes; refit its scope (python -m bonecls.scope.fit)."
            )
        self.stats = stats
        self.section = section
        self.model_id = model_id
        self.class_names = tuple(class_names)

    @property
    def threshold(self) -> float:
        """The pooled threshold: for an image whose answer is not known, and for detectors."""
        return float(self.section.threshold)

    def threshold_for(self, answer: int | str | None = None) -> float:
        """The threshold an image given ``answer`` (class index or name) is judged against: its answer's
        own on a card with answer thresholds, else the pooled one."""
        by_answer = self.section.answer_thresholds
        if by_answer is None or answer is None:
            return self.threshold
        index = answer if isinstance(answer, int | np.integer) else self._index(str(answer))
        return float(by_answer[int(index)]) if index is not None else self.threshold

    def _index(self, name: str) -> int | None:
        return self.class_names.index(name) if name in self.class_names else None

    def in_scope(self, scores: np.ndarray, answers: np.ndarray | None = None) -> np.ndarray:
        """Whether each learned score (N,) is under its answer's threshold (class indices; None: the
        pooled one); a non-finite one never is (:func:`bonecls.scope.stats.within_thresholds`)."""
        return within_thresholds(scores, self.threshold, self.section.answer_thresholds, answers)

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
        return cls(stats, card.scope, card.id, card.class_names)

    def precheck(self, image: Any) -> tuple[str, ...]:
        """Reasons to refuse ``image`` before running the model: header rules, then image heuristics."""
        reasons = list(header_reasons(self.section.declared, image))
        if hasattr(image, "pixels"):
            reasons.extend(r for r in ood.check(image).reasons if r not in reasons)
        return tuple(reasons)

    def verdict(
        self, image: Any, features: Any | None = None, answer: int | str | None = None
    ) -> ScopeVerdict:
        """The verdict on ``image`` from its header and pixels, and from its pooled ``features`` (1, D)
        when given (taken during the model's forward pass; see :class:`bonecls.scope.features.FeatureTap`)
        against the threshold of the model's ``answer`` (its argmax class) when known.

        Without ``features`` only the header rules and heuristics are applied, and an image they pass is
        not in scope: the learned part has not been asked.
        """
        reasons = list(self.precheck(image))
        if features is not None:
            return self.verdict_from_score(float(self.stats.score(features)[0]), tuple(reasons), answer)
        if not reasons:
            reasons.append(
                "The model's learned scope was not checked for this image, so its answer is not shown."
            )
        return ScopeVerdict(False, None, self.threshold_for(answer), tuple(reasons))

    def verdict_from_score(
        self, score: float, prior_reasons: tuple[str, ...] = (), answer: int | str | None = None
    ) -> ScopeVerdict:
        """A verdict from an already computed learned score, the precheck's reasons and the model's
        ``answer`` (class index or name; None: the pooled threshold)."""
        threshold = self.threshold_for(answer)
        reasons = list(prior_reasons)
        if not (math.isfinite(score) and score <= threshold):
            reasons.append(self._distance_reason(score, threshold, answer is not None))
        return ScopeVerdict(not reasons, float(score), threshold, tuple(reasons))

    def _distance_reason(self, score: float, threshold: float, by_answer: bool) -> str:
        ratio = score / threshold if threshold > 0 and np.isfinite(score) else float("inf")
        how = f"{ratio:.1f} times the limit" if math.isfinite(ratio) else "beyond any limit"
        which = (
            "held-out training-like images given the same answer"
            if by_answer and self.section.answer_thresholds is not None
            else "held-out training-like images"
        )
        return (
            "This image does not resemble the images this model was trained on (its features lie "
            f"{how} that {self.section.in_scope_rate:.1%} of {which} stay within), "
            "so any answer would be a guess."
        )
