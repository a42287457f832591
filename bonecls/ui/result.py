"""The result of a reading page: the classifier's answer, the detector's boxes, the study sentence,
the heat-map switch and the reading view (viewer + exports) that every reading page ends with.

Why one module: the Fracture, Severity and Pneumonia pages read an image with a classifier and/or a
box detector the same way (cached answer, one audit row, the scope gate's refusal, boxes tiered at the
card's two cuts, exports carrying what is on screen); only their wording and widget keys differ. Why one
entry point for a classifier's answer (:func:`result_panel`): a result that must not be shown as one
(issue 21's scope gate: "Outside what this model was trained on: … No result.") is one branch at its
top, not a condition in every page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st

from bonecls.reading import (
    NO_RESULT_NOTE,
    BoxTiers,
    box_legend,
    heat_shown_by_default,
    operating_point_lines,
    status_text,
    tier_boxes,
)
from bonecls.ui import figures, services
from bonecls.ui.session import UploadResult
from bonecls.ui.viewer import image_viewer
from bonecls.ui.widgets import image_notes, muted, plot, record_audit, report_buttons, status_markdown

__all__ = [
    "Boxes",
    "box_controls",
    "classifier_result",
    "detector_result",
    "heat_switch",
    "out_of_scope_panel",
    "overlay_style",
    "reading_view",
    "refusal_panel",
    "result_panel",
    "study_line",
]


def classifier_result(item: UploadResult, entry: services.ModelEntry, greyed: bool) -> Any:
    """The classifier's prediction for this image (computed once per image and model), audited once
    and drawn by :func:`result_panel`; returned for the study sentence and the heat map."""
    with st.spinner("Reading the image…"):
        prediction = services.predict(entry, item.radiograph)
    record_audit(
        item,
        entry,
        prediction.label,
        prediction.status,
        prediction.suspicion,
        in_scope=prediction.in_scope,
        scope_reasons=prediction.scope_reasons,
    )
    result_panel(entry, prediction, greyed)
    return prediction


@dataclass(frozen=True)
class Boxes:
    """A box detector's answer inside its scope: every box from the service's confidence floor
    (``found``, which the confidence slider filters) and those tiered at the card's two cuts."""

    entry: services.ModelEntry
    found: list[Any]
    tiers: BoxTiers


def detector_result(item: UploadResult, det: services.ModelEntry, *, spinner: str) -> Boxes | None:
    """The detector's boxes through its own scope gate (computed once per image and model), audited
    once. None, after the detector's refusal panel, when the gate refuses the image: no boxes from a
    model that cannot read it (what it drew anyway only in the panel's closed expander, as a count)."""
    with st.spinner(spinner):
        scoped = services.detect_scoped(det, item.radiograph)
    if not scoped.in_scope:
        record_audit(
            item, det, "none", "out of scope", None, in_scope=False, scope_reasons=scoped.verdict.reasons
        )
        raw = None
        if scoped.raw_boxes:
            raw = {"raw boxes (unreliable)": len(scoped.raw_boxes), "scope score": scoped.verdict.score}
        refusal_panel(det, tuple(scoped.verdict.reasons), raw)
        return None
    found = list(scoped.boxes)
    th = det.card.thresholds
    tiers = tier_boxes(found, th.negative_below, th.positive_at)
    top = max(tiers.shown, key=lambda b: float(b.confidence), default=None)
    record_audit(
        item,
        det,
        str(top.label) if top is not None else "none",
        "detected" if top is not None else "none",
        max((float(b.confidence) for b in found), default=0.0),
    )
    return Boxes(det, found, tiers)


def box_controls(boxes: Boxes, *, key: str, noun: str, greyed: bool) -> BoxTiers:
    """The confidence slider (opening at the card's doubt cut), the count of boxes it shows and the
    legend of the two styles; returns the boxes at the slider's value, tiered (solid from the card's
    positive cut, dashed below it)."""
    det = boxes.entry
    th = det.card.thresholds
    default = float(np.clip(round(float(th.negative_below) * 100) / 100, 0.01, 0.95))
    conf = st.slider(
        "Show boxes from confidence",
        0.01,
        0.95,
        default,
        0.01,
        key=f"{key}_conf",
        help=f"The detector card's cuts: doubt from {th.negative_below:.2f} (dashed), definite from "
        f"{th.positive_at:.2f} (solid). Lower it to see weaker candidates (dashed).",
    )
    positive_at = max(conf, float(th.positive_at))
    tiers = tier_boxes(boxes.found, conf, positive_at)
    n = len(tiers.shown)
    msg = (
        f"**{n} {noun} box{'es' if n != 1 else ''}** at confidence ≥ {conf:.2f}"
        f" ({len(tiers.definite)} definite, {len(tiers.doubt)} doubt)"
        + (f", highest {max(float(b.confidence) for b in boxes.found):.2f}" if boxes.found else "")
        + f" · detector {det.id} · sha256 {det.sha256[:12]}…"
    )
    muted(msg) if greyed else st.markdown(msg)
    st.caption(box_legend(conf, positive_at))
    return tiers


def overlay_style(key: str, cols: Sequence[Any]) -> tuple[str, float]:
    """The heat map's colour map and opacity, in the two columns given; (colormap, opacity)."""
    with cols[0]:
        colormap = st.selectbox("Colour map", services.colormaps(), key=f"{key}_cmap")
    with cols[1]:
        opacity = st.slider("Overlay opacity", 0.0, 1.0, 0.45, 0.05, key=f"{key}_opacity")
    return str(colormap), float(opacity)


def reading_view(
    item: UploadResult,
    entry: services.ModelEntry,
    *,
    key: str,
    display: np.ndarray,
    window: tuple[float, float] | None,
    heat: services.HeatMap | None,
    colormap: str,
    opacity: float,
    title: str,
    tiers: BoxTiers | None,
    greyed: bool,
    prediction: Any,
    cam_method: str | None,
    target_class: str | None,
) -> None:
    """The viewer (radiograph | overlay, boxes on both) with the image's notes, then the PDF / PNG /
    JSON exports of exactly what is shown: the window, the heat map and the boxes in their two tiers.
    ``entry`` is the model the exports are named after and whose card they cite."""
    rg = item.radiograph
    image_viewer(
        rg,
        display,
        window,
        heat,
        colormap,
        opacity,
        title=title,
        key=f"viewer_{key}",
        boxes=tiers,
        greyed=greyed,
    )
    image_notes(rg, item)
    report_buttons(
        rg,
        entry,
        display=display,
        heat=heat,
        colormap=colormap,
        opacity=opacity,
        key=f"{key}_report",
        prediction=prediction,
        boxes=tiers.shown if tiers is not None else (),
        box_threshold=tiers.doubt_at if tiers is not None else None,
        box_cuts=(tiers.doubt_at, tiers.positive_at) if tiers is not None else None,
        cam_method=cam_method if heat is not None else None,
        target_class=target_class if heat is not None else None,
        window=window,
        ood_reasons=item.ood.reasons if item.ood is not None else (),
    )


def result_panel(entry: services.ModelEntry, prediction: Any, greyed: bool) -> None:
    """The classifier's answer beside its class-probability chart, or, for an image outside the
    model's scope (issue 21), :func:`out_of_scope_panel` and nothing that looks like a result."""
    if not getattr(prediction, "in_scope", True):
        out_of_scope_panel(entry, prediction)
        return
    _answer_panel(entry, prediction, greyed)
    reasons = tuple(getattr(prediction, "scope_reasons", ()) or ())
    if not getattr(prediction, "scope_checked", True):
        st.caption(":orange[Scope not checked: research output, not for reading.]")
    elif reasons:  # in scope with a caveat: e.g. the learned scope is not fitted for this model
        st.caption(" ".join(reasons))


def out_of_scope_panel(entry: services.ModelEntry, prediction: Any) -> None:
    """ "Outside what this model was trained on: <reasons>. No result." No label, probability bars, status
    or heat map; the raw output (when the model ran) only in a closed expander, marked unreliable."""
    raw = None
    if getattr(prediction, "probabilities", None):
        raw = {
            "raw label (unreliable)": prediction.label,
            "raw probabilities (unreliable)": {
                k: round(float(v), 4) for k, v in prediction.probabilities.items()
            },
            "scope score": prediction.scope_score,
            "scope threshold": prediction.scope_threshold,
        }
    refusal_panel(entry, tuple(getattr(prediction, "scope_reasons", ()) or ()), raw)
    reading_caption(prediction)


def refusal_panel(entry: services.ModelEntry, reasons: tuple[str, ...], raw: dict | None) -> None:
    """The out-of-scope panel of any model (classifier or detector): the reasons, what the model reads,
    and ``raw`` (None: the model was not run) in a closed expander marked unreliable."""
    st.error(
        f"**Outside what this model was trained on:** {' '.join(reasons)} **No result.** {NO_RESULT_NOTE}",
        icon=":material/block:",
    )
    card = entry.card
    if card.scope is not None and card.scope.declared.description:
        st.caption(f"Model {entry.id} reads: {card.scope.declared.description}")
    with st.expander("Raw model output (unreliable: not a result)"):
        if raw is None:
            st.caption("The model was not run: the image was refused before any feature was computed.")
        else:
            st.caption(
                "UNRELIABLE. The model answers even for images it cannot read; these numbers mean nothing "
                "for this image."
            )
            st.json(raw)


def reading_caption(prediction: Any) -> None:
    """How the film was read (issue 22, scale): single read or tiles at the model's trained mm per pixel,
    and where the film's spacing came from; an assumed spacing (PNG/JPEG, a header that lies) is said
    here, with the tile rule and, for a refused tiled film, how many tiles were in scope."""
    reading = getattr(prediction, "reading", None)
    if reading is None:
        return
    st.caption(f"Read as: {reading.summary}. " + " ".join(reading.notes))


def _answer_panel(entry: services.ModelEntry, prediction: Any, greyed: bool) -> None:
    card = entry.card
    finding = " + ".join(f"P({c.replace('_', ' ')})" for c in card.positive_classes)
    cols = st.columns([2, 3])
    with cols[0]:
        st.markdown(
            f"### {status_markdown(prediction.status, greyed=greyed)}",
            help="Doubt — review: worth a second look (the sensitive cut). Positive: the finding is called "
            "(the specific cut). Negative: below both.",
        )
        lines = [
            f"Suspicion **{prediction.suspicion:.0%}** = {finding}",
            f"Most likely class: **{prediction.label.replace('_', ' ')}** "
            f"({prediction.probabilities[prediction.label]:.0%})",
        ]
        for line in lines:
            if greyed:
                muted(line.replace("**", ""))
            else:
                st.markdown(line)
        st.caption(
            " ".join(operating_point_lines(card))
            + f" · model {entry.id} ({card.architecture}) · sha256 {entry.sha256[:12]}…"
        )
        reading_caption(prediction)
    with cols[1]:
        fig = figures.probability_figure(
            prediction.probabilities,
            positive_classes=card.positive_classes,
            thresholds=card.thresholds.model_dump(),
            greyed=greyed,
        )
        plot(fig, key=f"probs_{entry.id}")


def study_line(sentence: str, *, greyed: bool = False) -> None:
    """The one study-level sentence that reconciles the models on this page."""
    if greyed:
        st.markdown(f":gray[Study: {sentence} (not reliable: see the warning above)]")
    else:
        st.info(f"**Study:** {sentence}", icon=":material/summarize:")


def heat_switch(key: str, sha256: str, status: str | None) -> bool:
    """Whether to show the heat map: on by itself for doubt and positive results, on request otherwise."""
    default = heat_shown_by_default(status)
    state_key = f"{key}_heat_{sha256[:12]}"
    st.session_state.setdefault(state_key, default)
    shown = bool(
        st.toggle(
            "Show heat map",
            key=state_key,
            help="Where the model looked — not a finding. On by itself only for doubt and positive results.",
        )
    )
    if not default and not shown:
        st.caption(
            f"Heat map off for a {status_text(status or '')} result; turn it on to see where the model looked"
        )
    return shown
