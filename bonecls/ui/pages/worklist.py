"""Worklist page: every image of the session read by one model, ranked by suspicion, with exports."""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from bonecls.ui import error_policy, figures, services
from bonecls.ui.pages.pacs import node_queue_panel
from bonecls.ui.session import UploadResult, get_store
from bonecls.ui.widgets import (
    PAGES,
    TASK_TITLES,
    no_model_message,
    page_view,
    record_audit,
    show_answer_time,
    uploader,
)


@page_view
def worklist_page() -> None:
    """Pick a model, read every image of the session with it, show the ranked table and exports."""
    st.title("Worklist")
    st.caption("Many images ranked by suspicion: the ones that most need a look come first.")
    node_queue_panel()  # the DICOM node's queue, when $BONECLS_NODE_QUEUE names one
    with error_policy.guarded("worklist page"):
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
                get = res.get if isinstance(res, dict) else lambda k, d=None, r=res: getattr(r, k, d)
                record_audit(
                    item,
                    entry,
                    get("label") or "none",
                    get("status"),
                    get("suspicion"),
                    in_scope=get("in_scope", True),
                    scope_reasons=tuple(get("scope_reasons", ()) or ()),
                )
        rows = worklist.build_worklist(items, results, model_id=entry.id, model_sha256=entry.sha256)
        _worklist_table(rows, store, entry)
        show_answer_time(t0)
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
    """One result per item, in order: a Prediction, a detector dict, an error sentence, or None (unread)."""
    readable = [i for i in items if i.ok]
    by_sha: dict[str, Any] = {}
    if entry.framework == "ultralytics":
        for item in readable:
            try:
                scoped = services.detect_scoped(entry, item.radiograph)
                if not scoped.in_scope:
                    by_sha[item.sha256] = {
                        "status": "out of scope",
                        "label": None,
                        "suspicion": None,
                        "in_scope": False,
                        "scope_reasons": scoped.verdict.reasons,
                    }
                    continue
                floor = float(entry.card.thresholds.positive_at)
                top = max((float(b.confidence) for b in scoped.boxes if b.confidence >= floor), default=0.0)
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
    """The sentence shown in a worklist row whose image could not be read by the model."""
    from bonecls.errors import BoneclsError

    return str(exc) if isinstance(exc, BoneclsError) else error_policy.report_exception(exc, "worklist item")


_GROUPS = (
    ("To read — ranked by suspicion", ":material/format_list_numbered:"),
    (
        "Not typical radiographs or out of the model's scope — not ranked (their scores mean nothing)",
        ":material/block:",
    ),
    ("Unreadable files", ":material/broken_image:"),
)


def _status_style(text: str) -> str:
    """Background of a status cell: red positive, orange doubt, green negative, grey not reliable."""
    from bonecls.reading import STATUS_COLOUR, STATUS_HEX, STATUS_TEXT

    if "(not reliable)" in text:
        return "color: #616161; background-color: #eeeeee"
    status = next((k for k, v in STATUS_TEXT.items() if v == text), text)
    colour = STATUS_HEX.get(STATUS_COLOUR.get(status, "gray"), "#9e9e9e")
    return f"color: white; background-color: {colour}; font-weight: 600"


def _worklist_table(rows: list[Any], store: Any, entry: services.ModelEntry) -> None:
    """The rows in three groups (to read, not reliable, unreadable), status cells coloured; selecting a
    readable row opens that image in its reading page."""
    from bonecls.reading import NO_RESULT_NOTE
    from bonecls.worklist import GROUP_ERROR, GROUP_OOD, group_of

    ok = sum(r.status != "error" for r in rows)
    flagged = sum(
        r.status in ("positive", "uncertain", "detected") and not r.out_of_distribution for r in rows
    )
    st.markdown(
        f"**{len(rows)} file(s)** · {ok} read · {flagged} positive or doubt — review · "
        f"{len(rows) - ok} unreadable"
    )
    for group, (title, icon) in enumerate(_GROUPS):
        members = [r for r in rows if group_of(r) == group]
        if members:
            st.markdown(f"{icon} **{title}** ({len(members)})")
            if group == GROUP_OOD:
                st.caption(NO_RESULT_NOTE)
            _group_table(members, store, entry, with_image=group != GROUP_ERROR, key=f"wl_table_{group}")
    st.caption("Select a row to open it in its reading page.")


def _study_answer(row: Any) -> str:
    """``Positive — 0.83, highest of 3 views``; empty without a study or when none of its views read."""
    if row.study_text is None:
        return ""
    views = f"highest of {row.study_images} views" if row.study_images > 1 else "its only view read"
    return f"{row.study_text} — {row.study_suspicion:.2f}, {views}"


def _group_table(
    rows: list[Any], store: Any, entry: services.ModelEntry, *, with_image: bool, key: str
) -> None:
    import pandas as pd

    table = []
    for row in rows:
        record: dict[str, Any] = {"rank": row.rank}
        if with_image:
            item = store.get(row.image_sha256)
            ok = item is not None and item.ok
            record["image"] = (
                figures.image_data_uri(services.thumbnail(item.radiograph), max_side=96)[0] if ok else ""
            )
        record.update(file=row.file or "", status=row.status_text or "")
        if with_image:  # an unreadable file has no label or score: its row is the file and the reason
            record.update(label=(row.label or "").replace("_", " "), suspicion=row.suspicion)
        record["note"] = row.note or ""  # never "None" in a cell
        if any(r.study for r in rows):  # files with a study key: the study's answer beside each view
            record.update(study=row.study or "", study_answer=_study_answer(row))
        table.append(record)
    frame = pd.DataFrame(table)
    styled = frame.style.map(_status_style, subset=["status"])
    event = st.dataframe(
        styled,
        hide_index=True,
        width="stretch",
        row_height=64 if with_image else 40,
        height=min(38 + (65 if with_image else 41) * len(table), 38 + 65 * 12),
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
            "study": st.column_config.TextColumn("Study"),
            "study_answer": st.column_config.TextColumn(
                "Study answer", help="The study's most suspicious readable view decides (the cards' rule)"
            ),
        },
        on_select="rerun",
        selection_mode="single-row",
        key=key,
    )
    selected = getattr(getattr(event, "selection", None), "rows", None) or []
    if selected:
        row = rows[selected[0]]
        if row.status != "error":
            store.selected = row.image_sha256
            page = {"fracture": "fracture", "threeclass": "threeclass"}.get(entry.task, "pneumonia")
            st.switch_page(PAGES[page])
