"""``--balance sampler|weights|none``: what the trainer's sampler draws from an imbalanced split (counts,
not timings), that ranks share one balanced draw, and that ``--class-weights`` still means what it meant."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from bonecls.training import TrainingError
from bonecls.training import distributed as du
from bonecls.training.balance import DistributedWeightedSampler, balanced_sample_weights, resolve_balance
from bonecls.training.builders import RunData, RunSetup, build_loaders
from bonecls.training.classify import parse_args

LABELS = np.array([0] * 90 + [1] * 10)  # 10% positive, as imbalanced as FracAtlas and more


class _Split(Dataset):
    """Labels only: what the loaders read of a prepared split (image, label, index)."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        return torch.zeros(1, 4, 4, dtype=torch.uint8), int(self.labels[i]), i


def _drawn_labels(balance: str, epochs: int = 5, rank: int = 0, world: int = 1) -> np.ndarray:
    """Labels the trainer's own training loader yields over ``epochs`` (as :mod:`.classify` iterates)."""
    split = _Split(LABELS)
    args = argparse.Namespace(balance=balance, workers=0, batch_size=16, seed=3)
    info = du.DistInfo(world > 1, rank, world, rank, world, None, torch.device("cpu"))
    data = RunData({}, "fracture", ["neg", "pos"], ["pos"], split, split, split, [90, 10], 4, 0.0)
    loaders = build_loaders(RunSetup(args, info, data, Path("."), "t", Path(".")))
    seen = []
    for epoch in range(1, epochs + 1):
        loaders.train_sampler.set_epoch(epoch)
        seen += [labels.numpy() for _, labels, _ in loaders.train]
    return np.concatenate(seen)


def test_sampler_draws_the_minority_as_often_as_the_majority() -> None:
    shuffled = _drawn_labels("weights")
    balanced = _drawn_labels("sampler")
    assert len(shuffled) == len(balanced) == 5 * len(LABELS)  # an epoch is still one split's worth
    assert np.bincount(shuffled).tolist() == [450, 50]  # each image once per epoch: 10% positive
    assert 0.4 < balanced.mean() < 0.6  # with replacement, each class about half the draws
    assert _drawn_labels("none").mean() == pytest.approx(0.1)


def test_ranks_share_one_balanced_draw() -> None:
    weights = balanced_sample_weights(LABELS, 2)
    assert weights.sum().item() == pytest.approx(2.0)  # each class sums to one
    whole = DistributedWeightedSampler(weights, 1, 0, seed=7)
    halves = [DistributedWeightedSampler(weights, 2, r, seed=7) for r in (0, 1)]
    for s in (whole, *halves):
        s.set_epoch(4)
    a, b = (list(h) for h in halves)
    assert len(a) == len(b) == 50
    interleaved = [i for pair in zip(a, b, strict=True) for i in pair]
    assert interleaved == list(whole)  # disjoint strides of the very draw one process would make
    whole.set_epoch(5)
    assert interleaved != list(whole)  # a new draw each epoch
    # through the loaders under a world of two: equal steps, both balanced
    r0, r1 = (_drawn_labels("sampler", rank=r, world=2) for r in (0, 1))
    assert len(r0) == len(r1) == 5 * 50 and 0.35 < np.concatenate([r0, r1]).mean() < 0.65


def test_class_weights_is_an_alias_of_balance() -> None:
    assert resolve_balance(None, None) == "weights"  # today's default is kept
    assert resolve_balance(None, "inverse") == "weights" and resolve_balance(None, "none") == "none"
    assert resolve_balance("sampler", None) == "sampler" and resolve_balance("none", "none") == "none"
    with pytest.raises(TrainingError, match="contradicts"):
        resolve_balance("sampler", "inverse")
    base = ["--data", "d", "--output", "o"]
    assert parse_args([*base, "--class-weights", "none"]).balance == "none"
    assert parse_args([*base, "--balance", "sampler"]).balance == "sampler"
    with pytest.raises(SystemExit):
        parse_args([*base, "--balance", "none", "--class-weights", "inverse"])
