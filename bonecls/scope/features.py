"""Pooled features of a classifier, recorded by hooks during its ordinary forward pass.

The scope score measures how far an image's features lie from those of the model's training images.
The features are those the head itself reads (the globally pooled vector before the classifier,
``PENULTIMATE``), optionally joined by the spatial means of earlier layers. They are taken by hooks
during the forward pass that computes the logits, so the gate costs no second pass through the
network: only a few vector products (see :mod:`bonecls.scope.stats`).

:class:`FeatureTap` keeps its hooks on the model until :meth:`FeatureTap.close`; what a forward
pass records is kept per thread, so several threads may run the shared model at once (as
``Predictor.predict`` allows) and each gets its own image's features.

:func:`preprocess_pixels` is the predictor's preprocessing (``Predictor.preprocess``: squash to the
card's square size with cv2 INTER_AREA when shrinking, bilinear when enlarging, clip to [0, 1],
``(x - mean) / std`` per channel); ``tests/test_scope.py`` checks that the two give identical tensors,
so the statistics are fitted on exactly what the model sees at answer time.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from bonecls.errors import ImageError
from bonecls.models import get_submodule, head_module

__all__ = ["PENULTIMATE", "FeatureTap", "classifier_features", "pixels_of", "preprocess_pixels"]

#: Layer name for the pooled vector the classifier head reads (the head's input).
PENULTIMATE = "penultimate"


def pixels_of(image: Any) -> np.ndarray:
    """(H, W) float32 pixels in [0, 1] of a Radiograph or array (uint8 scaled by 1/255)."""
    arr = np.asarray(getattr(image, "pixels", image))
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageError(
            f"The classifier needs a single-channel (H, W) image; got an array of shape {arr.shape}."
        )
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if not np.issubdtype(arr.dtype, np.floating):
        raise ImageError(f"Radiograph pixels must be float in [0, 1] (or uint8); got {arr.dtype}.")
    return arr.astype(np.float32, copy=False)


def preprocess_pixels(
    image: Any, input_size: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """A Radiograph or (H, W) array -> normalised (1, C, S, S) float32 tensor: the classifiers' one
    preprocessing (:meth:`bonecls.inference.predictor.Predictor.preprocess` calls it)."""
    pixels = pixels_of(image)
    h, w = pixels.shape
    if (h, w) != (input_size, input_size):
        interp = cv2.INTER_AREA if (input_size <= h and input_size <= w) else cv2.INTER_LINEAR
        pixels = cv2.resize(pixels, (input_size, input_size), interpolation=interp)
    pixels = np.clip(np.nan_to_num(pixels, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    chans = [(pixels - np.float32(m)) / np.float32(d) for m, d in zip(mean, std, strict=True)]
    return torch.from_numpy(np.stack(chans).astype(np.float32, copy=False)).unsqueeze(0)


class FeatureTap:
    """Hooks on ``model`` that record pooled features of every forward pass, per thread.

    ``layers``: :data:`PENULTIMATE` (the input of the classifier head that
    :func:`bonecls.models.create_model` installed for ``architecture``) and/or dotted module paths
    whose outputs are averaged over their spatial positions. The feature vector joins them in the
    order given. Use as a context manager, or call :meth:`close` to remove the hooks.
    """

    def __init__(self, model: nn.Module, architecture: str, layers: Sequence[str] = (PENULTIMATE,)) -> None:
        if not layers:
            raise ValueError("FeatureTap needs at least one layer.")
        self.layers = tuple(layers)
        self._local = threading.local()
        self._handles = []
        for slot, name in enumerate(self.layers):
            if name == PENULTIMATE:
                module = head_module(model, architecture)
                self._handles.append(module.register_forward_pre_hook(self._pre_hook(slot)))
            else:
                module = get_submodule(model, name)
                self._handles.append(module.register_forward_hook(self._out_hook(slot)))

    def _store(self, slot: int, value: torch.Tensor) -> None:
        captured = getattr(self._local, "captured", None)
        if captured is None:
            captured = self._local.captured = {}
        if slot not in captured:  # the first pass since clear(): Score-CAM's later masked passes are not it
            captured[slot] = value.detach().float().reshape(value.shape[0], -1).cpu()

    def clear(self) -> None:
        """Forget what this thread recorded: call before the forward pass whose features :meth:`take`
        should return (a pass that raised, or one nobody took, must not leak into the next image)."""
        self._local.captured = {}

    def _pre_hook(self, slot: int):
        def hook(_module: nn.Module, args: tuple) -> None:
            self._store(slot, args[0])

        return hook

    def _out_hook(self, slot: int):
        def hook(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
            pooled = output.mean(dim=tuple(range(2, output.ndim))) if output.ndim > 2 else output
            self._store(slot, pooled)

        return hook

    def take(self) -> torch.Tensor:
        """The features this thread's first forward pass since :meth:`clear` / :meth:`take` recorded,
        (N, D) float32 on the CPU; cleared."""
        captured = getattr(self._local, "captured", None) or {}
        self._local.captured = {}
        missing = [self.layers[i] for i in range(len(self.layers)) if i not in captured]
        if missing:
            raise RuntimeError(f"No features were recorded for layer(s) {missing}; run the model first.")
        return torch.cat([captured[i] for i in range(len(self.layers))], dim=1)

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def classifier_features(
    model: nn.Module,
    architecture: str,
    batch: torch.Tensor,
    layers: Sequence[str] = (PENULTIMATE,),
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, features)`` of a preprocessed batch from one forward pass (hooks removed after)."""
    device = next(model.parameters()).device
    with FeatureTap(model, architecture, layers) as tap, torch.inference_mode():
        tap.clear()
        logits = model(batch.to(device)).float().cpu()
        return logits, tap.take()
