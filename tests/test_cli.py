"""The `bonecls` console script: one line per file, bad files reported in place, exit code says it all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bad_inputs import CASES, data
from factories import PHI_NEEDLES, make_dicom, make_png, pattern

from bonecls.cli import main


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_models_lists_the_installed_card(tiny_card_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "fracture-tiny" in out and "simple_cnn" in out


def test_predict_prints_one_json_object_per_file(
    tiny_card_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "a.png").write_bytes(make_png(pattern(64, 64, bits=16)))
    (tmp_path / "b").write_bytes(
        make_dicom(pattern(48, 40, bits=12), bits_stored=12)
    )  # a DICOM without an extension
    files = [str(tmp_path / "a.png"), str(tmp_path / "b")]
    assert main(["predict", *files, "--model", "fracture-tiny", "--json"]) == 0
    rows = _json_lines(capsys.readouterr().out)
    assert [Path(r["file"]).name for r in rows] == ["a.png", "b"]
    for row in rows:  # thumbnails (64 and 48 px): the scope gate refuses them, no result
        assert row["in_scope"] is False and row["status"] == "out of scope" and row["label"] is None
        assert any("pixels" in r for r in row["scope_reasons"]) and "probabilities" not in row
    assert main(["predict", *files, "--model", "fracture-tiny", "--json", "--no-scope"]) == 0
    for row in _json_lines(capsys.readouterr().out):  # the raw research answer
        assert row["scope"] == "not checked (research)"
        assert set(row["probabilities"]) == {"not fractured", "fractured"}
        assert abs(sum(row["probabilities"].values()) - 1.0) < 1e-3
        assert row["status"] in {"positive", "uncertain", "negative"}


def test_bad_file_is_reported_and_the_rest_go_on(
    tiny_card_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    good = tmp_path / "good.png"
    good.write_bytes(make_png(pattern(32, 32)))
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"%PDF-1.4 this is a report, not an image")
    code = main(["predict", str(bad), str(good), str(tmp_path / "missing.png"), "--model", "fracture-tiny"])
    out = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("  warning:")]
    assert code == 1
    assert out[0].startswith(f"{bad}: ERROR ") and out[0].endswith(".")
    assert out[1].startswith(f"{good}: ") and "ERROR" not in out[1]
    assert "missing.png: ERROR" in out[2]


def test_whole_bad_input_corpus_through_the_cli(
    tiny_card_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Every corpus case gives, through the CLI, the same outcome as through load_radiograph."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i, case in enumerate(CASES):
        (folder / f"{i:03d}.dcm").write_bytes(data(case.name))
    code = main(["predict", str(folder), "--model", "fracture-tiny", "--json"])
    rows = {Path(r["file"]).name: r for r in _json_lines(capsys.readouterr().out)}
    assert len(rows) == len(CASES)
    for i, case in enumerate(CASES):
        row = rows[f"{i:03d}.dcm"]
        kind, expected = case.outcome
        if kind == "error":
            assert expected in row.get("error", ""), (case.name, row)
        else:
            assert "error" not in row, case.name
            assert row["status"] in {"positive", "uncertain", "negative", "out of scope"}, case.name
            assert row["in_scope"] is (row["status"] != "out of scope"), case.name
    assert code == 1  # the corpus holds errors, so the run reports failure


def test_cam_overlays_written(tiny_card_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "x.png").write_bytes(make_png(pattern(64, 80)))
    cams = tmp_path / "cams"
    args = ["predict", str(tmp_path / "x.png"), "--model", "fracture-tiny", "--cam", str(cams)]
    assert main(args) == 0
    assert not cams.exists() or not list(cams.glob("*.png"))  # a 64-px thumbnail: out of scope, no heat map
    assert main([*args, "--no-scope"]) == 0
    written = list(cams.glob("*.png"))
    assert len(written) == 1
    from PIL import Image

    assert Image.open(written[0]).size == (80, 64)  # the overlay keeps the original geometry


def test_unknown_model_is_a_usage_error(isolated_weights: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["predict", "x.png", "--model", "no-such-model"]) == 2
    assert "no-such-model" in capsys.readouterr().err


def test_console_script_keeps_phi_out_of_its_output(tiny_card_dir: Path, tmp_path: Path) -> None:
    """The installed entry point, as a user runs it, never prints DICOM patient fields."""
    path = tmp_path / "patient.dcm"
    path.write_bytes(make_dicom(pattern(64, 64, bits=12), bits_stored=12, phi=True))
    env_root = tiny_card_dir.parent
    proc = subprocess.run(
        [sys.executable, "-m", "bonecls.cli", "predict", str(path), "--model", "fracture-tiny", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "BONECLS_WEIGHTS": str(env_root)},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for needle in PHI_NEEDLES:
        assert needle not in proc.stdout and needle not in proc.stderr
