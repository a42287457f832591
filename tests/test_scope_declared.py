"""The declared scope from the training set's own labels, and the age rule (issues 21 and 23).

* ``train/prepare.py`` sums up per split what the images' labels name (DICOM headers, phantom manifests,
  MURA folders, FracAtlas and GRAZPEDWRI-DX columns); the trainers declare that, and fall back to the
  task's phantom recipe only when the data has no labels, saying which on the card.
* PatientAge: an adult-only model refuses a child's film and a paediatric-only model an adult's; only the
  age group leaves the decoder, and no age reaches the index, the report or the audit log.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from factories import make_dicom
from realdata import make_grazpedwri, make_mura

from bonecls.data import Record, read_dataset
from bonecls.data.scope_labels import scope_labels_by_split
from bonecls.imaging import load_radiograph
from bonecls.imaging.dicom import age_group
from bonecls.scope.declared import (
    DECLARED_SCOPES,
    FROM_LABELS,
    FROM_RECIPE,
    declared_from_labels,
    header_reasons,
)
from bonecls.weights import DeclaredScope

CHILD_SENTENCE = "under 18 years"


def chest_dicom(age: str | None, **tags: object) -> bytes:
    """A chest PA radiograph written with pydicom, with PatientAge ``age`` (None: no age in the header)."""
    pixels = (np.random.default_rng(0).random((64, 64)) * 4000).astype(np.uint16)
    return make_dicom(pixels, bits_stored=12, modality="CR", extra={"PatientAge": age, **tags})


def test_patient_age_becomes_a_group_and_nothing_more() -> None:
    assert [age_group(v) for v in ("007Y", "017Y", "018Y", "045Y", "011M", "003W", "010D")] == [
        "paediatric",
        "paediatric",
        "adult",
        "adult",
        "paediatric",
        "paediatric",
        "paediatric",
    ]
    assert [age_group(v) for v in ("", None, "45", "045", "45Y", "abcY", "045X")] == [None] * 7
    child = load_radiograph(chest_dicom("007Y"))
    assert child.age_group == "paediatric" and load_radiograph(chest_dicom("045Y")).age_group == "adult"
    assert load_radiograph(chest_dicom(None)).age_group is None
    assert not any("007" in str(v) for v in vars(child).values() if not isinstance(v, np.ndarray))


def test_age_rule_refuses_the_other_age_group_with_a_clear_sentence() -> None:
    adult = DECLARED_SCOPES["pneumonia"]
    assert adult.age_group == "adult"
    child, grown, unknown = (load_radiograph(chest_dicom(a)) for a in ("007Y", "045Y", None))
    (reason,) = header_reasons(adult, child)
    assert CHILD_SENTENCE in reason and "PatientAge" in reason and "adults" in reason and "007" not in reason
    assert header_reasons(adult, grown) == () and header_reasons(adult, unknown) == ()
    paediatric = DeclaredScope(body_parts=["WRIST"], age_group="paediatric")
    assert header_reasons(paediatric, load_radiograph(chest_dicom("011M", BodyPartExamined="WRIST"))) == ()
    (reason,) = header_reasons(paediatric, load_radiograph(chest_dicom("045Y", BodyPartExamined="WRIST")))
    assert "18 years or over" in reason and "children's radiographs" in reason
    assert header_reasons(DeclaredScope(age_group="any"), child) == ()


def _without_digests(text: str) -> str:
    """``text`` without its sha256 digests: a random weight file's hex digest holds "007" about one run
    in seventy, which is no age."""
    return re.sub(r"[0-9a-f]{32,}", "<digest>", text)


def test_a_childs_film_is_refused_and_its_age_reaches_no_report_or_audit(
    tiny_card_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bonecls.audit import AuditLog
    from bonecls.inference import load_classifier
    from bonecls.report import build_report, to_json

    predictor = load_classifier(tiny_card_dir, engine="pytorch")  # a fracture model: adults only
    child = load_radiograph(chest_dicom("007Y"))
    pred = predictor.predict(child)
    assert not pred.in_scope and pred.status == "out of scope" and not pred.probabilities
    assert any(CHILD_SENTENCE in r for r in pred.scope_reasons)
    report = to_json(build_report(child, card=predictor.card, prediction=pred))
    bare = _without_digests(report)
    assert "007" not in bare and "age_group" not in bare and "paediatric" not in bare
    log = AuditLog(tmp_path / "audit.sqlite")
    log.record(
        image_sha256=child.sha256,
        model_id=predictor.card.id,
        model_sha256=predictor.card.sha256,
        task=predictor.card.task,
        label="none",
        status="out_of_scope",  # as the app logs a refused answer (bonecls.ui.widgets)
        suspicion=None,
        in_scope=pred.in_scope,
        scope_reasons=pred.scope_reasons,
    )
    with sqlite3.connect(tmp_path / "audit.sqlite") as conn:
        rows = conn.execute("SELECT * FROM predictions").fetchall()
    assert "header-age" in rows[0][-1].split(",") and not any(
        "007" in _without_digests(str(v)) or "paediatric" in str(v) for v in rows[0]
    )


def test_prepare_records_the_labels_and_the_trainers_declare_them(tmp_path: Path) -> None:
    from bonecls.phantom import write_dataset
    from bonecls.prepare import prepare

    src = write_dataset("pneumonia", "rsna", tmp_path / "rsna", n=12, size=48, seed=4, progress=False)
    index = prepare(
        src, tmp_path / "prep", size=48, scheduler="sync", progress=False, echo=lambda s: None
    ).index
    train = index["scope_labels"]["train"]
    assert train["body_parts"] == ["CHEST"] and train["views"] == ["PA"] and train["modalities"] == ["DX"]
    assert train["age_groups"] == ["adult"] and train["labelled"] == train["n"] > 0
    text = (tmp_path / "prep" / "index.json").read_text()
    assert "PatientAge" not in text and not any(f"0{a}Y" in text for a in range(25, 80))
    declared = declared_from_labels(index, "pneumonia")
    assert declared.derived_from.startswith(FROM_LABELS) and declared.body_parts == ["CHEST"]
    assert (
        declared.views == ["PA"]
        and declared.age_group == "adult"
        and {"CR", "DX"} <= set(declared.modalities)
    )
    # no labels (an index prepared before they were recorded, or PNG class folders): the task's recipe
    fallback = declared_from_labels({k: v for k, v in index.items() if k != "scope_labels"}, "pneumonia")
    assert (
        fallback.derived_from == FROM_RECIPE
        and fallback.body_parts == DECLARED_SCOPES["pneumonia"].body_parts
    )
    assert declared_from_labels({}, "abnormality").body_parts == []


def test_layout_labels_of_mura_grazpedwri_fracatlas_and_dicom(tmp_path: Path) -> None:
    mura = read_dataset(make_mura(tmp_path / "mura"), verify=False)
    labels = scope_labels_by_split(mura.records, mura.layout, mura.root)
    assert labels["train"]["body_parts"] == ["HAND", "WRIST"] and labels["train"]["age_groups"] == []
    assert declared_from_labels({"scope_labels": labels}, "abnormality").age_group == "any"
    graz = read_dataset(make_grazpedwri(tmp_path / "graz"), verify=False)
    labels = scope_labels_by_split(graz.records, graz.layout, graz.root)
    train = labels["train"]
    assert train["body_parts"] == ["WRIST"] and train["age_groups"] == ["paediatric"]
    assert declared_from_labels({"scope_labels": {"train": train}}, "fracture").age_group == "paediatric"
    row = (("hand", "1"), ("leg", "0"), ("hip", "0"), ("shoulder", "1"), ("frontal", "1"), ("lateral", "0"))
    png = tmp_path / "fa" / "a.jpg"
    png.parent.mkdir()
    png.write_bytes(b"not read")
    fracatlas = scope_labels_by_split([Record(png, 1, "fractured", "train", meta=row)], "fracatlas", tmp_path)
    assert fracatlas["train"]["body_parts"] == ["HAND", "SHOULDER"] and fracatlas["train"]["views"] == [
        "AP",
        "PA",
    ]
    kids = []
    for i, age in enumerate(("007Y", "011M", "016Y")):
        path = tmp_path / "dcm" / f"{i}.dcm"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(chest_dicom(age, BodyPartExamined="HAND", ViewPosition="AP"))
        kids.append(Record(path, 0, "normal", "train"))
    dicom = scope_labels_by_split(kids, "classfolders", tmp_path / "dcm")["train"]
    assert (
        dicom["body_parts"] == ["HAND"] and dicom["views"] == ["AP"] and dicom["age_groups"] == ["paediatric"]
    )
    assert "007" not in json.dumps(dicom)
