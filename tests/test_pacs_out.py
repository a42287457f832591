"""DICOM out (bonecls.pacs.sr, sc, send, safety): the CI round trip through a real Orthanc (phantom study
stored -> read -> SR and SC back into the same study -> QIDO shows the new series -> their content read
back equals the result), validation with highdicom and dciodvfy, and the synthetic-data safety rule."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from factories import make_dicom_dataset
from pacs_data import FAKE_NAME, phantom_study

from bonecls.cli import main
from bonecls.pacs import RESEARCH_NOTICE, dicomweb
from bonecls.pacs.errors import DestinationRefused
from bonecls.pacs.models import ModelReader
from bonecls.pacs.reader import read_study
from bonecls.pacs.results import Box, ImageResult, ModelInfo, StudyReading
from bonecls.pacs.safety import check_destination, research_sends
from bonecls.pacs.sc import build_sc
from bonecls.pacs.send import result_objects, send_objects
from bonecls.pacs.sr import build_sr, parse_sr

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"


@pytest.fixture
def pacs_env(orthanc, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("BONECLS_DICOMWEB_URL", orthanc.dicomweb_url)
    monkeypatch.setenv("BONECLS_DICOMWEB_USER", orthanc.user)
    monkeypatch.setenv("BONECLS_DICOMWEB_PASSWORD", orthanc.password)
    monkeypatch.setenv("BONECLS_AUDIT_DB", str(tmp_path / "audit.sqlite"))
    return orthanc


def _pixels_sha(ds) -> str:
    return hashlib.sha256(ds.PixelData).hexdigest()


def test_round_trip_sr_and_sc_back_in_the_same_study(
    pacs_env, tmp_path: Path, tiny_card_factory, isolated_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card_dir = isolated_weights / "fracture-phantom"
    tiny_card_factory(card_dir, card_id="fracture-phantom", training_data="Synthetic phantom radiographs.")
    originals = phantom_study(tmp_path, 2, seed=31, accession="ACC-OUT-1")
    client = dicomweb.connect()
    dicomweb.store(client, originals)
    study_uid = str(originals[0].StudyInstanceUID)
    before = {str(ds.SOPInstanceUID): _pixels_sha(ds) for ds in originals}

    assert main(["pacs", "read", study_uid, "--model", str(card_dir), "--store", "--json"]) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    assert "stored 1 SR and 2 Secondary Capture(s)" in captured.err
    assert FAKE_NAME not in captured.out + captured.err

    series = client.search_for_series(study_uid, fields=["SeriesDescription", "Modality"])
    modalities = sorted(s["00080060"]["Value"][0] for s in series)
    assert modalities == ["DX", "OT", "SR"]  # the originals' series, then the SC (OT) and SR series
    written = [
        ds
        for ds in dicomweb.retrieve_study(client, study_uid)
        if str(ds.SOPClassUID) != originals[0].SOPClassUID
    ]
    (sr,) = [ds for ds in written if ds.SOPClassUID == SR_CLASS]
    scs = [ds for ds in written if ds.SOPClassUID == SC_CLASS]
    assert len(scs) == 2
    assert RESEARCH_NOTICE in sr.SeriesDescription and all(
        RESEARCH_NOTICE in sc.SeriesDescription for sc in scs
    )
    assert all(
        sc.BurnedInAnnotation == "YES" and "Synthetic phantom radiographs." in sc.ImageComments for sc in scs
    )
    assert {sc.SourceImageSequence[0].ReferencedSOPInstanceUID for sc in scs} == set(before)

    reading = parse_sr(sr)
    assert [r.row() for r in reading.results] == printed["results"]
    assert [s.deciding_sop_instance_uid for s in reading.summaries] == [
        s["deciding_sop_instance_uid"] for s in printed["summaries"]
    ]
    (model,) = reading.models
    assert model.training_data == "Synthetic phantom radiographs." and len(model.sha256) == 64
    texts = [str(item.TextValue) for item in sr.ContentSequence if item.ValueType == "TEXT"]
    assert RESEARCH_NOTICE in texts

    # the originals are untouched, and a second store adds nothing (same UIDs: the PACS keeps one copy)
    assert main(["pacs", "read", study_uid, "--model", str(card_dir), "--store"]) == 0
    again = dicomweb.retrieve_study(client, study_uid)
    assert len(again) == 2 + 1 + 2
    assert {
        str(ds.SOPInstanceUID): _pixels_sha(ds) for ds in again if str(ds.SOPInstanceUID) in before
    } == before


def _reading_with_everything(datasets) -> StudyReading:
    """Positive, negative and out-of-scope results, two models, boxes: every field the SR carries."""
    cls_model = ModelInfo(
        "fracture-x", "2026-12-03T13:42:48+00:00", "a" * 64, "fracture", "Synthetic phantoms."
    )
    det_model = ModelInfo("pneumonia-det", "v2", "b" * 64, "pneumonia-det", "Random weights for tests.")
    results = []
    for i, ds in enumerate(datasets):
        ids = (
            str(ds.StudyInstanceUID),
            str(ds.SeriesInstanceUID),
            str(ds.SOPInstanceUID),
            str(ds.SOPClassUID),
        )
        status, suspicion = ("positive", 0.912345) if i == 0 else ("negative", 0.104)
        probabilities = (("fractured", suspicion), ("not fractured", round(1 - suspicion, 6)))
        results.append(
            ImageResult(
                *ids, "fracture-x", "a" * 64, "fracture", status, "fractured", suspicion, probabilities
            )
        )
        if i == 0:
            boxes = (
                Box(10.25, 20.5, 100.75, 120.12, 0.8, "opacity"),
                Box(1.0, 2.0, 3.5, 4.0, 0.31, "opacity"),
            )
            results.append(
                ImageResult(
                    *ids, "pneumonia-det", "b" * 64, "pneumonia", "positive", "opacity", 0.8, (), boxes
                )
            )
        else:
            results.append(
                ImageResult(
                    *ids,
                    "pneumonia-det",
                    "b" * 64,
                    "pneumonia",
                    "out of scope",
                    scope_reasons=("The image is tiny.", "It looks like a photo."),
                )
            )
    return StudyReading.of(str(datasets[0].StudyInstanceUID), [cls_model, det_model], results)


@pytest.fixture(scope="module")
def two_images(tmp_path_factory: pytest.TempPathFactory):
    return phantom_study(tmp_path_factory.mktemp("out-study"), 2, seed=32)


def test_sr_round_trips_every_finding_status_box_and_sha(two_images, tmp_path: Path) -> None:
    reading = _reading_with_everything(two_images)
    path = tmp_path / "sr.dcm"
    build_sr(reading, two_images).save_as(path, enforce_file_format=True)
    back = parse_sr(pydicom.dcmread(path))
    assert back == reading
    statuses = {(r.model_id, r.status) for r in back.results}
    assert ("pneumonia-det", "out of scope") in statuses and ("fracture-x", "negative") in statuses
    report = pydicom.dcmread(path)
    not_assessed = [
        item for item in report.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "NOTASSESSED"
    ]
    assert len(not_assessed) == 1 and "The image is tiny." in not_assessed[0].TextValue
    assert build_sr(reading, two_images).SOPInstanceUID == report.SOPInstanceUID  # derived, not random


def _dciodvfy_errors(path: Path) -> list[str]:
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) is not installed")
def test_sr_and_sc_pass_dciodvfy(two_images, tmp_path: Path) -> None:
    reading = _reading_with_everything(two_images)
    build_sr(reading, two_images).save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    overlay = np.zeros((256, 256, 3), np.uint8)
    build_sc(two_images[0], overlay, reading.models[0]).save_as(tmp_path / "sc.dcm", enforce_file_format=True)
    assert _dciodvfy_errors(tmp_path / "sr.dcm") == []
    assert _dciodvfy_errors(tmp_path / "sc.dcm") == []


def test_sc_burns_the_notice_into_the_pixels(two_images) -> None:
    overlay = np.full((256, 256, 3), 90, np.uint8)
    model = ModelInfo("m", "1", "c" * 64, "fracture", "Synthetic phantoms.")
    sc = build_sc(two_images[0], overlay, model)
    pixels = sc.pixel_array
    assert pixels.shape[0] > 256 and pixels.shape[1] == 256
    band = pixels[: pixels.shape[0] - 256]
    assert (band == 255).any() and np.array_equal(pixels[-256:], overlay)
    assert sc.StudyInstanceUID == two_images[0].StudyInstanceUID and sc.PatientName == FAKE_NAME


def test_out_of_scope_image_is_not_assessed_and_gets_no_overlay(two_images, tiny_card_dir: Path) -> None:
    tiny = make_dicom_dataset(np.tile(np.arange(64, dtype=np.uint16) * 60, (64, 1)))
    tiny.StudyInstanceUID = two_images[0].StudyInstanceUID
    tiny.SOPInstanceUID = tiny.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.99"
    study = read_study([two_images[0], tiny], [ModelReader.from_card(tiny_card_dir)], overlays=True)
    by_sop = {r.sop_instance_uid: r for r in study.reading.results}
    outside = by_sop[str(tiny.SOPInstanceUID)]
    assert outside.status == "out of scope" and outside.suspicion is None and outside.scope_reasons
    assert outside.label == "" and outside.probabilities == ()
    assert set(study.overlays) == {(str(two_images[0].SOPInstanceUID), "fracture-tiny")}
    objects = result_objects(study, [two_images[0], tiny])
    assert [o.SOPClassUID for o in objects] == [SR_CLASS, SC_CLASS]
    assert parse_sr(objects[0]).results == study.reading.results


def test_synthetic_models_send_only_to_loopback(pacs_env, two_images) -> None:
    synthetic = [ModelInfo("fracture", "1", "a" * 64, "fracture", "Synthetic phantom radiographs.")]
    patient_data = [ModelInfo("other", "1", "b" * 64, "fracture", "10,000 radiographs from hospital X.")]
    for url in ("http://127.0.0.1:8042/dicom-web", "http://localhost/dicom-web", "dicom://PACS@[::1]:104"):
        check_destination(url, synthetic)
    with pytest.raises(DestinationRefused, match="--research-destination"):
        send_objects(
            two_images, "http://192.0.2.10:8042/dicom-web", synthetic
        )  # refused before any connection
    with pytest.raises(DestinationRefused):
        check_destination("dicom://PACS@192.0.2.10:104", synthetic)
    check_destination("http://192.0.2.10/dicom-web", patient_data)
    assert research_sends() == []
    check_destination("http://192.0.2.10:8042/dicom-web", synthetic, research=True, objects=3)
    ((_, model_id, sha, where, count),) = research_sends()
    assert (model_id, sha, where, count) == ("fracture", "a" * 64, "http://192.0.2.10:8042", 3)


def test_c_store_into_orthanc(pacs_env, two_images) -> None:
    reading = _reading_with_everything(two_images)
    dicomweb.store(dicomweb.connect(), two_images)
    sr = build_sr(reading, two_images)
    url = f"dicom://{pacs_env.aet}@127.0.0.1:{pacs_env.dicom_port}"
    assert send_objects([sr], url, reading.models, calling_aet="BONECLS-TEST") == [str(sr.SOPInstanceUID)]
    back = dicomweb.connect().retrieve_instance(
        str(sr.StudyInstanceUID), str(sr.SeriesInstanceUID), str(sr.SOPInstanceUID)
    )
    assert parse_sr(back) == reading
