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

This module is the hub: the command line, and :func:`run` as the order of its steps (data, model,
optimization, loaders, resume, epochs, best model, card). The parts of the steps live beside it:
:mod:`.preflight` (checks before training), :mod:`.builders` (setup, model, optimizer, schedule,
loaders, ``--init-from``, box loss), :mod:`.checkpoint` (checkpoints and ``--resume``),
:mod:`.faults` (the resume tests' kill hooks), :mod:`.tracking` (TensorBoard / MLflow / W&B, the
epoch line), :mod:`.engine` (the loops) and :mod:`.card` (calibration, test metrics and the card's
fields, shared with the Keras trainer).
"""

from __future__ import annotations

import argparse
import builtins
import math
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bonecls.data import TASK_CLASSES
from bonecls.errors import BoneclsError
from bonecls.training import checkpoint as ckpt
from bonecls.training import distributed as du
from bonecls.training.augment import augment_table
from bonecls.training.balance import add_balance_args, resolve_balance
from bonecls.training.builders import (
    Loaders,
    RunSetup,
    TrainingParts,
    build_loaders,
    build_model,
    build_training_parts,
    load_setup,
)
from bonecls.training.card import (
    calibrate_and_test,
    finish_outputs,
    result_line,
    run_recipe,
    summary_scores,
    trained_card,
)
from bonecls.training.engine import (
    EvalOutput,
    broadcast_bool,
    evaluate,
    full_model_state,
    full_optimizer_state,
    load_full_state,
    train_one_epoch,
)
from bonecls.training.faults import exit_after_epoch, step_kill_hook
from bonecls.training.lesion import strip_lesion_head
from bonecls.training.metrics import classification_metrics
from bonecls.training.pairs import group_augment_table
from bonecls.training.presets import PRESETS, get_preset
from bonecls.training.pretrained import add_pretrained_args, normalize_pretrained
from bonecls.training.tracking import RunLogger, epoch_line

MONITORS = ("accuracy", "f1_macro", "roc_auc", "suspicion_auc", "balanced_accuracy", "loss")


# ---------------------------------------------------------------------------------------------- args


def build_parser() -> argparse.ArgumentParser:
    """``train/classify.py``'s arguments, by group (as ``--help`` lists them)."""
    p = argparse.ArgumentParser(
        description="Train a bonecls classifier on prepared shards (serial or under torchrun).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_data_and_model_args(p)
    _add_optimization_args(p)
    _add_augmentation_and_hardware_args(p)
    _add_output_args(p)
    return p


def _add_data_and_model_args(p: argparse.ArgumentParser) -> None:
    """The data, the task, the recipe preset and the model."""
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
    add_pretrained_args(g)
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


def _add_optimization_args(p: argparse.ArgumentParser) -> None:
    """Optimizer, learning rate and its schedule, loss, box supervision, early stopping."""
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
    add_balance_args(g)
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
        "--pair-loss",
        type=float,
        default=0.0,
        help="weight of a ranking loss on with/without-lesion sets of one render (paired phantoms): the "
        "lesion image's suspicion logit must exceed its lesion-free twin's by --pair-margin; 0 = off",
    )
    g.add_argument("--pair-margin", type=float, default=2.0, help="logit margin of --pair-loss")
    g.add_argument(
        "--val-data",
        default=None,
        help="choose and calibrate the model on the val split of this prepared dataset (e.g. a rendering "
        "variant left out of training) instead of the training data's own val split",
    )
    g.add_argument(
        "--monitor", choices=MONITORS, default="f1_macro", help="validation metric for best/early stop"
    )
    g.add_argument("--patience", type=int, default=8, help="early stopping; 0 = off")
    g.add_argument("--seed", type=int, default=0)


def _add_augmentation_and_hardware_args(p: argparse.ArgumentParser) -> None:
    """On-device augmentation; devices, strategy, precision and threads."""
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


def _add_output_args(p: argparse.ArgumentParser) -> None:
    """Where the model, checkpoints and logs go, the card's targets, and the tests' hidden fault hooks."""
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse; a ``--preset`` supplies defaults and explicit arguments still win."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.preset:
        parser.set_defaults(**get_preset(args.preset))
        args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.pretrained = normalize_pretrained(args.pretrained)
    try:
        args.balance = resolve_balance(args.balance, args.class_weights)
    except BoneclsError as exc:
        parser.error(str(exc))
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


# ---------------------------------------------------------------------------------------------- run


@dataclass(frozen=True)
class _BestModel:
    """The best epoch's weights and their validation and test outputs (before calibration)."""

    state_dict: dict
    val: EvalOutput
    test: EvalOutput


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
    """The steps of a run, in the order they draw from the random streams (resume depends on it)."""
    setup = load_setup(args, info)
    model, boxes = build_model(setup)
    parts = build_training_parts(setup, model, boxes)
    loaders = build_loaders(setup, parts.pair_groups)
    _announce(setup, parts)
    progress = ckpt.resume(
        args, setup.ckpt_dir, parts.model, parts.optimizer, parts.scheduler, parts.scaler, info
    )
    if not progress.rng_restored:
        # augmentation and dropout differ per rank; a resume that could not restore this rank's RNG
        # state (another world size) still starts a stream of its own for the epochs left
        torch.manual_seed(args.seed * 1000 + info.rank + 7919 * progress.start_epoch)
    logger = RunLogger(args, setup.run_dir, info.is_main)
    _train_epochs(setup, parts, loaders, progress, logger)
    best = _evaluate_best(setup, parts, loaders)
    summary: dict[str, Any] = {}
    if info.is_main:
        summary = _finish(setup, parts, progress, best, t_start)
    logger.close()
    du.barrier()
    return du.broadcast_object(summary)


def _announce(setup: RunSetup, parts: TrainingParts) -> None:
    """Say what is trained on what, and how (world size, batch, learning rate, precision)."""
    args, info, data = setup.args, setup.info, setup.data
    global_batch = parts.global_batch
    print(
        f"Training {args.model} ({args.head} head, {args.in_chans} ch, {data.image_size} px) for {data.task} "
        f"on {len(data.train)} train / {len(data.val)} val / {len(data.test)} test images; class counts "
        f"{dict(zip(data.class_names, data.class_counts, strict=True))}."
    )
    print(
        f"World size {info.world_size} ({info.backend or 'serial'}, {info.device}, {torch.get_num_threads()} "
        f"thread(s)/rank), batch {args.batch_size}/rank = {global_batch} global, lr {parts.lr:.3g} "
        f"({'as given' if args.no_lr_scaling else f'{args.lr:g} x {global_batch}/{args.lr_base_batch}'}), "
        f"{args.optimizer}, {args.scheduler}, amp {parts.amp_dtype}, balance {args.balance}, "
        f"strategy {args.strategy if info.distributed else '-'}."
    )


def _train_epochs(
    setup: RunSetup, parts: TrainingParts, loaders: Loaders, progress: ckpt.Progress, logger: RunLogger
) -> None:
    """Epochs from ``progress.start_epoch``: train, validate, keep the best, checkpoint, log; stop early
    after ``--patience`` epochs without improvement (rank 0 decides for all ranks)."""
    args, info = setup.args, setup.info
    kill_hook = step_kill_hook(args, info.rank)
    for epoch in range(progress.start_epoch, args.epochs + 1):
        row, val_metrics = _train_and_validate(setup, parts, loaders, epoch, kill_hook)
        improved = progress.record(row, _monitor_value(val_metrics, row["val_loss"], args.monitor))
        print(epoch_line(row, args.epochs, improved), flush=True)
        _save_checkpoint(setup, parts, progress, epoch, improved)
        if info.is_main:
            logger.log_epoch(row)
        du.barrier()
        exit_after_epoch(args, epoch)
        stop = args.patience > 0 and progress.since_best >= args.patience
        if broadcast_bool(stop):
            print(
                f"Early stop: no {args.monitor} improvement for {args.patience} epochs "
                f"(best epoch {progress.best_epoch})."
            )
            break


def _train_and_validate(
    setup: RunSetup,
    parts: TrainingParts,
    loaders: Loaders,
    epoch: int,
    kill_hook: Callable[[int, int], None] | None,
) -> tuple[dict, dict]:
    """One epoch on this rank's share, then the whole validation split; ``(history row, val metrics)``."""
    args, info, data = setup.args, setup.info, setup.data
    progress_bars = info.is_main and not args.no_progress
    loaders.train_sampler.set_epoch(epoch)
    st = train_one_epoch(
        parts.model,
        loaders.train,
        parts.criterion,
        parts.optimizer,
        parts.prep,
        info.device,
        epoch,
        amp_dtype=parts.amp_dtype,
        scaler=parts.scaler,
        clip_grad_norm=args.clip_grad_norm,
        max_batches=args.max_train_batches,
        progress=progress_bars,
        step_hook=kill_hook,
        aug_table=_aug_table(parts, len(data.train), args.seed, epoch),
        boxes=parts.boxes,
        pairs=parts.pairs,
    )
    val = evaluate(
        parts.model,
        loaders.val,
        parts.prep,
        info.device,
        amp_dtype=parts.amp_dtype,
        max_batches=args.max_eval_batches,
        progress=progress_bars,
        desc="val",
    )
    vm = classification_metrics(val.labels, val.probs, data.class_names, data.positive)
    parts.scheduler.step()
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
    return row, vm


def _aug_table(parts: TrainingParts, n: int, seed: int, epoch: int) -> torch.Tensor | None:
    """This epoch's augmentation draws per training image; one draw per set under ``--pair-loss``."""
    if parts.aug is None:
        return None
    table = augment_table(n, seed, epoch)
    return table if parts.pair_groups is None else group_augment_table(table, parts.pair_groups)


def _save_checkpoint(
    setup: RunSetup, parts: TrainingParts, progress: ckpt.Progress, epoch: int, improved: bool
) -> None:
    """Gather the full model and optimizer state and every rank's RNG (collective), then rank 0 writes."""
    model_sd = full_model_state(parts.model)
    optim_sd = full_optimizer_state(parts.model, parts.optimizer)
    rng = du.all_gather_object(ckpt.rng_state())
    if setup.info.is_main:
        ckpt.save_epoch(
            setup.ckpt_dir,
            epoch,
            progress,
            improved=improved,
            model_sd=model_sd,
            optim_sd=optim_sd,
            scheduler=parts.scheduler,
            scaler=parts.scaler,
            rng=rng,
            args=setup.args,
            world_size=setup.info.world_size,
        )


def _evaluate_best(setup: RunSetup, parts: TrainingParts, loaders: Loaders) -> _BestModel:
    """Load ``best.pt`` into the model and evaluate it on the whole validation and test splits."""
    best_sd = ckpt.load_best(setup.ckpt_dir)
    load_full_state(parts.model, None, best_sd, None)
    val, test = (
        evaluate(
            parts.model,
            loader,
            parts.prep,
            setup.info.device,
            amp_dtype=parts.amp_dtype,
            max_batches=setup.args.max_eval_batches,
        )
        for loader in (loaders.val, loaders.test)
    )
    return _BestModel(best_sd, val, test)


def _finish(
    setup: RunSetup, parts: TrainingParts, progress: ckpt.Progress, best: _BestModel, t_start: float
) -> dict[str, Any]:
    """Calibrate on validation, score the test split, write the card, its figures and the run summary."""
    from bonecls.models import create_model
    from bonecls.training import report
    from bonecls.weights import Normalization, save_pytorch

    args, data = setup.args, setup.data
    history = progress.history
    scores = calibrate_and_test(
        (best.val.logits, best.val.labels),
        (best.test.logits, best.test.labels),
        data.class_names,
        data.positive,
        args,
        history,
        progress.best_epoch,
        test_nll=float(best.test.loss),
        index=data.index,
    )
    model = create_model(
        args.model, len(data.class_names), in_chans=args.in_chans, head=args.head, dropout=args.dropout
    )
    model.load_state_dict(strip_lesion_head(best.state_dict), strict=True)
    model.eval()
    card = trained_card(
        scores,
        args,
        data.index,
        card_id=setup.card_id,
        task=data.task,
        class_names=data.class_names,
        positive=data.positive,
        image_size=data.image_size,
        command=command_line(args),
        framework="pytorch",
        architecture=args.model,
        head=args.head,
        normalization=Normalization(mean=list(parts.mean), std=list(parts.std)),
        extra=run_recipe(setup, parts),
    )
    saved = save_pytorch(model, card, setup.out_dir)
    scope, scope_line = finish_outputs(
        setup.out_dir, args.data, data.index, scores, data.class_names, history
    )
    print(scope_line)
    summary = {
        "id": setup.card_id,
        "output": str(setup.out_dir),
        "run_dir": str(setup.run_dir),
        "sha256": saved.sha256,
        "world_size": setup.info.world_size,
        "threads_per_rank": torch.get_num_threads(),
        "train_seconds": progress.train_seconds,
        "total_seconds": time.perf_counter() - t_start,
        "images_per_s": float(np.mean([h["images_per_s"] for h in history])) if history else 0.0,
        **summary_scores(scores),
        "val_accuracy_best": next(
            (h["val_accuracy"] for h in history if h["epoch"] == progress.best_epoch), None
        ),
        "best_epoch": progress.best_epoch,
        "epochs": [h["epoch"] for h in history],
        "resumed_from": progress.resumed_from,
        "lr": parts.lr,
        "global_batch": parts.global_batch,
        "scope": scope,
    }
    report.write_json(summary, setup.run_dir / "summary.json")
    print(result_line(scores, setup.out_dir, saved.sha256))
    return summary


def _monitor_value(metrics: dict, val_loss: float, monitor: str) -> float:
    """The ``--monitor`` value of an epoch, higher is better (the loss is negated; a metric the
    validation split cannot give, such as an AUC without both classes, is the worst)."""
    if monitor == "loss":
        return -val_loss
    v = metrics.get(monitor)
    return -math.inf if v is None else float(v)


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
