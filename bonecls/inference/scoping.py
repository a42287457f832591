"""Every classifier answer goes through its model's scope gate (issue 21): :class:`ScopeGuard`.

One object per predictor, shared by the PyTorch, ONNX Runtime and Keras engines, so each applies the
same three steps in the same order:

1. :meth:`ScopeGuard.precheck` before anything is computed: the declared scope against the DICOM
   header and ``bonecls.ood``'s heuristics. A refusal here costs no model run, and the answer is
   :meth:`ScopeGuard.refused` (no raw output at all);
2. the engine runs the model once and hands back the pooled features it recorded during that very
   pass (:class:`bonecls.scope.features.FeatureTap` on PyTorch, extra graph outputs on ONNX Runtime
   and Keras: :func:`bonecls.inference.keras_loader.features_model`);
3. :meth:`ScopeGuard.judge` scores those features against the card's threshold for the model's
   answer (its argmax class) and marks the :class:`~bonecls.inference.results.Prediction` in or out
   of scope.

A model whose card has no learned scope (one trained before issue 21, or on too few images) still gets
steps 1 and 3's header rules and heuristics, and every answer says, in a reason sentence, that the
learned part was not fitted: it is never silently "in scope". ``enabled=False`` (``scope=False`` in
:func:`bonecls.inference.load_classifier`, ``--no-scope`` on the CLI) skips the gate and marks the
answers ``scope_checked=False``: research output.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from bonecls import ood
from bonecls.inference.results import OUT_OF_SCOPE, Prediction
from bonecls.scope.declared import DECLARED_SCOPES, header_reasons
from bonecls.scope.gate import ScopeGate
from bonecls.weights import DeclaredScope, ModelCard

__all__ = ["NOT_CHECKED", "NOT_FITTED", "ScopeGuard"]

#: The reason given with every answer of a model whose card has no learned scope.
NOT_FITTED = (
    "This model's learned scope is not fitted, so only the DICOM header and the image checks were "
    "applied; an unfamiliar image that passes them may still get a confident but meaningless answer."
)

#: The reason given when the learned score could not be computed for an image.
NOT_CHECKED = "The model's learned scope could not be checked for this image, so its answer is not shown."


class ScopeGuard:
    """The scope gate of one predictor: its card's :class:`ScopeGate` (or none), and whether it is on."""

    def __init__(self, card: ModelCard, gate: ScopeGate | None = None, *, enabled: bool = True) -> None:
        self.card = card
        self.gate = gate
        self.enabled = bool(enabled)
        self.declared: DeclaredScope | None = (
            card.scope.declared if card.scope is not None else DECLARED_SCOPES.get(card.task)
        )

    @classmethod
    def for_card(
        cls, card: ModelCard, card_dir: str | os.PathLike | None, *, enabled: bool = True
    ) -> ScopeGuard:
        """The guard of ``card``: its learned gate (statistics sha256-checked) when the card has one."""
        if not enabled or card.scope is None or card_dir is None:
            return cls(card, None, enabled=enabled)
        return cls(card, ScopeGate.from_card(card, card_dir), enabled=enabled)

    @property
    def layers(self) -> tuple[str, ...]:
        """The feature layers the engine must record (empty: no learned part to feed)."""
        return self.gate.layers if (self.enabled and self.gate is not None) else ()

    @property
    def threshold(self) -> float | None:
        """The pooled threshold (an answer's own: ``gate.threshold_for``)."""
        return self.gate.threshold if self.gate is not None else None

    def precheck(self, image: Any) -> tuple[str, ...]:
        """Reasons to refuse ``image`` before the model runs (empty: run it)."""
        if not self.enabled:
            return ()
        if self.gate is not None:
            return self.gate.precheck(image)
        reasons = list(header_reasons(self.declared, image)) if self.declared is not None else []
        if hasattr(image, "pixels"):
            reasons.extend(r for r in ood.check(image).reasons if r not in reasons)
        return tuple(reasons)

    def refused(self, reasons: tuple[str, ...]) -> Prediction:
        """The answer for an image refused before the model ran: no label, no probabilities."""
        return Prediction(
            probabilities={},
            label="",
            status=OUT_OF_SCOPE,
            suspicion=0.0,
            model_id=self.card.id,
            model_sha256=self.card.sha256,
            in_scope=False,
            scope_threshold=self.threshold,
            scope_reasons=tuple(reasons),
        )

    def scores(self, features: Any | None) -> np.ndarray | None:
        """Learned scores (N,) of the features an engine recorded, or None without a learned gate."""
        if features is None or not self.layers:
            return None
        assert self.gate is not None
        return self.gate.stats.score(features)

    def judge(self, prediction: Prediction, score: float | None) -> Prediction:
        """``prediction`` (raw, from the model) marked in or out of scope by the learned ``score``."""
        if not self.enabled:
            return dataclasses.replace(prediction, scope_checked=False)
        if self.gate is None:
            return dataclasses.replace(prediction, scope_reasons=(NOT_FITTED,))
        if score is None:  # judged against nothing; the answer's threshold is still the one shown
            verdict_in, reasons = False, (NOT_CHECKED,)
            threshold = self.gate.threshold_for(prediction.label)
        else:
            verdict = self.gate.verdict_from_score(float(score), answer=prediction.label)
            verdict_in, reasons, threshold = verdict.in_scope, verdict.reasons, verdict.threshold
        return dataclasses.replace(
            prediction,
            status=prediction.status if verdict_in else OUT_OF_SCOPE,
            in_scope=verdict_in,
            scope_score=None if score is None else float(score),
            scope_threshold=threshold,
            scope_reasons=tuple(reasons),
        )
