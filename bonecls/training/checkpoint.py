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

``--resume`` (:func:`resume`) restores all of it -- weights, optimizer, scheduler, GradScaler, the
best-so-far bookkeeping, the history and each rank's RNG streams -- so a run killed after epoch ``k``
and resumed at the same world size goes on bit for bit as if it had never stopped
(:func:`save_epoch` writes what :func:`resume` reads).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bonecls.training import TrainingError
from bonecls.training import distributed as du

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


def load_best(ckpt_dir: str | os.PathLike) -> dict:
    """The best epoch's model state (``best.pt``); a :class:`TrainingError` when no epoch completed."""
    best_path = Path(ckpt_dir) / BEST_NAME
    if not best_path.is_file():
        raise TrainingError(
            f"No best model was saved in {ckpt_dir}; the run ended before one epoch completed."
        )
    return load(best_path)["model"]


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


# ----------------------------------------------------------------------------------------------- resume

#: Settings a checkpoint must share with the run that resumes it: the model's tensors depend on them.
RESUME_MUST_MATCH = ("model", "head", "in_chans", "box_loss")


@dataclass
class Progress:
    """Where a run's epochs stand: what :func:`resume` restores and :func:`save_epoch` saves.

    ``best`` is the best monitored value so far (higher is better), ``best_loss`` its validation loss
    (the tie-breaker), ``since_best`` the epochs without improvement (early stopping),
    ``rng_restored`` whether this rank's RNG streams came back from the checkpoint."""

    start_epoch: int = 1
    best: float = -math.inf
    best_loss: float = math.inf
    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    resumed_from: int | None = None
    rng_restored: bool = False
    since_best: int = 0
    train_seconds: float = 0.0

    def record(self, row: dict, score: float) -> bool:
        """Add one epoch's history ``row`` (epoch, val_loss, epoch_seconds, ...) that scored ``score`` on
        the monitored metric; True when it is the best epoch so far. Ties on the monitored metric
        (common on small validation sets) go to the lower validation loss."""
        self.train_seconds += row["epoch_seconds"]
        improved = score > self.best or (score == self.best and row["val_loss"] < self.best_loss)
        if improved:
            self.best, self.best_loss, self.best_epoch, self.since_best = (
                score,
                row["val_loss"],
                row["epoch"],
                0,
            )
        else:
            self.since_best += 1
        self.history.append(row)
        return improved


def resume(
    args: argparse.Namespace,
    ckpt_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None,
    info: du.DistInfo,
) -> Progress:
    """The run's :class:`Progress`: a fresh one, or with ``--resume`` (``auto``: the newest checkpoint in
    ``ckpt_dir``, if any; else a path) everything the checkpoint saved, loaded into the model,
    optimizer, scheduler, scaler and this rank's RNGs. Every rank calls it (collective)."""
    progress = Progress()
    found = _find_resume_checkpoint(args.resume, ckpt_dir, info.is_main) if args.resume else None
    if found is not None:
        path, state = found
        _check_same_settings(path, state.get("args", {}), args)
        progress = _restore(state, model, optimizer, scheduler, scaler, info)
        print(
            f"Resumed from {path} (epoch {progress.resumed_from} done); continuing at epoch "
            f"{progress.start_epoch}.",
            flush=True,
        )
    progress.since_best = sum(1 for h in progress.history if h["epoch"] > progress.best_epoch)
    progress.train_seconds = sum(h.get("epoch_seconds", 0.0) for h in progress.history)
    return progress


def _find_resume_checkpoint(resume_from: str, ckpt_dir: Path, is_main: bool) -> tuple[Path, dict] | None:
    """The checkpoint ``--resume`` names, after rank 0 has swept the temp files a killed save left."""
    if is_main:
        clean_stale_temp(ckpt_dir)
    du.barrier()
    if resume_from != "auto":
        return Path(resume_from), load(resume_from)
    found = find_latest(ckpt_dir)
    if found is None:
        print(f"No checkpoint in {ckpt_dir}; starting from scratch.")
    return found


def _check_same_settings(path: Path, saved_args: dict, args: argparse.Namespace) -> None:
    """Refuse a checkpoint whose model another ``--model/--head/--in-chans/--box-loss`` built."""
    for key in RESUME_MUST_MATCH:
        same = (
            (saved_args.get(key, 0.0) > 0) == (args.box_loss > 0)  # the lesion head is there or not
            if key == "box_loss"
            else key not in saved_args or saved_args[key] == getattr(args, key)
        )
        if not same:
            raise TrainingError(
                f"The checkpoint {path} was trained with --{key.replace('_', '-')} "
                f"{saved_args[key]}, "
                f"not {getattr(args, key)}; resume with the same settings or start a new run."
            )


def _restore(
    state: dict,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None,
    info: du.DistInfo,
) -> Progress:
    """Load ``state`` into the training objects; this rank's RNG only when the world size is the same."""
    from bonecls.training.engine import load_full_state

    load_full_state(model, optimizer, state["model"], state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    rng = state.get("rng", [])
    rng_restored = len(rng) == info.world_size
    if rng_restored:
        set_rng_state(rng[info.rank])
    return Progress(
        start_epoch=int(state["epoch"]) + 1,
        best=float(state["best_metric"]),
        best_loss=float(state.get("best_loss", math.inf)),
        best_epoch=int(state["best_epoch"]),
        history=list(state.get("history", [])),
        resumed_from=int(state["epoch"]),
        rng_restored=rng_restored,
    )


def save_epoch(
    ckpt_dir: Path,
    epoch: int,
    progress: Progress,
    *,
    improved: bool,
    model_sd: dict,
    optim_sd: dict,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None,
    rng: list[dict],
    args: argparse.Namespace,
    world_size: int,
) -> None:
    """Rank 0's writes after ``epoch``: ``best.pt`` when the epoch improved, ``epoch_NNN.pt`` with all that
    :func:`resume` restores (``rng``: every rank's RNG states), then all but ``--keep-checkpoints`` pruned."""
    if improved:
        atomic_save(
            {"model": model_sd, "epoch": epoch, "metric": progress.best, "monitor": args.monitor},
            Path(ckpt_dir) / BEST_NAME,
        )
    state = {
        "model": model_sd,
        "optimizer": optim_sd,
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "epoch": epoch,
        "best_metric": progress.best,
        "best_loss": progress.best_loss,
        "best_epoch": progress.best_epoch,
        "monitor": args.monitor,
        "history": progress.history,
        "rng": rng,
        "args": plain({k: v for k, v in vars(args).items()}),
        "world_size": world_size,
        "torch_version": str(torch.__version__),
    }
    atomic_save(state, checkpoint_path(ckpt_dir, epoch))
    prune(ckpt_dir, args.keep_checkpoints)
