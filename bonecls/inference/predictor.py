"""The PyTorch classifier: preprocessing, calibrated probabilities, decision status and CAMs.

A :class:`Predictor` wraps one PyTorch model and its card. It is thread-safe: any number of
threads may call :meth:`Predictor.predict` / :meth:`Predictor.predict_batch` at once (inference
mode, shared weights), while :meth:`Predictor.explain` runs alone because CAM hooks are attached to
the shared model for its duration (a readers-writer lock; one copy of the weights in memory).

It is also the base of the other frameworks' predictors (``bonecls.inference.keras_predictor``),
which share its preprocessing, decisions and lock; it never imports them. Which class serves a card
is decided once, in :func:`bonecls.inference.load.load_classifier`.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bonecls.errors import ExplainError, WeightsError
from bonecls.inference.heatmap import cv2_colormap, overlay
from bonecls.inference.results import Explanation, Prediction, status_for
from bonecls.inference.scoping import ScopeGuard
from bonecls.inference.tiling import ReadPlan, merge_tiles, plan_for, reading_of, stitch_heatmaps
from bonecls.inference.torch_cam import cam_class, explain_with_logits
from bonecls.models import target_layers
from bonecls.scope.features import pixels_of, preprocess_pixels
from bonecls.weights import ModelCard, load_card, load_pytorch

__all__ = ["Predictor", "judged_answers", "predict_in_chunks"]

NO_HEATMAP_REFUSED = "No heat map: the image is outside what this model was trained on."


class _RWLock:
    """Many readers or one writer; waiting writers block new readers (no writer starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class Predictor:
    """One classifier and its card. Build with :meth:`from_card` (or directly from a model + card)."""

    def __init__(
        self,
        model: nn.Module,
        card: ModelCard,
        *,
        device: str | torch.device = "cpu",
        channels_last: bool = True,
        batch_size: int = 32,
        scope: ScopeGuard | None = None,
    ) -> None:
        if card.framework != "pytorch":
            raise WeightsError(
                f"Predictor runs PyTorch classifiers; model '{card.id}' is a {card.framework} model."
            )
        card = self._init_card(card, batch_size)
        self.device = torch.device(device)
        self._memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model.eval()
        for p in model.parameters():  # inference only: no autograd bookkeeping for the weights
            p.requires_grad_(False)
        self.model = model.to(self.device, memory_format=self._memory_format)
        self._layers = target_layers(self.model, card.architecture)
        self.scope_guard = scope if scope is not None else ScopeGuard(card)
        self._tap = None
        if self.scope_guard.layers:  # hooks that record the gate's features in every forward pass
            from bonecls.scope.features import FeatureTap

            self._tap = FeatureTap(self.model, card.architecture, self.scope_guard.layers)

    def _init_card(self, card: ModelCard, batch_size: int) -> ModelCard:
        """The card-derived state every framework's predictor shares (normalisation, decision classes,
        the readers-writer lock); returns the validated copy of the card it keeps."""
        self.card = card = ModelCard.model_validate(card.model_dump())  # model_copy() does not validate
        self.batch_size = int(batch_size)
        self._mean_list = [np.float32(v) for v in card.normalization.mean]
        self._std_list = [np.float32(v) for v in card.normalization.std]
        self._positive = [card.class_names.index(name) for name in card.positive_classes]
        self._lock = _RWLock()
        self.scope_guard = ScopeGuard(card)  # header rules and heuristics; from_card adds the learned part
        return card

    @classmethod
    def from_card(cls, path_or_id: str | Path, device: str = "cpu", *, scope: bool = True) -> Predictor:
        """Load a PyTorch model folder / card.json / id (sha256 verified before deserialising), with
        its scope gate (statistics verified too); ``scope=False``: raw research answers.

        PyTorch cards only; :func:`bonecls.inference.load_classifier` serves any classifier card.
        """
        card, card_dir = load_card(path_or_id, verify=False)
        if card.framework != "pytorch":
            raise WeightsError(
                f"Model '{card.id}' is a {card.framework} model, not a PyTorch classifier; load it with "
                "bonecls.inference.load_classifier, which picks the engine for each kind of card."
            )
        model, card = load_pytorch(path_or_id)
        guard = ScopeGuard.for_card(card, card_dir, enabled=scope)
        return cls(model, card, device=device, scope=guard)

    # -- preprocessing ------------------------------------------------------------------------------

    def preprocess(self, rg: Any) -> torch.Tensor:
        """Radiograph (or its (H, W) pixel array) -> normalised (1, C, S, S) float32 tensor.

        The image is resized (squashed, not cropped) to the card's square input size: cv2
        INTER_AREA when shrinking, bilinear when enlarging. So the CAM maps back onto the whole
        image by a plain resize.
        """
        # normalised in numpy: for one small image this beats torch's parallel element-wise kernels
        x = preprocess_pixels(rg, self.card.input_size, self._mean_list, self._std_list)
        return x.contiguous(memory_format=self._memory_format)

    # -- prediction ---------------------------------------------------------------------------------

    def prediction_from_logits(self, logits: torch.Tensor) -> Prediction:
        """Prediction for one row of logits (temperature-scaled softmax, thresholds on suspicion)."""
        z = logits.detach().to("cpu", torch.float64).reshape(-1) / float(self.card.temperature)
        probs = torch.softmax(z, dim=0).tolist()
        names = self.card.class_names
        if len(probs) != len(names):
            raise WeightsError(
                f"Model '{self.card.id}' returned {len(probs)} outputs "
                f"but its card names {len(names)} classes."
            )
        suspicion = min(1.0, max(0.0, float(sum(probs[i] for i in self._positive))))
        th = self.card.thresholds
        return Prediction(
            probabilities={n: float(p) for n, p in zip(names, probs, strict=True)},
            label=names[int(np.argmax(probs))],
            status=status_for(suspicion, th.negative_below, th.positive_at),
            suspicion=suspicion,
            model_id=self.card.id,
            model_sha256=self.card.sha256,
        )

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Raw logits (N, num_classes) for a preprocessed batch (thread-safe)."""
        return self.logits_and_features(batch)[0]

    def logits_and_features(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw logits (N, num_classes) and the scope gate's pooled features (N, D), or None when the
        gate has no learned part, from one forward pass (thread-safe: the tap records per thread)."""
        with self._lock.read(), torch.inference_mode():
            x = batch.to(self.device, memory_format=self._memory_format)
            if self._tap is None:
                return self.model(x).float().cpu(), None
            self._tap.clear()
            logits = self.model(x).float().cpu()
            return logits, self._tap.take()

    def predict(self, rg: Any) -> Prediction:
        return self.predict_batch([rg])[0]

    def predict_batch(self, rgs: Sequence[Any]) -> list[Prediction]:
        """Predictions for many images, run in chunks of ``batch_size``."""
        return predict_in_chunks(self, rgs, self._stack)

    def _stack(self, xs: list[Any]) -> Any:
        """Preprocessed inputs joined into one batch for :meth:`logits_and_features`."""
        return torch.cat(xs).contiguous(memory_format=self._memory_format)

    # -- explanation --------------------------------------------------------------------------------

    def class_index(self, target_class: str | int) -> int:
        names = self.card.class_names
        if isinstance(target_class, int | np.integer) and not isinstance(target_class, bool):
            if 0 <= int(target_class) < len(names):
                return int(target_class)
        elif target_class in names:
            return names.index(target_class)
        raise ExplainError(
            f"Unknown target class {target_class!r}; this model's classes are: {', '.join(names)}."
        )

    def explain(
        self,
        rg: Any,
        method: str = "gradcam",
        target_class: str | int | None = None,
        colormap: str = "jet",
        opacity: float = 0.45,
    ) -> Explanation:
        """Prediction and CAM from one forward pass (plus the method's backward / extra passes).

        ``target_class`` None explains the predicted class. The heat map and overlay are at the
        radiograph's size.
        """
        cam_class(method)
        cv2_colormap(colormap)
        index = None if target_class is None else self.class_index(target_class)
        pixels = pixels_of(rg)
        guard = self.scope_guard
        reasons = guard.precheck(rg)
        if reasons:  # refused before the model runs: no heat map either
            return self._no_heatmap(pixels, method, guard.refused(reasons), NO_HEATMAP_REFUSED)
        plan = plan_for(rg, self.card)
        if plan.mode == "tiles":
            return self._explain_tiles(pixels, plan, method, index, colormap, opacity)
        result = self._cam(pixels, method, index)
        scores = guard.scores(result.features)
        prediction = guard.judge(
            self.prediction_from_logits(result.logits[0]), None if scores is None else float(scores[0])
        )
        return Explanation(
            heatmap=result.heatmap,
            overlay=overlay(pixels, result.heatmap, colormap=colormap, opacity=opacity),
            method=method,
            target_class=self.card.class_names[result.target_index],
            prediction=dataclasses.replace(prediction, reading=reading_of(plan)),
            warnings=result.warnings,
        )

    def _no_heatmap(self, pixels: np.ndarray, method: str, prediction: Prediction, why: str) -> Explanation:
        blank = np.zeros(pixels.shape, np.float32)
        return Explanation(
            heatmap=blank,
            overlay=overlay(pixels, blank, opacity=0.0),
            method=method,
            target_class="",
            prediction=prediction,
            warnings=(why,),
        )

    def _explain_tiles(
        self,
        pixels: np.ndarray,
        plan: ReadPlan,
        method: str,
        index: int | None,
        colormap: str,
        opacity: float,
    ) -> Explanation:
        """A film read in tiles: the tiles' answers in one batched pass, merged
        (:func:`~bonecls.inference.tiling.merge_tiles`, the same answer as :meth:`predict`), then a CAM
        of the film's class on every in-scope tile, each scaled by that tile's probability of the class
        over the highest one (so a quiet tile stays quiet), stitched back on the film."""
        tiles = plan.tile_pixels(pixels)
        answers = judged_answers(self, tiles, self._stack)
        prediction = merge_tiles(plan, answers)
        if not prediction.in_scope:
            return self._no_heatmap(pixels, method, prediction, NO_HEATMAP_REFUSED)
        target = index if index is not None else self.class_index(prediction.label)
        name = self.card.class_names[target]
        top = max(a.probabilities.get(name, 0.0) for a in answers if a.in_scope) or 1.0
        heats: list[np.ndarray | None] = []
        warnings: list[str] = []
        for tile, answer in zip(tiles, answers, strict=True):
            if not answer.in_scope:
                heats.append(None)
                continue
            result = self._cam(tile, method, target)
            warnings.extend(w for w in result.warnings if w not in warnings)
            heats.append(result.heatmap * np.float32(answer.probabilities.get(name, 0.0) / top))
        heatmap = stitch_heatmaps(plan, heats)
        return Explanation(
            heatmap=heatmap,
            overlay=overlay(pixels, heatmap, colormap=colormap, opacity=opacity),
            method=method,
            target_class=name,
            prediction=prediction,
            warnings=tuple(warnings),
        )

    predict_and_explain = explain

    def _cam(self, pixels: np.ndarray, method: str, index: int | None) -> Any:
        """The framework's CAM pass: logits, heat map at ``pixels``' size, target index, warnings."""
        x = self.preprocess(pixels).to(self.device)
        with self._lock.write():
            if self._tap is not None:
                self._tap.clear()
            result = explain_with_logits(self.model, x, self._layers, method, index, out_size=pixels.shape)
            if self._tap is None:
                return result
            return dataclasses.replace(result, features=self._tap.take()[:1])


def predict_in_chunks(engine: Any, rgs: Sequence[Any], stack: Callable[[list[Any]], Any]) -> list[Prediction]:
    """Predictions for many images in chunks of ``engine.batch_size``: ``stack`` joins the engine's
    ``preprocess`` outputs into one batch for its ``logits``; each row becomes a :class:`Prediction`
    through ``prediction_from_logits``. Shared by the PyTorch, Keras and ONNX Runtime predictors.

    The engine's ``scope_guard`` (:class:`~bonecls.inference.scoping.ScopeGuard`) refuses images by
    their header and heuristics before the model runs, and judges the others by the features
    ``logits_and_features`` recorded in the same forward pass (no second pass). Each film is read as
    :func:`bonecls.inference.tiling.plan_for` decides: whole, or in tiles at the card's trained scale
    (every tile judged by the gate, the answers merged by
    :func:`~bonecls.inference.tiling.merge_tiles`); the tiles of all films share the chunks."""
    guard: ScopeGuard = engine.scope_guard
    out: list[Prediction | None] = [None] * len(rgs)
    plans: dict[int, ReadPlan] = {}
    owners: list[int] = []
    inputs: list[Any] = []
    for i, rg in enumerate(rgs):
        reasons = guard.precheck(rg)
        if reasons:
            out[i] = guard.refused(reasons)
            continue
        plans[i] = plan = plan_for(rg, engine.card)
        parts = [rg] if plan.mode == "single" else plan.tile_pixels(pixels_of(rg))
        owners.extend([i] * len(parts))
        inputs.extend(parts)
    answers: dict[int, list[Prediction]] = {i: [] for i in plans}
    for i, answer in zip(owners, judged_answers(engine, inputs, stack), strict=True):
        answers[i].append(answer)
    for i, plan in plans.items():
        if plan.mode == "single":
            out[i] = dataclasses.replace(answers[i][0], reading=reading_of(plan))
        else:
            out[i] = merge_tiles(plan, answers[i])
    return [p for p in out if p is not None]


def judged_answers(engine: Any, inputs: Sequence[Any], stack: Callable[[list[Any]], Any]) -> list[Prediction]:
    """The engine's answers for ``inputs`` (images or tiles the gate's precheck already passed), in
    chunks of ``engine.batch_size``, each judged by the learned scope score of its own forward pass."""
    guard: ScopeGuard = engine.scope_guard
    out: list[Prediction] = []
    for start in range(0, len(inputs), engine.batch_size):
        chunk = inputs[start : start + engine.batch_size]
        logits, features = engine.logits_and_features(stack([engine.preprocess(x) for x in chunk]))
        scores = guard.scores(features)
        for row in range(len(chunk)):
            raw = engine.prediction_from_logits(torch.as_tensor(logits[row]))
            out.append(guard.judge(raw, None if scores is None else float(scores[row])))
    return out
