"""Experiment tracking for ``train/classify.py``: TensorBoard by default, MLflow and Weights & Biases
on request, and the line each epoch prints.

Kept apart from the training loop so a run's epochs do not know which trackers listen: the loop
hands each epoch's scalars to :class:`RunLogger` (rank 0 only), which forwards the finite ones to
every tracker that was asked for. A tracker that was asked for but is not installed stops the run
before training with the ``pip install`` line that fixes it, rather than after hours of epochs.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

from bonecls.training import TrainingError


class RunLogger:
    """TensorBoard by default (rank 0), optionally MLflow / Weights & Biases.

    ``enabled`` False (every rank but 0) makes a logger that logs nothing, so callers need no rank test.
    """

    def __init__(self, args: argparse.Namespace, run_dir: Path, enabled: bool):
        self.tb = self.mlflow = self.wandb = None
        if not enabled:
            return
        if not args.no_tensorboard:
            self.tb = _tensorboard(args.log_dir or run_dir / "tb")
        if args.mlflow:
            self.mlflow = _mlflow(args, run_dir)
        if args.wandb:
            self.wandb = _wandb(args, run_dir)

    def log(self, scalars: dict[str, float], step: int) -> None:
        """Log the finite numbers of ``scalars`` at ``step`` (an epoch) to every tracker."""
        scalars = {k: float(v) for k, v in scalars.items() if isinstance(v, int | float) and math.isfinite(v)}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
            self.tb.flush()
        if self.mlflow is not None:
            self.mlflow.log_metrics(scalars, step=step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def log_epoch(self, row: dict) -> None:
        """Log an epoch's history row (see :func:`epoch_line`) under the run's tags."""
        scalars = {f"train/{k}": v for k, v in row.items() if k.startswith("train_")} | {
            "val/loss": row["val_loss"],
            "val/accuracy": row["val_accuracy"],
            "val/f1_macro": row["val_f1_macro"],
            "val/auc": _num(row["val_auc"]),
            "lr": row["lr"],
            "images_per_s": row["images_per_s"],
        }
        self.log(scalars, row["epoch"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.mlflow is not None:
            self.mlflow.end_run()
        if self.wandb is not None:
            self.wandb.finish()


def _run_params(args: argparse.Namespace) -> dict[str, str]:
    """The run's arguments as strings (the trackers' parameter/config tables), without the raw argv."""
    return {k: str(v) for k, v in vars(args).items() if k != "argv"}


def _tensorboard(log_dir: str | Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TrainingError(
            "TensorBoard logging needs the tensorboard package (pip install tensorboard); "
            "install it or pass --no-tensorboard."
        ) from None
    return SummaryWriter(log_dir=str(log_dir))


def _mlflow(args: argparse.Namespace, run_dir: Path) -> Any:
    """The ``mlflow`` module with a run started: the server in MLFLOW_TRACKING_URI, else a SQLite file
    in the run dir (offline)."""
    local = not os.environ.get("MLFLOW_TRACKING_URI")
    try:
        import mlflow

        if local:
            import alembic  # noqa: F401  (MLflow's SQLite store needs both)
            import sqlalchemy  # noqa: F401
    except ImportError as e:
        raise TrainingError(
            "--mlflow needs the mlflow package and, for its local SQLite store, sqlalchemy and "
            f"alembic ({e.name} is not installed): pip install -r requirements-tracking.txt, or set "
            "MLFLOW_TRACKING_URI to your tracking server."
        ) from None
    if local:
        # MLflow 3 refuses its old ./mlruns file store; a SQLite file in the run dir works offline
        mlflow.set_tracking_uri(f"sqlite:///{(run_dir / 'mlflow.db').resolve()}")
    mlflow.start_run(run_name=run_dir.name)
    mlflow.log_params(_run_params(args))
    return mlflow


def _wandb(args: argparse.Namespace, run_dir: Path) -> Any:
    """A started W&B run, offline unless WANDB_MODE says otherwise."""
    try:
        import wandb
    except ImportError:
        raise TrainingError(
            "--wandb needs the wandb package (pip install -r requirements-tracking.txt); it is not installed."
        ) from None
    return wandb.init(
        project="bonecls",
        name=run_dir.name,
        dir=str(run_dir),
        mode=os.environ.get("WANDB_MODE", "offline"),
        config=_run_params(args),
    )


def epoch_line(row: dict, epochs: int, improved: bool) -> str:
    """The console line of one epoch's history ``row`` (epoch, train/val loss and accuracy, val F1 and
    AUC, seconds, images/s); ``improved`` marks the best epoch so far."""
    return (
        f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f} "
        f"acc {row['train_accuracy']:.3f} | val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.3f} "
        f"f1 {row['val_f1_macro']:.3f} auc {_num(row['val_auc']):.3f}"
        f"{' *best*' if improved else ''} | {row['epoch_seconds']:.1f} s, {row['images_per_s']:.0f} img/s"
    )


def _num(v: float | None) -> float:
    return math.nan if v is None else float(v)
