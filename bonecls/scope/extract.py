"""Features of many images for one model from its card: what fitting and benchmarking the gate need.

One table, :data:`FEATURE_BACKENDS` {card framework -> loader and runner}: PyTorch classifiers give
their pooled features through :class:`bonecls.scope.features.FeatureTap`, Keras classifiers through a
second output of their own graph (:func:`bonecls.inference.keras_loader.features_model`, the one their
predictor serves with), both with their predicted class (the label of the class-conditional fit: it
needs no dataset layout, and it is the class whose centre an in-distribution image should sit near).
The Ultralytics detector gives its backbone features through ``bonecls.detection.scope_features`` and
one class. The Keras and detector modules are imported only for such a card (TensorFlow's start-up is
slow; ultralytics stays inside ``bonecls/detection/``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bonecls.imaging import load_radiograph
from bonecls.scope.features import PENULTIMATE, FeatureTap, preprocess_pixels
from bonecls.weights import ModelCard, load_card, load_pytorch

__all__ = ["FEATURE_BACKENDS", "FeatureBackend", "ModelFeatures", "image_files", "load_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".tif", ".tiff")


def image_files(folder: str | os.PathLike, limit: int | None = None) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted by path; the first ``limit`` of them."""
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return files[:limit] if limit else files


def load_images(paths: Iterable[str | os.PathLike]) -> list[Any]:
    """Radiographs decoded by the app's loader (``bonecls.imaging.load_radiograph``)."""
    return [load_radiograph(p) for p in paths]


Extracted = tuple[np.ndarray, np.ndarray, np.ndarray | None]


@dataclass(frozen=True)
class FeatureBackend:
    """How one framework gives features: ``load(card_dir, layers) -> (card, layers, model)`` and
    ``run(model_features, images) -> (features, labels, logits or None)``."""

    load: Callable[[Path, Sequence[str] | None], tuple[ModelCard, tuple[str, ...], Any]]
    run: Callable[[ModelFeatures, Sequence[Any]], Extracted]


def _batches(features: ModelFeatures, images: Sequence[Any]) -> Iterable[torch.Tensor]:
    """The images in chunks of ``batch_size``, each preprocessed as the predictor does: (N, C, S, S)."""
    card = features.card
    for start in range(0, len(images), features.batch_size):
        yield torch.cat(
            [
                preprocess_pixels(im, card.input_size, card.normalization.mean, card.normalization.std)
                for im in images[start : start + features.batch_size]
            ]
        )


def _with_predicted_class(feats: list[Any], logits: list[Any]) -> Extracted:
    all_logits = np.concatenate([np.asarray(x, np.float32) for x in logits])
    all_feats = np.concatenate([np.asarray(x, np.float32) for x in feats])
    return all_feats, all_logits.argmax(axis=1), all_logits


def _load_pytorch(card_dir: Path, layers: Sequence[str] | None) -> tuple[ModelCard, tuple[str, ...], Any]:
    model, card = load_pytorch(card_dir)
    return card, tuple(layers or (PENULTIMATE,)), model


def _run_pytorch(features: ModelFeatures, images: Sequence[Any]) -> Extracted:
    feats, logits = [], []
    with (
        FeatureTap(features.model, features.card.architecture, features.layers) as tap,
        torch.inference_mode(),
    ):
        for batch in _batches(features, images):
            tap.clear()
            logits.append(features.model(batch).float().numpy())
            feats.append(tap.take().numpy())
    return _with_predicted_class(feats, logits)


def _load_keras(card_dir: Path, layers: Sequence[str] | None) -> tuple[ModelCard, tuple[str, ...], Any]:
    from bonecls.inference.keras_loader import features_model, load_keras

    model, card = load_keras(card_dir)
    names = tuple(layers or (PENULTIMATE,))
    return card, names, features_model(model, names)


def _run_keras(features: ModelFeatures, images: Sequence[Any]) -> Extracted:
    feats, logits = [], []
    for batch in _batches(features, images):
        out_logits, out_feats = features.model(batch.numpy().transpose(0, 2, 3, 1), training=False)
        logits.append(np.asarray(out_logits))
        feats.append(np.asarray(out_feats))
    return _with_predicted_class(feats, logits)


def _load_ultralytics(card_dir: Path, layers: Sequence[str] | None) -> tuple[ModelCard, tuple[str, ...], Any]:
    from bonecls.detection.detector import Detector
    from bonecls.detection.scope_features import BACKBONE_LAYERS, layer_names

    indices = tuple(int(x.split(".")[-1]) for x in layers) if layers else BACKBONE_LAYERS
    detector = Detector.from_card(card_dir, scope=False)
    return detector.card, layer_names(indices), detector


def _run_ultralytics(features: ModelFeatures, images: Sequence[Any]) -> Extracted:
    from bonecls.detection.scope_features import detector_features

    indices = [int(name.split(".")[-1]) for name in features.layers]
    feats = detector_features(features.model, images, indices)
    return feats, np.zeros(len(feats), dtype=np.int64), None


#: card framework -> how its models give features. PyTorch and Keras classifiers give the pooled input
#: of their class-score layer (or named layers' spatial means) from the forward pass that computes their
#: logits, the same features their predictors hand the gate; the detector gives backbone features.
FEATURE_BACKENDS: dict[str, FeatureBackend] = {
    "pytorch": FeatureBackend(_load_pytorch, _run_pytorch),
    "keras": FeatureBackend(_load_keras, _run_keras),
    "ultralytics": FeatureBackend(_load_ultralytics, _run_ultralytics),
}


@dataclass
class ModelFeatures:
    """One model ready to give ``(features, labels, logits)`` for images; build with :meth:`from_card`.

    Classifiers label each image with its predicted class (the class-conditional fit needs no dataset
    layout); the detector gives one class."""

    card: ModelCard
    card_dir: Path
    layers: tuple[str, ...]
    model: Any  # torch classifier, Keras [logits, features] model, or a bonecls.detection Detector
    batch_size: int = 64

    @classmethod
    def from_card(cls, path_or_id: str | os.PathLike, layers: Sequence[str] | None = None) -> ModelFeatures:
        card, card_dir = load_card(path_or_id, verify=False)  # the backend's loader verifies the weights
        backend = FEATURE_BACKENDS.get(card.framework)
        if backend is None:
            raise ValueError(
                f"The learned scope supports {', '.join(FEATURE_BACKENDS)} models, not {card.framework}."
            )
        card, names, model = backend.load(card_dir, layers)
        return cls(card, card_dir, names, model)

    def __call__(self, images: Sequence[Any]) -> Extracted:
        """``(features (N, D), labels (N,), logits (N, K) or None)`` for Radiographs or pixel arrays."""
        return FEATURE_BACKENDS[self.card.framework].run(self, list(images))
