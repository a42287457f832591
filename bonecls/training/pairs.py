"""A ranking loss on with/without-lesion pairs of the same render (``--pair-loss``).

Paired phantoms (``bonecls phantom --paired``) render every pose, exposure, processing and noise
once per class: the images of one set differ only by their lesion. Cross-entropy on such images can
still be lowered by anything that correlates with the label over the whole data set; the ranking
loss cannot: for every lesion image it asks that the model's suspicion logit (log odds of any
positive class) exceeds that of the lesion-free image of its own set by a margin,
``softplus(margin - (s_lesion - s_free))``. What separates the two images is the lesion alone.

For it the training batches hold whole sets: :class:`PairSampler` shuffles sets, not images, and
each batch takes ``batch_size / k`` of them (``k`` = classes per set). Both images of a set get the
same augmentation draw (:func:`group_augment_table`), so the augmentation does not separate them
either. The set of an image comes from its phantom file name (``phantom_<index>``; index // k).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Sampler

from bonecls.errors import DataError

_PHANTOM_INDEX = re.compile(r"phantom_(\d+)\.\w+$")


def pair_groups(sources: Sequence[str], labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The set id of each image: its phantom index // ``num_classes``. Raises ``DataError`` unless
    every set is whole (one image of each class), i.e. the data was rendered ``--paired``."""
    groups = np.empty(len(sources), dtype=np.int64)
    for i, src in enumerate(sources):
        m = _PHANTOM_INDEX.search(str(src))
        if m is None:
            raise DataError(
                f"--pair-loss needs paired phantoms (bonecls phantom --paired); {src} is not a phantom file."
            )
        groups[i] = int(m.group(1)) // num_classes
    order = np.lexsort((labels, groups))  # by set, then by label
    k = num_classes
    whole = len(groups) % k == 0 and len(groups) > 0
    if whole:
        by_set = groups[order].reshape(-1, k)
        whole = bool(np.all(by_set == by_set[:, :1])) and np.array_equal(
            np.asarray(labels)[order].reshape(-1, k), np.tile(np.arange(k), (len(by_set), 1))
        )
    if not whole:
        raise DataError(
            "--pair-loss needs every render once per class (bonecls phantom --paired, classes of the "
            "task's own layout); this split has incomplete sets."
        )
    return groups


class PairSampler(Sampler[int]):
    """Image indices set by set, the sets shuffled per epoch (``set_epoch``) and shared out by rank; the
    images of a set follow each other, in label order, so batches of a multiple of ``k`` hold whole sets."""

    def __init__(
        self, groups: np.ndarray, labels: np.ndarray, *, rank: int = 0, world_size: int = 1, seed: int = 0
    ):
        self.seed, self.rank, self.world, self.epoch = seed, rank, world_size, 0
        order = np.lexsort((labels, groups))  # by set, then by label
        ids, starts = np.unique(groups[order], return_index=True)
        self.sets = np.split(order, starts[1:])
        self.per_rank = math.ceil(len(ids) / world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(len(self.sets), generator=g).tolist()
        perm += perm[: self.per_rank * self.world - len(perm)]  # pad so every rank gets as many sets
        for s in perm[self.rank :: self.world]:
            yield from self.sets[s].tolist()

    def __len__(self) -> int:
        return self.per_rank * len(self.sets[0]) if self.sets else 0


def group_augment_table(table: torch.Tensor, groups: np.ndarray) -> torch.Tensor:
    """``table`` (one augmentation draw per image) with every image of a set given its set's first draw."""
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    return table[torch.from_numpy(first[inverse])]


@dataclass
class PairRanking:
    """The ranking term of the loss: ``weight * mean softplus(margin - (s_lesion - s_free))``."""

    num_classes: int
    positive: Sequence[int]
    weight: float = 1.0
    margin: float = 2.0

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """For a batch of whole sets (consecutive ``k`` images, as :class:`PairSampler` yields them)."""
        k = self.num_classes
        if logits.shape[0] % k:
            raise ValueError(f"a batch of {logits.shape[0]} images does not hold whole sets of {k}")
        pos = torch.zeros(k, dtype=torch.bool, device=logits.device)
        pos[list(self.positive)] = True
        s = torch.logsumexp(logits[:, pos], dim=1) - torch.logsumexp(logits[:, ~pos], dim=1)
        s, lab = s.view(-1, k), labels.view(-1, k)
        free = ~pos[lab]  # (sets, k): the lesion-free image of each set
        if not torch.all(free.sum(dim=1) == 1):
            raise ValueError("every set in a batch needs exactly one lesion-free image")
        base = (s * free).sum(dim=1, keepdim=True)
        gaps = (s - base)[~free]
        return self.weight * F.softplus(self.margin - gaps).mean()
