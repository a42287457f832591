"""The app refuses to answer outside a model's scope (issue 21), through streamlit's AppTest.

Real films (tests/scope_corpus.py) are uploaded through the real uploader onto the shipped models:
the page must show the out-of-scope panel and no label, probability bars, status or heat map; the
worklist groups them apart, unranked; the audit log records the refusal as codes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from appdata import app_environment
from scope_corpus import real_film_paths
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
PANEL = "Outside what this model was trained on"
STATUS_WORDS = ("positive", "doubt — review", "negative")


@pytest.fixture(scope="module")
def films() -> dict[str, Path]:
    paths = real_film_paths()
    if len(paths) < 3:
        pytest.skip("pydicom-data / deid-data are not installed (requirements-dev.txt)")
    return paths


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The shipped weights (with their fitted scopes) and a fresh audit DB."""
    with app_environment(ROOT / "weights", tmp_path / "audit.sqlite", monkeypatch) as audit_db:
        yield audit_db


def _app_with(files: list[Path]) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.file_uploader[0].set_value([(p.name, p.read_bytes(), "application/octet-stream") for p in files])
    at.run()
    assert not at.exception, at.exception
    return at


def _goto(at: AppTest, page: str) -> AppTest:
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def test_cat_on_the_fracture_page_gets_the_panel_and_no_result(env: Path, films) -> None:
    at = _goto(_app_with([films["cat thorax"]]), "pages/fracture.py")
    errors = " ".join(e.value for e in at.error)
    assert PANEL in errors and "No result." in errors and "does not resemble" in errors
    assert "No result is not a negative reading" in errors and "Read this image without the aid." in errors
    headings = " ".join(m.value for m in at.markdown).lower()
    assert not any(f"### {w}" in headings for w in STATUS_WORDS)  # no status chip
    assert "Suspicion" not in headings and "Most likely class" not in headings  # no label
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert not any(t.get("type") == "bar" for s in specs for t in s["data"])  # no probability bars
    assert not any(len([t for t in s["data"] if t.get("type") == "image"]) > 1 for s in specs)  # no overlay
    assert not [t for t in at.toggle if t.label == "Show heat map"]
    assert any("unreliable" in e.label for e in at.expander)
    rows = env_rows(env)
    assert rows and rows[-1]["status"] == "out_of_scope" and rows[-1]["in_scope"] == 0
    assert "learned-distance" in rows[-1]["scope_reasons"] and rows[-1]["label"] == "none"


def test_leg_dicom_refused_on_the_pneumonia_page_by_its_header(env: Path, films) -> None:
    at = _goto(_app_with([films["RG3 lower leg AP"]]), "pages/pneumonia.py")
    errors = " ".join(e.value for e in at.error)
    assert PANEL in errors and "EXTREMITY" in errors
    assert not [t for t in at.toggle if t.label == "Show heat map"]


def test_worklist_puts_refused_films_apart_and_models_page_shows_the_scope(env: Path, films) -> None:
    at = _goto(_app_with([films["cat thorax"], films["RG3 lower leg AP"]]), "pages/worklist.py")
    assert not at.exception
    markdown = " ".join(m.value for m in at.markdown)
    assert "out of the model's scope — not ranked (their scores mean nothing)** (2)" in markdown
    assert "To read — ranked by suspicion" not in markdown  # neither film is ranked among readable ones
    assert any(c.value.startswith("No result is not a negative reading") for c in at.caption)
    at = _goto(at, "pages/models.py")
    markdown = " ".join(m.value for m in at.markdown)
    assert "Reads (declared scope)" in markdown and "Scope gate" in markdown
    assert "**Held-out rendering variants**" in markdown  # the evidence behind each limitations sentence
    held = [d.value for d in at.dataframe if "gate answers" in d.value.columns]
    assert held and all(set(t["set"]) >= {"other CT: lung1", "pooled"} for t in held)


def env_rows(audit_db: Path) -> list[dict]:
    from bonecls.audit import AuditLog

    return [
        {**e.__dict__, "in_scope": None if e.in_scope is None else int(e.in_scope)}
        for e in reversed(AuditLog(audit_db).entries())
    ]
