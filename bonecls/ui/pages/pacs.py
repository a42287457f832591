"""PACS page: search a DICOMweb server, read a study with every fitting model, store the SR and SC back.

The server is the one the CLI uses: ``$BONECLS_DICOMWEB_URL``, credentials only from
``$BONECLS_DICOMWEB_USER`` / ``_PASSWORD`` or ``_TOKEN`` (never typed into the page, so never in a
browser's history). The page shows studies and images by their UIDs, dates, modalities and body parts:
patient names, IDs and birth dates never reach it. Storing back goes through
:func:`bonecls.pacs.send.send_objects`, so the safety rule holds here too (a synthetic-data model stores
only into a PACS on this machine; the page has no research override, the CLI's flag is audited).

:func:`node_queue_panel` shows the queue of a ``bonecls listen`` node (``$BONECLS_NODE_QUEUE``) here and on
the worklist page.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import streamlit as st

from bonecls.ui import error_policy
from bonecls.ui.widgets import page_view

NODE_QUEUE_ENV = "BONECLS_NODE_QUEUE"
_MATCHES, _READING, _STORED = "pacs_matches", "pacs_reading", "pacs_stored"


@page_view
def pacs_page() -> None:
    """Search, pick a study, read it, show one result per image and the study summary, store back."""
    from bonecls.pacs import RESEARCH_NOTICE
    from bonecls.pacs.dicomweb import URL_ENV

    st.title("PACS")
    st.caption(
        f"Studies from a DICOMweb server, read by every installed model whose scope fits; results go back "
        f"into the study as a DICOM SR and Secondary Captures. {RESEARCH_NOTICE}."
    )
    with error_policy.guarded("PACS page"):
        url = os.environ.get(URL_ENV, "").strip()
        if not url:
            st.info(
                f"No PACS configured: set {URL_ENV} to the DICOMweb base URL (credentials in "
                "BONECLS_DICOMWEB_USER / BONECLS_DICOMWEB_PASSWORD or BONECLS_DICOMWEB_TOKEN) and restart.",
                icon=":material/dns:",
            )
        else:
            _search_and_read()
    node_queue_panel()


def _search_and_read() -> None:
    from bonecls.pacs.dicomweb import connect, search_studies, server_url

    st.markdown(f"Server: `{server_url()}`")
    with st.form("pacs_search"):
        cols = st.columns(5)
        date_from = cols[0].date_input("Study date from", value=None, key="pacs_from")
        date_to = cols[1].date_input("Study date to", value=None, key="pacs_to")
        modality = cols[2].text_input("Modality", placeholder="DX, CR", key="pacs_modality")
        body_part = cols[3].text_input("Body part", placeholder="CHEST", key="pacs_body_part")
        accession = cols[4].text_input("Accession number", key="pacs_accession")
        if st.form_submit_button("Search", icon=":material/search:"):
            st.session_state[_MATCHES] = search_studies(
                connect(),
                date_from=date_from,
                date_to=date_to,
                modality=modality or None,
                body_part=body_part or None,
                accession=accession or None,
            )
            st.session_state.pop(_READING, None)
    matches = st.session_state.get(_MATCHES)
    if matches is None:
        return
    if not matches:
        st.info("No study matches.", icon=":material/search_off:")
        return
    _matches_table(matches)
    uids = [m.study_instance_uid for m in matches]
    by_uid = {m.study_instance_uid: m for m in matches}
    chosen = st.selectbox(
        "Study",
        uids,
        key="pacs_study",
        format_func=lambda u: f"{by_uid[u].study_date or '-'} · {'/'.join(by_uid[u].modalities)} · {u}",
    )
    if st.button("Read this study", icon=":material/play_arrow:", key="pacs_read"):
        _read(chosen)
    held = st.session_state.get(_READING)
    if held is not None and held["uid"] == chosen:
        _show_reading(held)


def _matches_table(matches: list[Any]) -> None:
    import pandas as pd

    rows = [
        {
            "study": m.study_instance_uid,
            "date": m.study_date,
            "modalities": "/".join(m.modalities),
            "body parts": "/".join(m.body_parts),
            "series": m.series,
            "images": m.instances,
        }
        for m in matches
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


@st.cache_resource(show_spinner=False, max_entries=4)
def _readers(cards: tuple[tuple[str, str], ...]) -> list[Any]:
    """The PACS readers of the installed models, loaded once per (folder, sha256) set."""
    from bonecls.pacs.models import load_readers

    return load_readers([folder for folder, _ in cards])


def _installed_cards() -> tuple[tuple[str, str], ...]:
    from bonecls.pacs.sweep import selected_models

    return tuple((folder, info.sha256) for folder, info in selected_models())


def _read(study_uid: str) -> None:
    from bonecls.pacs.dicomweb import connect, retrieve_study
    from bonecls.pacs.reader import read_study

    with st.spinner("Retrieving and reading the study…"):
        readers = _readers(_installed_cards())
        instances = retrieve_study(connect(), study_uid)
        study = read_study(instances, readers, overlays=True)
    st.session_state[_READING] = {"uid": study_uid, "study": study, "instances": instances}
    st.session_state.pop(_STORED, None)


def _show_reading(held: dict[str, Any]) -> None:
    import pandas as pd

    from bonecls.reading import STATUS_TEXT

    reading = held["study"].reading
    st.subheader("Study summary")
    summary = [
        {
            "model": s.model_id,
            "finding": s.finding,
            "status": "not assessed (no image in scope)"
            if s.suspicion is None
            else STATUS_TEXT.get(s.status, s.status),
            "suspicion": s.suspicion,
            "deciding image": s.deciding_sop_instance_uid or "",
            "images in scope": f"{s.images_in_scope} of {s.images}",
        }
        for s in reading.summaries
    ]
    st.dataframe(pd.DataFrame(summary), hide_index=True, width="stretch")
    st.subheader("One result per image")
    order = {uid: n for n, uid in enumerate(dict.fromkeys(r.sop_instance_uid for r in reading.results), 1)}
    per_image = [
        {
            "image": order[r.sop_instance_uid],
            "SOP instance": r.sop_instance_uid,
            "model": r.model_id,
            "status": STATUS_TEXT.get(r.status, r.status) if r.in_scope else "not assessed",
            "label": r.label,
            "suspicion": r.suspicion,
            "boxes": len(r.boxes),
            "note": "" if r.in_scope else " ".join(r.scope_reasons),
        }
        for r in reading.results
    ]
    st.dataframe(pd.DataFrame(per_image), hide_index=True, width="stretch")
    for note in reading.skipped:
        st.caption(f"Skipped {note}")
    _store_back(held)


def _store_back(held: dict[str, Any]) -> None:
    from bonecls.pacs.dicomweb import server_url
    from bonecls.pacs.send import result_objects, send_objects

    study = held["study"]
    if not study.reading.results:
        return
    if st.button("Store SR + Secondary Captures in the study", icon=":material/upload:", key="pacs_store"):
        with error_policy.guarded("PACS store"):
            objects = result_objects(study, held["instances"])
            stored = send_objects(objects, server_url(), study.reading.models)
            st.session_state[_STORED] = (held["uid"], len(stored))
    done = st.session_state.get(_STORED)
    if done and done[0] == held["uid"]:
        st.success(
            f"Stored in the study as a new series: 1 SR and {done[1] - 1} Secondary Capture(s), each marked "
            "RESEARCH USE ONLY — NOT FOR DIAGNOSTIC USE.",
            icon=":material/check_circle:",
        )


def node_queue_panel() -> None:
    """The ``bonecls listen`` node's queue (counts per state, the newest instances by UID) when
    ``$BONECLS_NODE_QUEUE`` names its folder; nothing otherwise."""
    folder = os.environ.get(NODE_QUEUE_ENV, "").strip()
    if not folder:
        return
    with error_policy.guarded("node queue panel"):
        import pandas as pd

        from bonecls.pacs.queue import DurableQueue

        st.subheader("DICOM node queue")
        if not (Path(folder) / "queue.sqlite").is_file():
            st.warning(f"{NODE_QUEUE_ENV} names no node queue yet (no queue.sqlite in it).")
            return
        queue = DurableQueue(folder)
        counts = queue.counts()
        for column, (state, count) in zip(st.columns(len(counts)), counts.items(), strict=True):
            column.metric(state, count)
        items = queue.items(limit=50)
        if items:
            rows = [
                {
                    "SOP instance": i.sop_instance_uid,
                    "study": i.study_instance_uid,
                    "state": i.state,
                    "attempts": i.attempts,
                    "note": i.note,
                }
                for i in items
            ]
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
