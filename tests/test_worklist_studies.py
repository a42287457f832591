"""Study answers in the worklist: files with a study key (a MURA-like path, a DICOM StudyInstanceUID,
hashed) are grouped, and each row carries its study's answer by the cards' rule (highest suspicion);
unreadable and not-typical views add nothing; exports name DICOM studies by number, never by UID."""

from __future__ import annotations

import json
from types import SimpleNamespace

from factories import make_dicom

from bonecls import worklist
from bonecls.training.headline import STUDY_RULE


def _upload(name: str, data: bytes = b"", *, error: str | None = None, ood: bool = False):
    flags = SimpleNamespace(is_ood=True, reasons=("not a radiograph",)) if ood else None
    return SimpleNamespace(
        name=name, sha256=f"sha-{name}", data=data, error=error, ood=flags, radiograph=None
    )


def _answer(status: str, suspicion: float) -> dict:
    return {"status": status, "label": status, "suspicion": suspicion}


def test_study_keys_from_paths_and_hashed_dicom_uids() -> None:
    assert worklist.study_key("MURA-v1.1/valid/XR_WRIST/patient11185/study1_positive/image3.png") == (
        "patient11185/study1",
        "patient11185/study1",
    )
    assert worklist.study_key("patient7\\study2\\view.png")[0] == "patient7/study2"  # a Windows path
    assert worklist.study_key("image1.png") is None and worklist.study_key("study1/image1.png") is None
    uid = "1.2.826.0.1.3680043.8.498.42"
    key, label = worklist.study_key("a.dcm", make_dicom(extra={"StudyInstanceUID": uid}))
    assert key.startswith("dicom:") and uid not in key and label is None
    assert worklist.study_key("b.dcm", make_dicom(extra={"StudyInstanceUID": None})) is None
    assert worklist.STUDY_RULE == STUDY_RULE == "max"  # the worklist applies the cards' rule


def test_each_view_carries_its_studys_answer() -> None:
    study1 = "patient00001/study1_positive"
    uploads = [
        _upload(f"{study1}/image1.png"),
        _upload(f"{study1}/image2.png"),
        _upload(f"{study1}/image3.png", error="unreadable"),  # adds nothing, keeps its study
        _upload("patient00002/study1_negative/image1.png"),
        _upload("patient00002/study1_negative/image2.png", ood=True),  # its score means nothing
        _upload("loose.png"),
    ]
    results = [
        _answer("negative", 0.1),
        _answer("positive", 0.83),
        None,
        _answer("uncertain", 0.4),
        _answer("positive", 0.99),
        _answer("positive", 0.7),
    ]
    rows = worklist.build_worklist(uploads, results, model_id="m", model_sha256="s")
    by_file = {r.file: r for r in rows}
    for name in ("image1.png", "image2.png", "image3.png"):
        row = by_file[f"{study1}/{name}"]
        assert row.study == "patient00001/study1" and row.study_status == "positive"
        assert row.study_suspicion == 0.83 and row.study_images == 2
    other = by_file["patient00002/study1_negative/image2.png"]
    assert other.study_status == "uncertain" and other.study_suspicion == 0.4 and other.study_images == 1
    assert by_file["loose.png"].study is None and by_file["loose.png"].study_status is None
    exported = {r["file"]: r for r in json.loads(worklist.to_json(rows))}
    assert (
        exported[f"{study1}/image1.png"]["study_status"] == "positive"
        and "study_suspicion" in exported["loose.png"]
    )
    assert worklist.to_csv(rows).splitlines()[0].endswith("note,study,study_status,study_suspicion")


def test_dicom_studies_are_numbered_in_upload_order_and_never_named_by_uid() -> None:
    uids = ["1.2.826.0.1.3680043.8.498.7", "1.2.826.0.1.3680043.8.498.9"]
    files = [(f"{i}.dcm", make_dicom(extra={"StudyInstanceUID": uids[i % 2]})) for i in range(4)]
    results = [
        _answer("negative", 0.2),
        _answer("negative", 0.1),
        _answer("positive", 0.9),
        _answer("negative", 0.3),
    ]
    rows = worklist.build_worklist([_upload(n, d) for n, d in files], results, model_id="m", model_sha256="s")
    by_file = {r.file: r for r in rows}
    assert [by_file[f"{i}.dcm"].study for i in range(4)] == ["DICOM study 1", "DICOM study 2"] * 2
    assert by_file["0.dcm"].study_status == "positive" and by_file["0.dcm"].study_suspicion == 0.9
    assert by_file["1.dcm"].study_status == "negative" and by_file["1.dcm"].study_suspicion == 0.3
    assert not any(uid in worklist.to_csv(rows) + worklist.to_json(rows) for uid in uids)
