"""Distributed init from torchrun's environment and small rank helpers (after torchvision's references).

``python train/classify.py ...`` runs serially (world size 1, no process group); under
``torchrun --nproc_per_node=N`` (or multi-node with ``--nnodes``/``--rdzv-endpoint``) the env vars RANK,
WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE are set and :func:`init_distributed_mode` creates the process
group: NCCL on CUDA (one GPU per local rank), gloo on CPU.
"""

from __future__ import annotations

import builtins
import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    distributed: bool
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    backend: str | None
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def init_distributed_mode(
    device: str = "auto", timeout_s: float = 1800.0, threads: int | None = None
) -> DistInfo:
    """Create the process group when launched by torchrun; choose the device and intra-op threads.

    ``device``: ``"auto"`` (CUDA when available), ``"cuda"`` or ``"cpu"``. CUDA ranks use
    ``cuda:LOCAL_RANK`` and NCCL; CPU ranks use gloo. ``threads`` sets ``torch.set_num_threads``
    (default on CPU: the cores divided among the local ranks, so N ranks on N cores don't oversubscribe).
    """
    want_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        from bonecls.training import TrainingError

        raise TrainingError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu.")
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world_size)
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ and world_size >= 1
    if want_cuda:
        torch.cuda.set_device(local_rank % max(1, torch.cuda.device_count()))
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device("cpu")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(threads or max(1, cores // max(1, local_world)))
    if threads and want_cuda:
        torch.set_num_threads(threads)
    backend = None
    if distributed:
        backend = "nccl" if want_cuda else "gloo"
        if not dist.is_initialized():
            timeout = datetime.timedelta(seconds=timeout_s)
            kwargs: dict[str, Any] = {"timeout": timeout}
            if want_cuda:
                kwargs["device_id"] = dev  # eager NCCL init bound to this GPU
            store = _elastic_store(world_size, timeout)
            if store is not None:
                kwargs.update(store=store, rank=rank, world_size=world_size)
            dist.init_process_group(backend=backend, **kwargs)
        barrier()
    info = DistInfo(distributed, rank, world_size, local_rank, local_world, backend, dev)
    setup_for_distributed(info.is_main)
    return info


def _elastic_store(world_size: int, timeout: datetime.timedelta) -> dist.Store | None:
    """Under torchrun's agent store, a store prefix per restart attempt.

    After ``--max-restarts`` restarts the workers with the agent's store still holding the previous
    attempt's keys, the default process group's rendezvous can read the dead ranks' addresses (gloo:
    "connectFullMesh failed ... Connection refused"). A per-attempt prefix keeps attempts apart.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or "MASTER_ADDR" not in os.environ:
        return None
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    base = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world_size,
        is_master=False,
        timeout=timeout,
    )
    return dist.PrefixStore(f"/bonecls/{run_id}/attempt_{attempt}", base)


def cleanup() -> None:
    """Destroy the process group after everything that uses it (DDP reducer, FSDP state) is gone.

    Wrapped models often sit in reference cycles; collecting them while the group is alive avoids
    their C++ destructors running at interpreter exit after the group (an abort at teardown).
    """
    if dist.is_available() and dist.is_initialized():
        import gc

        gc.collect()
        barrier()
        dist.destroy_process_group()


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_dist():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def _comm_device() -> torch.device:
    if is_dist() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: list[float] | torch.Tensor) -> torch.Tensor:
    """Sum a vector of numbers over ranks (float64 for exact counts); returns a CPU tensor."""
    t = torch.as_tensor(values, dtype=torch.float64).to(_comm_device())
    if is_dist():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu()


def all_reduce_mean(value: float) -> float:
    return float(all_reduce_sum([value])[0]) / get_world_size()


def all_gather_tensor(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` from every rank along dim 0 (rank order); sizes may differ between ranks."""
    if not is_dist():
        return t
    dev = _comm_device()
    t = t.to(dev).contiguous()
    n = torch.tensor([t.shape[0]], device=dev, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(get_world_size())]
    dist.all_gather(sizes, n)
    max_n = int(max(s.item() for s in sizes))
    padded = torch.zeros((max_n, *t.shape[1:]), dtype=t.dtype, device=dev)
    padded[: t.shape[0]] = t
    out = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(out, padded)
    return torch.cat([o[: int(s.item())] for o, s in zip(out, sizes, strict=True)]).cpu()


def all_gather_object(obj: Any) -> list[Any]:
    if not is_dist():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def setup_for_distributed(is_master: bool) -> None:
    """Only rank 0 prints (``print(..., force=True)`` prints from any rank), as in torchvision."""
    if getattr(builtins.print, "_bonecls_wrapped", False):
        builtins.print = builtins.print._bonecls_orig  # type: ignore[attr-defined]
    builtin_print = builtins.print

    def print(*args: Any, **kwargs: Any) -> None:
        force = kwargs.pop("force", False)
        if is_master or force:
            builtin_print(*args, **kwargs)

    print._bonecls_wrapped = True  # type: ignore[attr-defined]
    print._bonecls_orig = builtin_print  # type: ignore[attr-defined]
    builtins.print = print
