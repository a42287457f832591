"""Predictor: preprocessing, calibrated probabilities, decision status, batching, threads."""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from bonecls.errors import BoneclsError, ImageError, WeightsError
from bonecls.inference import load_classifier
from bonecls.inference.predictor import Predictor
from bonecls.inference.results import Explanation, Prediction, status_for
from bonecls.inference.scoping import ScopeGuard
from bonecls.weights import ModelCard, load_pytorch, write_card


def images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = [(64, 64), (80, 120), (150, 90), (33, 47), (256, 256)]
    return [rng.random(shapes[i % len(shapes)], dtype=np.float32) for i in range(n)]


@pytest.fixture
def predictor(tiny_card_dir: Path) -> Predictor:
    """The raw classifier (scope gate off): these tests check its numbers on noise and tiny images,
    which the gate would refuse (tests/test_scope_wiring.py tests the gate on the same predictor)."""
    return Predictor.from_card(tiny_card_dir, scope=False)


def with_card(p: Predictor, **over) -> Predictor:
    model, card = load_pytorch(p.card.id)
    card = ModelCard.model_validate({**card.model_dump(), **over})
    return Predictor(model, card, scope=ScopeGuard(card, enabled=False))


def test_from_card_by_folder_and_id(predictor: Predictor) -> None:
    by_id = Predictor.from_card("fracture-tiny")
    assert by_id.card == predictor.card and by_id.card.id == "fracture-tiny"


def test_load_classifier_refuses_what_it_cannot_serve(
    tiny_card_dir: Path, tiny_card_factory, tmp_path: Path
) -> None:
    native = load_classifier(tiny_card_dir, engine="native")
    assert type(native) is Predictor and type(load_classifier(tiny_card_dir, engine="pytorch")) is Predictor
    assert load_classifier(tiny_card_dir, engine="native", native=native) is native  # nothing loaded again
    with pytest.raises(ValueError, match="Unknown engine 'tensorrt'; engines are: auto, native"):
        load_classifier(tiny_card_dir, engine="tensorrt")  # type: ignore[arg-type]
    with pytest.raises(WeightsError, match=r"engine does not run it \(engines for it: auto, native, pytorch"):
        load_classifier(tiny_card_dir, engine="keras")
    tiny_card_factory(tmp_path / "other", card_id="other", seed=1)
    with pytest.raises(WeightsError, match="different weights"):
        load_classifier(tmp_path / "other", native=native)
    det = tiny_card_factory(tmp_path / "det", card_id="det")
    write_card(det.model_copy(update={"framework": "ultralytics"}), tmp_path / "det")
    with pytest.raises(WeightsError, match="'det' is a ultralytics model, not a classifier"):
        load_classifier(tmp_path / "det")
    with pytest.raises(WeightsError, match=r"not a PyTorch classifier; load it with bonecls\.inference"):
        Predictor.from_card(tmp_path / "det")


def test_preprocess_shape_and_normalisation(
    predictor: Predictor, make_radiograph, tiny_card_factory, tmp_path: Path
) -> None:
    x = predictor.preprocess(make_radiograph(np.full((80, 120), 0.5, np.float32)))
    assert x.shape == (1, 1, 64, 64) and x.dtype == torch.float32
    assert torch.allclose(x, torch.zeros_like(x), atol=1e-6)  # (0.5 - 0.5) / 0.25
    x = predictor.preprocess(np.ones((300, 200), np.float32))
    assert torch.allclose(x, torch.full_like(x, 2.0), atol=1e-5)
    tiny_card_factory(
        tmp_path / "rgb",
        card_id="rgb",
        in_chans=3,
        normalization={"mean": [0.5, 0.4, 0.3], "std": [0.25] * 3},
    )
    rgb = Predictor.from_card(tmp_path / "rgb")
    x3 = rgb.preprocess(np.full((10, 10), 0.5, np.float32))
    assert x3.shape == (1, 3, 64, 64)
    assert torch.allclose(x3[0, :, 0, 0], torch.tensor([0.0, 0.4, 0.8]), atol=1e-5)


def test_preprocess_rejects_colour_and_accepts_uint8(predictor: Predictor) -> None:
    with pytest.raises(ImageError):
        predictor.preprocess(np.zeros((10, 10, 3), np.float32))
    a = predictor.preprocess(np.full((64, 64), 255, np.uint8))
    b = predictor.preprocess(np.ones((64, 64), np.float32))
    assert torch.equal(a, b)


def test_probabilities_sum_to_one(predictor: Predictor, make_radiograph) -> None:
    for img in images(5):
        pred = predictor.predict(make_radiograph(img))
        assert isinstance(pred, Prediction)
        assert list(pred.probabilities) == ["fractured", "not fractured"]
        assert math.isclose(sum(pred.probabilities.values()), 1.0, abs_tol=1e-9)
        assert pred.label == max(pred.probabilities, key=pred.probabilities.get)
        assert pred.suspicion == pytest.approx(pred.probabilities["fractured"])
        assert pred.model_id == "fracture-tiny" and pred.model_sha256 == predictor.card.sha256


def test_temperature_flattens_the_distribution(predictor: Predictor) -> None:
    logits = torch.tensor([2.0, -1.0])
    sharp = predictor.prediction_from_logits(logits)
    flat = with_card(predictor, temperature=4.0).prediction_from_logits(logits)
    assert flat.label == sharp.label
    assert max(flat.probabilities.values()) < max(sharp.probabilities.values())
    assert flat.probabilities["fractured"] == pytest.approx(1 / (1 + math.exp(-3.0 / 4.0)))

    def entropy(p: Prediction) -> float:
        return -sum(v * math.log(v) for v in p.probabilities.values())

    assert entropy(flat) > entropy(sharp)


def _logit_for(p: float) -> torch.Tensor:
    return torch.tensor([math.log(p), math.log(1 - p)], dtype=torch.float64)


@pytest.mark.parametrize(
    ("suspicion", "status"),
    [(0.1, "negative"), (0.29, "negative"), (0.3, "uncertain"), (0.5, "uncertain"), (0.69, "uncertain"),
     (0.7, "positive"), (0.95, "positive")],
)  # fmt: skip
def test_status_thresholds(predictor: Predictor, suspicion: float, status: str) -> None:
    p = with_card(predictor, thresholds={"negative_below": 0.3, "positive_at": 0.7})
    assert status_for(suspicion, 0.3, 0.7) == status
    if suspicion not in (0.3, 0.7):  # exact boundaries are checked on status_for (softmax rounds)
        pred = p.prediction_from_logits(_logit_for(suspicion))
        assert pred.suspicion == pytest.approx(suspicion, abs=1e-9)
        assert pred.status == status


def test_status_boundaries_and_degenerate_thresholds() -> None:
    assert status_for(0.3, 0.3, 0.7) == "uncertain"
    assert status_for(0.7, 0.3, 0.7) == "positive"
    assert status_for(0.2999999, 0.3, 0.7) == "negative"
    # negative_below == positive_at: no uncertain band
    assert [status_for(s, 0.5, 0.5) for s in (0.49, 0.5, 0.51)] == ["negative", "positive", "positive"]


def test_three_class_suspicion_sums_positive_classes(tiny_card_factory, tmp_path: Path) -> None:
    tiny_card_factory(
        tmp_path / "three", card_id="three", task="threeclass",
        class_names=["healthy", "fractured", "beyond_repair"],
        positive_classes=["fractured", "beyond_repair"],
        thresholds={"negative_below": 0.4, "positive_at": 0.6},
    )  # fmt: skip
    p = Predictor.from_card(tmp_path / "three")
    pred = p.prediction_from_logits(torch.log(torch.tensor([0.5, 0.3, 0.2])))
    assert pred.suspicion == pytest.approx(0.5) and pred.status == "uncertain" and pred.label == "healthy"
    pred = p.prediction_from_logits(torch.log(torch.tensor([0.35, 0.3, 0.35])))
    assert pred.suspicion == pytest.approx(0.65) and pred.status == "positive"
    assert pred.label in ("healthy", "beyond_repair")


def test_predict_batch_equals_one_by_one(predictor: Predictor, make_radiograph) -> None:
    rgs = [make_radiograph(img) for img in images(10, seed=1)]
    predictor.batch_size = 4  # 3 chunks
    batch = predictor.predict_batch(rgs)
    single = [predictor.predict(rg) for rg in rgs]
    assert len(batch) == 10
    for b, s in zip(batch, single, strict=True):
        assert b.label == s.label and b.status == s.status
        for k in b.probabilities:
            assert b.probabilities[k] == pytest.approx(s.probabilities[k], abs=1e-5)
    assert predictor.predict_batch([]) == []


def test_explain_returns_the_prediction_of_its_own_forward(predictor: Predictor, make_radiograph) -> None:
    rg = make_radiograph(images(2)[1])
    exp = predictor.explain(rg, method="gradcam")
    assert isinstance(exp, Explanation)
    assert exp.heatmap.shape == (80, 120) and exp.overlay.shape == (80, 120, 3)
    assert exp.target_class == exp.prediction.label
    pred = predictor.predict(rg)
    for k, v in pred.probabilities.items():
        assert exp.prediction.probabilities[k] == pytest.approx(v, abs=1e-5)
    other = next(c for c in predictor.card.class_names if c != pred.label)
    assert predictor.explain(rg, target_class=other).target_class == other
    assert predictor.explain(rg, target_class=1).target_class == predictor.card.class_names[1]
    assert predictor.predict_and_explain(rg).prediction.label == pred.label


def test_explain_argument_errors(predictor: Predictor) -> None:
    img = images(1)[0]
    for kwargs in (
        {"method": "magic"},
        {"colormap": "rainbow"},
        {"target_class": "tumour"},
        {"target_class": 7},
    ):
        with pytest.raises(BoneclsError):
            predictor.explain(img, **kwargs)
    with pytest.raises(ValueError, match="gradcam"):
        predictor.explain(img, method="magic")


def test_predictor_refuses_non_pytorch_cards(predictor: Predictor) -> None:
    card = predictor.card.model_copy(update={"framework": "ultralytics"})
    with pytest.raises(WeightsError):
        Predictor(predictor.model, card)


def test_threads_give_the_serial_results(predictor: Predictor, make_radiograph) -> None:
    rgs = [make_radiograph(img) for img in images(8, seed=3)]
    methods = ["gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "eigencam", "gradcam", "scorecam"]
    # (every method runs concurrently with predictions and the other methods)
    serial = [
        (predictor.predict(rg), predictor.explain(rg, method=m)) for rg, m in zip(rgs, methods, strict=True)
    ]
    barrier = threading.Barrier(8)

    def work(i: int):
        barrier.wait()
        out = []
        for _ in range(2):
            out.append((predictor.predict(rgs[i]), predictor.explain(rgs[i], method=methods[i])))
        return out

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))
    for i, runs in enumerate(results):
        pred, exp = serial[i]
        for got_pred, got_exp in runs:
            assert got_pred == pred
            assert got_exp.prediction == exp.prediction
            assert np.array_equal(got_exp.heatmap, exp.heatmap)
            assert np.array_equal(got_exp.overlay, exp.overlay)
