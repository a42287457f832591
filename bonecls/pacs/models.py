"""The one place the PACS side touches models: loading them, running them, and reading the scope verdict.

Everything model-specific the PACS code needs goes through :class:`ModelReader`: classifiers load through
:func:`bonecls.inference.load_classifier` (the one framework/engine table), detectors through
:mod:`bonecls.detection`, and the scope verdict is read in :func:`scope_of` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bonecls.errors import WeightsError
from bonecls.pacs.results import OUT_OF_SCOPE, Box, ImageResult, ModelInfo, Status, rounded_probability
from bonecls.weights import ModelCard, load_card, scan_cards

__all__ = ["ModelOutput", "ModelReader", "ScopeVerdict", "image_result", "load_readers", "scope_of"]

SERVED_FRAMEWORKS = ("pytorch", "keras", "ultralytics")


@dataclass(frozen=True)
class ScopeVerdict:
    """Whether an image is inside what a model was trained on, with the reasons when it is not."""

    in_scope: bool
    score: float | None
    reasons: tuple[str, ...]


def scope_of(prediction: Any, radiograph: Any) -> ScopeVerdict:
    """The scope verdict for one model's answer on one image.

    The scope gate (issue 21) puts ``in_scope``, ``scope_score`` and ``scope_reasons`` on ``Prediction``;
    they are read here and nowhere else. Until a prediction carries them (and for detectors, whose output
    is a box list), the verdict is the existing image heuristics of :mod:`bonecls.ood` (colour photos,
    screenshots, documents, tiny images, non-radiograph modalities).
    """
    if prediction is not None and hasattr(prediction, "in_scope"):
        return ScopeVerdict(
            bool(getattr(prediction, "in_scope", True)),
            getattr(prediction, "scope_score", None),
            tuple(getattr(prediction, "scope_reasons", ()) or ()),
        )
    from bonecls.ood import check

    heuristics = check(radiograph)
    return ScopeVerdict(not heuristics.is_ood, None, tuple(heuristics.reasons))


@dataclass(frozen=True)
class ModelOutput:
    """One model's answer on one image, before it is tied to DICOM UIDs."""

    status: Status
    label: str
    suspicion: float | None
    probabilities: tuple[tuple[str, float], ...]
    boxes: tuple[Box, ...]
    scope_reasons: tuple[str, ...]
    overlay: np.ndarray | None  # uint8 (H, W, 3) RGB heat map / boxes; None when out of scope or not asked


def image_result(info: ModelInfo, out: ModelOutput, **uids: str) -> ImageResult:
    """``out`` tied to the model that gave it and to the image's DICOM UIDs (``study_instance_uid``,
    ``series_instance_uid``, ``sop_instance_uid``, ``sop_class_uid``; empty for a file that is not a
    DICOM): the one record the PACS reader, the SR/SC writers and the sweep table all take."""
    return ImageResult(
        study_instance_uid=uids.get("study_instance_uid", ""),
        series_instance_uid=uids.get("series_instance_uid", ""),
        sop_instance_uid=uids.get("sop_instance_uid", ""),
        sop_class_uid=uids.get("sop_class_uid", ""),
        model_id=info.model_id,
        model_sha256=info.sha256,
        finding=info.finding,
        status=out.status,
        label=out.label,
        suspicion=out.suspicion,
        probabilities=out.probabilities,
        boxes=out.boxes,
        scope_reasons=out.scope_reasons,
    )


def model_info(card: ModelCard) -> ModelInfo:
    """The identity written into results: the card's id, its version (``extra.version`` or creation
    time), the weights' sha256, the task and the training-data sentence."""
    version = str(card.extra.get("version") or card.created or "unversioned")
    return ModelInfo(card.id, version[:64], card.sha256, card.task, card.training_data)


class ModelReader:
    """A loaded classifier or detector with one ``read`` for both."""

    def __init__(self, card: ModelCard, engine: Any) -> None:
        self.card = card
        self.engine = engine
        self.info = model_info(card)
        self.is_detector = card.framework == "ultralytics"

    @classmethod
    def from_card(cls, path_or_id: str | Path, device: str = "cpu") -> ModelReader:
        card, card_dir = load_card(path_or_id, verify=False)
        return cls(card, _load_engine(card, card_dir, device))

    def read(self, radiograph: Any, *, overlay: bool = False) -> ModelOutput:
        """Run the model on a :class:`bonecls.imaging.Radiograph`; ``overlay`` also draws the heat map
        (classifiers) or the boxes (detectors) for a Secondary Capture. Out of scope: no finding at all."""
        if self.is_detector:
            return self._detect(radiograph, overlay)
        if overlay:
            explanation = self.engine.explain(radiograph)
            prediction, picture = explanation.prediction, explanation.overlay
        else:
            prediction, picture = self.engine.predict(radiograph), None
        scope = scope_of(prediction, radiograph)
        if not scope.in_scope:
            return _out_of_scope(scope)
        return ModelOutput(
            status=prediction.status,
            label=prediction.label,
            suspicion=rounded_probability(prediction.suspicion),
            probabilities=tuple((k, rounded_probability(v)) for k, v in prediction.probabilities.items()),
            boxes=(),
            scope_reasons=(),
            overlay=picture,
        )

    def _detect(self, radiograph: Any, overlay: bool) -> ModelOutput:
        from bonecls.inference.results import status_for

        scope = scope_of(None, radiograph)
        if not scope.in_scope:
            return _out_of_scope(scope)
        th = self.card.thresholds
        found = self.engine.detect(radiograph, conf=th.negative_below)
        boxes = tuple(Box.rounded(b.x0, b.y0, b.x1, b.y1, b.confidence, b.label) for b in found)
        suspicion = max((b.confidence for b in boxes), default=0.0)
        status = status_for(suspicion, th.negative_below, th.positive_at)
        label = boxes[0].label if boxes and status == "positive" else "none"
        return ModelOutput(
            status=status,
            label=label,
            suspicion=suspicion,
            probabilities=(),
            boxes=boxes,
            scope_reasons=(),
            overlay=draw_boxes(radiograph.pixels, boxes) if overlay else None,
        )


def _out_of_scope(scope: ScopeVerdict) -> ModelOutput:
    reasons = scope.reasons or ("Outside what this model was trained on.",)
    return ModelOutput(OUT_OF_SCOPE, "", None, (), (), reasons, None)


def _load_engine(card: ModelCard, card_dir: Path, device: str) -> Any:
    """The inference engine for a card: the detector, or the card's own classifier engine (heat maps
    need the native framework, so never the predict-only ONNX path)."""
    if card.framework == "ultralytics":
        from bonecls.detection.detector import Detector

        return Detector.from_card(card_dir, device=device)
    if card.framework in ("pytorch", "keras"):
        from bonecls.inference import load_classifier

        return load_classifier(card_dir, engine="native", device=device)
    raise WeightsError(f"The PACS reader cannot run {card.framework} models (model '{card.id}').")


def draw_boxes(pixels: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """The radiograph in RGB with each box outlined and its confidence written above it."""
    import cv2

    grey = np.clip(np.asarray(pixels, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    rgb = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    thickness = max(1, round(max(rgb.shape[:2]) / 256))
    for box in boxes:
        p0, p1 = (round(box.x0), round(box.y0)), (round(box.x1), round(box.y1))
        cv2.rectangle(rgb, p0, p1, (255, 64, 0), thickness)
        cv2.putText(
            rgb,
            f"{box.label} {box.confidence:.2f}",
            (p0[0], max(10, p0[1] - 3)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.35 * thickness,
            (255, 64, 0),
            1,
            cv2.LINE_AA,
        )
    return rgb


def load_readers(
    models: Sequence[str] | None = None, tasks: Sequence[str] | None = None, device: str = "cpu"
) -> list[ModelReader]:
    """Readers for the given card ids or folders, or else for every installed model whose task is in
    ``tasks`` (all installed models when both are empty). Invalid cards are skipped when scanning and
    refused when named."""
    if models:
        readers = [ModelReader.from_card(m, device=device) for m in models]
    else:
        cards = [e for e in scan_cards() if e.card is not None and e.card.framework in SERVED_FRAMEWORKS]
        readers = [ModelReader.from_card(e.directory, device=device) for e in cards]
    if tasks:
        readers = [r for r in readers if r.card.task in tasks]
    if not readers:
        raise WeightsError(
            "No model fits this reading: install a model card or name one with --model "
            f"(tasks asked: {', '.join(tasks) if tasks else 'any'})."
        )
    return readers
