"""Classifier inference: load a card's model on an engine, predict, explain with CAMs.

Modules, by job:

* ``results``: Prediction, Explanation, CamResult, status_for (no framework; the words: bonecls.reading)
* ``heatmap``: colour maps, heat-map sanitising and resizing, overlays (OpenCV and numpy only)
* ``predictor``: the PyTorch Predictor, base of the other frameworks' predictors
* ``torch_cam``: pytorch-grad-cam's CAM methods by name
* ``keras_loader`` / ``keras_predictor`` / ``keras_cam``: the same for Keras models
* ``onnx``: the ONNX Runtime predict-only twin of a PyTorch Predictor
* ``load``: :func:`load_classifier`, the one place that picks a class for a card and an engine

The names below are imported on first use, not with the package: the report and the worklist import
``bonecls.inference.results`` while the app starts, which must not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bonecls.inference.heatmap import COLORMAPS
    from bonecls.inference.load import load_classifier
    from bonecls.inference.predictor import Predictor
    from bonecls.inference.results import Explanation, Prediction
    from bonecls.inference.torch_cam import CAM_METHODS

_HOMES = {
    "CAM_METHODS": "bonecls.inference.torch_cam",
    "COLORMAPS": "bonecls.inference.heatmap",
    "Explanation": "bonecls.inference.results",
    "Prediction": "bonecls.inference.results",
    "Predictor": "bonecls.inference.predictor",
    "load_classifier": "bonecls.inference.load",
}

__all__ = ["CAM_METHODS", "COLORMAPS", "Explanation", "Prediction", "Predictor", "load_classifier"]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # the next access skips this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
