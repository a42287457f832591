"""DICOMweb in (bonecls.pacs.dicomweb, reader, `bonecls pacs search|read`) against a real Orthanc on loopback:
QIDO filters, WADO retrieval, one result per (image, model), the study summary, and no patient data in
any output."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from pacs_data import FAKE_NAME, phantom_study
from pydicom.dataset import Dataset

from bonecls.cli import main
from bonecls.pacs import dicomweb
from bonecls.pacs.errors import PacsError
from bonecls.pacs.models import ModelReader, scope_of
from bonecls.pacs.reader import read_study
from bonecls.pacs.results import ImageResult, summarise

PHI = (FAKE_NAME, "PHANTOM^", "PHANTOM-0001", "19700101")
ACCESSION = "ACC-DW-1"


@pytest.fixture
def pacs_env(orthanc, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BONECLS_DICOMWEB_URL", orthanc.dicomweb_url)
    monkeypatch.setenv("BONECLS_DICOMWEB_USER", orthanc.user)
    monkeypatch.setenv("BONECLS_DICOMWEB_PASSWORD", orthanc.password)
    monkeypatch.delenv("BONECLS_DICOMWEB_TOKEN", raising=False)
    return orthanc


@pytest.fixture(scope="module")
def stored_study(orthanc, tmp_path_factory: pytest.TempPathFactory) -> list[Dataset]:
    """A 3-image phantom study in Orthanc (stored once per module)."""
    import os

    datasets = phantom_study(tmp_path_factory.mktemp("dw-study"), 3, seed=21, accession=ACCESSION)
    saved = {k: os.environ.get(k) for k in ("BONECLS_DICOMWEB_USER", "BONECLS_DICOMWEB_PASSWORD")}
    os.environ["BONECLS_DICOMWEB_USER"], os.environ["BONECLS_DICOMWEB_PASSWORD"] = orthanc.auth
    try:
        stored = dicomweb.store(dicomweb.connect(orthanc.dicomweb_url), datasets)
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    assert sorted(stored) == sorted(str(ds.SOPInstanceUID) for ds in datasets)
    return datasets


def test_search_filters(pacs_env, stored_study) -> None:
    client = dicomweb.connect()
    uid = str(stored_study[0].StudyInstanceUID)

    def found(**filters) -> list[str]:
        return [m.study_instance_uid for m in dicomweb.search_studies(client, accession=ACCESSION, **filters)]

    assert found() == [uid]
    match = dicomweb.search_studies(client, accession=ACCESSION)[0]
    assert (match.study_date, match.modalities, match.body_parts, match.instances) == (
        "20240315",
        ("DX",),
        ("CHEST",),
        3,
    )
    assert found(date_from="2024-03-01", date_to="2024-03-31", modality="dx", body_part="chest") == [uid]
    assert found(date_from="2024-03-16") == []
    assert found(date_to="20240314") == []
    assert found(modality="CT") == []
    assert found(body_part="HAND") == []
    assert dicomweb.search_studies(client, accession="NO-SUCH-ACCESSION") == []


def test_search_refuses_bad_input_with_sentences(pacs_env, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PacsError, match="starts after it ends"):
        dicomweb.date_range("2024-03-02", "2024-03-01")
    with pytest.raises(PacsError, match="YYYY-MM-DD"):
        dicomweb.date_range("March", None)
    with pytest.raises(PacsError, match="no credentials in the DICOMweb URL"):
        dicomweb.server_url("http://user:secret@127.0.0.1/dicom-web")
    monkeypatch.delenv("BONECLS_DICOMWEB_URL")
    with pytest.raises(PacsError, match="BONECLS_DICOMWEB_URL"):
        dicomweb.server_url()
    monkeypatch.setenv("BONECLS_DICOMWEB_PASSWORD", "wrong")
    with pytest.raises(PacsError, match=r"HTTP 401.*BONECLS_DICOMWEB_USER"):
        dicomweb.search_studies(dicomweb.connect(pacs_env.dicomweb_url))


def test_cli_search_prints_no_patient_data(
    pacs_env, stored_study, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pacs", "search", "--accession", ACCESSION, "--body-part", "CHEST"]) == 0
    out = capsys.readouterr().out
    assert str(stored_study[0].StudyInstanceUID) in out and "3 image(s)" in out
    assert not [needle for needle in (*PHI, ACCESSION) if needle in out]
    assert main(["pacs", "search", "--accession", ACCESSION, "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert set(row) == {"study_instance_uid", "study_date", "modalities", "body_parts", "series", "instances"}


def test_cli_read_one_result_per_image_and_a_summary(
    pacs_env, stored_study, tiny_card_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uid = str(stored_study[0].StudyInstanceUID)
    assert main(["pacs", "read", uid, "--model", str(tiny_card_dir), "--json"]) == 0
    captured = capsys.readouterr()
    reading = json.loads(captured.out)
    assert not [needle for needle in PHI if needle in captured.out + captured.err]
    images = {str(ds.SOPInstanceUID) for ds in stored_study}
    assert {r["sop_instance_uid"] for r in reading["results"]} == images
    assert len(reading["results"]) == 3 and reading["skipped"] == []
    (summary,) = reading["summaries"]
    top = max(reading["results"], key=lambda r: r["suspicion"])
    assert summary["suspicion"] == top["suspicion"] and summary["status"] == top["status"]
    assert summary["deciding_sop_instance_uid"] == top["sop_instance_uid"]
    assert main(["pacs", "read", uid, "--model", str(tiny_card_dir)]) == 0
    text = capsys.readouterr().out
    assert f"study {uid}" in text and text.count("fracture-tiny") == 4


def test_read_study_skips_non_images_and_damaged_images(stored_study, tiny_card_dir: Path) -> None:
    reader = ModelReader.from_card(tiny_card_dir)
    report = Dataset()
    report.StudyInstanceUID = stored_study[0].StudyInstanceUID
    report.SeriesInstanceUID, report.SOPInstanceUID = "1.2.3.4", "1.2.3.4.5"
    report.SOPClassUID, report.Modality = "1.2.840.10008.5.1.4.1.1.88.33", "SR"
    damaged = copy.deepcopy(stored_study[1])
    damaged.SOPInstanceUID = "1.2.3.4.6"
    damaged.PixelData = b"\x00" * 10
    study = read_study([*stored_study, report, damaged], [reader])
    assert len(study.reading.results) == 3
    assert len(study.reading.skipped) == 2
    assert any("not an image (SR object)" in s for s in study.reading.skipped)


def _result(sop: str, status: str, suspicion: float | None) -> ImageResult:
    return ImageResult(
        "1.2", "1.2.3", sop, "1.2.840.10008.5.1.4.1.1.1.1", "m", "0" * 64, "fracture", status, "x", suspicion
    )


def test_summary_most_suspicious_in_scope_image_decides() -> None:
    (summary,) = summarise(
        [_result("a", "negative", 0.1), _result("b", "out of scope", None), _result("c", "positive", 0.8)]
    )
    assert (summary.status, summary.suspicion, summary.deciding_sop_instance_uid) == ("positive", 0.8, "c")
    assert (summary.images, summary.images_in_scope) == (3, 2)
    (nothing,) = summarise([_result("a", "out of scope", None)])
    assert (nothing.status, nothing.suspicion, nothing.deciding_sop_instance_uid) == (
        "out of scope",
        None,
        None,
    )


def test_scope_adapter_reads_the_gate_when_present(make_radiograph) -> None:
    import numpy as np

    class Gated:
        in_scope, scope_score, scope_reasons = False, 7.5, ("A leg film offered to a chest model.",)

    verdict = scope_of(Gated(), None)
    assert (verdict.in_scope, verdict.score, verdict.reasons) == (False, 7.5, Gated.scope_reasons)
    smooth = np.tile(np.linspace(0.1, 0.9, 256, dtype=np.float32), (256, 1))
    assert scope_of(object(), make_radiograph(smooth)).in_scope
    tiny = scope_of(object(), make_radiograph(smooth[:40, :40]))
    assert not tiny.in_scope and tiny.reasons
