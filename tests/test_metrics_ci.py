"""Headline metrics with 95% bootstrap intervals (both operating points, PR-AUC), resampling by patient,
and study-level aggregation."""

from __future__ import annotations

import numpy as np
import pytest

from bonecls.training.metrics import (
    HEADLINE,
    format_headline,
    headline_metrics,
    macro_f1,
    rank_auc,
    study_level,
)

CLASSES = ["not fractured", "fractured"]
POSITIVE = ["fractured"]
CUTS = {"doubt": 0.3, "positive": 0.7}


def scored(n: int, seed: int, separation: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Labels (30% positive) and two-class probabilities from a logistic score."""
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.3).astype(int)
    z = rng.normal(size=n) + separation * (2 * y - 1)
    p1 = 1 / (1 + np.exp(-z))
    return y, np.stack([1 - p1, p1], axis=1)


def test_every_headline_metric_has_an_interval_around_its_value() -> None:
    y, p = scored(400, 0)
    m = headline_metrics(y, p, CLASSES, POSITIVE, CUTS, n_bootstrap=300)
    for key in HEADLINE:
        lo, hi = m[key]["ci95"]
        assert lo <= m[key]["value"] <= hi and hi - lo > 0, key
    assert m["bootstrap"]["unit"] == "image" and m["n"] == 400
    assert m["sensitivity_doubt"]["value"] >= m["sensitivity_positive"]["value"]
    assert m["specificity_positive"]["value"] >= m["specificity_doubt"]["value"]
    assert "ROC-AUC 0." in format_headline(m) and "sens@doubt" in format_headline(m)
    assert headline_metrics(y, p, CLASSES, POSITIVE, CUTS, n_bootstrap=300) == m  # seeded


def test_sensitivity_interval_matches_the_binomial_width_and_shrinks_with_n() -> None:
    y, p = scored(2000, 1)
    m = headline_metrics(y, p, CLASSES, POSITIVE, CUTS, n_bootstrap=400)
    sens, n_pos = m["sensitivity_positive"]["value"], m["n_positive"]
    wald = 2 * 1.96 * np.sqrt(sens * (1 - sens) / n_pos)
    width = np.diff(m["sensitivity_positive"]["ci95"])[0]
    assert width == pytest.approx(wald, rel=0.25)
    small = headline_metrics(y[:200], p[:200], CLASSES, POSITIVE, CUTS, n_bootstrap=400)
    assert np.diff(small["roc_auc"]["ci95"])[0] > 2 * np.diff(m["roc_auc"]["ci95"])[0]


def test_resampling_by_patient_is_not_fooled_by_repeated_views() -> None:
    """Four identical views per patient: by image the interval is too narrow, by patient it is as wide
    as for one view each."""
    y, p = scored(150, 2)
    y4, p4 = np.repeat(y, 4), np.repeat(p, 4, axis=0)
    patients = np.repeat([f"p{i}" for i in range(150)], 4)
    one = np.diff(headline_metrics(y, p, CLASSES, POSITIVE, CUTS, n_bootstrap=300)["roc_auc"]["ci95"])[0]
    by_image = headline_metrics(y4, p4, CLASSES, POSITIVE, CUTS, n_bootstrap=300)
    by_patient = headline_metrics(y4, p4, CLASSES, POSITIVE, CUTS, groups=patients, n_bootstrap=300)
    assert by_patient["bootstrap"]["unit"] == "group"
    assert np.diff(by_image["roc_auc"]["ci95"])[0] < 0.7 * one
    assert np.diff(by_patient["roc_auc"]["ci95"])[0] == pytest.approx(one, rel=0.3)


def test_undefined_metrics_have_no_interval() -> None:
    y = np.zeros(20, dtype=int)
    p = np.tile([0.8, 0.2], (20, 1))
    m = headline_metrics(y, p, CLASSES, POSITIVE, CUTS, n_bootstrap=50)
    assert m["roc_auc"] == {"value": None, "ci95": None}
    assert m["sensitivity_doubt"]["value"] is None and m["specificity_doubt"]["value"] == 1.0


def test_study_level_max_rule() -> None:
    y = np.array([1, 1, 0, 0, 0])
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.6, 0.4], [0.95, 0.05]])
    labels, probs, keys = study_level(y, p, ["s1", "s1", "s2", "s2", "s3"], CLASSES, POSITIVE)
    assert keys == ["s1", "s2", "s3"] and labels.tolist() == [1, 0, 0]
    assert probs[:, 1].tolist() == pytest.approx([0.8, 0.4, 0.05])
    _, mean_probs, _ = study_level(y, p, ["s1", "s1", "s2", "s2", "s3"], CLASSES, POSITIVE, rule="mean")
    assert mean_probs[:, 1].tolist() == pytest.approx([0.45, 0.35, 0.05])
    with pytest.raises(ValueError, match="Unknown study rule"):
        study_level(y, p, ["a"] * 5, CLASSES, POSITIVE, rule="vote")


def test_fast_auc_and_macro_f1_equal_sklearn() -> None:
    from sklearn.metrics import f1_score, roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 300)
    score = np.round(rng.uniform(size=300), 1)  # many ties
    assert rank_auc(y == 1, score) == pytest.approx(roc_auc_score(y == 1, score), abs=1e-12)
    pred = rng.integers(0, 3, 300)
    pred[pred == 2] = 0  # a class never predicted
    ref = f1_score(y, pred, labels=[0, 1, 2], average="macro", zero_division=0)
    assert macro_f1(y, pred, 3) == pytest.approx(ref, abs=1e-12)
