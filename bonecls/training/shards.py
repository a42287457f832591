"""A torch Dataset over prepared shards (see :mod:`bonecls.prepare`): memory-mapped, uint8 out.

``ShardDataset(data_dir, split)[i]`` returns ``(image uint8 (1, S, S), label, i)`` -- the index lets the
evaluation loop de-duplicate the padding of a distributed sampler so metrics are exact. Shards are
opened lazily with ``np.load(mmap_mode="r")`` in each process (safe with DataLoader workers, fork or
spawn); nothing is decoded, converted or normalized here (that happens on the device).

:class:`EvalSampler` gives each rank a contiguous-free ``indices[rank::world]`` share padded to equal
length (so FSDP/DDP ranks run the same number of steps); the padding repeats indices that the
evaluator drops after gathering.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from bonecls.errors import DataError
from bonecls.prepare import load_index

#: The split name that reads every image of a prepared set (another site's data, none of it trained on).
ALL_SPLITS = "all"


class ShardDataset(Dataset):
    """One split of a prepared dataset (or every image, with ``split=ALL_SPLITS``), in index order."""

    def __init__(self, data_dir: str | os.PathLike, split: str, index: dict | None = None):
        self.root = Path(data_dir)
        self.index = index if index is not None else load_index(self.root)
        self.split = split
        self.class_names: list[str] = list(self.index["class_names"])
        self.size: int = int(self.index["size"])
        items = [it for it in self.index["items"] if split == ALL_SPLITS or it["split"] == split]
        if not items:
            raise DataError(f"The prepared dataset {self.root} has no '{split}' images.")
        self.items = items
        self._shard = np.array([it["shard"] for it in items], dtype=np.int64)
        self._offset = np.array([it["offset"] for it in items], dtype=np.int64)
        self.labels = np.array([it["label"] for it in items], dtype=np.int64)
        self._files = [self.root / s["file"] for s in self.index["shards"]]
        for f in {self._files[s] for s in set(self._shard.tolist())}:
            if not f.is_file():
                raise DataError(f"Shard {f} is missing; run train/prepare.py again.")
        self._maps: dict[int, np.ndarray] = {}
        self._pid = -1

    def __len__(self) -> int:
        return len(self.items)

    def _map(self, shard: int) -> np.ndarray:
        if self._pid != os.getpid():  # new worker process: re-open, never share file handles
            self._maps = {}
            self._pid = os.getpid()
        mm = self._maps.get(shard)
        if mm is None:
            mm = np.load(self._files[shard], mmap_mode="r")
            self._maps[shard] = mm
        return mm

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        arr = np.array(self._map(int(self._shard[i]))[int(self._offset[i])], dtype=np.uint8, copy=True)
        return torch.from_numpy(arr).unsqueeze(0), int(self.labels[i]), int(i)

    @property
    def boxed(self) -> np.ndarray:
        """Per item: True if it has at least one lesion box (datasets with boxes: FracAtlas, RSNA, YOLO,
        class folders with ``boxes.csv``)."""
        return np.array([bool(it.get("boxes")) for it in self.items], dtype=bool)

    def box_masks(self, indices: torch.Tensor | np.ndarray | list[int]) -> torch.Tensor:
        """``(B, 1, S, S)`` float masks, 1 inside the items' lesion boxes (scaled from the original image
        to the shard's square size, as :func:`bonecls.prepare.decode_resize` squashes), 0 elsewhere."""
        idx = [int(i) for i in (indices.tolist() if hasattr(indices, "tolist") else indices)]
        s = self.size
        out = torch.zeros(len(idx), 1, s, s)
        for row, i in enumerate(idx):
            item = self.items[i]
            h, w = item.get("original_size") or (s, s)
            for b in item.get("boxes") or ():
                c0, c1 = (max(0, min(s, round(b[k] * s / w))) for k in ("x0", "x1"))
                r0, r1 = (max(0, min(s, round(b[k] * s / h))) for k in ("y0", "y1"))
                out[row, 0, r0 : max(r1, r0 + 1), c0 : max(c1, c0 + 1)] = 1.0
        return out

    def class_counts(self) -> list[int]:
        return np.bincount(self.labels, minlength=len(self.class_names)).tolist()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_maps"] = {}
        state["_pid"] = -1
        return state


class EvalSampler(Sampler[int]):
    """``indices[rank::world]`` padded (by repeating) to ``ceil(n / world)`` per rank; no shuffling."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1):
        self.n, self.rank, self.world = n, rank, world_size
        self.per_rank = math.ceil(n / world_size)

    def __iter__(self) -> Iterator[int]:
        idx = list(range(self.rank, self.n, self.world))
        while len(idx) < self.per_rank:
            idx.append(idx[-1] if idx else 0)
        return iter(idx)

    def __len__(self) -> int:
        return self.per_rank
