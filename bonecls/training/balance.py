"""Class imbalance in the PyTorch trainer: ``--balance sampler|weights|none``.

FracAtlas is 717 fractured of 4,083 images; left alone, a classifier learns that "not fractured" is
usually right. Two remedies, chosen with ``--balance``:

* ``weights`` (the default, as before): the loss weighs each class by its inverse frequency
  (:func:`bonecls.training.engine.class_weights`); every image is seen once per epoch.
* ``sampler``: each epoch draws as many images as the training split holds, with replacement, each
  class equally likely (:class:`DistributedWeightedSampler`); the loss is unweighted. Under DDP/FSDP
  every rank draws the same epoch-seeded sequence and keeps its own stride of it, so the ranks read
  disjoint shares of one balanced draw, as ``DistributedSampler`` does for a shuffle.
* ``none``: neither.

``--class-weights inverse|none`` (the flag before ``--balance``) stays as an alias of
``--balance weights|none``, so old commands and presets still run and mean what they meant.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from bonecls.training import TrainingError

BALANCE_MODES = ("sampler", "weights", "none")
DEFAULT_BALANCE = "weights"
_ALIAS = {"inverse": "weights", "none": "none"}


def add_balance_args(g: argparse._ArgumentGroup) -> None:
    """``--balance`` and its old alias ``--class-weights`` (both default to None: resolved later)."""
    g.add_argument(
        "--balance",
        choices=BALANCE_MODES,
        default=None,
        help="against class imbalance: 'weights' (inverse-frequency loss weights), 'sampler' (each class "
        f"drawn equally often, with replacement; works under DDP) or 'none'; default {DEFAULT_BALANCE}",
    )
    g.add_argument(
        "--class-weights",
        choices=sorted(_ALIAS),
        default=None,
        help="older spelling: 'inverse' = --balance weights, 'none' = --balance none",
    )


def resolve_balance(balance: str | None, class_weights: str | None) -> str:
    """The balance mode of ``--balance`` and/or its alias ``--class-weights``; refuses a contradiction."""
    alias = _ALIAS[class_weights] if class_weights is not None else None
    if balance is not None and alias is not None and balance != alias:
        raise TrainingError(
            f"--balance {balance} contradicts --class-weights {class_weights} (= --balance {alias}); "
            "give only --balance."
        )
    return balance or alias or DEFAULT_BALANCE


def balanced_sample_weights(labels: Sequence[int] | np.ndarray, num_classes: int) -> torch.Tensor:
    """Per image ``1 / n_c`` for its class ``c``: every class present gets the same total weight."""
    y = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    return torch.as_tensor(1.0 / counts[y], dtype=torch.double)


class DistributedWeightedSampler(Sampler[int]):
    """``WeightedRandomSampler`` (with replacement) that shards its draw across ranks.

    Each epoch (:meth:`set_epoch`) every rank draws the same ``ceil(n / world) * world`` indices from a
    generator seeded with ``seed + epoch`` and keeps ``draw[rank::world]``: ``ceil(n / world)`` indices
    per rank, so all ranks take the same number of steps. At world size 1 it is a seeded
    ``WeightedRandomSampler`` drawing ``n`` indices.
    """

    def __init__(
        self,
        weights: torch.Tensor | Sequence[float],
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
    ) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        if self.weights.ndim != 1 or len(self.weights) == 0 or not bool((self.weights >= 0).all()):
            raise ValueError("weights must be a non-empty 1-D sequence of non-negative numbers.")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas}).")
        self.num_replicas, self.rank, self.seed, self.epoch = num_replicas, rank, seed, 0
        self.num_samples = math.ceil(len(self.weights) / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        draw = torch.multinomial(self.weights, self.total_size, replacement=True, generator=g)
        return iter(draw[self.rank : self.total_size : self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples
