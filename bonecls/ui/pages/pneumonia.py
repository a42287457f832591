"""Pneumonia page: detector boxes under a confidence slider, the classifier's probability, heat maps.

Either model may be missing: the page shows what the installed one(s) can answer.
"""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from bonecls.reading import BoxTiers, study_sentence
from bonecls.ui import error_policy, services
from bonecls.ui.result import (
    Boxes,
    box_controls,
    classifier_result,
    detector_result,
    heat_switch,
    overlay_style,
    reading_view,
    study_line,
)
from bonecls.ui.session import UploadResult
from bonecls.ui.viewer import window_controls
from bonecls.ui.widgets import (
    image_notes,
    image_picker,
    model_picker,
    no_model_message,
    ood_warning,
    page_view,
    show_answer_time,
)

#: the heat-map choice that explains the detector (the others explain the classifier's predicted class)
DETECTOR_EIGENCAM = "EigenCAM (detector)"


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
    t0 = time.perf_counter()
    greyed = ood_warning(item)
    prediction = None
    if classifier is not None:
        prediction = classifier_result(item, classifier, greyed)
    else:
        st.caption("No pneumonia classifier is installed; showing the detector's boxes only.")
    boxes = detector_result(item, det, spinner="Looking for opacities…") if det is not None else None
    refused = (prediction is not None and not prediction.in_scope) or (det is not None and boxes is None)
    if refused:  # no study sentence, boxes or heat map from a model that cannot read this image
        image_notes(item.radiograph, item)
        show_answer_time(t0)
        return
    study_line(
        study_sentence(
            prediction.status if prediction else None,
            boxes.tiers if boxes is not None else None,
            has_detector=boxes is not None,
        ),
        greyed=greyed,
    )
    _pneumonia_viewer(item, classifier, boxes, prediction, greyed)
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
    boxes: Boxes | None,
    prediction: Any,
    greyed: bool,
) -> None:
    """Box and heat-map controls, window/level, the viewer and the exports (a fragment: controls re-run
    only this part)."""
    rg = item.radiograph
    det = boxes.entry if boxes is not None else None
    tiers = None
    if boxes is not None:
        tiers = box_controls(boxes, key="pn", noun="opacity", greyed=greyed)
    else:
        st.caption("No pneumonia detector is installed; no boxes are drawn.")
    heat_label, colormap, opacity = "Off", "jet", 0.45
    methods = services.cam_methods() if classifier is not None else {}
    if heat_switch("pn", rg.sha256, _heat_status(prediction, tiers)):
        heat_options = ([DETECTOR_EIGENCAM] if det is not None else []) + list(methods)
        cols = st.columns([3, 2, 2])
        with cols[0]:
            heat_label = st.selectbox(
                "Heat map",
                heat_options,
                key="pn_method",
                help="EigenCAM (detector) shows what the box detector looks at; the other methods explain "
                "the classifier's predicted class.",
            )
        colormap, opacity = overlay_style("pn", cols[1:])
    display, window = window_controls(rg, key="pn")
    heat, title = None, ""
    if heat_label == DETECTOR_EIGENCAM and det is not None:
        with st.spinner("Computing EigenCAM…"):
            heat = services.detector_eigencam(det, rg)
        title = "Where the detector looked: EigenCAM"
    elif heat_label in methods and classifier is not None:
        with st.spinner(f"Computing {heat_label}…"):
            heat = services.cam(classifier, rg, methods[heat_label], prediction.label)
        title = f"Where the model looked: {heat_label} — {prediction.label.replace('_', ' ')}"
    reading_view(
        item,
        classifier or det,
        key="pn",
        display=display,
        window=window,
        heat=heat,
        colormap=colormap,
        opacity=opacity,
        title=title,
        tiers=tiers,
        greyed=greyed,
        prediction=prediction,
        cam_method=heat_label,
        target_class=prediction.label if heat_label in methods else None,
    )
