"""Training and evaluation loops, DDP/FSDP wrapping, AMP, exact cross-rank metrics.

What keeps a distributed run as accurate as the serial one (seed 003 lost 11 points going DDP):

* each rank reads only its share of the data (``DistributedSampler``) and ``set_epoch`` reshuffles
  every epoch -- see :mod:`.classify`;
* the learning rate follows the global batch (:func:`scaled_lr`, linear scaling rule);
* evaluation gathers every rank's logits/labels/dataset indices with ``all_gather``, drops the
  sampler's padding duplicates and computes metrics once over the whole split -- identical to the
  serial metrics on the same predictions;
* BatchNorm can be synchronized (``--sync-bn``, CUDA) so small per-rank batches see global statistics.

AMP on CUDA: ``bf16`` autocast (no scaler) or ``fp16`` autocast + ``torch.amp.GradScaler``. On CPU
``--amp`` uses bf16 autocast.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from bonecls.training import distributed as du
from bonecls.training.lesion import BoxSupervision
from bonecls.training.pairs import PairRanking


def scaled_lr(base_lr: float, global_batch: int, base_batch: int) -> float:
    """Linear scaling rule (Goyal et al. 2017): ``base_lr * global_batch / base_batch``.

    ``base_lr`` is the learning rate that works at ``base_batch`` images per step. A run keeps the same
    optimization whether one process takes the whole global batch or N ranks take a share each.
    """
    return base_lr * global_batch / base_batch


# ------------------------------------------------------------------------------------------- wrapping


def _fsdp_shard(model: nn.Module, min_params: int, mp_policy=None) -> nn.Module:
    """FSDP2 (``fully_shard``): shard every submodule holding >= ``min_params`` parameters that is not
    inside an already sharded one (post-order, like a size-based auto-wrap policy), then the root."""
    from torch.distributed.fsdp import fully_shard

    kwargs = {"mp_policy": mp_policy} if mp_policy is not None else {}
    sharded: set[int] = set()

    def visit(m: nn.Module) -> int:
        total = sum(p.numel() for p in m.parameters(recurse=False))
        for child in m.children():
            total += visit(child)
        if (
            m is not model
            and total >= min_params
            and not any(id(c) in sharded for c in m.modules() if c is not m)
        ):
            fully_shard(m, **kwargs)
            sharded.add(id(m))
            return 0  # its parameters are accounted for
        return total

    visit(model)
    fully_shard(model, **kwargs)
    return model


def wrap_model(
    model: nn.Module,
    info: du.DistInfo,
    strategy: str = "ddp",
    sync_bn: bool = False,
    amp_dtype: torch.dtype | None = None,
    fsdp_min_params: int = 1_000_000,
) -> nn.Module:
    """Move to the device and wrap for data parallelism (no wrapper when not distributed)."""
    if sync_bn and info.distributed:
        if info.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            print(
                "warning: --sync-bn needs CUDA (SyncBatchNorm has no CPU kernel); using per-rank BatchNorm."
            )
    model = model.to(info.device)
    if not info.distributed:
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        kwargs = {"device_ids": [info.device.index]} if info.device.type == "cuda" else {}
        return DDP(model, find_unused_parameters=False, gradient_as_bucket_view=True, **kwargs)
    if strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy

        mp = None
        if amp_dtype is not None and info.device.type == "cuda":
            mp = MixedPrecisionPolicy(param_dtype=amp_dtype, reduce_dtype=torch.float32)
        return _fsdp_shard(model, fsdp_min_params, mp)
    raise ValueError(f"Unknown strategy {strategy!r}; expected ddp or fsdp.")


def unwrap(model: nn.Module) -> nn.Module:
    return (
        model.module
        if hasattr(model, "module") and isinstance(model, nn.parallel.DistributedDataParallel)
        else model
    )


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full (unsharded) CPU state dict with plain FQNs (no ``module.``); complete on rank 0.

    Collective under FSDP: every rank must call it. Non-zero ranks get an empty dict under FSDP.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    # DDP: the wrapped module (DCP keeps DDP's "module." prefix); FSDP: the sharded model (collective)
    return get_model_state_dict(
        unwrap(model), options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(
        unwrap(model), optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def load_full_state(
    model: nn.Module, optimizer: torch.optim.Optimizer | None, model_sd: dict, optim_sd: dict | None
) -> None:
    """Load full state dicts (as saved by :func:`full_model_state`) into a wrapped or plain model."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    target = unwrap(model)
    # shallow copies: under FSDP set_*_state_dict replaces the dict's tensors by DTensor shards in place
    model_sd = dict(model_sd)
    optim_sd = copy.deepcopy(optim_sd) if optim_sd is not None else None
    set_model_state_dict(target, model_sd, options=StateDictOptions(full_state_dict=True, strict=True))
    if optimizer is not None and optim_sd is not None:
        set_optimizer_state_dict(target, optimizer, optim_sd, options=StateDictOptions(full_state_dict=True))


# ------------------------------------------------------------------------------------------------ AMP


def amp_settings(amp: str | bool, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use GradScaler)."""
    if not amp or amp == "off":
        return None, False
    if device.type == "cuda":
        if amp in (True, "auto", "on"):
            amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return (torch.bfloat16, False) if amp == "bf16" else (torch.float16, True)
    return torch.bfloat16, False  # CPU autocast supports bf16 only


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def set_train_mode(model: nn.Module) -> None:
    """``train()``, but BatchNorm layers whose parameters are all frozen stay in eval mode
    (a frozen backbone keeps its running statistics, as Keras does with ``trainable=False``)."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()


# ------------------------------------------------------------------------------------------ the loops


@dataclass
class EpochStats:
    loss: float
    accuracy: float
    images: int
    seconds: float
    images_per_s: float
    lr: float
    batches: int


def _progress(iterable: Iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from bonecls.progress import progress_bar

    return progress_bar(iterable, total=total, desc=desc, unit="batch", leave=False)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    preprocess: Callable[..., torch.Tensor],
    device: torch.device,
    epoch: int,
    *,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    clip_grad_norm: float | None = None,
    max_batches: int | None = None,
    progress: bool = False,
    step_hook: Callable[[int, int], None] | None = None,
    aug_table: torch.Tensor | None = None,
    boxes: BoxSupervision | None = None,
    pairs: PairRanking | None = None,
) -> EpochStats:
    """One pass over this rank's share; loss/accuracy are reduced over all ranks (sample-weighted).

    ``aug_table`` (:func:`bonecls.training.augment.augment_table`) holds this epoch's augmentation draws
    per dataset index. ``boxes`` adds the lesion-head loss (:mod:`bonecls.training.lesion`) and
    ``pairs`` the with/without ranking loss (:mod:`bonecls.training.pairs`; batches of whole sets);
    the reported loss is then the sum.
    """
    set_train_mode(model)
    total = len(loader) if max_batches is None else min(len(loader), max_batches)  # type: ignore[arg-type]
    # loss * n, correct, n, non-finite losses: kept on the device (no per-step host sync)
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    t0 = time.perf_counter()
    batches = 0
    for step, (images, labels, idx) in enumerate(_progress(loader, total, f"epoch {epoch}", progress)):
        if max_batches is not None and step >= max_batches:
            break
        if step_hook is not None:
            step_hook(epoch, step)
        # augmentation draws by dataset index (aug_table): the same for a sample whatever the world size
        params = aug_table[idx] if aug_table is not None else None
        if boxes is not None:
            masks, has = boxes.masks(idx)
            x, masks = preprocess(images, train=True, params=params, masks=masks)
        else:
            x = preprocess(images, train=True, params=params)
        y = labels.to(device, non_blocking=True)
        if boxes is not None:
            x, masks, y = boxes.crop(x, masks, y, has)
        with autocast(device, amp_dtype):
            logits = model(x)
            loss = criterion(logits.float(), y)
            if boxes is not None:
                loss = loss + boxes.loss(model, masks, y, has)
            if pairs is not None:
                loss = loss + pairs.loss(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if clip_grad_norm:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if clip_grad_norm:
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            optimizer.step()
        n = y.shape[0]
        finite = torch.isfinite(loss.detach())
        sums[0] += torch.where(finite, loss.detach().double() * n, 0.0)
        sums[1] += (logits.detach().argmax(1) == y).sum().double()
        sums[2] += n
        sums[3] += (~finite).double()
        batches += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    red = du.all_reduce_sum(sums.cpu())
    n_all = max(1.0, float(red[2]))
    if red[3] > 0 and scaler is None:  # same verdict on every rank: all raise together, before saving
        from bonecls.training import TrainingError

        raise TrainingError(
            f"The training loss was not finite in {int(red[3])} step(s) of epoch {epoch}; lower --lr, add "
            "--clip-grad-norm or turn off --amp."
        )
    # wall time of the slowest rank = the epoch's time
    seconds_all = float(du.all_gather_tensor(torch.tensor([seconds], dtype=torch.float64)).max())
    return EpochStats(
        loss=float(red[0]) / n_all,
        accuracy=float(red[1]) / n_all,
        images=int(red[2]),
        seconds=seconds_all,
        images_per_s=float(red[2]) / max(seconds_all, 1e-9),
        lr=float(optimizer.param_groups[0]["lr"]),
        batches=batches,
    )


@dataclass
class EvalOutput:
    logits: np.ndarray  # (n, k) float32, in dataset order
    labels: np.ndarray  # (n,)
    indices: np.ndarray  # dataset indices (0..n-1, sorted)
    loss: float  # mean unweighted cross-entropy over the split

    @property
    def probs(self) -> np.ndarray:
        from bonecls.training.metrics import softmax_np

        return softmax_np(self.logits)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    preprocess: Callable[..., torch.Tensor],
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    max_batches: int | None = None,
    progress: bool = False,
    desc: str = "eval",
) -> EvalOutput:
    """Logits of every example of the split, gathered from all ranks, de-duplicated, in dataset order.

    Under DDP the underlying module is used (no collectives in forward). Under FSDP every rank runs the
    same number of steps (the eval sampler pads to equal length), as FSDP's forward all-gathers.
    """
    fwd = unwrap(model)
    fwd.eval()
    outs, labs, idxs = [], [], []
    total = len(loader) if max_batches is None else min(len(loader), max_batches)  # type: ignore[arg-type]
    for step, (images, labels, idx) in enumerate(_progress(loader, total, desc, progress)):
        if max_batches is not None and step >= max_batches:
            break
        x = preprocess(images, train=False)
        with autocast(device, amp_dtype):
            logits = fwd(x)
        outs.append(logits.float().cpu())
        labs.append(labels.cpu())
        idxs.append(idx.cpu())
    k = _num_outputs(fwd)
    logits = torch.cat(outs) if outs else torch.zeros(0, k)
    labels = torch.cat(labs) if labs else torch.zeros(0, dtype=torch.long)
    idx = torch.cat(idxs) if idxs else torch.zeros(0, dtype=torch.long)
    if du.is_dist():
        logits = du.all_gather_tensor(logits)
        labels = du.all_gather_tensor(labels)
        idx = du.all_gather_tensor(idx)
    uniq, first = np.unique(idx.numpy(), return_index=True)  # sorted; drops the sampler's padding
    lg = logits.numpy()[first]
    lb = labels.numpy()[first]
    loss = (
        float(nn.functional.cross_entropy(torch.from_numpy(lg), torch.from_numpy(lb)).item())
        if len(lb)
        else math.nan
    )
    return EvalOutput(lg.astype(np.float32), lb.astype(np.int64), uniq, loss)


def _num_outputs(model: nn.Module) -> int:
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    return last.out_features if last is not None else 0


def class_weights(counts: list[int], mode: str = "inverse") -> torch.Tensor | None:
    """Inverse-frequency class weights ``n / (k * n_c)`` (mean 1 over examples); None for ``mode="none"``."""
    if mode == "none":
        return None
    c = np.asarray(counts, dtype=np.float64)
    n, k = c.sum(), len(c)
    w = np.where(c > 0, n / (k * np.maximum(c, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def is_fsdp(model: nn.Module) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule

        return isinstance(model, FSDPModule)
    except ImportError:  # pragma: no cover
        return False


def broadcast_bool(flag: bool) -> bool:
    """Rank 0's decision, on every rank (early stopping must stop all ranks together)."""
    if not du.is_dist():
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.broadcast(t, src=0)
    return bool(t.item())
