"""The app with a Keras model installed beside PyTorch ones: the three-class page and the worklist use it
through the same services as any PyTorch classifier (streamlit.testing.v1.AppTest)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from appdata import app_environment, build_weights, png_bytes, radiograph_like
from kerasdata import save_card, tiny_threeclass
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
KERAS_ID = "threeclass-keras"


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = build_weights(tmp_path_factory.mktemp("app-keras") / "weights")
    save_card(tiny_threeclass(seed=2), root / KERAS_ID, KERAS_ID)
    return root


@pytest.fixture
def env(weights_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    with app_environment(weights_dir, tmp_path / "audit.sqlite", monkeypatch) as audit_db:
        yield audit_db


def app_with_images(n: int) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    at.run()
    files = [(f"img{i}.png", png_bytes(radiograph_like(256, seed=i)), "image/png") for i in range(n)]
    at.file_uploader[0].set_value(files)
    at.run()
    assert not at.exception, at.exception
    return at


def bar_chart(at: AppTest) -> dict:
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return next(s for s in specs if s["data"][0].get("type") == "bar")["data"][0]


def test_threeclass_page_reads_with_the_keras_model(env: None) -> None:
    from bonecls.inference.keras_predictor import KerasPredictor
    from bonecls.ui import services
    from bonecls.ui.session import STORE_KEY

    at = app_with_images(1)
    at.switch_page("pages/threeclass.py").run()
    assert not at.exception, at.exception
    picker = at.selectbox(key="threeclass_model")
    assert picker.options == ["threeclass", KERAS_ID]
    picker.set_value(KERAS_ID).run()
    assert not at.exception, at.exception
    captions = " ".join(c.value for c in at.caption)
    assert f"model {KERAS_ID} (custom_cnn)" in captions
    bars = bar_chart(at)
    assert bars["y"] == ["healthy", "fractured", "beyond repair"] and abs(sum(bars["x"]) - 1) < 1e-6
    # what the page shows is the Keras model's answer for this image
    item = next(iter(at.session_state[STORE_KEY]))
    entry = next(m for m in services.models_for("threeclass") if m.id == KERAS_ID)
    model = services.predictor(str(entry.path), entry.sha256)
    assert isinstance(model, KerasPredictor)
    fresh = model.predict(item.radiograph)
    assert bars["x"] == pytest.approx([fresh.probabilities[c] for c in fresh.probabilities], abs=1e-6)
    # every heat map the menu offers works on the Keras model (one overlay next to the radiograph)
    for label in at.selectbox(key="threeclass_method").options:
        at.selectbox(key="threeclass_method").set_value(label).run()
        assert not at.exception, (label, at.exception)
        assert not at.error, (label, [e.value for e in at.error])
        viewer = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
        assert any(sum(t.get("type") == "image" for t in v["data"]) == 2 for v in viewer), label


def test_worklist_ranks_with_the_keras_model(env: None) -> None:
    at = app_with_images(3)
    at.switch_page("pages/worklist.py").run()
    at.selectbox(key="wl_model").set_value(KERAS_ID).run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert list(table["rank"]) == [1, 2, 3]
    susp = list(table["suspicion"])
    assert all(0.0 <= s <= 1.0 for s in susp) and susp == sorted(susp, reverse=True)
    assert set(table["label"]) <= {"healthy", "fractured", "beyond repair"}
