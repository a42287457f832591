"""The pages' bodies. ``pages/*.py`` are one-line calls into this module; logic stays testable here.

Every view runs inside :func:`bonecls.ui.components.guarded`, so a BoneclsError shows its sentence
and anything unexpected shows an error id (the traceback goes to the server log only).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import streamlit as st

from bonecls.ui import components as ui
from bonecls.ui import figures, services
from bonecls.ui.session import (
    UploadResult,
    examples_by_task,
    get_store,
    ingest_example,
    ingest_uploads,
    list_examples,
)

log = logging.getLogger("bonecls.ui")

PAGES = {
    "home": "pages/home.py",
    "fracture": "pages/fracture.py",
    "threeclass": "pages/threeclass.py",
    "pneumonia": "pages/pneumonia.py",
    "models": "pages/models.py",
    "worklist": "pages/worklist.py",
}
TASK_TITLES = {
    "fracture": "Fracture (binary)",
    "threeclass": "Fracture severity (healthy / fractured / beyond repair)",
    "pneumonia": "Pneumonia (classifier)",
    "pneumonia-det": "Pneumonia (detector boxes)",
}
AUDITED_KEY = "bonecls_audited"
PLOTLY_CONFIG = {
    "displaylogo": False,
    "scrollZoom": True,
    "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d"],
    "toImageButtonOptions": {"format": "png", "filename": "bonecls-view"},
}


def page_view(func: Callable[..., None]) -> Callable[..., None]:
    """Every page: the disclaimer banner first, then the body (whose errors never escape as tracebacks)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        ui.banner()
        func(*args, **kwargs)

    return wrapper


# --- shared pieces ----------------------------------------------------------------------------------


def _plot(fig: Any, key: str) -> None:
    st.plotly_chart(fig, key=key, config=PLOTLY_CONFIG, width="stretch")


def uploader(key: str) -> list[UploadResult]:
    """Drag & drop many files; every file goes through :func:`ingest_uploads` (bytes sniffed, never MIME)."""
    store = get_store()
    files = st.file_uploader(
        "Drop radiographs here: PNG, JPEG, TIFF, BMP or DICOM (with or without the .dcm extension)",
        type=None,
        accept_multiple_files=True,
        key=key,
        help="Files stay in this session's memory only; nothing is written to disk.",
    )
    if not files:
        return []
    # Only files new to this session: a removed image does not come back while its file still sits in
    # the uploader, and uploading the same file again (a new file id) brings it back.
    fresh = [f for f in files if getattr(f, "file_id", None) is None or f.file_id not in store.seen_uploads]
    store.seen_uploads.update(f.file_id for f in fresh if getattr(f, "file_id", None) is not None)
    if not fresh:
        return []
    with st.spinner(f"Reading {len(fresh)} image(s)…"):
        return ingest_uploads(fresh, store=store)


def _item_label(item: UploadResult) -> str:
    if not item.ok:
        return f"{item.name} — unreadable"
    rg = item.radiograph
    h, w = rg.original_size
    flag = " — not a typical radiograph" if item.ood is not None and item.ood.is_ood else ""
    return f"{item.name} ({rg.source_format.upper()}, {w}×{h}){flag}"


def image_picker(key: str) -> UploadResult | None:
    """The image this page shows (shared across pages); None with a hint when nothing is uploaded."""
    store = get_store()
    items = list(store)
    if not items:
        st.info(
            "No image yet. Upload radiographs or try an example on the Home page.", icon=":material/upload:"
        )
        st.page_link(PAGES["home"], label="Go to Home (upload)", icon=":material/home:")
        return None
    keys = [i.sha256 for i in items]
    index = keys.index(store.selected) if store.selected in keys else 0
    if len(items) == 1:
        chosen = keys[0]
    else:
        chosen = st.selectbox(
            "Image",
            keys,
            index=index,
            format_func=lambda k: _item_label(store.get(k)),
            key=key,
        )
    store.selected = chosen
    return store.get(chosen)


def model_picker(task: str, key: str) -> services.ModelEntry | None:
    models = services.models_for(task)
    if not models:
        return None
    if len(models) == 1:
        return models[0]
    ids = [m.id for m in models]
    chosen = st.selectbox("Model", ids, key=key)
    return models[ids.index(chosen)]


def no_model_message(task: str) -> None:
    from bonecls.weights import weights_root

    st.info(
        f"No model is installed for this task ({TASK_TITLES.get(task, task)}). "
        f"Install a model folder with a card.json for task '{task}' under {weights_root()} "
        "(or point $BONECLS_WEIGHTS at one); the Models page lists what is installed.",
        icon=":material/inventory_2:",
    )


def window_controls(rg: Any, key: str) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Window/level sliders for DICOM and >8-bit images; returns (display pixels, (center, width))."""
    is_deep = rg.source_format == "dicom" or int(rg.bit_depth) > 8
    if not is_deep:
        return rg.pixels, None
    raw = np.asarray(rg.raw, dtype=np.float32)
    lo, hi = float(np.nanmin(raw)), float(np.nanmax(raw))
    if hi <= lo:
        return rg.pixels, None
    if rg.window:
        c0, w0 = float(rg.window[0]), float(rg.window[1])
    else:
        c0, w0 = (lo + hi) / 2.0, hi - lo
    span = hi - lo
    step = 1.0 if span > 50 else round(span / 200.0, 6) or 0.001
    c_def, w_def = float(np.clip(c0, lo, hi)), float(np.clip(w0, step, 2 * span))
    wkey_c, wkey_w = f"{key}_c_{rg.sha256[:12]}", f"{key}_w_{rg.sha256[:12]}"
    # Values live in session state (set here, not as widget defaults), so Reset needs no rerun trick.
    st.session_state.setdefault(wkey_c, c_def)
    st.session_state.setdefault(wkey_w, w_def)
    with st.expander("Window / level", expanded=False, icon=":material/contrast:"):
        cols = st.columns([3, 3, 1], vertical_alignment="bottom")
        with cols[2]:
            if st.button("Reset", key=f"{key}_reset_{rg.sha256[:12]}", help="Back to the image's own window"):
                st.session_state[wkey_c], st.session_state[wkey_w] = c_def, w_def
        with cols[0]:
            center = st.slider("Level (center)", lo, hi, step=step, key=wkey_c)
        with cols[1]:
            width = st.slider("Window (width)", step, 2 * span, step=step, key=wkey_w)
        st.caption(
            f"Raw values {lo:g} … {hi:g}"
            + (" (modality units after rescale)" if rg.source_format == "dicom" else "")
            + ". The model always reads the image's own window; this changes the display and overlay only."
        )
    if abs(center - c_def) < 1e-6 and abs(width - w_def) < 1e-6:
        return rg.pixels, (c0, w0) if rg.window else None
    from bonecls.imaging import apply_window

    return apply_window(raw, center, width, invert=rg.photometric == "MONOCHROME1"), (center, width)


def _audit(
    item: UploadResult, entry: services.ModelEntry, label: str, status: str, suspicion: float | None
) -> None:
    """One audit row per (session, image, model); a failing audit log never breaks the page."""
    done = st.session_state.setdefault(AUDITED_KEY, set())
    key = (item.sha256, entry.sha256)
    if key in done:
        return
    from bonecls.audit import default_log

    try:
        default_log().record(
            image_sha256=item.sha256,
            model_id=entry.id,
            model_sha256=entry.sha256,
            task=entry.task,
            label=label,
            status="out_of_distribution" if item.ood is not None and item.ood.is_ood else status,
            suspicion=suspicion,
        )
        done.add(key)
    except Exception as exc:
        st.caption(":orange[The audit log could not be written.] " + ui.report_exception(exc, "audit"))


def ood_warning(item: UploadResult) -> bool:
    if item.ood is not None and item.ood.is_ood:
        st.warning(
            "**This does not look like a radiograph, so the result below is not reliable.** "
            + item.ood.summary,
            icon=":material/block:",
        )
        return True
    return False


def image_notes(rg: Any, item: UploadResult | None = None) -> None:
    for note in getattr(rg, "warnings", ()) or ():
        st.caption(f":material/info: {note}")
    if item is not None and item.note:
        st.caption(f":material/science: {item.note}")


def report_buttons(
    rg: Any,
    entry: services.ModelEntry,
    *,
    display: np.ndarray,
    heat: services.HeatMap | None,
    colormap: str,
    opacity: float,
    key: str,
    **fields: Any,
) -> None:
    """PDF / PNG / JSON downloads, generated only when clicked (full resolution, as windowed)."""
    from bonecls import report

    def data() -> report.ReportData:
        return report.build_report(rg, card=entry.card, **fields)

    def overlay() -> np.ndarray | None:
        return None if heat is None else services.render_overlay(display, heat.heatmap, colormap, opacity)

    stem = f"bonecls-{entry.id}-{rg.sha256[:12]}"
    cols = st.columns(3)
    with cols[0]:
        st.download_button(
            "Report (PDF)",
            data=lambda: report.to_pdf(data(), display, overlay()),
            file_name=f"{stem}.pdf",
            mime="application/pdf",
            icon=":material/picture_as_pdf:",
            on_click="ignore",
            key=f"{key}_pdf",
        )
    with cols[1]:
        st.download_button(
            "Image + overlay (PNG)",
            data=lambda: report.to_png(data(), display, overlay()),
            file_name=f"{stem}.png",
            mime="image/png",
            icon=":material/image:",
            on_click="ignore",
            key=f"{key}_png",
        )
    with cols[2]:
        st.download_button(
            "Result (JSON)",
            data=lambda: report.to_json(data()),
            file_name=f"{stem}.json",
            mime="application/json",
            icon=":material/data_object:",
            on_click="ignore",
            key=f"{key}_json",
        )
    st.caption("Reports are de-identified: no file name and no DICOM patient field is ever included.")


def _timing(t0: float) -> None:
    st.caption(f"Answered in {time.perf_counter() - t0:.2f} s.")


# --- home -------------------------------------------------------------------------------------------


@page_view
def home_page() -> None:
    st.title("bonecls — X-ray reading aid")
    st.markdown(
        "Upload radiographs (or try an example), then open a reading page: **Fracture**, "
        "**Fracture severity**, **Pneumonia**, or the **Worklist** for many images ranked by suspicion."
    )
    with ui.guarded("home page"):
        store = get_store()
        uploader("home_uploader")
        _examples_row(store)
        _uploaded_list(store)


def _examples_row(store: Any) -> None:
    """'Try an example': one button per task and class (opens its reading page), or load them all."""
    examples = list_examples()
    if not examples:
        return
    grouped = examples_by_task(examples)
    with st.container(border=True):
        st.markdown("**Try an example** — synthetic phantom radiographs, not patient data")
        for task, items in grouped.items():
            cols = st.columns([2, *([3] * len(items))], vertical_alignment="center")
            with cols[0]:
                st.markdown(TASK_TITLES.get(task, task).split(" (")[0])
            for col, ex in zip(cols[1:], items, strict=True):
                with col:
                    label = (ex.class_name or ex.path.stem).replace("_", " ")
                    if st.button(
                        label, key=f"example_{task}_{label}", icon=":material/science:", width="stretch"
                    ):
                        result = ingest_example(ex, store=store)
                        if result.ok:
                            store.selected = result.sha256
                            st.switch_page(PAGES.get(task, PAGES["home"]))
        if st.button(
            f"Load all {len(examples)} example files into the worklist",
            key="example_all",
            icon=":material/format_list_numbered:",
        ):
            for ex in examples:
                ingest_example(ex, store=store)
            st.switch_page(PAGES["worklist"])


def _open_links(item: UploadResult) -> None:
    cols = st.columns(4)
    for col, (page, label, icon) in zip(
        cols,
        (
            ("fracture", "Fracture", ":material/personal_injury:"),
            ("threeclass", "Severity", ":material/stacked_bar_chart:"),
            ("pneumonia", "Pneumonia", ":material/pulmonology:"),
        ),
        strict=False,
    ):
        with col:
            if st.button(label, key=f"open_{page}_{item.sha256[:16]}", icon=icon, width="stretch"):
                get_store().selected = item.sha256
                st.switch_page(PAGES[page])


def _uploaded_list(store: Any) -> None:
    items = list(store)
    if not items:
        return
    if store.evicted:
        st.warning(
            f"To stay within this session's memory limit ({store.max_bytes // 2**20} MB), the "
            f"{len(store.evicted)} oldest image(s) were dropped: {', '.join(store.evicted[-5:])}"
            + (" …" if len(store.evicted) > 5 else "")
            + ". Upload them again to read them.",
            icon=":material/memory:",
        )
    ok, bad = len(store.readable()), len(store.failed())
    head = st.columns([4, 1], vertical_alignment="bottom")
    with head[0]:
        st.subheader(f"Images in this session ({ok} readable" + (f", {bad} unreadable)" if bad else ")"))
    with head[1]:
        if st.button("Clear all", icon=":material/delete_sweep:", key="clear_all"):
            store.clear()
            st.session_state.pop(AUDITED_KEY, None)
            st.rerun()
    for item in items:
        with st.container(border=True):
            cols = st.columns([1, 5, 1], vertical_alignment="center")
            with cols[0]:
                if item.ok:
                    st.image(services.thumbnail(item.radiograph), width=96)
                else:
                    st.markdown(":material/broken_image:")
            with cols[1]:
                st.markdown(f"**{item.name}**")
                if not item.ok:
                    ui.error_box(item.error or "This file could not be read.")
                else:
                    rg = item.radiograph
                    h, w = rg.original_size
                    facts = [rg.source_format.upper(), f"{w}×{h} px", f"{rg.bit_depth}-bit", rg.photometric]
                    facts += [v for v in (rg.modality, rg.body_part, rg.view) if v]
                    st.caption(" · ".join(str(f) for f in facts))
                    if item.ood is not None and item.ood.is_ood:
                        st.warning(item.ood.summary, icon=":material/block:")
                    image_notes(rg, item)
                    _open_links(item)
            with cols[2]:
                if st.button("Remove", key=f"remove_{item.sha256 or id(item)}", icon=":material/close:"):
                    store.remove(item.sha256)
                    st.rerun()


# --- classifier pages ---------------------------------------------------------------------------------


@page_view
def classifier_page(task: str) -> None:
    st.title(TASK_TITLES[task])
    with ui.guarded(f"{task} page"):
        entry = model_picker(task, key=f"{task}_model")
        if entry is None:
            no_model_message(task)
            return
        item = image_picker(key=f"{task}_image")
        if item is None:
            return
        if not item.ok:
            ui.error_box(item.error or "This file could not be read.")
            return
        _classifier_view(task, entry, item)


PREDICTED = "(predicted class)"


def _cam_controls(entry: services.ModelEntry, key: str):
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


def _viewer(
    rg: Any,
    display: np.ndarray,
    window: tuple[float, float] | None,
    heat: services.HeatMap | None,
    colormap: str,
    opacity: float,
    *,
    title: str,
    key: str,
    boxes: Sequence[Any] = (),
    greyed: bool = False,
) -> None:
    """Radiograph | overlay (zoom/pan linked), drawn from a shrunk, cached copy of the windowed image."""
    small, base = services.display_panel(rg, window, display)
    overlay = None
    if heat is not None:
        rgb = services.render_overlay(small, heat.heatmap, colormap, opacity)
        overlay = figures.encode_panel(rgb, original_size=(base.height, base.width))
    fig = figures.viewer_figure(base, overlay, boxes, titles=("Radiograph", title), greyed=greyed)
    _plot(fig, key=key)
    if heat is not None:
        for note in heat.warnings:
            st.caption(f":material/info: {note}")


def _result_panel(entry: services.ModelEntry, prediction: Any, greyed: bool) -> None:
    card = entry.card
    th = card.thresholds
    finding = " + ".join(f"P({c.replace('_', ' ')})" for c in card.positive_classes)
    cols = st.columns([2, 3])
    with cols[0]:
        st.markdown(f"### {ui.status_markdown(prediction.status, greyed=greyed)}", help=_threshold_help(card))
        lines = [
            f"Suspicion **{prediction.suspicion:.0%}** = {finding}",
            f"Most likely class: **{prediction.label.replace('_', ' ')}** "
            f"({prediction.probabilities[prediction.label]:.0%})",
        ]
        for line in lines:
            if greyed:
                ui.muted(line.replace("**", ""))
            else:
                st.markdown(line)
        st.caption(
            f"Negative below {th.negative_below:.0%}, positive at {th.positive_at:.0%} suspicion · "
            f"model {entry.id} ({card.architecture}) · sha256 {entry.sha256[:12]}…"
        )
    with cols[1]:
        fig = figures.probability_figure(
            prediction.probabilities,
            positive_classes=card.positive_classes,
            thresholds=th.model_dump(),
            greyed=greyed,
        )
        _plot(fig, key=f"probs_{entry.id}")


def _threshold_help(card: Any) -> str:
    th = card.thresholds
    return (
        f"Suspicion below {th.negative_below:.2f}: negative; at or above {th.positive_at:.2f}: positive; "
        "in between: uncertain — review."
    )


def _classifier_view(task: str, entry: services.ModelEntry, item: UploadResult) -> None:
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
    _audit(item, entry, prediction.label, prediction.status, prediction.suspicion)
    with result_box:
        _result_panel(entry, prediction, greyed)
    target_class = heat.target_class if heat is not None else prediction.label
    _viewer(
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
    _timing(t0)
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


# --- pneumonia ---------------------------------------------------------------------------------------


@page_view
def pneumonia_page() -> None:
    st.title("Pneumonia")
    with ui.guarded("pneumonia page"):
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
            ui.error_box(item.error or "This file could not be read.")
            return
        _pneumonia_view(item, classifier, det)


def _pneumonia_view(
    item: UploadResult, classifier: services.ModelEntry | None, det: services.ModelEntry | None
) -> None:
    rg = item.radiograph
    t0 = time.perf_counter()
    greyed = ood_warning(item)
    prediction = None
    if classifier is not None:
        with st.spinner("Reading the image…"):
            prediction = services.predict(classifier, rg)
        _audit(item, classifier, prediction.label, prediction.status, prediction.suspicion)
        _result_panel(classifier, prediction, greyed)
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
        _audit(item, det, "opacity" if boxes else "none", "detected" if boxes else "none", top)
        msg = (
            f"**{len(boxes)} opacity box{'es' if len(boxes) != 1 else ''}** at confidence ≥ {conf:.2f}"
            + (f" (highest {top:.2f})" if boxes_all else "")
            + f" · detector {det.id} · sha256 {det.sha256[:12]}…"
        )
        if greyed:
            ui.muted(msg)
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
    _viewer(
        rg, display, window, heat, colormap, opacity, title=title, key="viewer_pn", boxes=boxes, greyed=greyed
    )
    image_notes(rg, item)
    _timing(t0)
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


# --- models ------------------------------------------------------------------------------------------


@page_view
def models_page() -> None:
    st.title("Installed models")
    with ui.guarded("models page"):
        from bonecls.audit import audit_path, default_log
        from bonecls.weights import weights_root

        entries = services.installed_models()
        st.caption(f"Weights folder: {weights_root()}")
        installed_tasks = {e.task for e in entries}
        missing = [t for t in TASK_TITLES if t not in installed_tasks]
        if not entries:
            st.info("No model is installed.", icon=":material/inventory_2:")
        for task in missing:
            st.caption(f":material/info: No model installed for {TASK_TITLES[task]} (task '{task}').")
        for i, entry in enumerate(entries):
            _model_card(entry, expanded=i == 0)
        for folder, error in services.invalid_cards():
            ui.error_box(f"{folder.name}: {error}")

        st.divider()
        st.subheader("Audit log")
        log_ = default_log()
        count = log_.count()
        cols = st.columns([1, 2], vertical_alignment="bottom")
        with cols[0]:
            st.metric("Predictions logged", count)
        with cols[1]:
            st.download_button(
                "Download audit log (CSV)",
                data=log_.export_csv,
                file_name="bonecls-audit.csv",
                mime="text/csv",
                icon=":material/download:",
                on_click="ignore",
                key="audit_csv",
            )
        st.caption(
            f"{audit_path()} — time (UTC), image sha256, model id and sha256, task, result, status and "
            "suspicion. No patient data."
        )


def _metric_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        rows.append({"metric": key.replace("_", " "), "value": round(float(value), 4)})
    return rows


def _model_card(entry: services.ModelEntry, expanded: bool = True) -> None:
    card = entry.card
    title = f"**{card.id}** — {TASK_TITLES.get(card.task, card.task)} · {card.architecture}"
    with st.expander(title, expanded=expanded, icon=":material/model_training:"):
        cols = st.columns(2)
        with cols[0]:
            st.markdown(
                f"- **Task:** {card.task} ({card.framework})\n"
                f"- **Architecture:** {card.architecture}, head {card.head}, {card.input_size} px, "
                f"{card.in_chans} channel(s)\n"
                f"- **Classes:** {', '.join(card.class_names)} "
                f"(finding: {', '.join(card.positive_classes)})\n"
                f"- **Thresholds on suspicion:** negative below {card.thresholds.negative_below:.2f}, "
                f"positive at {card.thresholds.positive_at:.2f}; temperature {card.temperature:.3g}\n"
                f"- **Created:** {card.created}"
            )
        with cols[1]:
            st.markdown(f"**Training data.** {card.training_data or 'not stated'}")
            st.markdown(f"**Intended use.** {card.intended_use}")
            if card.limitations:
                st.markdown(f"**Limitations.** {card.limitations}")
        st.markdown(f"**Weights sha256** `{card.sha256}`")
        if card.command:
            st.markdown(f"**Trained with** `{card.command}`")
        metrics = dict(card.test_metrics or {})
        rows = _metric_rows(metrics)
        if rows:
            st.markdown("**Test metrics**")
            st.dataframe(rows, hide_index=True, width="content")
        confusion = figures.extract_confusion(metrics)
        reliability = figures.extract_reliability(metrics)
        history = figures.extract_history(metrics, card.extra)
        charts = [c for c in (confusion, reliability, history) if c]
        if charts:
            chart_cols = st.columns(len(charts))
            i = 0
            if confusion:
                with chart_cols[i]:
                    names = metrics.get("class_names") or card.class_names
                    _plot(figures.confusion_matrix_figure(confusion, names), key=f"cm_{card.id}")
                i += 1
            if reliability:
                with chart_cols[i]:
                    _plot(figures.reliability_figure(reliability), key=f"rel_{card.id}")
                i += 1
            if history:
                with chart_cols[i]:
                    _plot(figures.training_curves_figure(history), key=f"curves_{card.id}")
        elif not rows:
            st.caption("This card has no test metrics.")


# --- worklist ----------------------------------------------------------------------------------------


@page_view
def worklist_page() -> None:
    st.title("Worklist")
    st.caption("Many images ranked by suspicion: the ones that most need a look come first.")
    with ui.guarded("worklist page"):
        from bonecls import worklist

        store = get_store()
        with st.expander("Add images", expanded=not len(store), icon=":material/upload:"):
            uploader("worklist_uploader")
        models = [
            m
            for t in ("fracture", "threeclass", "pneumonia", "pneumonia-det")
            for m in services.models_for(t)
        ]
        if not models:
            no_model_message("fracture")
            return
        ids = [m.id for m in models]
        chosen = st.selectbox(
            "Rank by model",
            ids,
            key="wl_model",
            format_func=lambda i: f"{i} — {TASK_TITLES.get(models[ids.index(i)].task, '')}",
        )
        entry = models[ids.index(chosen)]
        items = list(store)
        if not items:
            st.info("No image yet: add some above or on the Home page.", icon=":material/upload:")
            return
        t0 = time.perf_counter()
        with st.spinner(f"Reading {len(items)} image(s)…"):
            results = _worklist_results(entry, items)
        for item, res in zip(items, results, strict=True):
            if item.ok and not isinstance(res, str):
                label, status, susp = (
                    (res["label"], res["status"], res["suspicion"])
                    if isinstance(res, dict)
                    else (res.label, res.status, res.suspicion)
                )
                _audit(item, entry, label, status, susp)
        rows = worklist.build_worklist(items, results, model_id=entry.id, model_sha256=entry.sha256)
        _worklist_table(rows, store, entry)
        _timing(t0)
        cols = st.columns(2)
        with cols[0]:
            st.download_button(
                "Export CSV",
                data=worklist.to_csv(rows),
                file_name=f"bonecls-worklist-{entry.id}.csv",
                mime="text/csv",
                icon=":material/download:",
                on_click="ignore",
                key="wl_csv",
            )
        with cols[1]:
            st.download_button(
                "Export JSON",
                data=worklist.to_json(rows),
                file_name=f"bonecls-worklist-{entry.id}.json",
                mime="application/json",
                icon=":material/data_object:",
                on_click="ignore",
                key="wl_json",
            )


def _worklist_results(entry: services.ModelEntry, items: list[UploadResult]) -> list[Any]:
    readable = [i for i in items if i.ok]
    by_sha: dict[str, Any] = {}
    if entry.framework == "ultralytics":
        for item in readable:
            try:
                boxes = services.detect(entry, item.radiograph)
                floor = float(entry.card.thresholds.positive_at)
                top = max((float(b.confidence) for b in boxes if b.confidence >= floor), default=0.0)
                by_sha[item.sha256] = {
                    "status": "detected" if top > 0 else "none",
                    "label": "opacity" if top > 0 else "none",
                    "suspicion": top,
                }
            except Exception as exc:  # one bad image must not stop the list
                by_sha[item.sha256] = _one_error(exc)
    else:
        try:
            preds = services.predict_many(entry, [i.radiograph for i in readable])
            by_sha = {i.sha256: p for i, p in zip(readable, preds, strict=True)}
        except Exception:
            for item in readable:  # find the culprit(s), keep the rest
                try:
                    by_sha[item.sha256] = services.predict(entry, item.radiograph)
                except Exception as exc:
                    by_sha[item.sha256] = _one_error(exc)
    return [by_sha.get(i.sha256) for i in items]


def _one_error(exc: Exception) -> str:
    from bonecls.errors import BoneclsError

    return str(exc) if isinstance(exc, BoneclsError) else ui.report_exception(exc, "worklist item")


def _worklist_table(rows: list[Any], store: Any, entry: services.ModelEntry) -> None:
    table = []
    for row in rows:
        item = store.get(row.image_sha256)
        thumb = None
        if item is not None and item.ok:
            thumb = figures.image_data_uri(services.thumbnail(item.radiograph), max_side=96)[0]
        table.append(
            {
                "rank": row.rank,
                "image": thumb,
                "file": row.file,
                "status": row.status_text,
                "label": (row.label or "").replace("_", " "),
                "suspicion": row.suspicion,
                "note": row.note,
            }
        )
    ok = sum(r.status != "error" for r in rows)
    flagged = sum(
        r.status in ("positive", "uncertain", "detected") and not r.out_of_distribution for r in rows
    )
    st.markdown(
        f"**{len(rows)} file(s)** · {ok} read · {flagged} positive or to review · {len(rows) - ok} unreadable"
    )
    event = st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        row_height=64,
        height=min(38 + 65 * len(table), 38 + 65 * 12),
        column_config={
            "rank": st.column_config.NumberColumn("#", width="small"),
            "image": st.column_config.ImageColumn("Image", width="small"),
            "file": st.column_config.TextColumn("File"),
            "status": st.column_config.TextColumn("Status"),
            "label": st.column_config.TextColumn("Label"),
            "suspicion": st.column_config.ProgressColumn(
                "Suspicion", min_value=0.0, max_value=1.0, format="%.2f"
            ),
            "note": st.column_config.TextColumn("Note / error", width="large"),
        },
        on_select="rerun",
        selection_mode="single-row",
        key="wl_table",
    )
    selected = getattr(getattr(event, "selection", None), "rows", None) or []
    if selected:
        row = rows[selected[0]]
        if row.status != "error":
            store.selected = row.image_sha256
            page = {"fracture": "fracture", "threeclass": "threeclass"}.get(entry.task, "pneumonia")
            st.switch_page(PAGES[page])
    st.caption("Select a row to open it in its reading page.")
