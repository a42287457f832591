"""The fracture box detector on the Fracture and Severity pages (issue 22 item 4), through AppTest.

Weights: the tiny classifiers of tests/appdata.py and a random YOLOv8n whose card task is
``fracture-det`` (classes fracture / comminuted, cuts: doubt from 0.10, definite from 0.25). Its boxes
are faked at ``Detector.detect`` (random weights find nothing), so the assertions are on what the page
does with boxes: the two tiers, the slider, the study sentence, the exports, the audit, the refusal.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from appdata import (
    app_environment,
    build_detector,
    build_weights,
    fake_detections,
    png_bytes,
    radiograph_like,
)
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
NO_DETECTOR = "No fracture detector is installed; no boxes are drawn."
PANEL = "Outside what this model was trained on"
STATUS_WORDS = ("positive", "doubt — review", "negative")


@pytest.fixture(scope="module")
def weights_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"with": classifiers + a fracture-det detector, "without": the same classifiers only}."""
    base = tmp_path_factory.mktemp("fracture-det-weights")
    with_det = build_weights(base / "with")
    build_detector(
        with_det / "fracture-det",
        model_id="fracture-det",
        task="fracture-det",
        class_names=("fracture", "comminuted"),
    )
    without = base / "without"
    shutil.copytree(with_det, without, ignore=shutil.ignore_patterns("fracture-det"))
    return {"with": with_det, "without": without}


@pytest.fixture
def env(weights_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    with app_environment(weights_dirs["with"], tmp_path / "audit.sqlite", monkeypatch) as audit_db:
        yield audit_db


@pytest.fixture
def fake_boxes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Three boxes from every detector call: a definite fracture (0.91), a definite comminuted (0.55)
    and a fracture in doubt (0.15); returns the call counter."""
    return fake_detections(monkeypatch, ("fracture", "comminuted", "fracture"))


def _open(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.file_uploader[0].set_value(
        [("wrist.png", png_bytes(radiograph_like(256)), "application/octet-stream")]
    )
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def _viewer(at: AppTest) -> dict:
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    viewers = [s for s in specs if any(t.get("type") == "image" for t in s["data"])]
    assert len(viewers) == 1
    return viewers[0]


def _panels(spec: dict) -> int:
    return len([t for t in spec["data"] if t["type"] == "image"])


def _markdown(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def _sha(at: AppTest) -> str:
    from bonecls.ui.session import STORE_KEY

    return next(iter(at.session_state[STORE_KEY])).sha256[:12]


def _audit(audit_db: Path, model_id: str) -> list:
    from bonecls.audit import AuditLog

    return [e for e in AuditLog(audit_db).entries() if e.model_id == model_id]


def test_fracture_page_draws_the_detectors_boxes_beside_the_heat_map(
    env: Path, fake_boxes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    import bonecls.ui.result as result

    exported: list[dict] = []
    original = result.report_buttons
    monkeypatch.setattr(result, "report_buttons", lambda *a, **kw: (exported.append(kw), original(*a, **kw)))
    at = _open("pages/fracture.py")
    assert "**3 fracture boxes** at confidence ≥ 0.10 (2 definite, 1 doubt)" in _markdown(at)
    assert any("Dashed box: doubt" in c.value for c in at.caption)
    assert not any(NO_DETECTOR in c.value for c in at.caption)
    assert any(w in _markdown(at) for w in STATUS_WORDS)  # the classifier's result is still there
    study = next(i.value for i in at.info if "Study:" in i.value)
    assert "Classifier" in study and "box" in study and "no detector" not in study
    at.toggle(key=f"fracture_heat_{_sha(at)}").set_value(True).run()  # heat map on, whatever the status
    spec = _viewer(at)
    assert _panels(spec) == 2  # radiograph | heat overlay, the boxes on both
    assert sorted(s["line"]["dash"] for s in spec["layout"]["shapes"]) == sorted(
        ["dash", "solid", "solid"] * 2
    )
    texts = [a["text"] for a in spec["layout"]["annotations"]]
    assert any("fracture 0.91" in t for t in texts) and any("comminuted 0.55" in t for t in texts)
    assert any("fracture 0.15 (doubt)" in t for t in texts)
    last = exported[-1]  # the PNG/PDF/JSON exports get the boxes and the two cuts that drew them
    assert len(last["boxes"]) == 3 and last["box_cuts"] == (0.1, 0.25) and last["box_threshold"] == 0.1
    at.slider(key="fracture_conf").set_value(0.6).run()
    assert "**1 fracture box** at confidence ≥ 0.60" in _markdown(at)
    assert len(_viewer(at)["layout"]["shapes"]) == 2  # one box, on both panels
    assert len(exported[-1]["boxes"]) == 1
    assert fake_boxes[0] == 1  # the slider filters the cached boxes
    rows = _audit(env, "fracture-det")
    assert len(rows) == 1 and rows[0].status == "detected" and rows[0].label == "fracture"
    assert math.isclose(rows[0].suspicion, 0.91, abs_tol=1e-6)


def test_severity_page_shows_the_same_detector(env: Path, fake_boxes: list[int]) -> None:
    at = _open("pages/threeclass.py")
    assert "**3 fracture boxes** at confidence ≥ 0.10 (2 definite, 1 doubt)" in _markdown(at)
    assert at.slider(key="threeclass_conf").value == 0.1
    spec = _viewer(at)
    assert len(spec["layout"]["shapes"]) == 3 * _panels(spec)


def test_the_detectors_scope_refusal_is_honoured(env: Path, fake_boxes: list[int], monkeypatch) -> None:
    from bonecls.detection import detector as detector_module
    from bonecls.detection.boxes import DetBox
    from bonecls.scope.gate import ScopeVerdict

    reason = "This film is not a bone the fracture detector was trained on."

    def refuse(card, image, detect):
        verdict = ScopeVerdict(False, 3.2, 1.0, (reason,))
        return detector_module.ScopedBoxes([], verdict, [DetBox(1, 1, 9, 9, 0.8, "fracture")])

    monkeypatch.setattr(detector_module, "detect_unfitted", refuse)
    at = _open("pages/fracture.py")
    errors = " ".join(e.value for e in at.error)
    assert PANEL in errors and reason in errors and "No result." in errors
    assert "fracture box" not in _markdown(at)
    assert not any("Study:" in i.value for i in at.info)  # no study sentence from a refused image
    assert not [t for t in at.toggle if t.label == "Show heat map"]
    spec = _viewer(at)
    assert _panels(spec) == 1 and not spec["layout"].get("shapes")  # the radiograph, no boxes
    assert any(w in _markdown(at) for w in STATUS_WORDS)  # the classifier's own answer stays
    rows = _audit(env, "fracture-det")
    assert len(rows) == 1 and rows[0].status == "out_of_scope" and rows[0].label == "none"


@pytest.mark.parametrize("page", ["pages/fracture.py", "pages/threeclass.py"])
def test_without_a_fracture_detector_the_page_says_so(
    weights_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page: str
) -> None:
    with app_environment(weights_dirs["without"], tmp_path / "audit.sqlite", monkeypatch):
        at = _open(page)
        assert [c.value for c in at.caption].count(NO_DETECTOR) == 1
        assert "box" not in _markdown(at)
        assert not [s for s in at.slider if s.label == "Show boxes from confidence"]
        assert not _viewer(at)["layout"].get("shapes")
        assert any("Study:" in i.value for i in at.info)
