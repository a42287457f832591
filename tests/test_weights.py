"""Model cards, safetensors save/load, checksums, and refusing anything pickled or tampered."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pydantic
import pytest
import safetensors
import safetensors.torch
import torch

from bonecls.errors import WeightsError
from bonecls.models import create_model
from bonecls.weights import (
    ModelCard,
    card_schema,
    list_cards,
    load_card,
    load_pytorch,
    save_pytorch,
    scan_cards,
    sha256_file,
    verify_weights,
    weights_root,
)

SHA = "ab" * 32


def card_fields(**over) -> dict:
    fields = {
        "id": "fracture",
        "task": "fracture",
        "framework": "pytorch",
        "architecture": "simple_cnn",
        "class_names": ["fractured", "not fractured"],
        "positive_classes": ["fractured"],
        "input_size": 64,
        "in_chans": 1,
        "normalization": {"mean": [0.5], "std": [0.25]},
        "thresholds": {"negative_below": 0.3, "positive_at": 0.7},
        "sha256": SHA,
    }
    fields.update(over)
    return fields


def make_card(**over) -> ModelCard:
    return ModelCard(**card_fields(**over))


def _saved(tmp_path: Path, name: str = "simple_cnn", head: str = "linear", fp16: bool = True, **over):
    torch.manual_seed(0)
    model = create_model(name, 3, 1, head=head)
    # make BatchNorm statistics non-trivial, then freeze them
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 1, 64, 64) * 3)
    model.eval()
    card = make_card(
        id=f"m-{name}", architecture=name, head=head, sha256="",
        class_names=["healthy", "fractured", "beyond_repair"],
        positive_classes=["fractured", "beyond_repair"],
        task="threeclass", **over,
    )  # fmt: skip
    out = tmp_path / card.id
    saved = save_pytorch(model, card, out, fp16=fp16)
    return model, saved, out


# -- card schema -------------------------------------------------------------------------------------


def test_valid_card_and_defaults() -> None:
    card = make_card()
    assert card.temperature == 1.0 and card.head == "linear" and card.weights_file == "model.safetensors"
    assert card.created and card.extra == {}
    assert make_card(sha256=SHA.upper()).sha256 == SHA


@pytest.mark.parametrize(
    "over",
    [
        {"class_names": []},
        {"class_names": ["a", "a"], "positive_classes": ["a"]},
        {"class_names": ["a", " "], "positive_classes": ["a"]},
        {"positive_classes": ["broken"]},
        {"positive_classes": []},
        {"thresholds": {"negative_below": 0.8, "positive_at": 0.2}},
        {"thresholds": {"negative_below": -0.1, "positive_at": 0.5}},
        {"thresholds": {"negative_below": 0.1, "positive_at": 1.5}},
        {"temperature": 0.0},
        {"temperature": -1.0},
        {"temperature": float("nan")},
        {"sha256": "abc"},
        {"sha256": "zz" * 32},
        {"in_chans": 2, "normalization": {"mean": [0.5, 0.5], "std": [0.2, 0.2]}},
        {"normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]}},
        {"normalization": {"mean": [0.5], "std": [0.0]}},
        {"normalization": {"mean": [0.5], "std": [0.2, 0.2]}},
        {"weights_file": "../model.safetensors"},
        {"weights_file": "model.pt"},
        {"architecture": "resnet1000"},
        {"id": "../etc"},
        {"task": "tumour"},
        {"unexpected_field": 1},
    ],
)
def test_card_validators_reject(over: dict) -> None:
    with pytest.raises(pydantic.ValidationError):
        make_card(**over)


def test_ultralytics_cards_may_name_pt_files() -> None:
    card = make_card(
        framework="ultralytics", architecture="yolov8n", weights_file="best.pt", task="pneumonia-det"
    )
    assert card.weights_file == "best.pt"


def test_card_schema_is_json_schema_and_validates_saved_cards(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = card_schema()
    json.dumps(schema)
    assert {"sha256", "thresholds", "normalization", "class_names"} <= set(schema["properties"])
    _, _, out = _saved(tmp_path)
    jsonschema.validate(json.loads((out / "card.json").read_text()), schema)
    bad = json.loads((out / "card.json").read_text())
    bad["in_chans"] = 5
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


# -- save / load -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "head"), [("simple_cnn", "linear"), ("custom_v2", "dense_bn")])
def test_roundtrip_logits_match_within_fp16(tmp_path: Path, name: str, head: str) -> None:
    model, card, out = _saved(tmp_path, name, head)
    assert card.sha256 == sha256_file(out / "model.safetensors")
    assert json.loads((out / "card.json").read_text())["sha256"] == card.sha256
    loaded, loaded_card = load_pytorch(out)
    assert loaded_card == card and not loaded.training
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.rand(3, 1, 64, 64)
    with torch.inference_mode():
        expected, got = model(x), loaded(x)
        assert torch.allclose(got, expected, atol=2e-2, rtol=2e-2)
        # exactly the original model with its parameters rounded to fp16
        rounded = create_model(name, 3, 1, head=head)
        rounded.load_state_dict(model.state_dict())
        for p in rounded.parameters():
            p.copy_(p.half().float())
        rounded.eval()
        assert torch.allclose(got, rounded(x), atol=1e-5)


def test_fp16_only_for_parameters(tmp_path: Path) -> None:
    _, _, out = _saved(tmp_path, "custom_v2", "dense_bn")
    with safetensors.safe_open(out / "model.safetensors", framework="pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118
    assert dtypes["features.block1.0.weight"] == "F16"
    assert dtypes["features.block1.1.running_var"] == "F32"
    assert dtypes["features.block1.1.num_batches_tracked"] == "I64"
    assert dtypes["head.bn.running_mean"] == "F32"


def test_fp32_roundtrip_is_exact(tmp_path: Path) -> None:
    model, _, out = _saved(tmp_path, "custom_v2", "dense_bn", fp16=False)
    loaded, _ = load_pytorch(out)
    x = torch.rand(2, 1, 64, 64)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    _, _, out = _saved(tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "model.safetensors"]
    _, again, _ = _saved(tmp_path)  # overwrite in place
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "model.safetensors"]
    assert load_card(out)[0].sha256 == again.sha256


def test_save_refuses_a_model_that_does_not_match_the_card(tmp_path: Path) -> None:
    model = create_model("custom_v2", 2, 1)
    with pytest.raises(WeightsError, match="does not match the card"):
        save_pytorch(model, make_card(sha256=""), tmp_path / "x")
    assert not (tmp_path / "x").exists()


# -- integrity ---------------------------------------------------------------------------------------


@pytest.fixture
def no_deserialisation(monkeypatch: pytest.MonkeyPatch):
    """Fail the test if anything deserialises weights (safetensors, torch.load or pickle)."""

    def forbidden(*args, **kwargs):
        raise AssertionError("weights were deserialised")

    for mod, attr in [
        (safetensors.torch, "load"),
        (safetensors.torch, "load_file"),
        (safetensors, "safe_open"),
        (torch, "load"),
        (pickle, "load"),
        (pickle, "loads"),
    ]:
        monkeypatch.setattr(mod, attr, forbidden)


def test_tampered_weights_are_refused_before_deserialising(tmp_path: Path, monkeypatch) -> None:
    _, card, out = _saved(tmp_path)
    path = out / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    def forbidden(*args, **kwargs):
        raise AssertionError("weights were deserialised")

    monkeypatch.setattr(safetensors.torch, "load", forbidden)
    monkeypatch.setattr(safetensors.torch, "load_file", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    expected = (
        f"The weight file for model '{card.id}' does not match the checksum on its card; "
        "it may be corrupted or tampered with. Reinstall the model."
    )
    with pytest.raises(WeightsError) as info:
        load_pytorch(out)
    assert str(info.value) == expected
    with pytest.raises(WeightsError, match="checksum"):
        load_card(out)
    with pytest.raises(WeightsError, match="checksum"):
        verify_weights(card, out)


def test_missing_weight_file(tmp_path: Path) -> None:
    _, _, out = _saved(tmp_path)
    (out / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match="missing"):
        load_card(out)
    with pytest.raises(WeightsError, match="missing"):
        load_pytorch(out)


def test_malformed_card_json(tmp_path: Path) -> None:
    _, _, out = _saved(tmp_path)
    (out / "card.json").write_text('{"id": "x", ', encoding="utf-8")
    with pytest.raises(WeightsError, match="not valid JSON"):
        load_card(out)
    (out / "card.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(WeightsError, match="JSON object"):
        load_card(out)


def test_schema_violation_in_card_file(tmp_path: Path) -> None:
    _, _, out = _saved(tmp_path)
    data = json.loads((out / "card.json").read_text())
    data["thresholds"] = {"negative_below": 0.9, "positive_at": 0.1}
    (out / "card.json").write_text(json.dumps(data))
    with pytest.raises(WeightsError, match="invalid") as info:
        load_pytorch(out)
    assert "thresholds" in str(info.value)


def test_card_without_checksum_is_refused(tmp_path: Path) -> None:
    _, _, out = _saved(tmp_path)
    data = json.loads((out / "card.json").read_text())
    data["sha256"] = ""
    (out / "card.json").write_text(json.dumps(data))
    with pytest.raises(WeightsError, match="no sha256"):
        load_pytorch(out)


class _Payload:
    """Unpickling this creates a marker file: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_pt_weights_are_never_loaded(tmp_path: Path, monkeypatch, no_deserialisation) -> None:
    marker = tmp_path / "pwned"
    folder = tmp_path / "evil"
    folder.mkdir()
    payload = pickle.dumps(_Payload(marker))
    (folder / "model.pt").write_bytes(payload)
    fields = card_fields(id="evil", weights_file="model.pt", sha256=sha256_file(folder / "model.pt"))
    (folder / "card.json").write_text(json.dumps(fields))
    with pytest.raises(WeightsError, match="safetensors"):
        load_pytorch(folder)
    with pytest.raises(WeightsError, match="safetensors"):
        load_card(folder)
    assert not marker.exists()


def test_pickle_disguised_as_safetensors_is_rejected(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = tmp_path / "disguised"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    fields = card_fields(id="disguised", sha256=sha256_file(folder / "model.safetensors"))
    (folder / "card.json").write_text(json.dumps(fields))
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load_pytorch(folder)
    assert not marker.exists()


def test_a_stray_pickle_beside_valid_weights_is_ignored(tmp_path: Path, monkeypatch) -> None:
    _, card, out = _saved(tmp_path)
    marker = tmp_path / "pwned"
    (out / "model.pt").write_bytes(pickle.dumps(_Payload(marker)))

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    _, loaded = load_pytorch(out)
    assert loaded.sha256 == card.sha256 and not marker.exists()


def test_ultralytics_card_is_verified_not_loaded_here(tmp_path: Path, no_deserialisation) -> None:
    folder = tmp_path / "det"
    folder.mkdir()
    (folder / "best.pt").write_bytes(b"not really a checkpoint")
    sha = sha256_file(folder / "best.pt")
    card = make_card(
        id="pneumonia-det", framework="ultralytics", architecture="yolov8n", weights_file="best.pt",
        task="pneumonia-det", class_names=["opacity"], positive_classes=["opacity"], sha256=sha,
    )  # fmt: skip
    (folder / "card.json").write_text(card.model_dump_json())
    loaded, where = load_card(folder)
    assert loaded == card and where == folder
    assert verify_weights(loaded, folder) == folder / "best.pt"
    with pytest.raises(WeightsError, match=r"bonecls\.detection"):
        load_pytorch(folder)
    (folder / "best.pt").write_bytes(b"not really a checkpoinT")
    with pytest.raises(WeightsError, match="tampered"):
        verify_weights(loaded, folder)


# -- discovery ---------------------------------------------------------------------------------------


def test_weights_root_env_and_default(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BONECLS_WEIGHTS", raising=False)
    assert weights_root() == Path(__file__).resolve().parents[1] / "weights"
    monkeypatch.setenv("BONECLS_WEIGHTS", str(tmp_path))
    assert weights_root() == tmp_path


def test_load_by_id_and_scan(isolated_weights: Path, tiny_card_dir: Path) -> None:
    card, folder = load_card("fracture-tiny")
    assert folder == tiny_card_dir and card.id == "fracture-tiny"
    model, _ = load_pytorch("fracture-tiny")
    assert not model.training
    # a card in a folder with another name is still found by id
    _saved(isolated_weights)  # m-simple_cnn
    (isolated_weights / "m-simple_cnn").rename(isolated_weights / "renamed")
    assert load_card("m-simple_cnn")[1] == isolated_weights / "renamed"
    with pytest.raises(WeightsError) as info:
        load_card("nope")
    assert "fracture-tiny" in str(info.value)
    with pytest.raises(WeightsError):
        load_card(isolated_weights / "does-not-exist" / "card.json")


def test_scan_reports_invalid_cards_and_list_skips_them(isolated_weights: Path, tiny_card_dir: Path) -> None:
    broken = isolated_weights / "broken"
    broken.mkdir()
    (broken / "card.json").write_text("{not json")
    dup = isolated_weights / "zz-duplicate"
    dup.mkdir()
    for f in ("card.json", "model.safetensors"):
        (dup / f).write_bytes((tiny_card_dir / f).read_bytes())
    entries = scan_cards()
    by_dir = {e.directory.name: e for e in entries}
    assert by_dir["fracture-tiny"].card is not None and by_dir["fracture-tiny"].error is None
    assert by_dir["broken"].card is None and "not valid JSON" in by_dir["broken"].error
    assert by_dir["zz-duplicate"].card is None and "used by both" in by_dir["zz-duplicate"].error
    with pytest.warns(RuntimeWarning):
        cards = list_cards()
    assert [(c.id, d.name) for c, d in cards] == [("fracture-tiny", "fracture-tiny")]
    assert scan_cards(isolated_weights / "missing") == []
    assert all(
        e.error is None for e in scan_cards(verify_checksums=True) if e.directory.name == "fracture-tiny"
    )
