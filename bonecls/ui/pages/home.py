"""Home page: upload radiographs or load an example, see this session's images, open a reading page."""

from __future__ import annotations

from typing import Any

import streamlit as st

from bonecls.ui import error_policy, services
from bonecls.ui.session import UploadResult, examples_by_task, get_store, ingest_example, list_examples
from bonecls.ui.widgets import AUDITED_KEY, PAGES, TASK_TITLES, image_notes, page_view, uploader


@page_view
def home_page() -> None:
    """Upload or try an example, then the list of this session's images with links to the readers."""
    target = st.session_state.pop(OPEN_PAGE_KEY, None)
    if target in PAGES:  # a reading page's button was clicked: go there before drawing this page again
        st.switch_page(PAGES[target])
    st.title("bonecls — X-ray reading aid")
    st.markdown(
        "Upload radiographs (or try an example), then open a reading page: **Fracture**, "
        "**Fracture severity**, **Pneumonia**, or the **Worklist** for many images ranked by suspicion."
    )
    with error_policy.guarded("home page"):
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


#: session-state key of the reading page a row's button asked for (read first thing by the next run)
OPEN_PAGE_KEY = "bonecls_open_page"


def _request_open(sha256: str, page: str) -> None:
    """A row's button callback: select the image and ask the next run for its reading page.

    Why a callback: with ``if st.button(...): st.switch_page(...)`` the click first re-drew the whole
    Home page (every row's thumbnail and buttons) down to the clicked row, about 1.8 s of the 2.8 s
    from click to overlay on a loaded 2-core machine (BENCHMARKS.md, the app); the callback runs
    before the script, which then switches at its first line.
    """
    get_store().selected = sha256
    st.session_state[OPEN_PAGE_KEY] = page


def _open_links(item: UploadResult) -> None:
    """One button per reading page; it selects this image and opens the page."""
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
            st.button(
                label,
                key=f"open_{page}_{item.sha256[:16]}",
                icon=icon,
                width="stretch",
                on_click=_request_open,
                args=(item.sha256, page),
            )


def _uploaded_list(store: Any) -> None:
    """This session's images: thumbnail, facts or error, links to the readers, Remove / Clear all."""
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
                    error_policy.error_box(item.error or "This file could not be read.")
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
