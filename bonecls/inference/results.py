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

__all__ = [
    "OUT_OF_SCOPE",
    "CamResult",
    "Explanation",
    "Prediction",
    "Reading",
    "Status",
    "TileAnswer",
    "status_for",
]

Status = Literal["positive", "uncertain", "negative", "out of scope"]

#: The status of an image the model's scope gate refused (``bonecls.scope``): no result is shown.
OUT_OF_SCOPE: Status = "out of scope"


@dataclass(frozen=True)
class TileAnswer:
    """One tile of a film read in tiles: its footprint on the film (x0, y0, x1, y1 film pixels) and
    what the model answered there."""

    box: tuple[float, float, float, float]
    suspicion: float
    in_scope: bool
    scope_score: float | None = None


@dataclass(frozen=True)
class Reading:
    """How a film was read (:mod:`bonecls.inference.tiling`): ``mode`` "single" (the whole film
    squashed to the model's input) or "tiles" (resampled to ``mm_per_pixel`` and read in ``n_tiles``
    overlapping tiles); ``mm_per_pixel`` the scale the model read at (None: unknown); the film's
    ``spacing_mm`` and its ``spacing_source`` (a DICOM tag, "assumed" or "none"); ``notes`` the
    sentences to show (an assumed spacing, the merge rule); ``chosen_tile`` the tile whose answer the
    film got."""

    mode: str
    n_tiles: int = 1
    mm_per_pixel: float | None = None
    spacing_mm: tuple[float, float] | None = None
    spacing_source: str = "none"
    notes: tuple[str, ...] = ()
    tiles: tuple[TileAnswer, ...] = ()
    chosen_tile: int | None = None

    @property
    def summary(self) -> str:
        """One line for people: "single read" or "12 tiles at 0.52 mm/px (spacing from PixelSpacing)"."""
        scale = "" if self.mm_per_pixel is None else f" at {self.mm_per_pixel:.2f} mm/px"
        where = {"none": "", "assumed": " (spacing assumed)"}.get(
            self.spacing_source, f" (spacing from {self.spacing_source})"
        )
        what = f"{self.n_tiles} tiles" if self.mode == "tiles" else "single read"
        return f"{what}{scale}{where}"

    def to_dict(self) -> dict:
        """Plain JSON-ready fields (the CLI's ``--json``, reports)."""
        return {
            "mode": self.mode,
            "summary": self.summary,
            "n_tiles": self.n_tiles,
            "mm_per_pixel": self.mm_per_pixel,
            "spacing_mm": None if self.spacing_mm is None else list(self.spacing_mm),
            "spacing_source": self.spacing_source,
            "notes": list(self.notes),
            "chosen_tile": self.chosen_tile,
            "tiles": [
                {
                    "box": list(t.box),
                    "suspicion": t.suspicion,
                    "in_scope": t.in_scope,
                    "scope_score": t.scope_score,
                }
                for t in self.tiles
            ],
        }


@dataclass(frozen=True)
class Prediction:
    """One classifier answer, and whether the model may give it (its scope gate, issue 21).

    ``in_scope`` False: the image lies outside what the model was trained on; ``status`` is
    ``"out of scope"`` and ``scope_reasons`` say why, for the reader. ``probabilities``, ``label`` and
    ``suspicion`` then hold the raw output, which is unreliable (empty when the model was not run:
    a header rule or an image heuristic refused first). ``scope_checked`` False marks a research
    answer given with the gate switched off (``scope=False``, ``--no-scope``). ``reading`` says how
    the film was read (:class:`Reading`: one pass, or tiles at the model's trained scale).
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
    reading: Reading | None = None

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
