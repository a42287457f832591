"""The app's PACS page (bonecls.ui.pages.pacs) through AppTest against the real Orthanc fixture: search by
accession, read a study (one result per image and model, the study summary), store the SR and SC back
(QIDO then shows the new series), no patient data on the page; and the node's queue on the worklist page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from appdata import app_environment, build_weights
from pacs_data import FAKE_NAME, phantom_study
from streamlit.testing.v1 import AppTest

from bonecls.pacs import dicomweb
from bonecls.pacs.queue import DurableQueue

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
PHI = (FAKE_NAME, "PHANTOM^", "PHANTOM-0001", "19700101")
ACCESSION = "ACC-APP-1"


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_weights(tmp_path_factory.mktemp("pacs-app-weights") / "weights")


@pytest.fixture
def env(weights_dir: Path, tmp_path: Path, orthanc, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("BONECLS_DICOMWEB_URL", orthanc.dicomweb_url)
    monkeypatch.setenv("BONECLS_DICOMWEB_USER", orthanc.user)
    monkeypatch.setenv("BONECLS_DICOMWEB_PASSWORD", orthanc.password)
    monkeypatch.delenv("BONECLS_DICOMWEB_TOKEN", raising=False)
    monkeypatch.delenv("BONECLS_NODE_QUEUE", raising=False)
    with app_environment(weights_dir, tmp_path / "audit.sqlite", monkeypatch) as audit_db:
        yield audit_db


def _page_text(at: AppTest) -> str:
    out: list[str] = []

    def walk(node) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            out.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return "\n".join(out)


def _app_on(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def _button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def test_pacs_page_searches_reads_and_stores_back(env: Path, tmp_path: Path) -> None:
    study = phantom_study(tmp_path / "study", 2, seed=71, accession=ACCESSION)
    client = dicomweb.connect()
    dicomweb.store(client, study)
    uid = str(study[0].StudyInstanceUID)

    at = _app_on("pages/pacs.py")
    at.text_input(key="pacs_accession").set_value(ACCESSION)
    _button(at, "Search").click().run()
    assert not at.exception, at.exception
    assert at.selectbox(key="pacs_study").value == uid
    at.button(key="pacs_read").click().run()
    assert not at.exception, at.exception
    summary, per_image = at.dataframe[-2].value, at.dataframe[-1].value
    assert sorted(summary["model"]) == ["fracture", "pneumonia-cls", "threeclass"]
    images = {str(ds.SOPInstanceUID) for ds in study}
    assert len(per_image) == 6 and set(per_image["SOP instance"]) == images  # 2 images x 3 models
    for _, row in summary.iterrows():
        mine = per_image[per_image["model"] == row["model"]]
        assert row["suspicion"] == mine["suspicion"].max()  # the most suspicious image decides

    at.button(key="pacs_store").click().run()
    assert not at.exception, at.exception
    assert any("Stored in the study" in s.value for s in at.success)
    modalities = sorted(s["00080060"]["Value"][0] for s in client.search_for_series(study_instance_uid=uid))
    assert modalities == ["DX", "OT", "SR"]  # the source, the Secondary Captures, the SR
    text = _page_text(at)
    assert not [needle for needle in PHI if needle in text]


def test_pacs_page_without_a_server_says_how_to_set_one(env: Path, monkeypatch) -> None:
    monkeypatch.delenv("BONECLS_DICOMWEB_URL")
    at = _app_on("pages/pacs.py")
    assert any("BONECLS_DICOMWEB_URL" in i.value for i in at.info)


def test_worklist_page_shows_the_node_queue(env: Path, tmp_path: Path, monkeypatch) -> None:
    queue = DurableQueue(tmp_path / "node-queue")
    for n in range(3):
        queue.receive(f"1.2.826.0.1.{n}", "1.2.826.0.1", lambda handle: handle.write(b"DICM"))
    queue.mark_skipped("1.2.826.0.1.0", "not an image (SR object)")
    monkeypatch.setenv("BONECLS_NODE_QUEUE", str(queue.folder))
    at = _app_on("pages/worklist.py")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["pending"] == "2" and metrics["skipped"] == "1" and metrics["done"] == "0"
    table = at.dataframe[0].value
    assert set(table["SOP instance"]) == {f"1.2.826.0.1.{n}" for n in range(3)}
