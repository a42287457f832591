"""The pooled held-out figures' 95% intervals: a bootstrap over render groups that reproduces the figures
it resamples, brackets them, repeats with its seed and narrows with more pairs."""

from __future__ import annotations

import numpy as np
import pytest
from test_held_out import faint_and_bright_pairs, synthetic_pairs, tiny_predictor

from bonecls.training.held_out import pooled_figures, set_figures_and_outputs
from bonecls.training.held_out_intervals import (
    SetOutputs,
    group_members,
    paired_differences,
    pooled_intervals,
    set_intervals,
)


def _outputs(n_groups: int, seed: int, separation: float = 1.0) -> SetOutputs:
    """Pairs whose lesion image scores ``separation`` higher on average, with noise; half the lesion
    images explained, a random three quarters of those hit."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), 2)
    labels = np.tile([0, 1], n_groups)
    score = rng.normal(0.0, 1.0, 2 * n_groups) + separation * labels
    explained = np.arange(0, n_groups, 2)
    return SetOutputs(
        groups=groups,
        labels=labels,
        predicted=(score > separation / 2).astype(np.int64),
        positive=labels == 1,
        score=score,
        pair_groups=np.arange(n_groups),
        pair_rises=score[1::2] - score[0::2],
        hit_groups=explained,
        hits=rng.random(explained.size) < 0.75,
        n_classes=2,
    )


@pytest.mark.filterwarnings("ignore:The heat map is empty")
def test_outputs_reproduce_the_figures_of_their_set() -> None:
    figures, outputs = set_figures_and_outputs(tiny_predictor(True), faint_and_bright_pairs(6, 3), margin=1)
    again = outputs.figures()
    for key in ("n", "pairs", "images"):
        assert again[key] == figures[key]
    for key in ("roc_auc", "f1_macro", "lift", "pointing"):
        assert again[key] == pytest.approx(figures[key])
    assert figures["lift"] < 1.0  # the faint lesions do not all rise: a figure with room to move


def test_a_drawn_group_brings_all_its_rows_as_often_as_it_is_drawn() -> None:
    ids = np.array([5, 3, 5, 1, 3, 5])
    rows = group_members(ids, np.array([5, 5, 1]))
    assert sorted(rows.tolist()) == [0, 0, 2, 2, 3, 5, 5]
    assert group_members(ids, np.array([], dtype=np.int64)).size == 0


def test_intervals_bracket_the_pooled_figures_repeat_with_their_seed_and_narrow_with_more_pairs() -> None:
    small = [_outputs(40, seed) for seed in (0, 1, 2)]
    large = [_outputs(400, seed) for seed in (0, 1, 2)]
    point = pooled_figures({str(i): o.figures() for i, o in enumerate(small)})
    first = pooled_intervals(small, resamples=300, seed=4)
    assert first == pooled_intervals(small, resamples=300, seed=4)
    assert first != pooled_intervals(small, resamples=300, seed=5)
    assert first["bootstrap"]["resamples"] == 300 and "render group" in first["bootstrap"]["unit"]
    for key, (low, high) in first["ci95"].items():
        assert low <= point[key] <= high, key
    wide = {k: hi - lo for k, (lo, hi) in first["ci95"].items()}
    narrow = {k: hi - lo for k, (lo, hi) in pooled_intervals(large, resamples=300, seed=4)["ci95"].items()}
    for key in wide:
        assert narrow[key] < 0.6 * wide[key], key  # ten times the groups: about a third of the width


def test_a_figure_no_draw_can_define_has_no_interval() -> None:
    one_class = _outputs(30, 0)
    no_lesion = SetOutputs(
        groups=np.arange(30),
        labels=np.zeros(30, dtype=np.int64),
        predicted=np.zeros(30, dtype=np.int64),
        positive=np.zeros(30, dtype=bool),
        score=np.zeros(30),
        pair_groups=np.zeros(0, dtype=np.int64),
        pair_rises=np.zeros(0),
        hit_groups=np.zeros(0, dtype=np.int64),
        hits=np.zeros(0, dtype=bool),
        n_classes=2,
    )
    out = pooled_intervals([no_lesion], resamples=50)["ci95"]
    assert out["roc_auc_mean"] is None and out["lift"] is None and out["pointing"] is None
    assert out["f1_macro_mean"] is not None
    both = pooled_intervals([no_lesion, one_class], resamples=50)["ci95"]
    assert all(v is not None for v in both.values())  # the set with lesions defines them


def test_a_model_that_always_sees_the_lesion_has_a_point_interval_for_lift() -> None:
    figures, outputs = set_figures_and_outputs(tiny_predictor(True), synthetic_pairs(8), margin=1)
    assert figures["lift"] == 1.0
    assert pooled_intervals([outputs], resamples=100)["ci95"]["lift"] == [1.0, 1.0]


def test_paired_differences_use_the_same_draws_for_both_models() -> None:
    base = [_outputs(60, seed) for seed in (0, 1)]
    for key, d in paired_differences(base, base, resamples=200).items():
        assert d["difference"] == 0.0 and d["ci95"] == [0.0, 0.0] and d["other_higher"] == 0.0, key
    better = [
        SetOutputs(**{**o.__dict__, "pair_rises": o.pair_rises + 0.5, "score": o.score + 0.8 * o.labels})
        for o in base
    ]
    diffs = paired_differences(base, better, resamples=300, seed=1)
    assert (
        diffs["lift"]["difference"] > 0
        and diffs["lift"]["ci95"][0] > 0
        and diffs["lift"]["other_higher"] > 0.97
    )
    assert diffs["roc_auc_mean"]["ci95"][0] > 0 and diffs["pointing"]["difference"] == 0.0
    alone = pooled_intervals(base, resamples=300, seed=1)["ci95"]["lift"]
    paired = diffs["lift"]["ci95"]
    assert paired[1] - paired[0] < alone[1] - alone[0]  # the shared draws cancel the sets' own noise
    with pytest.raises(ValueError, match="same held-out sets"):
        paired_differences(base, [_outputs(60, 0), _outputs(61, 1)])


def test_a_sets_own_intervals_are_the_pooled_bootstrap_on_that_set_alone() -> None:
    one = _outputs(80, 3)
    own = set_intervals(one, resamples=200, seed=2)
    pooled = pooled_intervals([one], resamples=200, seed=2)["ci95"]
    assert own == {
        "roc_auc": pooled["roc_auc_mean"],
        "f1_macro": pooled["f1_macro_mean"],
        "lift": pooled["lift"],
        "pointing": pooled["pointing"],
    }
    figures = one.figures()
    for key, (low, high) in own.items():
        assert low <= figures[key] <= high, key
