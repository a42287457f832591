"""Training engine used by ``train/*.py``: distributed init, loops, checkpoints, metrics, calibration.

Modules: :mod:`.distributed` (torchrun env init, rank helpers), :mod:`.shards` (memory-mapped dataset
over prepared shards), :mod:`.augment` (batched on-device augmentation), :mod:`.engine` (train/eval
loops, DDP/FSDP wrapping, AMP), :mod:`.checkpoint` (atomic checkpoints, resume), :mod:`.metrics`,
:mod:`.calibration` (temperature scaling, card thresholds), :mod:`.presets` (the seeds' recipes),
:mod:`.report` (plots, metrics JSON), :mod:`.classify` (``run(args)``), :mod:`.scaling` (serial vs
DDP benchmark).
"""

from __future__ import annotations

from bonecls.errors import BoneclsError


class TrainingError(BoneclsError):
    """Training cannot start or continue (bad arguments, unwritable output, no space, bad checkpoint)."""


__all__ = ["TrainingError"]
