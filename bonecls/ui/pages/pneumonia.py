"""Pneumonia page: detector boxes under a confidence slider, the classifier's probability, heat maps.

Either model may be missing: the page shows what the installed one(s) can answer.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import streamlit as st

from bonecls.ui import error_policy, services
from bonecls.ui.session import UploadResult
from bonecls.ui.widgets import (
    image_notes,
    image_picker,
    image_viewer,
    model_picker,
    muted,
    no_model_message,
    ood_warning,
    page_view,
    record_audit,
    report_buttons,
    result_panel,
    show_answer_time,
    window_controls,
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
    """Classifier result, box and heat-map controls, the viewer with the boxes above the threshold."""
    rg = item.radiograph
    t0 = time.perf_counter()
    greyed = ood_warning(item)
    prediction = None
    if classifier is not None:
        with st.spinner("Reading the image…"):
            prediction = services.predict(classifier, rg)
        record_audit(item, classifier, prediction.label, prediction.status, prediction.suspicion)
        result_panel(classifier, prediction, greyed)
    else:
        st.caption("No pneumonia classifier is installed; showing the detector's boxes only.")

    boxes_all: list[Any] = []
    if det is not None:
        with st.spinner("Looking for opacities…"):
            boxes_all = services.detect(det, rg)
    methods = services.cam_methods() if classifier is not None else {}
    heat_options = ["Off"] + (["EigenCAM (detector)"] if det is not None else []) + list(methods)
    cols = st.columns([3, 2, 2, 2])
    conf = 1.0
    with cols[0]:
        if det is not None:
            default = float(np.clip(round(float(det.card.thresholds.positive_at) * 20) / 20, 0.05, 0.95))
            conf = st.slider(
                "Box confidence threshold",
                0.05,
                0.95,
                default,
                0.05,
                key="pn_conf",
                help="Boxes below this confidence are hidden. Lower it to see weaker candidates.",
            )
        else:
            st.caption("No pneumonia detector is installed; no boxes are drawn.")
    with cols[1]:
        heat_label = st.selectbox(
            "Heat map",
            heat_options,
            key="pn_method",
            help="EigenCAM (detector) shows what the box detector looks at; the other methods explain the "
            "classifier's predicted class.",
        )
    with cols[2]:
        colormap = st.selectbox("Colour map", services.colormaps(), key="pn_cmap")
    with cols[3]:
        opacity = st.slider("Overlay opacity", 0.0, 1.0, 0.45, 0.05, key="pn_opacity")

    boxes = [b for b in boxes_all if float(getattr(b, "confidence", 0.0)) >= conf]
    if det is not None:
        top = max((float(b.confidence) for b in boxes_all), default=0.0)
        record_audit(item, det, "opacity" if boxes else "none", "detected" if boxes else "none", top)
        msg = (
            f"**{len(boxes)} opacity box{'es' if len(boxes) != 1 else ''}** at confidence ≥ {conf:.2f}"
            + (f" (highest {top:.2f})" if boxes_all else "")
            + f" · detector {det.id} · sha256 {det.sha256[:12]}…"
        )
        if greyed:
            muted(msg)
        else:
            st.markdown(msg)

    display, window = window_controls(rg, key="pn")
    heat = None
    if heat_label == "EigenCAM (detector)" and det is not None:
        with st.spinner("Computing EigenCAM…"):
            heat = services.detector_eigencam(det, rg)
        title = "EigenCAM (detector)"
    elif heat_label in methods and classifier is not None:
        with st.spinner(f"Computing {heat_label}…"):
            heat = services.cam(classifier, rg, methods[heat_label], prediction.label)
        title = f"{heat_label} — {prediction.label.replace('_', ' ')}"
    else:
        title = ""
    image_viewer(
        rg, display, window, heat, colormap, opacity, title=title, key="viewer_pn", boxes=boxes, greyed=greyed
    )
    image_notes(rg, item)
    show_answer_time(t0)
    report_buttons(
        rg,
        classifier or det,
        display=display,
        heat=heat,
        colormap=colormap,
        opacity=opacity,
        key="pn_report",
        prediction=prediction,
        boxes=boxes_all if det is not None else (),
        box_threshold=conf if det is not None else None,
        cam_method=heat_label if heat is not None else None,
        target_class=prediction.label if heat is not None and heat_label in methods else None,
        window=window,
        ood_reasons=item.ood.reasons if item.ood is not None else (),
    )
