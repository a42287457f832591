"""The classifier reading page, shared by Fracture (binary) and Fracture severity (three classes).

One body for both tasks: the task name picks the model, the title and every widget key's prefix.
When a fracture box detector (card task ``fracture-det``) is installed, both pages also show its boxes
beside the classifier's heat map (dashed for doubt, solid for definite, as on the Pneumonia page) and
the study sentence reconciles the two; without one, a caption says no boxes are drawn.
"""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from bonecls.reading import study_sentence
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
    TASK_TITLES,
    image_picker,
    model_picker,
    no_model_message,
    ood_warning,
    page_view,
    show_answer_time,
)

#: the "Explain class" choice meaning: whichever class the model predicts for this image
PREDICTED = "(predicted class)"
#: the box detector both classifier pages show beside the heat map, when one is installed
DETECTOR_TASK = "fracture-det"


@page_view
def classifier_page(task: str) -> None:
    """The reading page of a classifier task ("fracture" or "threeclass"): model, image, result, heat map,
    and the fracture detector's boxes when one is installed."""
    st.title(TASK_TITLES[task])
    with error_policy.guarded(f"{task} page"):
        entry = model_picker(task, key=f"{task}_model")
        if entry is None:
            no_model_message(task)
            return
        det = model_picker(DETECTOR_TASK, key=f"{task}_det_model")
        item = image_picker(key=f"{task}_image")
        if item is None:
            return
        if not item.ok:
            error_policy.error_box(item.error or "This file could not be read.")
            return
        _classifier_view(task, entry, det, item)


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
    colormap, opacity = overlay_style(key, cols[2:])
    return method_label, methods.get(method_label), None if target == PREDICTED else target, colormap, opacity


def _classifier_view(
    task: str, entry: services.ModelEntry, det: services.ModelEntry | None, item: UploadResult
) -> None:
    """Result panel, the detector's boxes (or its refusal), the study sentence, then the viewer (a
    fragment: its controls re-run only it).

    A refusal by either model's scope gate leaves no study sentence, boxes or heat map on the page (as
    on the Pneumonia page): the radiograph and the refusal panel(s) only."""
    t0 = time.perf_counter()
    greyed = ood_warning(item)
    prediction = classifier_result(item, entry, greyed)
    boxes = detector_result(item, det, spinner="Looking for fractures…") if det is not None else None
    readable = bool(prediction.in_scope) and (det is None or boxes is not None)
    if readable:
        tiers = boxes.tiers if boxes is not None else None
        study_line(study_sentence(prediction.status, tiers, has_detector=boxes is not None), greyed=greyed)
    _classifier_viewer(
        task, entry, item, prediction, boxes if readable else None, det is not None, readable, greyed
    )
    show_answer_time(t0)


@st.fragment
def _classifier_viewer(
    task: str,
    entry: services.ModelEntry,
    item: UploadResult,
    prediction: Any,
    boxes: Boxes | None,
    has_detector: bool,
    readable: bool,
    greyed: bool,
) -> None:
    """Box slider, heat-map switch and controls, window/level, the linked radiograph | overlay viewer,
    the exports.

    A fragment: moving a slider or switching the heat map re-runs this part only, not the result above.
    """
    rg = item.radiograph
    tiers = None
    if boxes is not None:
        tiers = box_controls(boxes, key=task, noun="fracture", greyed=greyed)
    elif not has_detector:
        st.caption("No fracture detector is installed; no boxes are drawn.")
    show_heat = readable and heat_switch(task, rg.sha256, prediction.status)  # none out of scope
    method_label, method, target, colormap, opacity = "", None, None, "jet", 0.45
    if show_heat:
        method_label, method, target, colormap, opacity = _cam_controls(entry, key=task)
    display, window = window_controls(rg, key=task)
    heat = None
    if method:
        with st.spinner(f"Computing {method_label}…"):
            heat = services.cam(entry, rg, method, target)
    target_class = heat.target_class if heat is not None else (prediction.label or "")
    reading_view(
        item,
        entry,
        key=task,
        display=display,
        window=window,
        heat=heat,
        colormap=colormap,
        opacity=opacity,
        title=f"Where the model looked: {method_label} — {target_class.replace('_', ' ')}",
        tiers=tiers,
        greyed=greyed,
        prediction=prediction,
        cam_method=method_label,
        target_class=target_class,
    )
