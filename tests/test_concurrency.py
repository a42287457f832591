"""Concurrent sessions: the app's service layer from many threads, and several app sessions at once.

* ``test_services_from_threads_give_the_serial_results``: 8 threads, each one Streamlit session
  (its own ``st.session_state``), read images through ``bonecls.ui.services`` exactly as the
  Fracture page does (``cam`` then ``predict``, then ``widgets.record_audit``) with mixed CAM methods, on
  ONE shared Predictor. Results must equal a serial run, every model call must happen once per
  distinct key, and the audit log must hold one row per distinct (session, image, model).
* ``test_app_sessions_at_once``: four ``AppTest`` sessions of ``app.py`` run at the same time, one
  per process (see ``_app_session`` for why not threads): three good images and one bad upload from
  tests/bad_inputs.py; each shows its own result (equal to a serial Predictor run) or its ImageError
  sentence, and the shared audit database gets exactly one row per good session.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import threading
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from appdata import build_weights, png_bytes, radiograph_like
from bad_inputs import CASES, data
from factories import PHI_NEEDLES, make_dicom

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
METHODS = ("gradcam", "gradcam++", "eigencam")
N_SESSIONS = 8
N_IMAGES = 4
IMAGES_PER_SESSION = 3
BAD_CASE = "truncated-png"


# --- the service layer from threads ----------------------------------------------------------------


class _PerThreadSessions:
    """Stands in for ``streamlit`` inside bonecls.ui.widgets: one ``session_state`` per thread, as each
    Streamlit session has its own. ``caption`` is only reached when the audit write failed."""

    def __init__(self) -> None:
        self._local = threading.local()

    @property
    def session_state(self) -> dict[str, Any]:
        if not hasattr(self._local, "state"):
            self._local.state = {}
        return self._local.state

    def caption(self, text: str) -> None:
        raise AssertionError(f"the audit log could not be written: {text}")


def _count_calls(monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> Counter[str]:
    """Count calls of ``cls.name`` from any thread (a lock: Counter += is not atomic)."""
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    original = getattr(cls, name)

    def wrapper(self, *args, **kwargs):
        with lock:
            counts[name] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, wrapper)
    return counts


def _plan(session: int) -> list[tuple[int, str]]:
    """(image index, CAM method) in visiting order: 3 images, then the same 3 again with another
    method (a rerun after switching the heat map). Neighbouring sessions share images."""
    first = [((session + k) % N_IMAGES, METHODS[(session + k) % len(METHODS)]) for k in range(3)]
    again = [(i, METHODS[(METHODS.index(m) + 1) % len(METHODS)]) for i, m in first]
    return first + again


def test_services_from_threads_give_the_serial_results(
    tiny_card_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from bonecls.audit import AuditLog
    from bonecls.inference.predictor import Predictor
    from bonecls.ui import services, widgets
    from bonecls.ui.session import ingest_uploads

    db = tmp_path / "audit.sqlite"
    monkeypatch.setenv("BONECLS_AUDIT_DB", str(db))
    monkeypatch.setenv("BONECLS_WARMUP", "0")
    files = [(f"img{i}.png", png_bytes(radiograph_like(256, seed=i))) for i in range(N_IMAGES - 1)]
    files.append(("scan", make_dicom(radiograph_like(200, seed=9), phi=True)))  # DICOM, no extension
    items = ingest_uploads(files)
    assert all(item.ok for item in items), [item.error for item in items]
    rgs = [item.radiograph for item in items]

    # the serial truth, from a Predictor of its own
    reference = Predictor.from_card(tiny_card_dir)
    serial_pred = [reference.predict(rg) for rg in rgs]
    serial_heat = {(i, m): reference.explain(rgs[i], method=m) for i in range(N_IMAGES) for m in METHODS}

    services.clear_caches()
    (entry,) = services.models_for("fracture")
    assert entry.path == tiny_card_dir
    explain_calls = _count_calls(monkeypatch, Predictor, "explain")
    batch_calls = _count_calls(monkeypatch, Predictor, "predict_batch")
    monkeypatch.setattr(widgets, "st", _PerThreadSessions())
    barrier = threading.Barrier(N_SESSIONS)

    def session(s: int) -> list[tuple[int, str, Any, Any, list[Any]]]:
        barrier.wait(timeout=60)
        seen = []
        for i, method in _plan(s):
            heat = services.cam(entry, rgs[i], method)  # the page's order: heat map, then prediction
            pred = services.predict(entry, rgs[i])
            widgets.record_audit(items[i], entry, pred.label, pred.status, pred.suspicion)
            seen.append((i, method, heat, pred))
        visited = sorted({i for i, _ in _plan(s)})  # the worklist on this session's images: cached
        many = services.predict_many(entry, [rgs[i] for i in visited])
        return [(*row, list(zip(visited, many, strict=True))) for row in seen]

    try:
        with caplog.at_level("WARNING", logger="bonecls"), ThreadPoolExecutor(N_SESSIONS) as pool:
            results = list(pool.map(session, range(N_SESSIONS)))  # re-raises a thread's exception
        assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")], caplog.text

        for rows in results:
            for i, method, heat, pred, many in rows:
                want = serial_pred[i]
                assert (pred.label, pred.status) == (want.label, want.status)
                assert pred.probabilities.keys() == want.probabilities.keys()
                for name, p in want.probabilities.items():
                    assert abs(pred.probabilities[name] - p) <= 1e-6, (i, method, name)
                assert abs(pred.suspicion - want.suspicion) <= 1e-6
                exp = serial_heat[(i, method)]
                assert heat.target_class == exp.target_class == want.label
                assert heat.heatmap.shape == rgs[i].pixels.shape
                assert np.array_equal(heat.heatmap, exp.heatmap), (i, method)
                overlay = services.render_overlay(rgs[i].pixels, heat.heatmap, "jet", 0.45)
                assert np.array_equal(overlay, exp.overlay), (i, method)
                for j, got in many:
                    assert got == services.cached_prediction(entry, rgs[j])
                    assert got.label == serial_pred[j].label

        # one model load, one CAM per distinct (image, method), never a separate classifier pass
        pairs = {(i, m) for s in range(N_SESSIONS) for i, m in _plan(s)}
        assert len(pairs) == N_IMAGES * len(METHODS)
        assert services.STATS["load"] == 1
        assert explain_calls["explain"] == len(pairs)
        assert batch_calls["predict_batch"] == 0

        # the audit log: one row per distinct (session, image, model), from 8 threads at once
        per_image = Counter(i for s in range(N_SESSIONS) for i in {i for i, _ in _plan(s)})
        assert sum(per_image.values()) == N_SESSIONS * IMAGES_PER_SESSION
        log = AuditLog(db)
        entries = log.entries()
        assert len(entries) == log.count() == N_SESSIONS * IMAGES_PER_SESSION
        assert Counter(e.image_sha256 for e in entries) == {items[i].sha256: n for i, n in per_image.items()}
        by_sha = {item.sha256: i for i, item in enumerate(items)}
        for e in entries:
            i = by_sha[e.image_sha256]
            ood = items[i].ood is not None and items[i].ood.is_ood
            want = serial_pred[i]
            assert (e.model_id, e.model_sha256, e.task) == (entry.id, entry.sha256, "fracture")
            assert e.label == want.label
            assert e.status == ("out_of_distribution" if ood else want.status)
            assert abs(e.suspicion - want.suspicion) <= 2e-6  # stored rounded to 6 decimals
    finally:
        services.clear_caches()


# --- several app sessions at once -----------------------------------------------------------------


def _page_text(at: Any) -> str:
    out: list[str] = []

    def walk(node: Any) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            out.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return "\n".join(out)


def _app_session(name: str, upload: tuple[str, bytes], env: dict[str, str], barrier: Any, out: Any) -> None:
    """One AppTest session in its own process: Home, upload, then the Fracture page.

    Processes, not threads: AppTest is not thread-safe. Every ``AppTest.run`` sets the process-global
    ``Runtime._instance`` to its own mock and back to None when it finishes (a concurrent run then
    loses its runtime mid-script), resets ``PagesManager.uses_pages_directory``, and patches
    ``streamlit.config.get_option`` with unittest.mock (overlapping patches restore in the wrong
    order and leave a stale mock behind). Sharing one process's model caches between sessions is
    covered by the services test above and by bench/soak.py against a real server.
    """
    result: dict[str, Any] = {"name": name}
    try:
        os.environ.update(env)
        import torch

        torch.set_num_threads(1)
        from streamlit.testing.v1 import AppTest

        at = AppTest.from_file(APP, default_timeout=150)
        at.run()
        assert not at.exception, at.exception
        barrier.wait(timeout=150)  # the uploads and the reading pages run at the same time
        at.file_uploader[0].set_value([(upload[0], upload[1], "application/octet-stream")])
        at.run()
        result["home_exception"] = [str(e.value) for e in at.exception]
        result["home_text"] = _page_text(at)
        at.switch_page("pages/fracture.py").run()
        result["exception"] = [str(e.value) for e in at.exception]
        result["titles"] = [t.value for t in at.title]
        result["errors"] = [e.value for e in at.error]
        result["markdown"] = "\n".join(m.value for m in at.markdown)
        result["captions"] = [c.value for c in at.caption]
        result["charts"] = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
        result["text"] = _page_text(at)
    except BaseException:
        result["crash"] = traceback.format_exc()
    out.put(result)


@pytest.fixture(scope="module")
def app_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_weights(tmp_path_factory.mktemp("concurrency-weights") / "weights")


def test_app_sessions_at_once(app_weights: Path, tmp_path: Path) -> None:
    from bonecls.audit import AuditLog
    from bonecls.errors import ImageError
    from bonecls.imaging import load_radiograph
    from bonecls.inference.predictor import Predictor

    (case,) = [c for c in CASES if c.name == BAD_CASE]
    assert case.outcome[0] == "error"
    uploads = {
        "png-a": ("a.png", png_bytes(radiograph_like(256, seed=11))),
        "png-b": ("b.png", png_bytes(radiograph_like(320, seed=12))),
        "dicom": ("IM000013", make_dicom(radiograph_like(256, seed=13), phi=True)),
        "bad": (f"{BAD_CASE}.png", data(BAD_CASE)),
    }
    with pytest.raises(ImageError) as err:
        load_radiograph(uploads["bad"][1])
    bad_sentence = str(err.value)
    assert case.outcome[1] in bad_sentence
    reference = Predictor.from_card(app_weights / "fracture")
    serial = {k: reference.predict(load_radiograph(v[1])) for k, v in uploads.items() if k != "bad"}
    assert len({round(p.suspicion, 6) for p in serial.values()}) == len(serial)  # results tell apart

    db = tmp_path / "audit.sqlite"
    env = {
        "BONECLS_WEIGHTS": str(app_weights),
        "BONECLS_AUDIT_DB": str(db),
        "BONECLS_WARMUP": "0",
        "OMP_NUM_THREADS": "1",
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
    }
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(uploads))
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_app_session, args=(name, upload, env, barrier, out), daemon=True)
        for name, upload in uploads.items()
    ]
    for p in procs:
        p.start()
    results: dict[str, dict[str, Any]] = {}
    try:
        for _ in procs:
            r = out.get(timeout=240)
            results[r["name"]] = r
    except queue.Empty:
        pytest.fail(f"app sessions did not finish; got {sorted(results)}")
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    crashes = {k: r["crash"] for k, r in results.items() if "crash" in r}
    assert not crashes, "\n".join(crashes.values())
    assert [p.exitcode for p in procs] == [0] * len(procs)

    for name, r in results.items():
        assert not r["home_exception"] and not r["exception"], (name, r["exception"])
        assert r["titles"] == ["Fracture (binary)"], name
        for text in (r["home_text"], r["text"]):
            assert "Traceback" not in text and "error id" not in text, name
            assert not [n for n in PHI_NEEDLES if n in text], name
        if name == "bad":
            assert r["errors"] == [bad_sentence]
            assert "Images in this session (0 readable, 1 unreadable)" in r["home_text"]
            assert not r["charts"] and "Suspicion" not in r["markdown"]
            continue
        assert r["errors"] == [], (name, r["errors"])
        want = serial[name]
        bars = [c for c in r["charts"] if c["data"][0].get("type") == "bar"]
        assert len(bars) == 1, name
        assert bars[0]["data"][0]["y"] == [c.replace("_", " ") for c in want.probabilities]
        for got, p in zip(bars[0]["data"][0]["x"], want.probabilities.values(), strict=True):
            assert abs(got - p) <= 1e-6, (name, got, p)
        assert f"Suspicion **{want.suspicion:.0%}**" in r["markdown"], name
        label = want.label.replace("_", " ")
        assert f"Most likely class: **{label}** ({want.probabilities[want.label]:.0%})" in r["markdown"]
        viewer = [c for c in r["charts"] if any(t.get("type") == "image" for t in c["data"])]
        assert len(viewer) == 1 and len([t for t in viewer[0]["data"] if t["type"] == "image"]) == 2
        assert any(c.startswith("Answered in") for c in r["captions"]), name

    # the shared audit database, written by four processes at once: one row per good session
    entries = AuditLog(db).entries()
    good = {k: load_radiograph(v[1]).sha256 for k, v in uploads.items() if k != "bad"}
    assert sorted(e.image_sha256 for e in entries) == sorted(good.values())
    for name, sha in good.items():
        (row,) = [e for e in entries if e.image_sha256 == sha]
        assert (row.model_id, row.task, row.label) == ("fracture", "fracture", serial[name].label)
        assert row.model_sha256 == reference.card.sha256
