"""What a classifier answers: a :class:`Prediction`, an :class:`Explanation`, a :class:`CamResult`.

Every engine (PyTorch, Keras, ONNX Runtime) returns these same objects, and the report, the worklist
and the app read only them, so they live apart from any engine. Importing this module costs no torch,
numpy or OpenCV: the report and the worklist import it while the app starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["CamResult", "Explanation", "Prediction", "Status", "status_for"]

Status = Literal["positive", "uncertain", "negative"]



@dataclass(frozen=True)
class Prediction:
    probabilities: dict[str, float]
    label: str
    status: Status
    suspicion: float
    model_id: str
    model_sha256: str


@dataclass(frozen=True)
class Explanation:
    heatmap: np.ndarray  # float32 (H, W) in [0, 1], at the radiograph's size
    overlay: np.ndarray  # uint8 (H, W, 3) RGB
    method: str
    target_class: str
    prediction: Prediction
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class CamResult:
    """One CAM pass of any framework: the heat map and the logits of the same forward pass."""

    heatmap: np.ndarray  # float32 (S, S) or out_size, in [0, 1]
    logits: torch.Tensor  # (1, num_classes), from the CAM's own forward pass
    target_index: int  # the class the CAM explains
    warnings: tuple[str, ...] = field(default=())


def status_for(suspicion: float, negative_below: float, positive_at: float) -> Status:
    """``negative`` below ``negative_below``, ``positive`` at or above ``positive_at``, else ``uncertain``."""
    if suspicion >= positive_at:
        return "positive"
    if suspicion < negative_below:
        return "negative"
    return "uncertain"
