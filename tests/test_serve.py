"""``python -m bonecls.serve``: the real Streamlit server, with the models loading before any session."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest
import streamlit_server
from appdata import build_weights

from bonecls import serve


def test_launcher_loads_every_model_before_the_first_session(tmp_path: Path) -> None:
    weights = build_weights(tmp_path / "weights")
    log_path = tmp_path / "server.log"
    env = {"BONECLS_WEIGHTS": str(weights), "BONECLS_AUDIT_DB": str(tmp_path / "audit.sqlite")}
    proc, url = streamlit_server.start(log_path, env, launcher=True)
    try:
        streamlit_server.wait_healthy(proc, url, log_path, timeout=90)
        deadline = time.monotonic() + 120
        while "warm-up done" not in log_path.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.5)
        log = log_path.read_text()
        assert "warm-up done" in log, log[-3000:]  # no browser and no AppTest has connected
        for model in ("fracture", "threeclass", "pneumonia-cls"):
            assert f"loaded classifier {model} in" in log
        assert "Traceback" not in log
        with urllib.request.urlopen(url, timeout=10) as resp:  # Streamlit serves the app's page
            assert resp.status == 200 and b"<html" in resp.read().lower()
    finally:
        streamlit_server.stop(proc)


def test_launcher_without_the_app_says_where_to_run_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(serve, "__file__", str(tmp_path / "site-packages" / "bonecls" / "serve.py"))
    assert serve.main(["--server.port", "1"]) == 2
    assert "app.py was not found" in capsys.readouterr().err
