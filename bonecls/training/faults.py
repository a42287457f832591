"""Fault injection for the tests of ``--resume``: kill a rank mid-epoch or the run after a checkpoint.

A resume can only be proved bit-exact against a run that really died: these hooks SIGKILL the
process (no cleanup, no ``finally``), as a node failure or the OOM killer would. They are driven by
hidden arguments of ``train/classify.py`` (``--fault-kill RANK:EPOCH:STEP``, ``--fault-marker``,
``--fault-exit-after-epoch``) and do nothing when those are not given.
"""

from __future__ import annotations

import argparse
import os
import signal
from collections.abc import Callable
from pathlib import Path


def step_kill_hook(args: argparse.Namespace, rank: int) -> Callable[[int, int], None] | None:
    """``--fault-kill RANK:EPOCH:STEP``: a step hook that SIGKILLs that rank at that step (once, when a
    ``--fault-marker`` file records it, so the resumed run goes past it); None without the argument."""
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


def exit_after_epoch(args: argparse.Namespace, epoch: int) -> None:
    """``--fault-exit-after-epoch N``: SIGKILL every rank once epoch N's checkpoint is written."""
    if args.fault_exit_after_epoch == epoch:
        print(f"FAULT: killing the run after epoch {epoch}'s checkpoint", force=True, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
