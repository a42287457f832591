"""A card's limitations are composed from the evidence on the card (bonecls.card_limitations): the
held-out figures, the targets they miss, and the real films tried with the card's present gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scope_corpus import SHIPPED

from bonecls.card_limitations import (
    compose_limitations,
    current_repeats,
    real_films_current,
    refresh_limitations,
)
from bonecls.weights import ModelCard, load_card, weights_root


def _card(**fields) -> ModelCard:
    base = {
        "id": "c",
        "task": "fracture",
        "architecture": "simple_cnn",
        "class_names": ["not fractured", "fractured"],
        "positive_classes": ["fractured"],
        "input_size": 64,
        "normalization": {"mean": [0.5], "std": [0.25]},
        "training_data": "Synthetic phantom radiographs (test)",
    }
    return ModelCard(**{**base, **fields})


def _held_out(auc: float, lift: float, pointing: float, ct_auc: float, ct_spec: float) -> dict:
    sets = {
        "ct=lung1": {"roc_auc": ct_auc, "f1_macro": 0.5, "at_positive_at": {"specificity": ct_spec}},
        "chain=log": {"roc_auc": auc + 0.01, "f1_macro": 0.9, "at_positive_at": {"specificity": 0.9}},
    }
    pooled = {"roc_auc_mean": auc, "f1_macro_mean": 0.7, "lift": lift, "pointing": pointing}
    return {"held_out_variants": {"sets": sets, "pooled": pooled}}


@pytest.mark.parametrize("model_id", SHIPPED)
def test_each_shipped_card_states_its_own_evidence(model_id: str, monkeypatch) -> None:
    """The sentence on the card is the composed one, and its real-film results were measured with the
    gate the card has now (a refit without re-measuring fails here)."""
    monkeypatch.delenv("BONECLS_WEIGHTS", raising=False)
    card, _ = load_card(weights_root() / model_id)
    assert card.limitations == compose_limitations(card)
    assert real_films_current(card), f"re-measure: bench/bench_scope.py --models {model_id} --write-card"
    films = card.scope.metrics["real_films"]
    assert films["n"] == films["refused"] + len(films["answered"]) and films["n"] >= 9


def test_an_unscored_phantom_model_says_so() -> None:
    text = compose_limitations(_card())
    assert "Not yet scored on held-out rendering variants" in text
    assert "no scope gate: it answers every image" in text and "not for clinical use" in text


def test_missed_targets_and_the_weakest_set_are_named() -> None:
    text = compose_limitations(_card(evaluation=_held_out(0.80, 0.85, 0.75, 0.70, 0.5)))
    assert "ROC-AUC 0.800 pooled (0.700 on the other CT)" in text
    assert "It misses its held-out targets (ROC-AUC ≥ 0.93, lift ≥ 90%)" in text
    assert "weakest on the other CT, where its specificity at the card's positive cut is 0.50" in text
    near = compose_limitations(_card(evaluation=_held_out(0.95, 0.95, 0.697, 0.94, 0.9)))
    assert "lands on the fracture in 69.7%" in near and "targets (pointing ≥ 0.70)" in near  # not "70%"
    met = compose_limitations(_card(evaluation=_held_out(0.95, 0.95, 0.75, 0.94, 0.9)))
    assert "It meets its held-out targets; weakest on the other CT." in met and "specificity" not in met


def test_the_scope_gates_answers_on_the_held_out_images_are_stated() -> None:
    evaluation = _held_out(0.80, 0.85, 0.75, 0.70, 0.5)
    held = evaluation["held_out_variants"]
    held["pooled"]["scope"] = {"answered": 0.785, "answered_lesion": 0.75, "answered_lesion_free": 0.82}
    held["sets"]["ct=lung1"]["scope"] = {"answered": 0.46}
    text = compose_limitations(_card(evaluation=evaluation))
    assert (
        "Its scope gate answers 78.5% of these images (46.0% on the other CT): 75.0% of those with a "
        "fracture, 82.0% of those without; it refuses the rest." in text
    )
    assert "scope gate answers" not in compose_limitations(
        _card(evaluation=_held_out(0.8, 0.85, 0.75, 0.7, 0.5))
    )


def test_the_models_page_table_holds_every_current_exam_of_a_shipped_card(monkeypatch) -> None:
    from bonecls.ui.pages.model_cards import held_out_table

    monkeypatch.delenv("BONECLS_WEIGHTS", raising=False)
    card, _ = load_card(weights_root() / "fracture")
    rows = held_out_table(card)
    exams = [card.evaluation["held_out_variants"], *current_repeats(card)]
    assert len(exams) >= 2 and len(rows) == 4 * len(exams)  # three sets and the pooled row per exam
    for exam, pooled in zip(exams, [r for r in rows if r["set"] == "pooled"], strict=True):
        assert pooled["seed"] == str(exam["seed"])
        low, high = exam["pooled"]["ci95"]["roc_auc_mean"]  # every shipped exam carries its interval
        assert pooled["figure"] == f"ROC-AUC {exam['pooled']['roc_auc_mean']:.3f} [{low:.3f}–{high:.3f}]"
        low, high = exam["pooled"]["ci95"]["lift"]
        assert pooled["lift"] == f"{100 * exam['pooled']['lift']:.1f}% [{100 * low:.1f}%–{100 * high:.1f}%]"
        assert pooled["gate answers"].startswith(f"{100 * exam['pooled']['scope']['answered']:.1f}%")
    assert held_out_table(_card()) == []


def test_the_models_page_states_each_answers_scope_threshold(monkeypatch) -> None:
    from bonecls.ui.pages.model_cards import scope_gate_line

    monkeypatch.delenv("BONECLS_WEIGHTS", raising=False)
    for model_id in ("fracture", "threeclass"):
        card, _ = load_card(weights_root() / model_id)
        assert card.scope is not None and card.scope.answer_thresholds is not None
        line = scope_gate_line(card.class_names, card.scope)
        kept = card.scope.metrics["heldout_in_scope_by_answer"]
        for name, limit in zip(card.class_names, card.scope.answer_thresholds, strict=True):
            assert f"{name} {limit:.4g}" in line and f"{name} {kept[name]:.1%}" in line
        assert "given that answer" in line
    # pneumonia-cls kept its pooled threshold (BENCHMARKS: it let the other CT's normal films through);
    # a detector has one class
    for model_id in ("pneumonia-cls", "pneumonia-det"):
        card, _ = load_card(weights_root() / model_id)
        assert card.scope is not None and card.scope.answer_thresholds is None
        line = scope_gate_line(card.class_names, card.scope)
        assert f"threshold {card.scope.threshold:.4g}" in line and "per answer" not in line


def test_each_target_is_judged_on_every_current_exam() -> None:
    evaluation = _held_out(0.95, 0.95, 0.75, 0.94, 0.9)
    main = evaluation["held_out_variants"]
    main.update(seed=9101, set_format=2)
    repeat = {
        "seed": 9102,
        "set_format": 2,
        "model_sha256": "ab" * 32,
        "pooled": {"roc_auc_mean": 0.94, "lift": 0.88, "pointing": 0.72},
    }
    evaluation["held_out_repeats"] = {"9102": repeat}
    card = _card(evaluation=evaluation, sha256="ab" * 32)
    assert [r["seed"] for r in current_repeats(card)] == [9102]
    text = compose_limitations(card)
    assert "(seed 9102) gives ROC-AUC 0.940, lift 88.0%, pointing 72.0% (evaluation.held_out_repeats)" in text
    assert "It misses its held-out targets (lift ≥ 90% on 1 of 2 exams)" in text
    two = {
        **evaluation,
        "held_out_repeats": {
            "9102": repeat,
            "9103": {
                **repeat,
                "seed": 9103,
                "pooled": {"roc_auc_mean": 0.95, "lift": 0.91, "pointing": 0.71},
            },
        },
    }
    text = compose_limitations(_card(evaluation=two, sha256="ab" * 32))
    assert "Repeat exams on fresh renders of the same variants give ROC-AUC 0.940" in text
    assert "pointing 72.0% (seed 9102); ROC-AUC 0.950, lift 91.0%, pointing 71.0% (seed 9103)" in text
    assert "(lift ≥ 90% on 1 of 3 exams)" in text
    # a repeat of other weights or of other variants does not count
    for stale in ({"model_sha256": "cd" * 32}, {"set_format": 1}):
        other = _card(
            evaluation={**evaluation, "held_out_repeats": {"9102": {**repeat, **stale}}}, sha256="ab" * 32
        )
        assert current_repeats(other) == []
        assert "It meets its held-out targets" in compose_limitations(other)


def test_intervals_are_stated_and_a_miss_inside_its_interval_is_said_so() -> None:
    evaluation = _held_out(0.80, 0.89, 0.75, 0.70, 0.5)
    pooled = evaluation["held_out_variants"]["pooled"]
    pooled["ci95"] = {"roc_auc_mean": [0.771, 0.829], "lift": [0.85, 0.93], "pointing": [0.70, 0.80]}
    text = compose_limitations(_card(evaluation=evaluation))
    assert "ROC-AUC 0.800 pooled (95% interval 0.771–0.829; 0.700 on the other CT)" in text
    # ROC-AUC is missed beyond doubt; lift 0.89 is missed, but 0.90 lies inside its interval
    assert "It misses its held-out targets (ROC-AUC ≥ 0.93, lift ≥ 90%, within its 95% interval)" in text
    repeat = {"seed": 9102, "set_format": None, "model_sha256": "ab" * 32}
    repeat["pooled"] = {"roc_auc_mean": 0.81, "lift": 0.88, "pointing": 0.72, "ci95": {"lift": [0.84, 0.92]}}
    two = _card(evaluation={**evaluation, "held_out_repeats": {"9102": repeat}}, sha256="ab" * 32)
    assert "lift ≥ 90%, within the 95% interval of each exam" in compose_limitations(two)
    repeat["pooled"]["ci95"]["lift"] = [0.84, 0.89]
    assert "lift ≥ 90%, within the 95% interval on 1 of the 2 exams that miss it" in compose_limitations(two)
    repeat["pooled"]["lift"] = 0.91
    assert "lift ≥ 90% on 1 of 2 exams, within that exam's 95% interval" in compose_limitations(two)


def test_a_missing_pooled_figure_is_said_not_measured() -> None:
    evaluation = _held_out(0.80, 0.85, 0.75, 0.70, 0.9)
    evaluation["held_out_variants"]["pooled"]["roc_auc_mean"] = None
    text = compose_limitations(_card(evaluation=evaluation))
    assert "ROC-AUC not measured pooled" in text and "(ROC-AUC ≥ 0.93, lift ≥ 90%)" in text


def test_three_class_is_judged_by_macro_f1() -> None:
    card = _card(
        task="threeclass",
        class_names=["healthy", "fractured", "beyond repair"],
        positive_classes=["fractured", "beyond repair"],
        evaluation=_held_out(0.95, 0.95, 0.75, 0.94, 0.9),
    )
    text = refresh_limitations(card).limitations
    assert "macro-F1 0.700 pooled (0.500 on the other CT)" in text and "(macro-F1 ≥ 0.85)" in text


def _images(folder: Path, count: int, seed: int) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray((rng.random((48, 48)) * 120 + 60).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def test_real_films_follow_the_gate_they_were_measured_with(tiny_card_dir: Path, tmp_path: Path) -> None:
    """Recorded real films count while the gate is the same; a refit keeps them but marks them out of
    date in the sentence, until they are measured again."""
    from bonecls.scope.fit import main, record_real_films

    fit, thr = _images(tmp_path / "fit", 150, 0), _images(tmp_path / "thr", 40, 1)
    assert main(["--card", str(tiny_card_dir), "--fit-images", str(fit), "--threshold-images", str(thr)]) == 0
    card, _ = load_card(tiny_card_dir)
    assert "has not been tried on real radiographs yet" in card.limitations
    ratios = {"RG1": [2.0, 2.0, 1.9], "RG3": [2.5] * 3, "cat": [1.8] * 3}
    entry = {"films": "RG1, RG3, cat; each as dicom, png, crop", "n": 9, "refused": 8, "raw_positive": 4}
    entry["score_over_threshold"] = ratios
    card = record_real_films(tiny_card_dir, {**entry, "answered": {"RG1 (crop)": "negative"}})
    assert real_films_current(card) and load_card(tiny_card_dir)[0] == card
    assert "answers 1 of 3 real films as 9 images" in card.limitations
    assert "Without the gate it would call 4 of those 9 images positive." in card.limitations
    argv = ["--card", str(tiny_card_dir), "--fit-images", str(fit), "--threshold-images", str(thr)]
    assert main([*argv, "--in-scope-rate", "0.9"]) == 0
    refit, _ = load_card(tiny_card_dir)
    assert refit.scope.metrics["real_films"]["n"] == 9 and not real_films_current(refit)
    assert "real-film results on this card are out of date" in refit.limitations
    again = record_real_films(tiny_card_dir, {**entry, "refused": 9, "answered": {}})
    assert "refuses every real radiograph it was tried on: 3 real films as 9 images" in again.limitations
    # new thresholds on the same statistics (one per answer) also make the real films out of date
    many = _images(tmp_path / "thr-many", 120, 2)  # one of the two answers has at least 60 images
    assert main(["--card", str(tiny_card_dir), "--keep-stats", "--threshold-images", str(many)]) == 0
    rethresholded, _ = load_card(tiny_card_dir)
    assert rethresholded.scope.sha256 == again.scope.sha256 and rethresholded.scope.answer_thresholds
    assert not real_films_current(rethresholded)
    assert "real-film results on this card are out of date" in rethresholded.limitations
