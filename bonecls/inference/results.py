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

__all__ = ["OUT_OF_SCOPE", "CamResult", "Explanation", "Prediction", "Status", "status_for"]

Status = Literal["positive", "uncertain", "negative", "out of scope"]

#: The status of an image the model's scope gate refused (``bonecls.scope``): no result is shown.
OUT_OF_SCOPE: Status = "out of scope"


@dataclass(frozen=True)
class Prediction:
    """One classifier answer, and whether the model may give it (its scope gate, issue 21).

    ``in_scope`` False: the image lies outside what the model was trained on; ``status`` is
    ``"out of scope"`` and ``scope_reasons`` say why, for the reader. ``probabilities``, ``label`` and
    ``suspicion`` then hold the raw output, which is unreliable (empty when the model was not run:
    a header rule or an image heuristic refused first). ``scope_checked`` False marks a research
    answer given with the gate switched off (``scope=False``, ``--no-scope``).
    """

    probabilities: dict[str, float]
    label: str
    status: Status
    suspicion: float
    model_id: str
    model_sha256: str
    in_scope: bool = True
    scope_score: float | None = None
    scope_threshold: float | None = None
    scope_reasons: tuple[str, ...] = ()
    scope_checked: bool = True

    @property
    def model_was_run(self) -> bool:
        """False when the gate refused before the model ran (no raw output at all)."""
        return bool(self.probabilities)


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
    features: torch.Tensor | None = None  # (1, D) pooled features of that pass, for the scope gate


def status_for(suspicion: float, negative_below: float, positive_at: float) -> Status:
    """``negative`` below ``negative_below``, ``positive`` at or above ``positive_at``, else ``uncertain``."""
    if suspicion >= positive_at:
        return "positive"
    if suspicion < negative_below:
        return "negative"
    return "uncertain"
