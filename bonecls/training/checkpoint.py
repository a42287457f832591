"""Atomic, ``weights_only``-safe checkpoints and ``--resume auto``.

A checkpoint (``<run_dir>/checkpoints/epoch_NNN.pt``) holds model, optimizer and scheduler state, the
epoch just completed (1-based), every rank's RNG states (python, numpy, torch, cuda), the best
validation metric so far, the history of per-epoch metrics and the run's arguments as a plain dict.
Only tensors, dicts, lists, tuples, numbers, strings, booleans and None are stored, so they load with
``torch.load(weights_only=True)`` -- no pickle code execution.

Saving writes a temp file in the same folder, fsyncs it, ``os.replace``s it over the target and
fsyncs the folder: a process killed mid-save leaves the previous checkpoint intact (and at worst a
``.tmp`` file that :func:`find_latest` ignores and :func:`clean_stale_temp` removes). The last
``keep`` epoch checkpoints are kept; ``best.pt`` holds the best model's weights.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bonecls.training import TrainingError

CKPT_RE = re.compile(r"^epoch_(\d{3,})\.pt$")
BEST_NAME = "best.pt"


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temp file in the same folder, fsync, ``os.replace``, fsync the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            if os.environ.get("BONECLS_FAULT_KILL_IN_SAVE") == path.name:  # test hook: die mid-save
                os.kill(os.getpid(), signal.SIGKILL)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)
    return path


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise TrainingError(f"The checkpoint {path} does not exist.") from None
    except Exception as exc:  # truncated / not a checkpoint / unsafe types
        raise TrainingError(f"The checkpoint {path} cannot be loaded ({type(exc).__name__}: {exc}).") from exc


def checkpoint_path(ckpt_dir: str | os.PathLike, epoch: int) -> Path:
    return Path(ckpt_dir) / f"epoch_{epoch:03d}.pt"


def list_checkpoints(ckpt_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := CKPT_RE.match(p.name))]
    return sorted(found)


def find_latest(ckpt_dir: str | os.PathLike) -> tuple[Path, dict] | None:
    """The newest epoch checkpoint that loads (a damaged newest one falls back to the one before)."""
    for _, p in reversed(list_checkpoints(ckpt_dir)):
        try:
            return p, load(p)
        except TrainingError as exc:
            print(f"warning: ignoring {p}: {exc}")
    return None


def clean_stale_temp(ckpt_dir: str | os.PathLike) -> list[Path]:
    d = Path(ckpt_dir)
    stale = [p for p in d.glob(".*.tmp")] if d.is_dir() else []
    for p in stale:
        with contextlib.suppress(OSError):
            p.unlink()
    return stale


def prune(ckpt_dir: str | os.PathLike, keep: int) -> None:
    if keep <= 0:
        return
    for _, p in list_checkpoints(ckpt_dir)[:-keep]:
        with contextlib.suppress(OSError):
            p.unlink()


# -------------------------------------------------------------------------------------------- RNG state


def rng_state() -> dict:
    """This process's RNG states as weights_only-safe values."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((int(py[0]), tuple(int(v) for v in py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((str(n[0]), n[1].numpy().astype(np.uint32), int(n[2]), int(n[3]), float(n[4])))
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu().to(torch.uint8) for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def plain(obj: Any) -> Any:
    """Arguments (argparse Namespace values, Paths, tuples) as weights_only-safe plain values."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, bool | int | float | str) or obj is None:
        return obj
    return str(obj)
