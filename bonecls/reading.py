"""What a reading says, in words and styles shared by the app, the reports and the worklist.

Why one module: the status names, the two operating points, the box styles (dashed for doubt, solid
for definite), the heat-map rule and the study-level sentence must read the same on screen, in the
PNG/PDF exports and in the worklist. No Streamlit and no model code here.

Status values stay those of :class:`bonecls.inference.results.Prediction` (``positive`` / ``uncertain`` /
``negative``, the machine values in JSON and the audit log); readers see ``positive`` /
``doubt — review`` / ``negative``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BOX_DEFINITE",
    "BOX_DOUBT",
    "HEAT_CAPTION",
    "STATUS_TEXT",
    "BoxTiers",
    "box_confidence",
    "box_legend",
    "box_tier",
    "heat_shown_by_default",
    "operating_point_lines",
    "status_text",
    "study_sentence",
    "tier_boxes",
]

STATUS_TEXT: dict[str, str] = {
    "positive": "positive",
    "uncertain": "doubt — review",
    "negative": "negative",
    "detected": "findings boxed",
    "none": "no box above threshold",
    "error": "unreadable",
    "out of scope": "out of scope",
}
#: status -> colour name (Streamlit badge colours; the worklist and the charts map them to hex)
STATUS_COLOUR: dict[str, str] = {
    "positive": "red",
    "uncertain": "orange",
    "negative": "green",
    "detected": "red",
    "none": "green",
    "error": "gray",
    "out of scope": "gray",
}
STATUS_HEX: dict[str, str] = {"red": "#c0392b", "orange": "#e67e22", "green": "#2e7d32", "gray": "#9e9e9e"}
HEAT_CAPTION = "Heat map: where the model looked — not a finding."
#: said wherever an image is refused: the scope gates refuse images with a lesion as well as images
#: without; with one pooled threshold they refused lesion images more often, and the pneumonia models
#: still do (BENCHMARKS.md section 11, "What the scope gate does"), so a refusal must never read as
#: "nothing found"
NO_RESULT_NOTE = (
    "No result is not a negative reading: images with a finding are refused too, by some models more "
    "often than images without. Read this image without the aid."
)
BOX_DEFINITE = "definite"
BOX_DOUBT = "doubt"
#: box colours: definite and doubt differ in line style (solid / dashed) and shade
BOX_COLOUR = {BOX_DEFINITE: "#00e5ff", BOX_DOUBT: "#ffd54f"}


def status_text(status: str) -> str:
    """The status as a reader sees it (``uncertain`` reads ``doubt — review``)."""
    return STATUS_TEXT.get(status, status)


def heat_shown_by_default(status: str | None) -> bool:
    """Heat maps open by themselves only for doubt and positive results (otherwise on request): a heat
    map over a negative film invites the reader to see a finding the model did not report."""
    return status in ("positive", "uncertain")


def box_confidence(box: Any) -> float:
    get = box.get if isinstance(box, Mapping) else (lambda k, d=None: getattr(box, k, d))
    value = get("confidence")
    return 1.0 if value is None else float(value)


def box_tier(confidence: float, doubt_at: float, positive_at: float) -> str | None:
    """``definite`` at or above ``positive_at``, ``doubt`` from ``doubt_at``, else None (not shown)."""
    if confidence >= positive_at:
        return BOX_DEFINITE
    if confidence >= doubt_at:
        return BOX_DOUBT
    return None


@dataclass(frozen=True)
class BoxTiers:
    """The boxes worth showing, split by the detector card's two confidence thresholds."""

    definite: list[Any]
    doubt: list[Any]
    doubt_at: float
    positive_at: float

    @property
    def shown(self) -> list[Any]:
        return [*self.definite, *self.doubt]

    def tier_of(self, box: Any) -> str:
        return BOX_DEFINITE if any(box is b for b in self.definite) else BOX_DOUBT


def tier_boxes(boxes: Sequence[Any], doubt_at: float, positive_at: float) -> BoxTiers:
    """Split ``boxes`` into definite and doubt (those below ``doubt_at`` are dropped)."""
    definite, doubt = [], []
    for box in boxes:
        tier = box_tier(box_confidence(box), doubt_at, positive_at)
        if tier == BOX_DEFINITE:
            definite.append(box)
        elif tier == BOX_DOUBT:
            doubt.append(box)
    return BoxTiers(definite, doubt, float(doubt_at), float(positive_at))


def box_legend(doubt_at: float, positive_at: float) -> str:
    """One line saying what the two box styles mean."""
    return (
        f"Solid box: definite (confidence ≥ {positive_at:.2f}). "
        f"Dashed box: doubt — review (confidence {doubt_at:.2f}–{positive_at:.2f})."
    )


def operating_point_lines(card: Any) -> list[str]:
    """The card's two cuts and, when measured, the sensitivity and specificity at each."""
    th = card.thresholds
    op = getattr(card, "operating_points", None)
    detector = card.framework == "ultralytics"
    unit = "box confidence" if detector else "suspicion"

    def figures(point: Any) -> str:
        return f"sensitivity {point.sensitivity:.2f}, specificity {point.specificity:.2f}"

    if op is None:
        return [
            f"Doubt — review at {unit} ≥ {th.negative_below:.2f}; positive at ≥ {th.positive_at:.2f} "
            "(sensitivity and specificity not measured on this card)."
        ]
    return [
        f"Doubt — review at {unit} ≥ {op.doubt.threshold:.2f}: {figures(op.doubt)}.",
        f"Positive at {unit} ≥ {op.positive.threshold:.2f}: {figures(op.positive)}.",
        f"Measured on {op.measured_on}",
    ]


def study_sentence(
    classifier_status: str | None,
    boxes: BoxTiers | None,
    *,
    has_detector: bool,
) -> str:
    """One sentence that reconciles the classifier and the detector for the whole study.

    ``classifier_status`` is None when no classifier answered; ``boxes`` None when no detector ran.
    """
    n_def = len(boxes.definite) if boxes is not None else 0
    n_doubt = len(boxes.doubt) if boxes is not None else 0
    if classifier_status is None:
        if not has_detector:
            return "No model answered for this image."
        if n_def:
            return (
                f"Detector: {n_def} definite box(es) — read the boxed areas first (no classifier installed)."
            )
        if n_doubt:
            return f"Detector: only doubtful boxes ({n_doubt}) — review them (no classifier installed)."
        return "Detector: no box found (no classifier installed); the detector can miss findings."
    said = status_text(classifier_status)
    if not has_detector:
        if classifier_status == "positive":
            return "Classifier positive — no detector for this task: look for the finding on the whole film."
        if classifier_status == "uncertain":
            return "Classifier in doubt — review the whole film."
        return "Classifier negative — nothing flagged; the model can miss findings."
    if classifier_status == "positive":
        if n_def:
            return f"Classifier positive and {n_def} definite box(es) — the two agree: read the boxes first."
        if n_doubt:
            return "Classifier positive, only doubtful boxes — review the whole film, dashed boxes first."
        return "Classifier positive, no box found — review the whole film."
    if classifier_status == "uncertain":
        if n_def:
            return f"Classifier in doubt, detector boxed {n_def} area(s) — review the boxed areas."
        if n_doubt:
            return "Classifier in doubt and only doubtful boxes — review the whole film."
        return "Classifier in doubt, no box found — review the whole film."
    if n_def:
        return (
            f"Classifier negative but the detector boxed {n_def} area(s) — the two disagree: "
            "look at the boxes before calling the film normal."
        )
    if n_doubt:
        return "Classifier negative, only doubtful boxes — probably normal; glance at the dashed boxes."
    return f"Classifier {said} and no box found — the two agree; the models can miss findings."
