"""What a PACS reading is: one result per (image, model) and a study summary per model.

These records are what the SR carries and what the sweep's table holds, so they hold no patient data:
only DICOM UIDs of the images (not patient identifiers), the model's identity and the model's answer.
Numbers are rounded here, once (probabilities to 6 decimals, box corners to 1/100 pixel), so that what
is written into a DICOM SR reads back equal.

Statuses are the project's: ``positive``, ``uncertain``, ``negative``, and ``out of scope`` (the image is
outside what the model was trained on: no finding is given; the SR says "not assessed").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Status = Literal["positive", "uncertain", "negative", "out of scope"]
STATUSES: tuple[Status, ...] = ("positive", "uncertain", "negative", "out of scope")
OUT_OF_SCOPE: Status = "out of scope"
#: What each task's model looks for (its finding), by card task.
FINDING_BY_TASK = {
    "fracture": "fracture",
    "threeclass": "fracture",
    "pneumonia": "pneumonia",
    "pneumonia-det": "pneumonia",
    "fracture-det": "fracture",
}
PROBABILITY_DECIMALS = 6
COORDINATE_DECIMALS = 2


def rounded_probability(value: float) -> float:
    return round(float(value), PROBABILITY_DECIMALS)


def rounded_coordinate(value: float) -> float:
    return round(float(value), COORDINATE_DECIMALS)


@dataclass(frozen=True)
class ModelInfo:
    """A model's identity as written into results: id, version, weights sha256, task, training data."""

    model_id: str
    version: str
    sha256: str
    task: str
    training_data: str

    @property
    def finding(self) -> str:
        return FINDING_BY_TASK.get(self.task, self.task)


@dataclass(frozen=True)
class Box:
    """A detected region in the source image's pixel coordinates (x right, y down; continuous)."""

    x0: float
    y0: float
    x1: float
    y1: float
    confidence: float
    label: str

    @classmethod
    def rounded(cls, x0: float, y0: float, x1: float, y1: float, confidence: float, label: str) -> Box:
        c = rounded_coordinate
        return cls(c(x0), c(y0), c(x1), c(y1), rounded_probability(confidence), str(label))


@dataclass(frozen=True)
class ImageResult:
    """One model's answer on one image (identified by its DICOM UIDs; never by patient data)."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    model_id: str
    model_sha256: str
    finding: str
    status: Status
    label: str = ""
    suspicion: float | None = None
    probabilities: tuple[tuple[str, float], ...] = ()
    boxes: tuple[Box, ...] = ()
    scope_reasons: tuple[str, ...] = ()

    @property
    def in_scope(self) -> bool:
        return self.status != OUT_OF_SCOPE

    def row(self) -> dict[str, object]:
        """A flat record for tables and JSON (UIDs and the model's answer; no patient data)."""
        return {
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "sop_instance_uid": self.sop_instance_uid,
            "model_id": self.model_id,
            "model_sha256": self.model_sha256,
            "finding": self.finding,
            "status": self.status,
            "label": self.label,
            "suspicion": self.suspicion,
            "probabilities": dict(self.probabilities),
            "boxes": [
                {"x0": b.x0, "y0": b.y0, "x1": b.x1, "y1": b.y1, "confidence": b.confidence, "label": b.label}
                for b in self.boxes
            ],
            "scope_reasons": list(self.scope_reasons),
        }


@dataclass(frozen=True)
class StudySummary:
    """One model's verdict on a study: the most suspicious in-scope image decides.

    ``status`` is ``out of scope`` when no image of the study was in the model's scope;
    ``deciding_sop_instance_uid`` names the image that decided (None then).
    """

    model_id: str
    finding: str
    status: Status
    suspicion: float | None
    deciding_sop_instance_uid: str | None
    images: int
    images_in_scope: int


def summarise(results: Iterable[ImageResult]) -> tuple[StudySummary, ...]:
    """One :class:`StudySummary` per model, in the order the models first appear."""
    by_model: dict[str, list[ImageResult]] = {}
    for result in results:
        by_model.setdefault(result.model_id, []).append(result)
    summaries = []
    for model_id, group in by_model.items():
        in_scope = [r for r in group if r.in_scope]
        if not in_scope:
            summaries.append(
                StudySummary(model_id, group[0].finding, OUT_OF_SCOPE, None, None, len(group), 0)
            )
            continue
        # ties: the first image in study order decides (stable max)
        decider = max(in_scope, key=lambda r: -1.0 if r.suspicion is None else r.suspicion)
        summaries.append(
            StudySummary(
                model_id,
                decider.finding,
                decider.status,
                decider.suspicion,
                decider.sop_instance_uid,
                len(group),
                len(in_scope),
            )
        )
    return tuple(summaries)


@dataclass(frozen=True)
class StudyReading:
    """Everything one reading of one study produced (what the SR holds), plus what was not read."""

    study_instance_uid: str
    models: tuple[ModelInfo, ...]
    results: tuple[ImageResult, ...]
    summaries: tuple[StudySummary, ...] = ()
    skipped: tuple[str, ...] = field(default=())

    @classmethod
    def of(
        cls,
        study_instance_uid: str,
        models: Sequence[ModelInfo],
        results: Sequence[ImageResult],
        skipped: Sequence[str] = (),
    ) -> StudyReading:
        return cls(study_instance_uid, tuple(models), tuple(results), summarise(results), tuple(skipped))

    def model(self, model_id: str) -> ModelInfo:
        for info in self.models:
            if info.model_id == model_id:
                return info
        raise KeyError(model_id)
