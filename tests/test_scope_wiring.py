"""The scope gate wired into every output (issue 21): predictors, ONNX Runtime, detector, CLI.

Real films (tests/scope_corpus.py: RG1 adult chest PA, RG3 lower leg AP, a cat's thorax; each as
DICOM, header-less PNG and square crop) go through the shipped models the way a user reaches them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scope_corpus import FORMS, centre_crop, png_bytes, real_film_paths, three_forms

from bonecls.cli import main
from bonecls.inference import load_classifier
from bonecls.inference.predictor import Predictor
from bonecls.inference.scoping import NOT_FITTED
from bonecls.weights import weights_root

CLASSIFIERS = ("fracture", "threeclass", "pneumonia-cls")
REFUSED_FILMS = ("RG3 lower leg AP", "cat thorax")


@pytest.fixture(scope="module")
def film_paths() -> dict[str, Path]:
    paths = real_film_paths()
    if len(paths) < 3:
        pytest.skip("pydicom-data / deid-data are not installed (requirements-dev.txt)")
    return paths


@pytest.fixture(scope="module")
def films(film_paths) -> dict[str, dict]:
    return {name: three_forms(path) for name, path in film_paths.items()}


@pytest.fixture
def shipped(monkeypatch) -> Path:
    monkeypatch.delenv("BONECLS_WEIGHTS", raising=False)
    return weights_root()


def _film_files(film_paths: dict[str, Path], folder: Path) -> dict[tuple[str, str], Path]:
    """Each real film as a DICOM file, a header-less PNG and a square-crop PNG on disk."""
    out = {}
    for name, path in film_paths.items():
        pixels8 = three_forms(path)["dicom"].to_uint8()
        stem = name.split()[0].lower() + "_" + name.split()[1].lower()
        out[(name, "dicom")] = path
        (folder / f"{stem}.png").write_bytes(png_bytes(pixels8))
        (folder / f"{stem}_crop.png").write_bytes(png_bytes(centre_crop(pixels8)))
        out[(name, "png")] = folder / f"{stem}.png"
        out[(name, "crop")] = folder / f"{stem}_crop.png"
    return out


@pytest.mark.parametrize("model_id", (*CLASSIFIERS, "pneumonia-det"))
def test_cli_json_refuses_leg_and_cat_and_never_calls_the_chest_fractured(
    model_id: str, film_paths, shipped: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    files = _film_files(film_paths, tmp_path)
    order = list(files)
    assert main(["predict", *map(str, files.values()), "--model", str(shipped / model_id), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == len(order)
    for (film, form), record in zip(order, records, strict=True):
        assert isinstance(record["in_scope"], bool) and "scope_reasons" in record, record
        if film in REFUSED_FILMS:
            assert record["in_scope"] is False and record["status"] == "out of scope", (film, form)
            assert record["scope_reasons"] and all(isinstance(r, str) and r for r in record["scope_reasons"])
            assert record.get("label") is None and record.get("boxes", []) == []
        if record["in_scope"]:
            assert record["status"] != "out of scope" and not record.get("raw_output_unreliable")
        assert not (record.get("label") == "fractured" and record["status"] == "positive"), (film, form)


def test_cli_no_scope_gives_raw_answers_labelled_research(
    film_paths, shipped: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cat = film_paths["cat thorax"]
    assert main(["predict", str(cat), "--model", str(shipped / "fracture"), "--json", "--no-scope"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["scope"] == "not checked (research)" and "in_scope" not in record
    assert record["label"] in ("fractured", "not fractured") and record["probabilities"]
    assert main(["predict", str(cat), "--model", str(shipped / "fracture")]) == 0
    assert "OUT OF SCOPE, no result." in capsys.readouterr().out


@pytest.mark.parametrize("model_id", CLASSIFIERS)
def test_onnx_runtime_and_pytorch_give_the_same_verdicts(model_id: str, films, shipped: Path) -> None:
    torch_engine = load_classifier(shipped / model_id, engine="pytorch")
    onnx_engine = load_classifier(shipped / model_id, engine="onnx", native=torch_engine)
    images = [films[name][form] for name in films for form in FORMS]
    for a, b in zip(torch_engine.predict_batch(images), onnx_engine.predict_batch(images), strict=True):
        assert a.in_scope == b.in_scope and a.status == b.status and a.scope_reasons == b.scope_reasons
        if a.scope_score is not None:
            assert b.scope_score == pytest.approx(a.scope_score, rel=1e-3)


def test_header_refusal_runs_no_model_and_explain_uses_its_own_pass(films, shipped: Path) -> None:
    predictor = Predictor.from_card(shipped / "fracture")

    def no_model_run(batch):
        raise AssertionError("the model ran for an image the header already refused")

    leg = films["RG3 lower leg AP"]["dicom"]
    original = predictor.logits_and_features
    predictor.logits_and_features = no_model_run  # type: ignore[method-assign]
    refused = predictor.predict(leg)
    predictor.logits_and_features = original  # type: ignore[method-assign]
    assert not refused.in_scope and refused.status == "out of scope" and not refused.model_was_run
    assert any("EXTREMITY" in r for r in refused.scope_reasons) and refused.scope_score is None
    explanation = predictor.explain(leg)
    assert not explanation.prediction.in_scope and not explanation.heatmap.any()

    cat = films["cat thorax"]["png"]
    predicted = predictor.predict(cat)
    for method in ("gradcam", "scorecam"):  # Score-CAM's masked passes must not replace the features
        explained = predictor.explain(cat, method=method).prediction
        assert explained.in_scope is predicted.in_scope is False
        assert explained.scope_score == pytest.approx(predicted.scope_score, rel=1e-4)
        assert explained.label == predicted.label and explained.model_was_run


def test_no_scope_switch_and_unfitted_card_are_never_silently_in_scope(
    films, shipped: Path, tiny_card_dir: Path
) -> None:
    research = load_classifier(shipped / "fracture", engine="pytorch", scope=False)
    raw = research.predict(films["cat thorax"]["png"])
    assert raw.scope_checked is False and raw.in_scope and raw.status != "out of scope"
    assert not raw.scope_reasons
    unfitted = load_classifier(tiny_card_dir, engine="pytorch")  # a card with no learned scope
    answer = unfitted.predict(films["RG1 adult chest PA"]["png"])
    assert answer.scope_reasons == (NOT_FITTED,) and answer.scope_score is None
    leg = unfitted.predict(films["RG3 lower leg AP"]["dicom"])
    assert not leg.in_scope and leg.status == "out of scope"


def test_detector_gate_hooks_the_running_model(films, shipped: Path) -> None:
    from bonecls.detection.detector import Detector
    from bonecls.detection.scope_features import detector_features

    detector = Detector.from_card(shipped / "pneumonia-det")
    gate = detector.scope_gate
    assert gate is not None
    for film in REFUSED_FILMS:
        for form in FORMS:
            scoped = detector.detect_scoped(films[film][form], conf=0.05)
            assert not scoped.in_scope and scoped.boxes == [], (film, form)
    cat = films["cat thorax"]["crop"]
    scoped = detector.detect_scoped(cat, conf=0.05)
    reference = gate.stats.score(detector_features(detector, [cat]))[0]
    assert scoped.verdict.score == pytest.approx(float(reference), rel=1e-3)
    raw = Detector.from_card(shipped / "pneumonia-det", scope=False).detect_scoped(cat, conf=0.05)
    assert raw.verdict is None and raw.in_scope
    assert len(raw.boxes) == len(scoped.raw_boxes)
    assert np.isfinite(reference)


def test_report_and_audit_record_the_refusal_without_a_result(films, shipped: Path, tmp_path: Path) -> None:
    import sqlite3

    from bonecls.audit import AuditLog
    from bonecls.report import _result_lines, build_report, to_json

    predictor = Predictor.from_card(shipped / "fracture")
    cat = films["cat thorax"]["dicom"]
    refused = predictor.predict(cat)
    data = build_report(cat, card=predictor.card, prediction=refused, cam_method="gradcam", boxes=[])
    report = json.loads(to_json(data))
    assert report["prediction"]["in_scope"] is False and report["prediction"]["status"] == "out of scope"
    assert "label" not in report["prediction"] and "probabilities" not in report["prediction"]
    assert (
        report["prediction"]["scope_reasons"] == list(refused.scope_reasons) and report["explanation"] is None
    )
    assert _result_lines(data)[0] == "Outside what this model was trained on: no result."
    assert _result_lines(data)[-1].startswith("No result is not a negative reading")  # never "nothing found"

    db = tmp_path / "audit.sqlite"  # a log written before the scope gate: the new columns are added
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE predictions (id INTEGER PRIMARY KEY AUTOINCREMENT, time_utc TEXT NOT NULL, "
            "image_sha256 TEXT NOT NULL, model_id TEXT NOT NULL, model_sha256 TEXT NOT NULL, "
            "task TEXT NOT NULL, label TEXT NOT NULL, status TEXT NOT NULL, suspicion REAL)"
        )
    log = AuditLog(db)
    leg = predictor.predict(films["RG3 lower leg AP"]["dicom"])
    for prediction in (refused, leg):
        log.record(
            image_sha256="a" * 64,
            model_id="fracture",
            model_sha256=predictor.card.sha256,
            task="fracture",
            label="none",
            status="out_of_scope",
            suspicion=None,
            in_scope=prediction.in_scope,
            scope_reasons=prediction.scope_reasons,
        )
    newest, oldest = log.entries()
    assert oldest.in_scope is False and oldest.scope_reasons == "learned-distance"
    assert newest.scope_reasons == "header-body-part,heuristic"
    assert "Outside" not in log.export_csv()  # codes, never the sentences


def test_header_rules_read_text_attributes_only() -> None:
    """A bare pixel array has a ``view`` method, not a ViewPosition: no header, nothing refused by one."""
    from bonecls.scope.declared import DECLARED_SCOPES, header_reasons

    assert header_reasons(DECLARED_SCOPES["fracture"], np.zeros((300, 300), np.float32)) == ()
