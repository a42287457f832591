"""De-identified reports (PDF, PNG, JSON): structure, fields, and no PHI in any output.

The PHI test pushes a DICOM full of patient identifiers (tests/factories.PHI) through the app's own
path: ``ingest_uploads`` -> prediction + CAM -> report (PDF/PNG/JSON) -> audit log, and then searches
every output for every :data:`factories.PHI_NEEDLES` string: the PDF bytes (uncompressed and the
decompressed streams of the compressed one), the PNG bytes and its chunks, the JSON, the audit
database files (including the WAL) and every log record captured meanwhile.
"""

from __future__ import annotations

import io
import json
import logging
import re
import struct
import zlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from appdata import png_bytes, radiograph_like
from factories import PHI, PHI_NEEDLES, make_dicom
from PIL import Image

from bonecls import report
from bonecls.audit import AuditLog
from bonecls.imaging import load_radiograph
from bonecls.inference.predictor import Predictor

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, kinds = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kinds.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return kinds


def pdf_streams(data: bytes) -> list[bytes]:
    """Every stream's bytes, inflated when it is Flate-compressed."""
    out = []
    for raw in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S):
        try:
            out.append(zlib.decompress(raw))
        except zlib.error:
            out.append(raw)
    return out


@pytest.fixture
def predictor(tiny_card_dir: Path) -> Predictor:
    return Predictor.from_card(tiny_card_dir)


def make_report(predictor: Predictor, data: bytes):
    rg = load_radiograph(data)
    pred = predictor.predict(rg)
    exp = predictor.explain(rg, method="gradcam")
    rep = report.build_report(
        rg,
        card=predictor.card,
        prediction=pred,
        cam_method="Grad-CAM",
        target_class=exp.target_class,
        window=rg.window,
        now=NOW,
    )
    return rg, pred, exp, rep


def test_json_has_the_fields(predictor: Predictor) -> None:
    rg, pred, _, rep = make_report(predictor, png_bytes(radiograph_like(256)))
    data = json.loads(report.to_json(rep))
    assert data["schema"] == "bonecls.report/1"
    assert data["created_utc"] == "2026-03-04T05:06:07Z"
    assert data["disclaimer"] == report.DISCLAIMER
    assert data["image"]["sha256"] == rg.sha256 and data["image"]["width"] == 256
    assert data["model"] == {
        "id": predictor.card.id,
        "task": "fracture",
        "architecture": "simple_cnn",
        "framework": "pytorch",
        "sha256": predictor.card.sha256,
        "class_names": predictor.card.class_names,
    }
    p = data["prediction"]
    assert p["label"] == pred.label and p["status"] == pred.status
    assert p["suspicion"] == pytest.approx(pred.suspicion, abs=1e-6)
    assert set(p["probabilities"]) == set(predictor.card.class_names)
    assert p["thresholds"] == {"negative_below": 0.3, "positive_at": 0.7}
    assert data["explanation"]["method"] == "Grad-CAM"
    assert data["boxes"] == [] and data["out_of_distribution"] == []


def test_boxes_and_threshold_in_json() -> None:
    class Card:
        id, task, architecture, framework = "pneumonia-det", "pneumonia-det", "yolov8n", "ultralytics"
        sha256, class_names = "0" * 64, ["opacity"]

    rg = load_radiograph(png_bytes(radiograph_like(128)))
    boxes = [
        {"x0": 1, "y0": 2, "x1": 30, "y1": 40, "confidence": 0.8, "label": "opacity"},
        {"x0": 5, "y0": 5, "x1": 9, "y1": 9, "confidence": 0.1, "label": "opacity"},
    ]
    rep = report.build_report(rg, card=Card, boxes=boxes, box_threshold=0.25, ood_reasons=["tiny"])
    data = json.loads(report.to_json(rep))
    assert data["prediction"] is None
    assert data["boxes"] == [
        {"x0": 1.0, "y0": 2.0, "x1": 30.0, "y1": 40.0, "confidence": 0.8, "label": "opacity"}
    ]
    assert data["out_of_distribution"] == ["tiny"]
    assert report.to_pdf(rep, rg.pixels).startswith(b"%PDF-")


def test_pdf_is_a_valid_pdf_with_both_images_and_the_text(predictor: Predictor) -> None:
    rg, pred, exp, rep = make_report(predictor, png_bytes(radiograph_like(256)))
    pdf = report.to_pdf(rep, rg.pixels, exp.overlay, compress=False)
    assert pdf.startswith(b"%PDF-1.") and pdf.rstrip().endswith(b"%%EOF")
    assert b"xref" in pdf and b"trailer" in pdf and b"/Type /Catalog" in pdf
    assert pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") + pdf.count(b"/Type /Page>") >= 1
    assert len(re.findall(rb"/Subtype /Image", pdf)) >= 2  # radiograph + overlay
    text = b"".join(pdf_streams(pdf))
    for needle in (
        b"Reading aid, not a diagnosis",
        b"not for clinical use",
        predictor.card.sha256.encode(),
        rg.sha256.encode(),
        b"2026-03-04T05:06:07Z",
        pred.label.encode(),
        b"Grad-CAM",
    ):
        assert needle in text, needle
    compressed = report.to_pdf(rep, rg.pixels, exp.overlay)
    assert compressed.startswith(b"%PDF-") and len(compressed) < len(pdf)
    assert b"Reading aid, not a diagnosis" in b"".join(pdf_streams(compressed))


def test_png_is_side_by_side_with_a_caption(predictor: Predictor) -> None:
    rg, _, exp, rep = make_report(predictor, png_bytes(radiograph_like(200)))
    data = report.to_png(rep, rg.pixels, exp.overlay)
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG" and img.mode == "RGB"
    assert img.width == 200 * 2 + 8 and img.height > 200 + 60
    arr = np.asarray(img)
    assert np.array_equal(arr[:200, :200, 0], arr[:200, :200, 2])  # left: grey radiograph
    assert not np.array_equal(arr[:200, 208:, 0], arr[:200, 208:, 2])  # right: coloured overlay
    assert set(png_chunks(data)) <= {b"IHDR", b"IDAT", b"IEND"}  # no text/EXIF/time chunks


def test_phi_never_reaches_any_output(
    predictor: Predictor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from bonecls.ui.session import UploadStore, ingest_uploads

    monkeypatch.setenv("BONECLS_AUDIT_DB", str(tmp_path / "audit.sqlite"))
    caplog.set_level(logging.DEBUG)
    dicom = make_dicom(radiograph_like(256, 3), phi=True)
    assert all(v.encode() in dicom for v in (PHI["PatientName"], PHI["PatientID"], PHI["InstitutionName"]))

    # the app's own path: upload -> radiograph -> prediction + CAM -> reports -> audit
    store = UploadStore()
    [item] = ingest_uploads([("upload", dicom)], store=store)
    assert item.ok, item.error
    rg = item.radiograph
    pred = predictor.predict(rg)
    exp = predictor.explain(rg, method="gradcam")
    rep = report.build_report(
        rg,
        card=predictor.card,
        prediction=pred,
        cam_method="Grad-CAM",
        target_class=exp.target_class,
        window=rg.window,
        ood_reasons=item.ood.reasons if item.ood else (),
    )
    outputs = {
        "pdf (uncompressed)": report.to_pdf(rep, rg.pixels, exp.overlay, compress=False),
        "json": report.to_json(rep).encode(),
        "png": report.to_png(rep, rg.pixels, exp.overlay),
    }
    compressed = report.to_pdf(rep, rg.pixels, exp.overlay)
    outputs["pdf (compressed)"] = compressed
    outputs["pdf (inflated streams)"] = b"\n".join(pdf_streams(compressed))
    log = AuditLog()
    log.record(
        image_sha256=rg.sha256,
        model_id=predictor.card.id,
        model_sha256=predictor.card.sha256,
        task=predictor.card.task,
        label=pred.label,
        status=pred.status,
        suspicion=pred.suspicion,
    )
    outputs["audit csv"] = log.export_csv().encode()
    for path in tmp_path.glob("audit.sqlite*"):  # the database, its WAL and shared memory
        outputs[path.name] = path.read_bytes()
    outputs["logs"] = "\n".join(r.getMessage() + str(r.exc_text or "") for r in caplog.records).encode()
    outputs["radiograph repr"] = repr(
        {k: v for k, v in vars(rg).items() if k not in ("pixels", "raw")}
    ).encode()

    leaks = {
        name: [n for n in PHI_NEEDLES if n.encode() in data or n.encode("utf-16-be") in data]
        for name, data in outputs.items()
    }
    assert not any(leaks.values()), leaks
    assert rg.sha256 in outputs["json"].decode() and b"DX" in outputs["json"]  # technical fields stay
