"""The learned scope gate (bonecls.scope): features, statistics, threshold, header rules, shipped models.

Fast parts use the tiny random model of conftest.py and small images; the shipped-model checks use
the three real films of tests/scope_corpus.py (pydicom-data, deid-data), each in three forms (DICOM,
header-less PNG, square centre crop), so the learned part is tested and not only the header rules.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scope_corpus import FORMS, SHIPPED, real_film_paths, three_forms

from bonecls.errors import WeightsError
from bonecls.scope import ScopeGate, ScopeVerdict
from bonecls.scope.declared import DECLARED_SCOPES, header_reasons
from bonecls.scope.evaluation import aurc, risk_coverage
from bonecls.scope.features import PENULTIMATE, FeatureTap, classifier_features, preprocess_pixels
from bonecls.scope.stats import (
    choose_threshold,
    choose_thresholds_by_answer,
    fit_stats,
    load_stats,
    save_stats,
)
from bonecls.weights import ModelCard, ScopeSection, load_card, load_pytorch, sha256_file, weights_root


def _two_blobs(n: int = 400, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    feats = rng.normal(0.0, 1.0, (n, dim)) + labels[:, None] * 3.0
    return feats.astype(np.float32), labels


def _section(stats_sha: str, threshold: float, task: str = "fracture") -> ScopeSection:
    return ScopeSection(
        sha256=stats_sha, threshold=threshold, in_scope_rate=0.975, declared=DECLARED_SCOPES[task]
    )


# -- features ----------------------------------------------------------------------------------------


def test_preprocessing_is_the_predictors(tiny_card_dir: Path) -> None:
    from bonecls.inference.predictor import Predictor

    model, card = load_pytorch(tiny_card_dir)
    predictor = Predictor(model, card, channels_last=False)
    rng = np.random.default_rng(1)
    for shape in ((300, 200), (40, 50), (64, 64)):
        pixels = rng.random(shape, dtype=np.float32)
        ours = preprocess_pixels(pixels, card.input_size, card.normalization.mean, card.normalization.std)
        assert torch.equal(ours, predictor.preprocess(pixels).contiguous())


def test_feature_tap_records_the_heads_input_per_thread(tiny_card_dir: Path) -> None:
    model, card = load_pytorch(tiny_card_dir)
    x = torch.randn(3, 1, 64, 64)
    head_input = {}
    handle = model.head.register_forward_pre_hook(lambda _m, args: head_input.update(x=args[0].clone()))
    logits, feats = classifier_features(model, card.architecture, x)
    handle.remove()
    assert feats.shape == (3, 128) and torch.allclose(feats, head_input["x"])
    assert torch.allclose(logits, model(x))

    results: dict[int, torch.Tensor] = {}
    with FeatureTap(model, card.architecture, (PENULTIMATE, "features.conv2")) as tap:

        def run(i: int) -> None:
            xi = torch.full((1, 1, 64, 64), float(i))
            with torch.inference_mode():
                for _ in range(20):
                    model(xi)
                    results[i] = tap.take()

        threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with pytest.raises(RuntimeError, match="run the model first"):
            tap.take()
    for i in range(3):
        _, alone = classifier_features(
            model, card.architecture, torch.full((1, 1, 64, 64), float(i)), (PENULTIMATE, "features.conv2")
        )
        assert results[i].shape == (1, 128 + 64) and torch.allclose(results[i], alone)


# -- statistics --------------------------------------------------------------------------------------


def test_stats_round_trip_and_checksum_refusal(tmp_path: Path) -> None:
    feats, labels = _two_blobs()
    stats = fit_stats(feats, labels, ("penultimate",))
    path = tmp_path / "scope.safetensors"
    sha = save_stats(stats, path)
    assert sha == sha256_file(path)
    loaded = load_stats(path, sha, "m")
    assert loaded.layers == ("penultimate",) and loaded.method == "mahalanobis"
    np.testing.assert_allclose(loaded.score(feats[:20]), stats.score(feats[:20]))

    with pytest.raises(WeightsError, match="do not match the checksum"):
        load_stats(path, "0" * 64, "m")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="tampered"):
        load_stats(path, sha, "m")
    with pytest.raises(WeightsError, match="missing"):
        load_stats(tmp_path / "absent.safetensors", sha, "m")


def test_score_grows_with_distance_from_every_class() -> None:
    feats, labels = _two_blobs()
    stats = fit_stats(feats, labels, ("penultimate",))
    near = stats.score(np.array([[0.0] * 8, [3.0] * 8], dtype=np.float32))
    between = stats.score(np.array([[1.5] * 8], dtype=np.float32))
    far = stats.score(np.array([[12.0] * 8], dtype=np.float32))
    assert near.max() < between[0] < far[0]
    mixed = stats.score(np.array([[np.nan] * 8, [0.0] * 8], dtype=np.float32))
    assert np.isinf(mixed[0]) and mixed[1] == pytest.approx(near[0])
    with pytest.raises(ValueError, match="more images than feature dimensions"):
        fit_stats(feats[:5], labels[:5], ("penultimate",))


def test_threshold_keeps_the_stated_share_in_scope() -> None:
    scores = np.random.default_rng(0).gamma(2.0, size=1000)
    for rate in (0.9, 0.975, 1.0):
        threshold = choose_threshold(scores, rate)
        assert np.mean(scores <= threshold) >= rate
        assert np.mean(scores < threshold) < rate
    assert choose_threshold(np.arange(1.0, 101.0), 0.95) == 95.0
    with pytest.raises(ValueError):
        choose_threshold(scores, 0.0)


# -- declared scope and the gate -------------------------------------------------------------------


def test_header_rules(make_radiograph) -> None:
    pixels = np.zeros((8, 8), np.float32)
    chest = DECLARED_SCOPES["pneumonia"]
    assert header_reasons(chest, make_radiograph(pixels, body_part="CHEST", view="PA", modality="CR")) == ()
    assert header_reasons(chest, make_radiograph(pixels, body_part="Thorax", view="AP", modality="DX")) == ()
    assert header_reasons(chest, make_radiograph(pixels)) == ()  # nothing known, nothing refused here
    (leg,) = header_reasons(chest, make_radiograph(pixels, body_part="EXTREMITY", modality="CR"))
    assert "EXTREMITY" in leg and "CHEST" in leg
    (lateral,) = header_reasons(chest, make_radiograph(pixels, body_part="CHEST", view="LL"))
    assert "LL" in lateral and "PA or AP" in lateral
    (ct,) = header_reasons(chest, make_radiograph(pixels, modality="CT"))
    assert "CT" in ct
    assert (
        len(
            header_reasons(
                DECLARED_SCOPES["fracture"],
                make_radiograph(pixels, body_part="SKULL", view="LATERAL", modality="MR"),
            )
        )
        == 3
    )


def test_gate_combines_header_heuristics_and_learned_score(tmp_path: Path, make_radiograph) -> None:
    feats, labels = _two_blobs()
    stats = fit_stats(feats, labels, ("penultimate",))
    threshold = choose_threshold(stats.score(_two_blobs(seed=1)[0]), 0.975)
    gate = ScopeGate(stats, _section(save_stats(stats, tmp_path / "s.safetensors"), threshold), "m")
    rng = np.random.default_rng(0)
    film = make_radiograph(rng.random((256, 256), dtype=np.float32), body_part="CHEST", modality="CR")

    verdict = gate.verdict(film, feats[:1])
    assert isinstance(verdict, ScopeVerdict) and verdict.in_scope and verdict.reasons == ()
    far = gate.verdict(film, np.full((1, 8), 20.0, np.float32))
    assert not far.in_scope and far.score > threshold and "does not resemble" in far.summary
    leg = make_radiograph(film.pixels, body_part="EXTREMITY", modality="CR")
    refused = gate.verdict(leg)  # before any feature is computed
    assert not refused.in_scope and refused.score is None and "EXTREMITY" in refused.summary
    assert not gate.verdict(film).in_scope  # the learned part was not asked: no answer either
    tiny = make_radiograph(rng.random((40, 40), dtype=np.float32))
    assert any("tiny" in r for r in gate.verdict(tiny, feats[:1]).reasons)


def test_answer_thresholds_keep_each_answers_share() -> None:
    """One pooled threshold keeps fewer of the answer whose images lie farther out; one per answer
    keeps the stated share of each."""
    rng = np.random.default_rng(0)
    answers = np.arange(2000) % 2
    scores = rng.exponential(1.0, 2000) * np.where(answers == 1, 3.0, 1.0)
    pooled = choose_threshold(scores, 0.95)
    by_answer = choose_thresholds_by_answer(scores, answers, 2, 0.95)
    assert by_answer is not None and by_answer[0] < pooled < by_answer[1]
    assert np.mean(scores[answers == 1] <= pooled) < 0.92 < 0.99 < np.mean(scores[answers == 0] <= pooled)
    for k in (0, 1):
        assert 0.95 <= np.mean(scores[answers == k] <= by_answer[k]) < 0.952
    few = np.r_[np.zeros(1990, int), np.ones(10, int)]  # answer 1 too rare to condition on: the pooled one
    assert choose_thresholds_by_answer(scores, few, 2, 0.95) == [
        choose_threshold(scores[:1990], 0.95),
        pooled,
    ]
    assert choose_thresholds_by_answer(scores[:30], answers[:30], 2, 0.95) is None
    with pytest.raises(ValueError, match="shape"):
        choose_thresholds_by_answer(scores, answers[:10], 2, 0.95)


def test_gate_judges_each_answer_against_its_own_threshold(tmp_path: Path, tiny_card_dir: Path) -> None:
    from bonecls.inference.results import OUT_OF_SCOPE, Prediction
    from bonecls.inference.scoping import ScopeGuard

    feats, labels = _two_blobs()
    stats = fit_stats(feats, labels, ("penultimate",))
    section = _section(save_stats(stats, tmp_path / "s.safetensors"), 1.0)
    by_answer = section.model_copy(update={"answer_thresholds": [0.5, 2.0]})
    names = ("not fractured", "fractured")
    gate = ScopeGate(stats, by_answer, "m", names)
    assert (gate.threshold_for(None), gate.threshold_for("fractured"), gate.threshold_for(0)) == (
        1.0,
        2.0,
        0.5,
    )
    assert gate.threshold_for("unknown class") == 1.0
    kept = gate.verdict_from_score(1.5, answer="fractured")
    assert kept.in_scope and kept.threshold == 2.0
    refused = gate.verdict_from_score(1.5, answer="not fractured")
    assert not refused.in_scope and refused.threshold == 0.5
    assert "3.0 times the limit" in refused.summary and "given the same answer" in refused.summary
    assert not gate.verdict_from_score(1.5).in_scope  # no answer known: the pooled threshold
    flags = gate.in_scope(np.array([0.4, 0.6, 1.9, np.inf]), np.array([0, 0, 1, 1]))
    assert flags.tolist() == [True, False, True, False]
    assert gate.in_scope(np.array([0.4, 1.5])).tolist() == [True, False]
    pooled_gate = ScopeGate(stats, section, "m", names)  # a card without answer thresholds: one for all
    assert (
        pooled_gate.threshold_for("fractured") == 1.0
        and "same answer" not in pooled_gate.verdict_from_score(1.5, answer="fractured").summary
    )
    with pytest.raises(WeightsError, match="answer thresholds"):
        ScopeGate(stats, by_answer, "m", ("a", "b", "c"))
    with pytest.raises(ValueError, match="answer_thresholds"):
        ScopeSection.model_validate({**section.model_dump(), "answer_thresholds": [1.0]})

    # the predictor's guard reads the answer from the prediction's label
    card, _ = load_card(tiny_card_dir)
    guard = ScopeGuard(card, ScopeGate(stats, by_answer, card.id, card.class_names))
    for label, in_scope in ((card.class_names[1], True), (card.class_names[0], False)):
        raw = Prediction(
            probabilities={n: 0.5 for n in card.class_names},
            label=label,
            status="uncertain",
            suspicion=0.5,
            model_id=card.id,
            model_sha256=card.sha256,
        )
        judged = guard.judge(raw, 1.5)
        assert judged.in_scope is in_scope and judged.scope_threshold == (2.0 if in_scope else 0.5)
        assert (judged.status == OUT_OF_SCOPE) is not in_scope


def test_card_scope_section_and_gate_from_card(tiny_card_dir: Path) -> None:
    card, card_dir = load_card(tiny_card_dir)
    weights_sha = card.sha256
    feats, labels = _two_blobs(dim=4)
    stats = fit_stats(feats, labels, ("penultimate",))
    sha = save_stats(stats, card_dir / "scope.safetensors")
    updated = ModelCard.model_validate({**card.model_dump(), "scope": _section(sha, 1.0).model_dump()})
    from bonecls.weights import write_card

    write_card(updated, card_dir)
    reloaded, _ = load_card(card_dir)
    assert reloaded.sha256 == weights_sha and reloaded.scope == updated.scope
    assert ScopeGate.from_card(reloaded, card_dir).stats.dim == 4
    with pytest.raises(WeightsError, match="no learned scope"):
        ScopeGate.from_card(card, card_dir)
    with pytest.raises(ValueError):
        ScopeSection(sha256="xyz", threshold=1.0, in_scope_rate=0.975)
    with pytest.raises(ValueError):
        ScopeSection(sha256=sha, threshold=1.0, in_scope_rate=0.975, stats_file="../x.safetensors")


def test_fit_command_writes_stats_and_card_but_not_weights(tiny_card_dir: Path, tmp_path: Path) -> None:
    from bonecls.scope.fit import main

    rng = np.random.default_rng(0)
    for name, count in (("fit", 150), ("thr", 40), ("eval", 40)):
        folder = tmp_path / name
        folder.mkdir()
        for i in range(count):
            img = (rng.random((48, 48)) * 120 + 60).astype(np.uint8)
            Image.fromarray(img).save(folder / f"{i:03d}.png")
    weights_sha = sha256_file(tiny_card_dir / "model.safetensors")
    rc = main(
        [
            "--card",
            str(tiny_card_dir),
            "--fit-images",
            str(tmp_path / "fit"),
            "--threshold-images",
            str(tmp_path / "thr"),
            "--eval-images",
            str(tmp_path / "eval"),
            "--in-scope-rate",
            "0.95",
        ]
    )
    assert rc == 0
    card, _ = load_card(tiny_card_dir)
    assert card.scope is not None and card.scope.in_scope_rate == 0.95
    assert sha256_file(tiny_card_dir / "model.safetensors") == weights_sha == card.sha256
    assert card.scope.sha256 == sha256_file(tiny_card_dir / "scope.safetensors")
    assert card.scope.metrics["n_fit"] == 150 and 0.0 <= card.scope.metrics["heldout_in_scope_rate"] <= 1.0
    assert (
        main(
            [
                "--card",
                str(tiny_card_dir),
                "--fit-images",
                str(tmp_path / "none"),
                "--threshold-images",
                str(tmp_path / "thr"),
            ]
        )
        == 1
    )

    # --keep-stats: new thresholds, one per answer, on the same statistics
    from bonecls.scope.extract import ModelFeatures, image_files, load_images

    many = tmp_path / "thr-many"
    many.mkdir()
    for i in range(120):  # one of the two answers gets at least 60 images
        Image.fromarray((rng.random((48, 48)) * 120 + 60).astype(np.uint8)).save(many / f"{i:03d}.png")
    stats_sha = card.scope.sha256
    argv = ["--card", str(tiny_card_dir), "--threshold-images", str(many)]
    assert main([*argv, "--keep-stats", "--fit-images", str(tmp_path / "fit")]) == 2  # one or the other
    assert main([*argv, "--keep-stats", "--layers", "penultimate"]) == 2  # the statistics fix the layers
    assert main([*argv, "--keep-stats"]) == 0
    card, _ = load_card(tiny_card_dir)
    scope = card.scope
    assert scope.sha256 == stats_sha == sha256_file(tiny_card_dir / "scope.safetensors")
    assert scope.in_scope_rate == 0.95 and scope.metrics["n_fit"] == 150  # the card's own rate and fit
    assert scope.answer_thresholds is not None and sum(scope.metrics["n_threshold_by_answer"].values()) == 120
    feats, answers, _ = ModelFeatures.from_card(
        tiny_card_dir, ScopeGate.from_card(card, tiny_card_dir).layers
    )(load_images(image_files(many)))
    scores = ScopeGate.from_card(card, tiny_card_dir).stats.score(feats)
    for k, limit in enumerate(scope.answer_thresholds):
        mine = scores[answers == k]
        if mine.size >= 40:  # an answer with enough images keeps its stated share
            assert np.mean(mine <= limit) >= 0.95
    assert main([*argv, "--keep-stats", "--pooled"]) == 0
    pooled, _ = load_card(tiny_card_dir)
    assert pooled.scope.answer_thresholds is None and pooled.scope.threshold == choose_threshold(scores, 0.95)


def test_risk_coverage_and_aurc() -> None:
    errors = np.array([0, 0, 0, 0, 1, 1], dtype=float)
    perfect = np.array([1, 2, 3, 4, 5, 6], dtype=float)
    coverage, risk = risk_coverage(perfect, errors)
    np.testing.assert_allclose(coverage, np.arange(1, 7) / 6)
    np.testing.assert_allclose(risk[:4], 0.0)
    assert aurc(perfect, errors) < aurc(perfect[::-1], errors)
    assert aurc(perfect, errors) == pytest.approx(np.mean(risk))


# -- the shipped models on real films --------------------------------------------------------------


def _shipped_gate(model_id: str):
    """(ModelFeatures, ScopeGate) of a shipped model, its statistics verified against its card."""
    from bonecls.scope.extract import ModelFeatures

    card, card_dir = load_card(weights_root() / model_id)
    if card.scope is None:
        pytest.skip(f"{model_id} has no fitted scope yet")
    gate = ScopeGate.from_card(card, card_dir)
    return ModelFeatures.from_card(card_dir, gate.layers), gate


@pytest.fixture(scope="module")
def real_films() -> dict[str, dict]:
    paths = real_film_paths()
    if len(paths) < 3:
        pytest.skip("pydicom-data / deid-data are not installed (requirements-dev.txt)")
    return {name: three_forms(path) for name, path in paths.items()}


@pytest.mark.parametrize("model_id", SHIPPED)
def test_shipped_model_refuses_leg_and_cat_in_every_form(model_id: str, real_films, monkeypatch) -> None:
    monkeypatch.delenv("BONECLS_WEIGHTS", raising=False)
    features, gate = _shipped_gate(model_id)
    for film in ("RG3 lower leg AP", "cat thorax"):
        images = [real_films[film][form] for form in FORMS]
        feats, answers, _ = features(images)
        for form, image, row, answer in zip(FORMS, images, feats, answers, strict=True):
            # against its answer's threshold, and the pooled one
            for verdict in (gate.verdict(image, row[None], int(answer)), gate.verdict(image, row[None])):
                assert not verdict.in_scope, (model_id, film, form, verdict)
                assert verdict.reasons


@pytest.mark.parametrize("model_id", ("fracture", "threeclass"))
def test_no_model_calls_the_real_chest_fractured(model_id: str, real_films, monkeypatch) -> None:
    monkeypatch.delenv("BONECLS_WEIGHTS", raising=False)
    features, gate = _shipped_gate(model_id)
    card = features.card
    images = [real_films["RG1 adult chest PA"][form] for form in FORMS]
    feats, answers, logits = features(images)
    for form, image, row, answer, z in zip(FORMS, images, feats, answers, logits, strict=True):
        probs = torch.softmax(torch.as_tensor(z, dtype=torch.float64) / card.temperature, 0).numpy()
        suspicion = sum(probs[card.class_names.index(c)] for c in card.positive_classes)
        answered_fractured = suspicion >= card.thresholds.positive_at
        in_scope = gate.verdict(image, row[None], int(answer)).in_scope  # against its answer's threshold
        assert not (in_scope and answered_fractured), (model_id, form)
