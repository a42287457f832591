"""A Keras classifier behind the :class:`~bonecls.inference.predictor.Predictor` interface.

:func:`bonecls.inference.load_classifier` returns a :class:`KerasPredictor` for a card with
``framework: keras``, so the pages, the CLI and the worklist call ``predict`` / ``predict_batch`` /
``explain`` without knowing the framework. What is shared with the PyTorch path, on purpose:

* preprocessing (:meth:`Predictor.preprocess`: the same squash-resize and per-channel normalisation
  from the card), transposed to the channels-last layout Keras models take;
* decisions (:meth:`Predictor.prediction_from_logits`: temperature, thresholds, status);
* CAM methods, their maths and the overlay (:mod:`bonecls.inference.keras_cam`,
  :mod:`bonecls.inference.heatmap`).

Threading: any number of threads may predict at once (a ``tf.function`` traced once for batches of any
size); ``explain`` runs alone because it wraps the CAM layer while it runs (the same readers-writer
lock as :class:`Predictor`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bonecls.errors import WeightsError
from bonecls.inference.keras_cam import keras_cam
from bonecls.inference.keras_loader import features_model, find_cam_layer, import_keras, load_keras
from bonecls.inference.predictor import Predictor, predict_in_chunks
from bonecls.inference.results import Prediction
from bonecls.inference.scoping import ScopeGuard
from bonecls.weights import ModelCard, load_card

__all__ = ["KerasPredictor"]


class KerasPredictor(Predictor):
    """One Keras classifier and its card; the model returns logits
    (:func:`bonecls.inference.keras_loader.load_keras`).

    The CAM layer is the card's ``extra["cam_layer"]`` if set, else the last convolutional layer.
    ``device`` is accepted for signature compatibility; TensorFlow places the model itself (the GPU
    when its GPU build is installed and sees one, else the CPU).
    """

    def __init__(
        self, model: Any, card: ModelCard, *, batch_size: int = 32, scope: ScopeGuard | None = None
    ) -> None:
        if card.framework != "keras":
            raise WeightsError(
                f"KerasPredictor runs Keras classifiers; model '{card.id}' is a {card.framework} model."
            )
        _, tf = import_keras(card.id)
        card = self._init_card(card, batch_size)
        if scope is not None:
            self.scope_guard = scope
        self.model = model
        self.device = torch.device("cpu")  # where the inputs are prepared; TensorFlow places the model
        self._memory_format = torch.contiguous_format
        cam_layer = card.extra.get("cam_layer")
        self.cam_layer = find_cam_layer(model, str(cam_layer) if cam_layer else None)
        spec = tf.TensorSpec([None, card.input_size, card.input_size, card.in_chans], tf.float32)
        self._forward = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        # the scope gate's features come from the pass that computes the logits (one graph, two outputs)
        self._forward_features = None
        if self.scope_guard.layers:
            with_features = features_model(model, self.scope_guard.layers)
            self._forward_features = tf.function(
                lambda x: with_features(x, training=False), input_signature=[spec]
            )
        # trace now: a first trace inside explain() would capture the CAM layer's temporary wrapper
        blank = np.zeros((1, card.input_size, card.input_size, card.in_chans), np.float32)
        self._forward(blank)
        if self._forward_features is not None:
            self._forward_features(blank)

    @classmethod
    def from_card(cls, path_or_id: str | Path, device: str = "cpu", *, scope: bool = True) -> KerasPredictor:
        """Load a Keras model folder / card.json / id (sha256 and config checked before deserialising),
        with its scope gate (statistics verified too): the declared scope's header rules, the image
        heuristics and, when the card has a learned scope, the distance of the pooled features the
        model computes with its logits (:func:`bonecls.inference.keras_loader.features_model`).
        ``scope=False``: raw research answers.
        """
        model, card = load_keras(path_or_id)
        _, card_dir = load_card(path_or_id, verify=False)
        return cls(model, card, scope=ScopeGuard.for_card(card, card_dir, enabled=scope))

    def preprocess(self, rg: Any) -> np.ndarray:  # type: ignore[override]
        """Radiograph (or its pixels) -> normalised (1, S, S, C) float32, channels last."""
        return super().preprocess(rg).numpy().transpose(0, 2, 3, 1).copy()

    def logits(self, batch: np.ndarray) -> np.ndarray:  # type: ignore[override]
        """Raw logits (N, num_classes) for a preprocessed NHWC batch (thread-safe)."""
        with self._lock.read():
            return np.array(self._forward(np.ascontiguousarray(batch, dtype=np.float32)), np.float32)

    def logits_and_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:  # type: ignore[override]
        """Logits (N, K) and the scope gate's pooled features (N, D) from one forward pass; features
        None when the card has no learned scope (or the gate is off)."""
        if self._forward_features is None:
            return self.logits(batch), None
        with self._lock.read():
            logits, features = self._forward_features(np.ascontiguousarray(batch, dtype=np.float32))
        return np.array(logits, np.float32), np.array(features, np.float32)

    def predict_batch(self, rgs: Sequence[Any]) -> list[Prediction]:
        """Predictions for many images, run in chunks of ``batch_size``."""
        return predict_in_chunks(self, rgs, self._stack)

    def _stack(self, xs: list[Any]) -> np.ndarray:
        """Channels-last inputs joined into one batch (NumPy, for the ``tf.function``)."""
        return np.concatenate(xs)

    def _cam(self, pixels: np.ndarray, method: str, index: int | None) -> Any:
        """Prediction and CAM from one forward pass (see :func:`bonecls.inference.keras_cam.keras_cam`);
        the scope gate's features from one more plain pass when the card has a learned scope."""
        x = self.preprocess(pixels)
        with self._lock.write():
            result = keras_cam(
                self.model,
                x,
                self.cam_layer,
                method,
                index,
                forward=lambda b: np.asarray(self._forward(b)),
                out_size=pixels.shape,
            )
            if self._forward_features is None:
                return result
            features = np.array(self._forward_features(x)[1], np.float32)
        return dataclasses.replace(result, features=torch.from_numpy(features[:1]))
