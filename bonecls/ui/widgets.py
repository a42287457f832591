"""Widgets shared by the pages: banner, pickers, audit, downloads (the viewer and the result panel
live in :mod:`bonecls.ui.viewer` and :mod:`bonecls.ui.result`).

The page bodies live in :mod:`bonecls.ui.pages`; what two or more of them draw the same way lives
here, so a label or key (which AppTest and the browser test find elements by) is written once.
Every page is wrapped in :func:`page_view` and runs its body inside
:func:`bonecls.ui.error_policy.guarded`, so a BoneclsError shows its sentence and anything unexpected
shows an error id (the traceback goes to the server log only).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import streamlit as st

from bonecls.report import DISCLAIMER
from bonecls.ui import error_policy, services
from bonecls.ui.session import UploadResult, get_store, ingest_uploads

#: page name -> its script, for ``st.page_link`` / ``st.switch_page`` (app.py registers the same paths)
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
#: session-state key of the (image sha256, model sha256) pairs already written to the audit log
AUDITED_KEY = "bonecls_audited"
PLOTLY_CONFIG = {
    "displaylogo": False,
    "scrollZoom": True,
    "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d"],
    "toImageButtonOptions": {"format": "png", "filename": "bonecls-view"},
}

#: status -> (label shown, badge colour, icon)
STATUS_STYLE: dict[str, tuple[str, str, str]] = {
    "positive": ("positive", "red", ":material/error:"),
    "uncertain": ("doubt — review", "orange", ":material/help:"),
    "negative": ("negative", "green", ":material/check_circle:"),
    "detected": ("findings boxed", "red", ":material/select:"),
    "none": ("no box above threshold", "green", ":material/check_circle:"),
}
GREY = "gray"


def banner() -> None:
    """The disclaimer, at the top of every page."""
    st.warning(DISCLAIMER, icon=":material/medical_information:")


def page_view(func: Callable[..., None]) -> Callable[..., None]:
    """Every page: the disclaimer banner first, then the body (whose errors never escape as tracebacks)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        banner()
        func(*args, **kwargs)

    return wrapper


# --- inputs and small pieces ----------------------------------------------------------------------


def plot(fig: Any, key: str) -> None:
    """A plotly figure at full width with the app's toolbar (PNG export, no lasso)."""
    st.plotly_chart(fig, key=key, config=PLOTLY_CONFIG, width="stretch")


#: Streamlit 1.67 cuts each uploaded file's chip name to 20 characters in JavaScript ("patient...m-pacs.dcm")
#: and keeps the full name only in the chip's ``title``: show that instead, wrapped (a CSS override on
#: Streamlit's own data-testid; without it the chips fall back to Streamlit's short names)
_FULL_CHIP_NAMES = """<style>
[data-testid="stFileChipName"] { font-size: 0 !important; white-space: normal !important; }
[data-testid="stFileChipName"]::after {
  content: attr(title); font-size: 0.875rem; line-height: 1.3; overflow-wrap: anywhere;
}
[data-testid="stFileChip"] { max-width: 100%; height: auto; }
</style>"""


def uploader(key: str) -> list[UploadResult]:
    """Drag & drop many files; every file goes through :func:`ingest_uploads` (bytes sniffed, never MIME)."""
    store = get_store()
    st.html(_FULL_CHIP_NAMES)
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
    """The installed model for ``task`` (a select box when there are several); None when none is."""
    models = services.models_for(task)
    if not models:
        return None
    if len(models) == 1:
        return models[0]
    ids = [m.id for m in models]
    chosen = st.selectbox("Model", ids, key=key)
    return models[ids.index(chosen)]


def no_model_message(task: str) -> None:
    """Say which task has no model and where to install one (the page then stops)."""
    from bonecls.weights import weights_root

    st.info(
        f"No model is installed for this task ({TASK_TITLES.get(task, task)}). "
        f"Install a model folder with a card.json for task '{task}' under {weights_root()} "
        "(or point $BONECLS_WEIGHTS at one); the Models page lists what is installed.",
        icon=":material/inventory_2:",
    )


def record_audit(
    item: UploadResult,
    entry: services.ModelEntry,
    label: str,
    status: str,
    suspicion: float | None,
    *,
    in_scope: bool | None = None,
    scope_reasons: tuple[str, ...] = (),
) -> None:
    """One audit row per (session, image, model); a failing audit log never breaks the page.

    An answer the scope gate refused is logged as ``out_of_scope`` with its reasons as codes
    (:func:`bonecls.audit.scope_reason_codes`) and no label."""
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
            label=label if in_scope is not False else "none",
            status="out_of_scope"
            if in_scope is False
            else "out_of_distribution"
            if item.ood is not None and item.ood.is_ood
            else status,
            suspicion=suspicion if in_scope is not False else None,
            in_scope=in_scope,
            scope_reasons=scope_reasons,
        )
        done.add(key)
    except Exception as exc:
        st.caption(
            ":orange[The audit log could not be written.] " + error_policy.report_exception(exc, "audit")
        )


def status_markdown(status: str, *, greyed: bool = False) -> str:
    """The status as a Streamlit markdown badge (``:orange-badge[...]``), greyed when not reliable."""
    label, colour, icon = STATUS_STYLE.get(status, (status, GREY, ":material/info:"))
    if greyed:
        label, colour, icon = f"{label} (not reliable)", GREY, ":material/block:"
    return f":{colour}-badge[{icon} {label}]"


def muted(text: str) -> None:
    """Greyed text (an out-of-distribution prediction)."""
    st.markdown(f":gray[{text}]")


def ood_warning(item: UploadResult) -> bool:
    """Warn when the image does not look like a radiograph; True means: grey the result out."""
    if item.ood is not None and item.ood.is_ood:
        st.warning(
            "**This does not look like a radiograph, so the result below is not reliable.** "
            + item.ood.summary,
            icon=":material/block:",
        )
        return True
    return False


def image_notes(rg: Any, item: UploadResult | None = None) -> None:
    """The decoder's warnings about this image, and the example's note (what the phantom shows)."""
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


def show_answer_time(t0: float) -> None:
    """How long this page took to answer, since ``t0`` (``time.perf_counter()``)."""
    st.caption(f"Answered in {time.perf_counter() - t0:.2f} s.")
