"""Features of many images for one model from its card: what fitting and benchmarking the gate need.

PyTorch classifiers give their pooled features through :class:`bonecls.scope.features.FeatureTap`
and their predicted class (the label of the class-conditional fit: it needs no dataset layout, and
it is the class whose centre an in-distribution image should sit near); the Ultralytics detector
gives its backbone features through ``bonecls.detection.scope_features`` (imported only for such a
card, so ultralytics stays inside ``bonecls/detection/``) and one class.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bonecls.imaging import load_radiograph
from bonecls.scope.features import PENULTIMATE, FeatureTap, preprocess_pixels
from bonecls.weights import ModelCard, load_card, load_pytorch

__all__ = ["ModelFeatures", "image_files", "load_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".tif", ".tiff")


def image_files(folder: str | os.PathLike, limit: int | None = None) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted by path; the first ``limit`` of them."""
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return files[:limit] if limit else files


def load_images(paths: Iterable[str | os.PathLike]) -> list[Any]:
    """Radiographs decoded by the app's loader (``bonecls.imaging.load_radiograph``)."""
    return [load_radiograph(p) for p in paths]


@dataclass
class ModelFeatures:
    """One model ready to give ``(features, labels, logits)`` for images; build with :meth:`from_card`."""

    card: ModelCard
    card_dir: Path
    layers: tuple[str, ...]
    model: Any  # torch classifier, or a bonecls.detection.detector.Detector
    batch_size: int = 64

    @classmethod
    def from_card(cls, path_or_id: str | os.PathLike, layers: Sequence[str] | None = None) -> ModelFeatures:
        card, card_dir = load_card(path_or_id)
        if card.framework == "pytorch":
            model, card = load_pytorch(card_dir)
            return cls(card, card_dir, tuple(layers or (PENULTIMATE,)), model)
        if card.framework == "ultralytics":
            from bonecls.detection.detector import Detector
            from bonecls.detection.scope_features import BACKBONE_LAYERS, layer_names

            indices = tuple(int(x.split(".")[-1]) for x in layers) if layers else BACKBONE_LAYERS
            return cls(card, card_dir, layer_names(indices), Detector.from_card(card_dir, scope=False))
        raise ValueError(f"The learned scope supports PyTorch and Ultralytics models, not {card.framework}.")

    def __call__(self, images: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(features (N, D), labels (N,), logits (N, K) or None)`` for Radiographs or pixel arrays."""
        if self.card.framework == "ultralytics":
            from bonecls.detection.scope_features import detector_features

            indices = [int(name.split(".")[-1]) for name in self.layers]
            feats = detector_features(self.model, images, indices)
            return feats, np.zeros(len(feats), dtype=np.int64), None
        card = self.card
        feats, logits = [], []
        with FeatureTap(self.model, card.architecture, self.layers) as tap, torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                chunk = images[start : start + self.batch_size]
                batch = torch.cat(
                    [
                        preprocess_pixels(
                            im, card.input_size, card.normalization.mean, card.normalization.std
                        )
                        for im in chunk
                    ]
                )
                tap.clear()
                logits.append(self.model(batch).float())
                feats.append(tap.take())
        all_logits = torch.cat(logits).numpy()
        return torch.cat(feats).numpy(), all_logits.argmax(axis=1), all_logits
