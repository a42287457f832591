"""The sections of a model card (``card.json``) beside its core fields: input normalisation, decision
thresholds, the two measured operating points, the training scale and the learned scope. Kept apart from
:mod:`bonecls.weights` (which reads, verifies and writes cards and weights) so that each file holds one
job; :mod:`bonecls.weights` re-exports every name here.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class Normalization(BaseModel):
    """Per-channel normalisation applied after scaling pixels to [0, 1]: ``(x - mean) / std``."""

    model_config = ConfigDict(extra="forbid")
    mean: list[float] = Field(min_length=1, max_length=3)
    std: list[float] = Field(min_length=1, max_length=3)

    @model_validator(mode="after")
    def _check(self) -> Normalization:
        if len(self.mean) != len(self.std):
            raise ValueError("normalization mean and std must have the same length")
        if any(not (s > 0 and s < float("inf")) for s in self.std):
            raise ValueError("normalization std values must be positive and finite")
        if any(not abs(m) < float("inf") for m in self.mean):
            raise ValueError("normalization mean values must be finite")
        return self


class Thresholds(BaseModel):
    """Decision thresholds on the suspicion score (sum of the positive classes' probabilities)."""

    model_config = ConfigDict(extra="forbid")
    negative_below: float = Field(ge=0.0, le=1.0)
    positive_at: float = Field(ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _order(self) -> Thresholds:
        if self.negative_below > self.positive_at:
            raise ValueError("thresholds must satisfy 0 <= negative_below <= positive_at <= 1")
        return self


class OperatingPoint(BaseModel):
    """One cut on the suspicion (or, for a detector, the box confidence) and what it achieved."""

    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(ge=0.0, le=1.0)
    sensitivity: float = Field(ge=0.0, le=1.0)
    specificity: float = Field(ge=0.0, le=1.0)


class OperatingPoints(BaseModel):
    """The card's two operating points, measured on held-out images, so the reader knows what each means.

    ``doubt`` is the sensitive cut (``thresholds.negative_below``): at or above it the image is worth a
    second look. ``positive`` is the specific cut (``thresholds.positive_at``): at or above it the finding
    is called. ``measured_on`` says on which images (none of them seen in training) the figures hold.
    """

    model_config = ConfigDict(extra="forbid")
    doubt: OperatingPoint
    positive: OperatingPoint
    n_positive: int = Field(ge=1)
    n_negative: int = Field(ge=1)
    target_sensitivity: float = Field(ge=0.0, le=1.0)
    target_specificity: float = Field(ge=0.0, le=1.0)
    measured_on: str = Field(min_length=1)
    command: str = ""


class DeclaredScope(BaseModel):
    """What the model saw in training, as DICOM header values, checked before any feature is computed.

    ``body_parts``, ``views`` and ``modalities`` are upper-case DICOM code strings (BodyPartExamined,
    ViewPosition, Modality); an empty list declares nothing about that attribute. ``age_group`` is
    ``adult``, ``paediatric`` or ``any``; ``description`` is the sentence the Models page shows;
    ``derived_from`` says where the declaration came from (the training set's labels, or the task's
    phantom recipe when the data has none; empty on cards written before it was recorded).
    """

    model_config = ConfigDict(extra="forbid")
    body_parts: list[str] = Field(default_factory=list)
    views: list[str] = Field(default_factory=list)
    modalities: list[str] = Field(default_factory=list)
    age_group: Literal["adult", "paediatric", "any"] = "any"
    description: str = ""
    derived_from: str = ""

    @field_validator("body_parts", "views", "modalities")
    @classmethod
    def _codes(cls, v: list[str]) -> list[str]:
        codes = [c.strip().upper() for c in v]
        if any(not c for c in codes):
            raise ValueError("declared scope codes must be non-empty strings")
        return codes


class ScopeSection(BaseModel):
    """The learned scope gate of one model (``bonecls.scope``): its statistics file beside the weights,
    that file's sha256 (checked before use), the score threshold, the in-scope rate on held-out
    in-distribution images it was chosen at, and the declared scope.

    ``answer_thresholds`` (classifiers): one threshold per answer, by class index, each chosen so that
    ``in_scope_rate`` of the threshold images given that answer stay in scope (class-conditional, or
    Mondrian, calibration). One pooled threshold refused images with a finding more often than images
    without: they lie farther from the training images. An image is judged against its answer's
    threshold; ``threshold`` (pooled) serves where no answer is known, and detectors."""

    model_config = ConfigDict(extra="forbid")
    stats_file: str = "scope.safetensors"
    sha256: str = Field(pattern=_SHA_RE.pattern)
    threshold: float = Field(allow_inf_nan=False)
    in_scope_rate: float = Field(gt=0.0, le=1.0)
    answer_thresholds: list[float] | None = None
    method: str = "mahalanobis"
    declared: DeclaredScope = Field(default_factory=DeclaredScope)
    fitted_on: str = ""
    metrics: dict[str, Any] = Field(default_factory=dict)

    @field_validator("sha256", mode="before")
    @classmethod
    def _sha_lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("answer_thresholds")
    @classmethod
    def _answer_thresholds(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (len(v) < 2 or not all(math.isfinite(t) for t in v)):
            raise ValueError("answer_thresholds must be finite, one per class (two or more), or absent")
        return v

    @field_validator("stats_file")
    @classmethod
    def _stats_file(cls, v: str) -> str:
        if not v.endswith(".safetensors") or "/" in v or "\\" in v or v.startswith("."):
            raise ValueError("stats_file must be a plain .safetensors file name inside the model folder")
        return v


#: Tiles only when the film's shorter side covers at least this many trained fields (inference.tiling).
TILE_WHEN_FIELD_OVER = 1.5
#: The least overlap of neighbouring tiles, as a share of the tile's side.
TILE_OVERLAP = 0.25

#: The least share of a film's tiles that must be in scope for the film to get an answer. A film read
#: in N tiles gives the gate N chances to let an unfamiliar image through (a cat's thorax had 2 of 12
#: tiles under a weak test model's threshold); a film the model can read has many familiar tiles.
TILE_MIN_IN_SCOPE = 0.25

#: How a film read in tiles becomes one answer (stated on every tiled answer and on the Models page).
TILE_RULE = (
    "A film much larger than the model's trained field is resampled to its trained mm per pixel and read "
    "in overlapping tiles (25% overlap); the film's suspicion is that of its most suspicious in-scope "
    "tile, its heat map the tiles' maps stitched back (maximum where they overlap); an out-of-scope tile "
    "gives no answer, and the film is refused unless at least a quarter of its tiles are in scope."
)


class TrainingScale(BaseModel):
    """The scale the model was trained at: mm per pixel of its input (the training images' pixel
    spacing times their side over ``input_size``), median and 5th/95th percentiles, and how it was
    found. The predictor resamples a film with a known spacing to ``mm_per_pixel`` before tiling."""

    model_config = ConfigDict(extra="forbid")
    mm_per_pixel: float = Field(gt=0.0, le=10.0, allow_inf_nan=False)
    p5_mm_per_pixel: float = Field(gt=0.0, le=10.0, allow_inf_nan=False)
    p95_mm_per_pixel: float = Field(gt=0.0, le=10.0, allow_inf_nan=False)
    source: str = Field(min_length=1)
    tile_rule: str = TILE_RULE

    @model_validator(mode="after")
    def _order(self) -> TrainingScale:
        if not self.p5_mm_per_pixel <= self.mm_per_pixel <= self.p95_mm_per_pixel:
            raise ValueError("training scale must satisfy p5 <= median <= p95")
        return self
