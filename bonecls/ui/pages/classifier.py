"""The classifier reading page, shared by Fracture (binary) and Fracture severity (three classes).

One body for both tasks: the task name picks the model, the title and every widget key's prefix.
"""

from __future__ import annotations

import time

import streamlit as st

from bonecls.ui import error_policy, services
from bonecls.ui.session import UploadResult
from bonecls.ui.widgets import (
    TASK_TITLES,
    image_notes,
    image_picker,
    image_viewer,
    model_picker,
    no_model_message,
    ood_warning,
    page_view,
    record_audit,
    report_buttons,
    result_panel,
    show_answer_time,
    window_controls,
)

#: the "Explain class" choice meaning: whichever class the model predicts for this image
PREDICTED = "(predicted class)"


@page_view
def classifier_page(task: str) -> None:
    """The reading page of a classifier task ("fracture" or "threeclass"): model, image, result, heat map."""
    st.title(TASK_TITLES[task])
    with error_policy.guarded(f"{task} page"):
        entry = model_picker(task, key=f"{task}_model")
        if entry is None:
            no_model_message(task)
            return
        item = image_picker(key=f"{task}_image")
        if item is None:
            return
        if not item.ok:
            error_policy.error_box(item.error or "This file could not be read.")
            return
        _classifier_view(task, entry, item)


def _cam_controls(entry: services.ModelEntry, key: str) -> tuple[str, str | None, str | None, str, float]:
    """Heat-map controls: (label, method id, target class or None for the predicted one, cmap, opacity)."""
    methods = services.cam_methods()
    cols = st.columns([2, 2, 2, 3])
    with cols[0]:
        method_label = st.selectbox("Heat map", list(methods), key=f"{key}_method")
    with cols[1]:
        target = st.selectbox(
            "Explain class",
            [PREDICTED, *entry.card.class_names],
            key=f"{key}_target",
            format_func=lambda c: c if c == PREDICTED else c.replace("_", " "),
        )
    with cols[2]:
        colormap = st.selectbox("Colour map", services.colormaps(), key=f"{key}_cmap")
    with cols[3]:
        opacity = st.slider("Overlay opacity", 0.0, 1.0, 0.45, 0.05, key=f"{key}_opacity")
    return method_label, methods.get(method_label), None if target == PREDICTED else target, colormap, opacity


def _classifier_view(task: str, entry: services.ModelEntry, item: UploadResult) -> None:
    """Result panel above the heat-map controls and the linked radiograph | overlay viewer."""
    rg = item.radiograph
    t0 = time.perf_counter()
    greyed = ood_warning(item)
    result_box = st.container()
    method_label, method, target, colormap, opacity = _cam_controls(entry, key=task)
    display, window = window_controls(rg, key=task)
    heat = None
    if method:  # on a new image the CAM's forward pass is also the prediction (one pass, not two)
        with st.spinner(f"Reading the image and computing {method_label}…"):
            heat = services.cam(entry, rg, method, target)
    with st.spinner("Reading the image…"):
        prediction = services.predict(entry, rg)
    record_audit(item, entry, prediction.label, prediction.status, prediction.suspicion)
    with result_box:
        result_panel(entry, prediction, greyed)
    target_class = heat.target_class if heat is not None else prediction.label
    image_viewer(
        rg,
        display,
        window,
        heat,
        colormap,
        opacity,
        title=f"{method_label} — {target_class.replace('_', ' ')}",
        key=f"viewer_{task}",
        greyed=greyed,
    )
    image_notes(rg, item)
    show_answer_time(t0)
    report_buttons(
        rg,
        entry,
        display=display,
        heat=heat,
        colormap=colormap,
        opacity=opacity,
        key=f"{task}_report",
        prediction=prediction,
        cam_method=method_label if heat is not None else None,
        target_class=target_class if heat is not None else None,
        window=window,
        ood_reasons=item.ood.reasons if item.ood is not None else (),
    )
