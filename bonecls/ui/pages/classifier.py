"""The classifier reading page, shared by Fracture (binary) and Fracture severity (three classes).

One body for both tasks: the task name picks the model, the title and every widget key's prefix.
"""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from bonecls.reading import study_sentence
from bonecls.ui import error_policy, services
from bonecls.ui.result import heat_switch, result_panel, study_line
from bonecls.ui.session import UploadResult
from bonecls.ui.viewer import image_viewer, window_controls
from bonecls.ui.widgets import (
    TASK_TITLES,
    image_notes,
    image_picker,
    model_picker,
    no_model_message,
    ood_warning,
    page_view,
    record_audit,
    report_buttons,
    show_answer_time,
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
    """Result panel and study sentence, then the viewer (a fragment: its controls re-run only it)."""
    t0 = time.perf_counter()
    greyed = ood_warning(item)
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
    if prediction.in_scope:
        study_line(study_sentence(prediction.status, None, has_detector=False), greyed=greyed)
    _classifier_viewer(task, entry, item, prediction, greyed)
    show_answer_time(t0)


@st.fragment
def _classifier_viewer(
    task: str, entry: services.ModelEntry, item: UploadResult, prediction: Any, greyed: bool
) -> None:
    """Heat-map switch and controls, window/level, the linked radiograph | overlay viewer, the exports.

    A fragment: moving a slider or switching the heat map re-runs this part only, not the result above.
    """
    rg = item.radiograph
    show_heat = prediction.in_scope and heat_switch(task, rg.sha256, prediction.status)  # none out of scope
    method_label, method, target, colormap, opacity = "", None, None, "jet", 0.45
    if show_heat:
        method_label, method, target, colormap, opacity = _cam_controls(entry, key=task)
    display, window = window_controls(rg, key=task)
    heat = None
    if method:
        with st.spinner(f"Computing {method_label}…"):
            heat = services.cam(entry, rg, method, target)
    target_class = heat.target_class if heat is not None else (prediction.label or "")
    image_viewer(
        rg,
        display,
        window,
        heat,
        colormap,
        opacity,
        title=f"Where the model looked: {method_label} — {target_class.replace('_', ' ')}",
        key=f"viewer_{task}",
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
        key=f"{task}_report",
        prediction=prediction,
        cam_method=method_label if heat is not None else None,
        target_class=target_class if heat is not None else None,
        window=window,
        ood_reasons=item.ood.reasons if item.ood is not None else (),
    )
