"""Stratified, seeded train/val/test splits -- by image, or by patient group so no patient spans splits.

A patient's views (and a study's images) are correlated: split by image, a model is tested on the other
view of a wrist it trained on and the test figures flatter it. :func:`stratified_split` with ``groups``
keeps every group whole in one split, stratified by the group's label and sized by its image count.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence

import numpy as np

from bonecls.errors import DataError

SPLITS = ("train", "val", "test")


def _check_fractions(fractions: Sequence[float], names: Sequence[str]) -> np.ndarray:
    fr = np.asarray(fractions, dtype=float)
    if (
        fr.ndim != 1
        or len(fr) != len(names)
        or (fr < 0).any()
        or not math.isclose(fr.sum(), 1.0, abs_tol=1e-6)
    ):
        raise DataError(
            f"Split fractions must be {len(names)} non-negative numbers that add up to 1; got "
            f"{list(fractions)}."
        )
    return fr


def stratified_split(
    labels: Sequence[int] | np.ndarray,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    names: Sequence[str] = SPLITS,
    *,
    groups: Sequence[Hashable] | None = None,
) -> list[str]:
    """Split names (``train``/``val``/``test``) for each item, stratified by label and reproducible.

    Without ``groups`` (or when every group is a single item) the items of each class are shuffled with
    ``seed`` and cut by ``fractions``; rounding uses largest remainders so every class's counts add up
    and no split gets more than its share. Classes with at least ``len(fractions)`` items put at least
    one item in every split with a non-zero fraction. These splits are the ones bonecls always made, so
    image-level sets (FracAtlas) keep their split.

    With ``groups`` (one key per item: a patient), see :func:`_grouped_split`: no group is cut.
    """
    fr = _check_fractions(fractions, names)
    y = np.asarray(labels)
    if groups is not None:
        if len(groups) != len(y):
            raise ValueError(f"{len(groups)} group keys for {len(y)} labels.")
        if len(set(groups)) < len(y):
            return _grouped_split(y, list(groups), fr, names, seed)
    out = np.empty(len(y), dtype=object)
    rng = np.random.default_rng(seed)
    for cls in sorted(set(y.tolist())):
        idx = np.flatnonzero(y == cls)
        idx = idx[rng.permutation(len(idx))]
        n = len(idx)
        exact = fr * n
        counts = np.floor(exact).astype(int)
        for j in np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]:
            counts[j] += 1
        if n >= int((fr > 0).sum()):  # give small non-zero splits at least one example
            for j in np.flatnonzero((fr > 0) & (counts == 0)):
                donor = int(np.argmax(counts))
                counts[donor] -= 1
                counts[j] += 1
        start = 0
        for name, c in zip(names, counts, strict=True):
            out[idx[start : start + c]] = name
            start += c
    return out.tolist()


def _group_label(labels: np.ndarray) -> int:
    """A group's stratum: its most frequent label; a tie goes to the higher label (the finding)."""
    counts = Counter(labels.tolist())
    return max(counts, key=lambda c: (counts[c], c))


def _grouped_split(
    y: np.ndarray, groups: list[Hashable], fr: np.ndarray, names: Sequence[str], seed: int
) -> list[str]:
    """Whole groups to splits: per stratum (the group's label) the groups are shuffled with ``seed``
    (in order of first appearance, so the hash salt of a key never changes the split) and each goes to
    the split furthest below its share of the stratum's images. A stratum with at least as many groups
    as non-zero splits gives each such split at least one group."""
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    keys = list(members)
    strata: dict[int, list[int]] = {}
    for k, g in enumerate(keys):
        strata.setdefault(_group_label(y[members[g]]), []).append(k)
    rng = np.random.default_rng(seed)
    out = np.empty(len(y), dtype=object)
    live = np.flatnonzero(fr > 0)
    for label in sorted(strata):
        order = np.asarray(strata[label])[rng.permutation(len(strata[label]))]
        sizes = np.asarray([len(members[keys[k]]) for k in order], dtype=float)
        target = fr * sizes.sum()
        filled = np.zeros(len(fr))
        chosen = np.empty(len(order), dtype=int)
        for n, size in enumerate(sizes):
            deficit = np.where(fr > 0, target - filled, -np.inf)
            j = int(np.argmax(deficit))
            chosen[n] = j
            filled[j] += size
        if len(order) >= len(live):  # every non-zero split gets a group
            for j in live:
                if (chosen == j).any():
                    continue
                donor = max(live, key=lambda d: int((chosen == d).sum()))
                picks = np.flatnonzero(chosen == donor)
                chosen[picks[np.argmin(sizes[picks])]] = j
        for k, j in zip(order, chosen, strict=True):
            out[members[keys[k]]] = names[j]
    return out.tolist()


def class_counts(labels: Iterable[int], num_classes: int) -> list[int]:
    c = Counter(int(v) for v in labels)
    return [c.get(i, 0) for i in range(num_classes)]
