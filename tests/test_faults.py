"""Fault tolerance: a 2-rank gloo run under ``torchrun --max-restarts=1`` where rank 1 SIGKILLs itself
once in the middle of epoch 2. torchrun restarts both workers, they resume from the last checkpoint
(epoch 1), lose at most the interrupted epoch, and the job ends with a valid card."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
from proc import run_tree

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_rank_killed_mid_epoch_restarts_and_resumes(tmp_path: Path) -> None:
    from bonecls.phantom import write_dataset
    from bonecls.prepare import prepare
    from bonecls.training import checkpoint as ckpt
    from bonecls.weights import load_pytorch

    src = write_dataset("fracture", "kaggle", tmp_path / "src", n=40, size=32, seed=1, progress=False)
    prepare(src, tmp_path / "prep", size=32, scheduler="sync", progress=False, echo=lambda s: None)
    marker = tmp_path / "killed-once"
    options = (
        "--id fault-test --model simple_cnn --epochs 3 --batch-size 4 --lr 2e-3 --lr-base-batch 8 "
        "--device cpu --threads 1 --no-progress --no-tensorboard --resume auto --fault-kill 1:2:1"
    )
    paths = {"--data": tmp_path / "prep", "--output": tmp_path / "model", "--run-dir": tmp_path / "run"}
    args = [
        *options.split(),
        *(x for k, v in paths.items() for x in (k, str(v))),
        "--fault-marker",
        str(marker),
    ]
    launcher = (
        "-m torch.distributed.run --standalone --nproc_per_node=2 --max-restarts=1 --monitor-interval=0.2"
    )
    cmd = [sys.executable, *launcher.split(), str(ROOT / "train" / "classify.py"), *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    p = run_tree(cmd, env, 180)
    log = p.stdout + p.stderr
    (tmp_path / "torchrun.log").write_text(log)
    assert p.returncode == 0, log[-4000:]
    assert marker.is_file(), "the fault was never injected"
    assert "FAULT: rank 1 kills itself at epoch 2 step 1" in log
    # first attempt finished epoch 1 and died in epoch 2; the restart resumed from epoch 1's checkpoint
    resumed = re.findall(r"Resumed from \S+ \(epoch (\d+) done\); continuing at epoch (\d+)", log)
    assert resumed == [("1", "2")], log[-4000:]
    assert log.count("No checkpoint in") == 1  # the first attempt started fresh
    done = [int(e) for e in re.findall(r"^epoch (\d+)/3:", p.stdout, re.M)]
    assert done == [1, 2, 3]  # epoch 2 completed once (after the restart); nothing else lost
    state = ckpt.load(ckpt.checkpoint_path(tmp_path / "run" / "checkpoints", 3))
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3] and state["world_size"] == 2
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["resumed_from"] == 1 and summary["epochs"] == [1, 2, 3]
    _, card = load_pytorch(tmp_path / "model")
    assert card.id == "fault-test" and len(card.test_metrics["curves"]) == 3
