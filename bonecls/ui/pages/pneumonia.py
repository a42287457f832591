"""Pneumonia page: detector boxes under a confidence slider, the classifier's probability, heat maps.

Either model may be missing: the page shows what the installed one(s) can answer.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import streamlit as st

from bonecls.reading import BoxTiers, box_legend, study_sentence, tier_boxes
from bonecls.ui import error_policy, services
from bonecls.ui.result import heat_switch, refusal_panel, result_panel, study_line
from bonecls.ui.session import UploadResult
from bonecls.ui.viewer import image_viewer, window_controls
from bonecls.ui.widgets import (
    image_notes,
    image_picker,
    model_picker,
    muted,
    no_model_message,
    ood_warning,
    page_view,
    record_audit,
    report_buttons,
    show_answer_time,
)


@page_view
def pneumonia_page() -> None:
    """The pneumonia reading page: classifier and/or detector, whichever is installed."""
    st.title("Pneumonia")
    with error_policy.guarded("pneumonia page"):
        classifier = model_picker("pneumonia", key="pn_model")
        det = model_picker("pneumonia-det", key="pn_det_model")
        if classifier is None and det is None:
            no_model_message("pneumonia")
            no_model_message("pneumonia-det")
            return
        item = image_picker(key="pn_image")
        if item is None:
            return
        if not item.ok:
            error_policy.error_box(item.error or "This file could not be read.")
            return
        _pneumonia_view(item, classifier, det)


def _pneumonia_view(
    item: UploadResult, classifier: services.ModelEntry | None, det: services.ModelEntry | None
) -> None:
    """Classifier result, the study sentence that reconciles it with the boxes, then the viewer."""
    rg = item.radiograph
    t0 = time.perf_counter()
    greyed = ood_warning(item)
    prediction = None
    if classifier is not None:
        with st.spinner("Reading the image…"):
            prediction = services.predict(classifier, rg)
        record_audit(
            item,
            classifier,
            prediction.label,
            prediction.status,
            prediction.suspicion,
            in_scope=prediction.in_scope,
            scope_reasons=prediction.scope_reasons,
        )
        result_panel(classifier, prediction, greyed)
    else:
        st.caption("No pneumonia classifier is installed; showing the detector's boxes only.")
    boxes_all: list[Any] = []
    card_tiers = None
    refused = prediction is not None and not prediction.in_scope
    if det is not None:
        with st.spinner("Looking for opacities…"):
            scoped = services.detect_scoped(det, rg)
        if not scoped.in_scope:  # no boxes, and the detector's own refusal panel
            refused = True
            record_audit(
                item, det, "none", "out of scope", None, in_scope=False, scope_reasons=scoped.verdict.reasons
            )
            refusal_panel(
                det,
                tuple(scoped.verdict.reasons),
                None
                if not scoped.raw_boxes
                else {
                    "raw boxes (unreliable)": len(scoped.raw_boxes),
                    "scope score": scoped.verdict.score,
                },
            )
            det = None
    if det is not None:
        boxes_all = list(scoped.boxes)
        th = det.card.thresholds
        card_tiers = tier_boxes(boxes_all, th.negative_below, th.positive_at)
        top = max((float(b.confidence) for b in boxes_all), default=0.0)
        found = bool(card_tiers.shown)
        record_audit(item, det, "opacity" if found else "none", "detected" if found else "none", top)
    if refused:  # no study sentence, boxes or heat map from a model that cannot read this image
        image_notes(rg, item)
        show_answer_time(t0)
        return
    study_line(
        study_sentence(prediction.status if prediction else None, card_tiers, has_detector=det is not None),
        greyed=greyed,
    )
    _pneumonia_viewer(item, classifier, det, prediction, boxes_all, greyed)
    show_answer_time(t0)


def _heat_status(prediction: Any, tiers: BoxTiers | None) -> str | None:
    """What decides whether the heat map opens by itself: the classifier, else the detector's boxes."""
    if prediction is not None:
        return prediction.status
    if tiers is None:
        return None
    return "positive" if tiers.definite else "uncertain" if tiers.doubt else "negative"


@st.fragment
def _pneumonia_viewer(
    item: UploadResult,
    classifier: services.ModelEntry | None,
    det: services.ModelEntry | None,
    prediction: Any,
    boxes_all: list[Any],
    greyed: bool,
) -> None:
    """Box and heat-map controls, window/level, the viewer and the exports (a fragment: controls re-run
    only this part)."""
    rg = item.radiograph
    tiers = None
    conf = 1.0
    if det is not None:
        th = det.card.thresholds
        default = float(np.clip(round(float(th.negative_below) * 100) / 100, 0.01, 0.95))
        conf = st.slider(
            "Show boxes from confidence",
            0.01,
            0.95,
            default,
            0.01,
            key="pn_conf",
            help=f"The detector card's cuts: doubt from {th.negative_below:.2f} (dashed), definite from "
            f"{th.positive_at:.2f} (solid). Lower it to see weaker candidates (dashed).",
        )
        tiers = tier_boxes(boxes_all, conf, max(conf, float(th.positive_at)))
        msg = (
            f"**{len(tiers.shown)} opacity box{'es' if len(tiers.shown) != 1 else ''}** "
            f"at confidence ≥ {conf:.2f}"
            f" ({len(tiers.definite)} definite, {len(tiers.doubt)} doubt)"
            + (f", highest {max(float(b.confidence) for b in boxes_all):.2f}" if boxes_all else "")
            + f" · detector {det.id} · sha256 {det.sha256[:12]}…"
        )
        muted(msg) if greyed else st.markdown(msg)
        st.caption(box_legend(conf, max(conf, float(th.positive_at))))
    else:
        st.caption("No pneumonia detector is installed; no boxes are drawn.")
    heat_label, colormap, opacity = "Off", "jet", 0.45
    methods = services.cam_methods() if classifier is not None else {}
    if heat_switch("pn", rg.sha256, _heat_status(prediction, tiers)):
        heat_options = (["EigenCAM (detector)"] if det is not None else []) + list(methods)
        cols = st.columns([3, 2, 2])
        with cols[0]:
            heat_label = st.selectbox(
                "Heat map",
                heat_options,
                key="pn_method",
                help="EigenCAM (detector) shows what the box detector looks at; the other methods explain "
                "the "
                "classifier's predicted class.",
            )
        with cols[1]:
            colormap = st.selectbox("Colour map", services.colormaps(), key="pn_cmap")
        with cols[2]:
            opacity = st.slider("Overlay opacity", 0.0, 1.0, 0.45, 0.05, key="pn_opacity")
    display, window = window_controls(rg, key="pn")
    heat, title = None, ""
    if heat_label == "EigenCAM (detector)" and det is not None:
        with st.spinner("Computing EigenCAM…"):
            heat = services.detector_eigencam(det, rg)
        title = "Where the detector looked: EigenCAM"
    elif heat_label in methods and classifier is not None:
        with st.spinner(f"Computing {heat_label}…"):
            heat = services.cam(classifier, rg, methods[heat_label], prediction.label)
        title = f"Where the model looked: {heat_label} — {prediction.label.replace('_', ' ')}"
    image_viewer(
        rg, display, window, heat, colormap, opacity, title=title, key="viewer_pn", boxes=tiers, greyed=greyed
    )
    image_notes(rg, item)
    report_buttons(
        rg,
        classifier or det,
        display=display,
        heat=heat,
        colormap=colormap,
        opacity=opacity,
        key="pn_report",
        prediction=prediction,
        boxes=tiers.shown if tiers is not None else (),
        box_threshold=conf if det is not None else None,
        box_cuts=(tiers.doubt_at, tiers.positive_at) if tiers is not None else None,
        cam_method=heat_label if heat is not None else None,
        target_class=prediction.label if heat is not None and heat_label in methods else None,
        window=window,
        ood_reasons=item.ood.reasons if item.ood is not None else (),
    )
