"""Training engine used by ``train/*.py``: distributed init, loops, checkpoints, metrics, calibration.

Modules, by job: :mod:`.classify` (``train/classify.py``: the PyTorch trainer's command line and
``run(args)`` as a list of steps), :mod:`.builders` (a run's setup, model, optimization and loaders),
:mod:`.preflight` (checks before training), :mod:`.engine` (train/eval loops, DDP/FSDP wrapping,
AMP), :mod:`.distributed` (torchrun env init, rank helpers), :mod:`.shards` (memory-mapped dataset
over prepared shards), :mod:`.augment` (batched on-device augmentation), :mod:`.lesion` (lesion-box
supervision), :mod:`.checkpoint` (atomic checkpoints, ``--resume``), :mod:`.faults` (kill hooks for
the resume tests), :mod:`.tracking` (TensorBoard, MLflow, W&B), :mod:`.card` (calibrate -> test
metrics -> card fields, shared by both trainers), :mod:`.keras_transfer` (``train/keras_transfer.py``:
seed 004's Keras recipe; its models in :mod:`.keras_models`), :mod:`.metrics`,
:mod:`.calibration` (temperature scaling, card thresholds), :mod:`.presets` (the seeds' recipes),
:mod:`.report` (plots, metrics JSON),
:mod:`.evaluation` (``train/evaluate.py``: re-score a card, ``--external`` validation), :mod:`.balance`
(``--balance``: class-balanced sampling or loss weights), :mod:`.scaling` (``train/scaling.py``:
serial vs DDP benchmark), :mod:`.prepare_cli` (``train/prepare.py``'s command line over
:func:`bonecls.prepare.prepare`).
"""

from __future__ import annotations

from bonecls.errors import BoneclsError


class TrainingError(BoneclsError):
    """Training cannot start or continue (bad arguments, unwritable output, no space, bad checkpoint)."""


__all__ = ["TrainingError"]
