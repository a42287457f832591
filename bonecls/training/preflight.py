"""Checks a training run passes before any epoch: the task the data answers, writable folders, disk.

A run that fails hours in for want of a folder or of disk space wastes the hours; these checks fail
it first, with the sentence that fixes it. :func:`resolve_task` and :func:`check_writable` are shared
by the PyTorch trainer (:mod:`.classify`) and the Keras trainer (:mod:`.keras_transfer`).
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from bonecls.data import POSITIVE_CLASSES, TASK_CLASSES
from bonecls.training import TrainingError

if TYPE_CHECKING:
    from torch import nn


def resolve_task(index: dict, task: str | None) -> tuple[str, list[str], list[str]]:
    """``(task, class_names, positive_classes)`` of a prepared dataset; ``task`` None infers it from the
    class names. Shared by the PyTorch and Keras trainers."""
    class_names = list(index["class_names"])
    if task is None:
        task = next((t for t, names in TASK_CLASSES.items() if set(names) == set(class_names)), None)
        if task is None:
            raise TrainingError(
                f"Cannot tell the task from the dataset's classes {class_names}; pass --task "
                f"({', '.join(TASK_CLASSES)})."
            )
    positive = [c for c in POSITIVE_CLASSES[task] if c in class_names]
    if not positive:
        raise TrainingError(
            f"The dataset's classes {class_names} hold none of the {task} task's positive classes "
            f"{list(POSITIVE_CLASSES[task])}; pass the right --task."
        )
    return task, class_names, positive


def check_writable(folder: Path, what: str) -> None:
    """Create ``folder`` and prove it takes a synced 4 KiB write, or raise a :class:`TrainingError`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        with open(probe, "wb") as fh:
            fh.write(b"0" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
    except OSError as exc:
        raise TrainingError(
            f"Cannot write to the {what} {folder} ({exc.strerror or exc}); choose a writable folder before "
            "training starts."
        ) from None


def _estimate_bytes(model: nn.Module, optimizer: str, keep: int) -> int:
    """Disk a run of ``model`` will fill: its checkpoints (weights + optimizer slots), best.pt, the card."""
    n = sum(p.numel() for p in model.parameters())
    slots = {"adam": 2, "adamw": 2, "sgd": 1, "rmsprop": 2}[optimizer]
    ckpt_bytes = n * 4 * (1 + slots) + 1_000_000
    # `keep` epoch checkpoints + one being written + best.pt + fp16 safetensors + logs/plots margin
    return ckpt_bytes * (keep + 1) + n * 4 + n * 2 + 64 * 2**20


def preflight(args: argparse.Namespace, output: Path, run_dir: Path, model: nn.Module) -> None:
    """Writable output and run folders and enough free space, checked before any training."""
    check_writable(output, "output folder")
    check_writable(run_dir, "run folder")
    need = _estimate_bytes(model, args.optimizer, args.keep_checkpoints)
    if args.min_free_gb is not None:
        need = max(need, int(args.min_free_gb * 2**30))
    for folder in {output, run_dir}:
        free = shutil.disk_usage(folder).free
        if free < need:
            raise TrainingError(
                f"Not enough free disk space in {folder}: {free / 2**20:.0f} MiB free, about "
                f"{need / 2**20:.0f} MiB needed for checkpoints and weights. Free some space or choose "
                "another --output/--run-dir."
            )
