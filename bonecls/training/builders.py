"""How a PyTorch training run (:mod:`.classify`) is assembled before its first epoch.

:func:`load_setup` reads the prepared dataset and settles the task and folders; :func:`build_model`
builds the model (seeded, so every rank starts alike), checks the disk, applies ``--init-from`` and
the lesion head of ``--box-loss``; :func:`build_training_parts` wraps it for DDP/FSDP and precision
and adds the optimizer, learning-rate schedule, loss and on-device preprocessing;
:func:`build_loaders` gives each rank its share of the data (whole with/without sets for the ranking
loss of ``--pair-loss``, :func:`pair_ranking`). The smaller pieces (:func:`make_optimizer`,
:func:`make_scheduler`, :func:`normalization`, :func:`init_from_card`, :func:`box_supervision`) are
functions of the run's arguments that can be checked on their own.

The order of these steps is the order in which the run draws from its random streams; a resumed run
replays it exactly (see :mod:`.checkpoint`), so reordering them changes the trained weights.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from bonecls.errors import BoneclsError, DataError
from bonecls.training import TrainingError
from bonecls.training import distributed as du
from bonecls.training.augment import AugmentConfig, DevicePreprocess
from bonecls.training.balance import DistributedWeightedSampler, balanced_sample_weights
from bonecls.training.engine import amp_settings, class_weights, scaled_lr, wrap_model
from bonecls.training.lesion import BoxSupervision, attach_lesion_head, negative_class
from bonecls.training.pairs import PairRanking, PairSampler, pair_groups
from bonecls.training.preflight import preflight, resolve_task

if TYPE_CHECKING:
    from bonecls.training.shards import ShardDataset


def make_optimizer(params: list[nn.Parameter], args: argparse.Namespace, lr: float) -> torch.optim.Optimizer:
    """``--optimizer`` over the trainable ``params`` at ``lr`` (already scaled to the global batch)."""
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
    """``(mean, std)`` per input channel for ``--normalization``; the card records them for the app."""
    from bonecls.models import IMAGENET_MEAN, IMAGENET_STD, default_normalization

    if args.normalization == "model":
        return default_normalization(args.model, args.in_chans)
    if args.normalization == "imagenet":
        if args.in_chans == 3:
            return list(IMAGENET_MEAN), list(IMAGENET_STD)
        return [sum(IMAGENET_MEAN) / 3], [sum(IMAGENET_STD) / 3]
    return [0.5] * args.in_chans, [0.5] * args.in_chans


def init_from_card(model: nn.Module, args: argparse.Namespace, class_names: list[str]) -> str:
    """Copy every backbone tensor of ``--init-from``'s weights into ``model`` (same shapes). The head is
    copied too when the source answers the same classes in the same order (a fine-tune of that model
    on new data or at a new learning rate); otherwise it stays freshly initialized, so the source may
    have other classes. A narrower CustomV2 of the same classes is widened into ``model`` instead
    (:mod:`bonecls.training.widen`). Returns the source's sha256, which the new card records (a fine-tune may
    replace the very folder it started from)."""
    from bonecls.errors import WeightsError
    from bonecls.models import model_spec, weights_compatible
    from bonecls.training.widen import COPY_NOISE, widen_into, widenable
    from bonecls.weights import load_pytorch

    try:
        source, card = load_pytorch(args.init_from)
    except WeightsError as exc:
        raise TrainingError(f"--init-from {args.init_from}: {exc}") from None
    if not weights_compatible(card.architecture, args.model) or card.in_chans != args.in_chans:
        same = card.in_chans == args.in_chans and list(card.class_names) == list(class_names)
        if same and widenable(source, model):
            added = widen_into(source, model, seed=getattr(args, "seed", 0))
            print(
                f"Initialized from {card.id} (sha256 {card.sha256[:12]}, a {card.architecture}), widened "
                f"by {added} channels (Net2WiderNet: the same outputs, {COPY_NOISE:.0%} noise on the "
                "copies); its head too."
            )
            return card.sha256
        raise TrainingError(
            f"--init-from {card.id} is a {card.architecture} with {card.in_chans} channel(s); this run "
            f"trains a {args.model} with {args.in_chans}. Pick one of the same architecture and --in-chans "
            "(or, with the same classes, a wider copy of it)."
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


def box_supervision(
    args: argparse.Namespace,
    train_ds: ShardDataset,
    class_names: list[str],
    positive: list[str],
    image_size: int,
) -> BoxSupervision:
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


# --------------------------------------------------------------------------------- a run's parts


@dataclass(frozen=True)
class RunData:
    """The prepared dataset a run trains on, and what it answers."""

    index: dict
    task: str
    class_names: list[str]
    positive: list[str]
    train: ShardDataset
    val: ShardDataset
    test: ShardDataset
    class_counts: list[int]
    image_size: int
    shear: float


@dataclass(frozen=True)
class RunSetup:
    """What a run was asked to do, on what data, where it writes and on which rank it is."""

    args: argparse.Namespace
    info: du.DistInfo
    data: RunData
    out_dir: Path
    card_id: str
    run_dir: Path

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"


@dataclass(frozen=True)
class TrainingParts:
    """What the epochs update and how: the (wrapped) model, its optimization and its inputs' preprocessing."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    criterion: nn.Module
    amp_dtype: torch.dtype | None
    mean: list[float]
    std: list[float]
    aug: AugmentConfig | None
    prep: DevicePreprocess
    boxes: BoxSupervision | None
    lr: float
    global_batch: int
    pairs: PairRanking | None = None
    pair_groups: np.ndarray | None = None


@dataclass(frozen=True)
class Loaders:
    """This rank's loaders: its share of the training split (shuffled, or a class-balanced draw under
    ``--balance sampler``), and the whole validation and test splits."""

    train_sampler: DistributedSampler | DistributedWeightedSampler | PairSampler
    train: DataLoader
    val: DataLoader
    test: DataLoader


def load_setup(args: argparse.Namespace, info: du.DistInfo) -> RunSetup:
    """Load the prepared dataset's index and splits, settle the task, input size, shear and folders."""
    from bonecls.models import model_spec
    from bonecls.prepare import load_index
    from bonecls.training.shards import ShardDataset

    index = load_index(args.data)
    task, class_names, positive = resolve_task(index, args.task)
    train_ds, val_ds, test_ds = (ShardDataset(args.data, split, index) for split in ("train", "val", "test"))
    if getattr(args, "val_data", None):
        val_ds = ShardDataset(args.val_data, "val")
        if val_ds.class_names != train_ds.class_names:
            raise TrainingError(
                f"--val-data {args.val_data} has classes {val_ds.class_names}, the training data "
                f"{train_ds.class_names}; choose the model on data of the same task."
            )
        print(f"Model choice and calibration on the val split of {args.val_data} ({len(val_ds)} images).")
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
    data = RunData(
        index,
        task,
        class_names,
        positive,
        train_ds,
        val_ds,
        test_ds,
        train_ds.class_counts(),
        image_size,
        shear,
    )
    out_dir = Path(args.output)
    card_id = args.id or out_dir.resolve().name
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / card_id
    return RunSetup(args, info, data, out_dir, card_id, run_dir)


def build_model(setup: RunSetup) -> tuple[nn.Module, BoxSupervision | None]:
    """The unwrapped model (the same initialization on every rank: seeded before it is built), checked
    against the disk before anything else, started from ``--init-from``, with the lesion head of
    ``--box-loss``."""
    from bonecls.models import create_model

    args, data = setup.args, setup.data
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    from bonecls.training.pretrained import IMAGENET, load_pretrained_file, pretrained_record

    model = create_model(
        args.model,
        len(data.class_names),
        in_chans=args.in_chans,
        pretrained=args.pretrained == IMAGENET,
        freeze_backbone=args.freeze_backbone,
        head=args.head,
        dropout=args.dropout,
    )
    args.pretrained_record = pretrained_record(args.pretrained)
    if args.pretrained not in (None, IMAGENET):  # a file on disk; the same bytes on every rank
        args.pretrained_record = load_pretrained_file(
            model, args.pretrained, args.in_chans, getattr(args, "pretrained_sha256", None)
        )
    error = None
    if setup.info.is_main:
        try:
            preflight(args, setup.out_dir, setup.run_dir, model)
        except BoneclsError as exc:
            error = str(exc)
    error = du.broadcast_object(error)
    if error:
        raise TrainingError(error)
    if args.init_from:
        args.init_from_sha256 = init_from_card(model, args, data.class_names)
    if args.box_crop and args.box_loss <= 0:
        raise TrainingError("--box-crop trains on windows around the lesion boxes; it needs --box-loss > 0.")
    boxes = None
    if args.box_loss > 0:
        boxes = box_supervision(args, data.train, data.class_names, data.positive, data.image_size)
        attach_lesion_head(model, args.model, len(data.class_names), data.image_size)
    if args.channels_last and setup.info.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model, boxes


def build_training_parts(setup: RunSetup, model: nn.Module, boxes: BoxSupervision | None) -> TrainingParts:
    """Wrap the model for the strategy and precision, and build its optimization and preprocessing; the
    learning rate follows the global batch (linear scaling rule) unless ``--no-lr-scaling``."""
    args, info, data = setup.args, setup.info, setup.data
    amp_dtype, use_scaler = amp_settings(args.amp, info.device)
    model = wrap_model(model, info, args.strategy, args.sync_bn, amp_dtype, args.fsdp_min_params)
    global_batch = args.batch_size * info.world_size
    lr = args.lr if args.no_lr_scaling else scaled_lr(args.lr, global_batch, args.lr_base_batch)
    optimizer = make_optimizer(list(model.parameters()), args, lr)
    scheduler = make_scheduler(optimizer, args)
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    weights = class_weights(data.class_counts, "inverse" if args.balance == "weights" else "none")
    criterion = nn.CrossEntropyLoss(
        weight=weights.to(info.device) if weights is not None else None, label_smoothing=args.label_smoothing
    )
    mean, std = normalization(args)
    aug = None
    if args.augment:
        aug = AugmentConfig(hflip=args.hflip, rotate_deg=args.rotate, shear_deg=data.shear)
    prep = DevicePreprocess(
        info.device,
        data.image_size,
        args.in_chans,
        mean,
        std,
        aug,
        channels_last=args.channels_last and info.device.type == "cuda",
    )
    pairs, groups = pair_ranking(setup)
    return TrainingParts(
        model,
        optimizer,
        scheduler,
        scaler,
        criterion,
        amp_dtype,
        mean,
        std,
        aug,
        prep,
        boxes,
        lr,
        global_batch,
        pairs,
        groups,
    )


def pair_ranking(setup: RunSetup) -> tuple[PairRanking | None, np.ndarray | None]:
    """The ranking loss of ``--pair-loss`` and the set id of each training image, or ``(None, None)``;
    refused with a reason when the data or the batch cannot hold whole with/without sets."""
    args, data = setup.args, setup.data
    if getattr(args, "pair_loss", 0.0) <= 0:
        return None, None
    k = len(data.class_names)
    if args.box_crop:
        raise TrainingError("--pair-loss compares whole images of one render; it cannot run with --box-crop.")
    if args.batch_size % k:
        raise TrainingError(f"--pair-loss needs a --batch-size that is a multiple of {k} (whole sets).")
    try:
        groups = pair_groups([it["source"] for it in data.train.items], data.train.labels, k)
    except DataError as exc:
        raise TrainingError(str(exc)) from None
    positive = [data.class_names.index(c) for c in data.positive]
    print(
        f"Pair ranking (weight {args.pair_loss:g}, margin {args.pair_margin:g}): {len(np.unique(groups))} "
        f"sets of {k} renders; batches hold {args.batch_size // k} whole sets."
    )
    return PairRanking(k, positive, args.pair_loss, args.pair_margin), groups


def build_loaders(setup: RunSetup, groups: np.ndarray | None = None) -> Loaders:
    """Each rank reads only its share of the training split (the same sampler semantics serially, at
    world size 1); evaluation reads every split whole, spread over the ranks. With ``groups`` (the set
    ids of ``--pair-loss``) the training batches hold whole with/without sets."""
    from bonecls.training.shards import EvalSampler

    args, info, data = setup.args, setup.info, setup.data
    workers = args.workers if args.workers is not None else (4 if info.device.type == "cuda" else 0)
    pin = info.device.type == "cuda"
    train_sampler: DistributedSampler | DistributedWeightedSampler | PairSampler
    if groups is not None:  # --pair-loss: whole with/without sets per batch (takes precedence over --balance)
        train_sampler = PairSampler(
            groups, data.train.labels, rank=info.rank, world_size=info.world_size, seed=args.seed
        )
    elif args.balance == "sampler":  # each class drawn equally often; the ranks share one draw
        weights = balanced_sample_weights(data.train.labels, len(data.class_names))
        train_sampler = DistributedWeightedSampler(weights, info.world_size, info.rank, args.seed)
    else:
        train_sampler = DistributedSampler(
            data.train, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=args.seed
        )
    per_rank = len(train_sampler)
    loader_kw: dict[str, Any] = {"num_workers": workers, "pin_memory": pin, "persistent_workers": workers > 0}
    if workers > 0:
        loader_kw["prefetch_factor"] = 4
    train_loader = DataLoader(
        data.train,
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

    return Loaders(train_sampler, train_loader, eval_loader(data.val), eval_loader(data.test))
