"""ONNX Runtime (bonecls.inference.onnx): same predictions as PyTorch, verified cache, clean fallback.

Tiny seeded models (conftest's ``build_tiny_card``: simple_cnn, 64 px; and a ResNet-18 at 64 px for a
real backbone) keep every export well under a second. Phantom images are rendered once per module,
before ``isolated_cache`` points ``$BONECLS_CACHE`` at an empty folder (the phantom volume cache
lives there too).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import make_png

from bonecls.inference import load_classifier
from bonecls.inference import onnx as fastpath
from bonecls.inference.onnx import FastPathError, OnnxPredictor, fast_predictor, onnxruntime_available
from bonecls.inference.predictor import Predictor
from bonecls.weights import sha256_file

TOL = 1e-4
needs_ort = pytest.mark.skipif(not onnxruntime_available(), reason="onnxruntime is not installed")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def phantoms() -> list:
    """Eight decoded phantom radiographs (16-bit PNG -> Radiograph), both classes, 96 px."""
    from bonecls.imaging import load_radiograph
    from bonecls.phantom import generate

    return [load_radiograph(make_png(s.image, bits=16)) for s in generate("fracture", 8, 96, seed=3)]


@pytest.fixture
def make_predictor(tiny_card_factory, tmp_path: Path):
    """``make_predictor(arch="simple_cnn", seed=0)``: a saved seeded tiny model, ``batch_size`` 3."""
    from bonecls.weights import load_pytorch

    def make(arch: str = "simple_cnn", seed: int = 0) -> Predictor:
        out = tmp_path / f"{arch}-{seed}"
        tiny_card_factory(out, card_id=f"tiny-{arch}-{seed}", seed=seed, architecture=arch)
        model, card = load_pytorch(out)
        return Predictor(model, card, batch_size=3)

    return make


def _assert_same(ref: list, got: list) -> None:
    assert len(ref) == len(got)
    for a, b in zip(ref, got, strict=True):
        assert a.label == b.label and a.status == b.status
        assert a.model_id == b.model_id and a.model_sha256 == b.model_sha256
        assert a.probabilities.keys() == b.probabilities.keys()
        for k in a.probabilities:
            assert abs(a.probabilities[k] - b.probabilities[k]) <= TOL
        assert abs(a.suspicion - b.suspicion) <= TOL


@needs_ort
@pytest.mark.parametrize("arch", ["simple_cnn", "resnet18", "custom_v2_lse_lcn"])
def test_fast_path_matches_pytorch_on_phantoms(arch, phantoms, make_predictor, isolated_cache) -> None:
    ref = make_predictor(arch)
    fast = OnnxPredictor.from_predictor(ref)
    # batch of 8 with batch_size 3: chunks of 3, 3, 2 through the dynamic batch axis
    _assert_same(ref.predict_batch(phantoms), fast.predict_batch(phantoms))
    _assert_same([ref.predict(phantoms[0])], [fast.predict(phantoms[0])])
    assert fast.check_parity() <= TOL


@needs_ort
def test_cache_is_keyed_by_weights_sha_outside_the_repo(
    phantoms, make_predictor, isolated_cache, monkeypatch
) -> None:
    ref = make_predictor()
    fast = OnnxPredictor.from_predictor(ref)
    path = fast.onnx_path
    assert path.is_file() and path.parent == isolated_cache / fastpath.CACHE_DIRNAME / ref.card.sha256
    assert REPO not in path.resolve().parents
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["onnx_sha256"] == sha256_file(path) and meta["weights_sha256"] == ref.card.sha256

    def no_export(_predictor):
        raise AssertionError("a verified cached export must be reused, not exported again")

    monkeypatch.setattr(fastpath, "_export_bytes", no_export)
    again = OnnxPredictor.from_predictor(ref)
    _assert_same(ref.predict_batch(phantoms[:2]), again.predict_batch(phantoms[:2]))


@needs_ort
def test_tampered_cached_onnx_is_refused_and_exported_again(
    phantoms, make_predictor, isolated_cache, monkeypatch
):
    ref = make_predictor()
    path = OnnxPredictor.from_predictor(ref).onnx_path
    tampered = bytearray(path.read_bytes())
    tampered[len(tampered) // 2] ^= 0xFF
    path.write_bytes(bytes(tampered))

    loaded: list[bytes] = []
    real_session = fastpath._session
    monkeypatch.setattr(
        fastpath, "_session", lambda data, threads: loaded.append(data) or real_session(data, threads)
    )
    fast = OnnxPredictor.from_predictor(ref)
    assert loaded and all(data != bytes(tampered) for data in loaded)  # never handed to ONNX Runtime
    meta = json.loads(path.with_suffix(".json").read_text())
    assert path.read_bytes() != bytes(tampered) and meta["onnx_sha256"] == sha256_file(path)
    _assert_same(ref.predict_batch(phantoms), fast.predict_batch(phantoms))


@needs_ort
def test_consistent_rewrite_of_graph_and_sidecar_fails_the_parity_probe(
    phantoms, make_predictor, isolated_cache
):
    """Both files replaced by another model's export (hashes consistent): the probe catches it."""
    ref, other = make_predictor(seed=0), make_predictor(seed=1)
    path = OnnxPredictor.from_predictor(ref).onnx_path
    other_path = OnnxPredictor.from_predictor(other).onnx_path
    path.write_bytes(other_path.read_bytes())
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["onnx_sha256"] = sha256_file(path)
    path.with_suffix(".json").write_text(json.dumps(meta))

    fast = OnnxPredictor.from_predictor(ref)
    assert path.read_bytes() != other_path.read_bytes()
    _assert_same(ref.predict_batch(phantoms), fast.predict_batch(phantoms))


def test_falls_back_to_pytorch_without_onnxruntime(
    phantoms, make_predictor, isolated_cache, monkeypatch
) -> None:
    ref = make_predictor()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import raises ImportError
    with pytest.raises(FastPathError, match="onnxruntime is not installed"):
        OnnxPredictor.from_predictor(ref)
    assert fast_predictor(ref) is ref
    assert not (isolated_cache / fastpath.CACHE_DIRNAME).exists()


def test_falls_back_to_pytorch_when_export_fails(
    phantoms, make_predictor, isolated_cache, monkeypatch
) -> None:
    ref = make_predictor()

    def broken_export(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    with pytest.raises(FastPathError, match="could not be exported"):
        OnnxPredictor.from_predictor(ref)
    engine = fast_predictor(ref)
    assert engine is ref
    answer = engine.predict(phantoms[0])  # a thumbnail phantom: refused by the gate, on PyTorch all the same
    assert answer.status == "out of scope" or answer.label in ref.card.class_names
    assert not list(isolated_cache.rglob("*.onnx"))


@needs_ort
def test_falls_back_when_the_graph_cannot_run(make_predictor, isolated_cache, monkeypatch) -> None:
    ref = make_predictor()

    def broken_run(self, batch):
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL")

    monkeypatch.setattr(OnnxPredictor, "logits", broken_run)
    assert fast_predictor(ref) is ref
    assert not list(isolated_cache.rglob("*.onnx"))  # a graph that fails its probe is not cached


@needs_ort
def test_explain_stays_on_the_pytorch_path(phantoms, make_predictor, isolated_cache) -> None:
    ref = make_predictor()
    fast = fast_predictor(ref)
    assert isinstance(fast, OnnxPredictor)
    a, b = ref.explain(phantoms[0]), fast.explain(phantoms[0])
    np.testing.assert_array_equal(a.heatmap, b.heatmap)
    assert a.prediction == b.prediction


@needs_ort
def test_cli_over_a_folder_uses_the_fast_path_with_pytorch_answers(
    phantoms, tiny_card_dir, isolated_cache, tmp_path, capsys
) -> None:
    from bonecls.cli import main

    folder = tmp_path / "images"
    folder.mkdir()
    for i, rg in enumerate(phantoms[:4]):
        (folder / f"{i}.png").write_bytes(make_png(np.rint(rg.pixels * 65535).astype(np.uint16), bits=16))

    def run(*extra: str) -> list[dict]:
        assert main(["predict", str(folder), "--model", "fracture-tiny", "--json", *extra]) == 0
        return [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    reference = run("--engine", "pytorch")
    assert len(reference) == 4 and not list(isolated_cache.rglob("*.onnx"))
    fast = run()
    assert list(isolated_cache.rglob("*.onnx"))  # the default engine exported (and cached) the graph
    for a, b in zip(reference, fast, strict=True):
        assert a["label"] == b["label"] and a["status"] == b["status"] and a["in_scope"] == b["in_scope"]
        assert a.get("scope_reasons") == b.get("scope_reasons")
        if "suspicion" in a:
            assert abs(a["suspicion"] - b["suspicion"]) <= 1e-4 + 1e-9
    raw_reference, raw_fast = run("--engine", "pytorch", "--no-scope"), run("--no-scope")  # the raw numbers
    for a, b in zip(raw_reference, raw_fast, strict=True):
        assert a["label"] == b["label"] and a["status"] == b["status"]
        assert abs(a["suspicion"] - b["suspicion"]) <= 1e-4 + 1e-9


@needs_ort
def test_load_classifier_engines(tiny_card_dir, isolated_cache, monkeypatch) -> None:
    native = load_classifier(tiny_card_dir, engine="native")
    fast = load_classifier(tiny_card_dir, engine="auto", native=native)
    assert isinstance(fast, OnnxPredictor) and fast.torch_predictor is native  # the weights are shared
    assert isinstance(load_classifier(tiny_card_dir, engine="onnx", threads=1), OnnxPredictor)
    monkeypatch.setenv("BONECLS_ONNX", "0")  # the operator's switch turns "auto" back to PyTorch ...
    assert type(load_classifier(tiny_card_dir)) is Predictor
    assert isinstance(load_classifier(tiny_card_dir, engine="onnx"), OnnxPredictor)  # ... not a request


@needs_ort
def test_worklist_engine_is_the_fast_path_unless_switched_off(tiny_card_dir, isolated_cache, monkeypatch):
    from bonecls.ui import services
    from bonecls.weights import load_card

    card, _ = load_card(tiny_card_dir)
    services.clear_caches()
    try:
        assert isinstance(services.batch_predictor(str(tiny_card_dir), card.sha256), OnnxPredictor)
        services.clear_caches()
        monkeypatch.setenv("BONECLS_ONNX", "0")
        assert isinstance(services.batch_predictor(str(tiny_card_dir), card.sha256), Predictor)
    finally:
        services.clear_caches()
