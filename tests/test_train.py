"""Training engine: serial and 2-rank gloo runs to loadable cards, resume after a kill, atomic
checkpoints, preflight errors, exact cross-rank metrics, calibration, thresholds, augmentation."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from proc import run_tree

from bonecls.training import TrainingError
from bonecls.training import checkpoint as ckpt
from bonecls.training.augment import AugmentConfig, BatchAugment, DevicePreprocess, augment_table
from bonecls.training.calibration import choose_thresholds, fit_temperature, reliability
from bonecls.training.classify import parse_args, run
from bonecls.training.engine import class_weights, scaled_lr
from bonecls.training.metrics import classification_metrics, nll, softmax_np

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "train" / "classify.py")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 fracture phantoms (Kaggle layout, 48/6/6) prepared at 32 px."""
    from bonecls.phantom import write_dataset
    from bonecls.prepare import prepare

    base = tmp_path_factory.mktemp("train-data")
    src = write_dataset("fracture", "kaggle", base / "src", n=60, size=32, seed=0, progress=False)
    prepare(src, base / "prep", size=32, scheduler="sync", progress=False, echo=lambda s: None)
    return base / "prep"


BASE_OPTIONS = (
    "--id tiny-test --model simple_cnn --epochs 1 --batch-size 16 --lr 2e-3 --lr-base-batch 16 --device cpu "
    "--threads 1 --no-progress --no-tensorboard --seed 1"
)


def base_args(data: Path, out: Path, *extra: str) -> list[str]:
    paths = ["--data", str(data), "--output", str(out / "model"), "--run-dir", str(out / "run")]
    return [*paths, *BASE_OPTIONS.split(), *extra]


def torchrun(
    nproc: int, args: list[str], *extra_launcher: str, timeout: int = 120
) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *extra_launcher]
    cmd = [sys.executable, *launcher, SCRIPT, *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return run_tree(cmd, env, timeout)


def serial(args: list[str], env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **(env or {}))
    return run_tree([sys.executable, SCRIPT, *args], e, timeout)


# ----------------------------------------------------------------------------------------- end to end


def test_serial_one_epoch_produces_a_loadable_card(prepared: Path, tmp_path: Path) -> None:
    from bonecls.weights import load_pytorch

    summary = run(parse_args(base_args(prepared, tmp_path, "--epochs", "2")))
    model, card = load_pytorch(tmp_path / "model")
    assert card.id == "tiny-test" and card.task == "fracture" and card.architecture == "simple_cnn"
    assert card.class_names == ["not fractured", "fractured"] and card.positive_classes == ["fractured"]
    assert card.input_size == 32 and card.in_chans == 1 and len(card.normalization.mean) == 1
    assert 0 <= card.thresholds.negative_below <= card.thresholds.positive_at <= 1 and card.temperature > 0
    tm = card.test_metrics
    assert {"accuracy", "roc_auc", "f1_macro", "ece", "confusion_matrix", "reliability", "curves"} <= set(tm)
    assert np.sum(tm["confusion_matrix"]) == 6 and len(tm["curves"]) == 2
    assert card.command.startswith("python ") and "--model simple_cnn" in card.command
    assert card.training_data.startswith("Synthetic phantom radiographs rendered from one chest CT")
    assert (
        card.limitations.startswith("Trained on synthetic phantoms")
        and "not for clinical use" in card.limitations
    )
    assert "Not yet scored on held-out rendering variants" in card.limitations  # nothing claimed unmeasured
    for name in ("metrics.json", "confusion.png", "curves.png", "reliability.png"):
        assert (tmp_path / "model" / name).is_file()
    assert summary["world_size"] == 1 and summary["epochs"] == [1, 2]
    assert (
        card.scope is None
    )  # 48 training images for 128 features: no learned scope (tests/test_scope_training.py)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["sha256"] == card.sha256
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 2)
    # every checkpoint is weights_only-loadable
    state = ckpt.load(ckpt.checkpoint_path(tmp_path / "run" / "checkpoints", 2))
    assert state["epoch"] == 2 and state["args"]["model"] == "simple_cnn" and len(state["rng"]) == 1


def test_threeclass_phantoms_dense_bn_head_and_no_shear(
    prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from bonecls.errors import DataError
    from bonecls.phantom import write_dataset
    from bonecls.prepare import prepare
    from bonecls.training.evaluation import evaluate_card
    from bonecls.weights import load_pytorch

    src = write_dataset("threeclass", "threeclass", tmp_path / "src", n=30, size=32, seed=4, progress=False)
    prepare(src, tmp_path / "prep", size=32, scheduler="sync", progress=False, echo=lambda s: None)
    run(parse_args(base_args(tmp_path / "prep", tmp_path, "--head", "dense_bn", "--batch-size", "8")))
    _, card = load_pytorch(tmp_path / "model")
    assert card.task == "threeclass" and card.head == "dense_bn"
    assert card.class_names == ["healthy", "fractured", "beyond_repair"]
    assert card.positive_classes == ["fractured", "beyond_repair"]
    assert card.extra["shear"] == 0.0 and card.extra["augmentation"]["shear_deg"] == 0.0
    assert len(card.test_metrics["confusion_matrix"]) == 3
    # train/evaluate.py re-scores the installed card on the same test split: the same predictions
    tm = card.test_metrics
    got = evaluate_card(tmp_path / "model", tmp_path / "prep", split="test")
    assert got["sha256"] == card.sha256 and got["split"] == "test"
    assert got["metrics"]["confusion_matrix"] == tm["confusion_matrix"]
    assert got["metrics"]["accuracy"] == pytest.approx(tm["accuracy"])
    assert got["metrics"]["f1_macro"] == pytest.approx(tm["f1_macro"])
    assert got["metrics"]["ece"] == pytest.approx(tm["ece"], abs=0.02)  # fp16 weights on the card
    assert evaluate_card(tmp_path / "model", tmp_path / "prep", split="val")["metrics"]["n"] == 3
    with pytest.raises(DataError, match="answers \\['healthy', 'fractured', 'beyond_repair'\\]"):
        evaluate_card(tmp_path / "model", prepared)  # a fracture dataset: other classes
    spec = importlib.util.spec_from_file_location("train_evaluate", ROOT / "train" / "evaluate.py")
    evaluate_cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evaluate_cli)
    out_json = tmp_path / "eval.json"
    argv = ["--data", str(tmp_path / "prep"), "--card", str(tmp_path / "model"), "--json", str(out_json)]
    assert evaluate_cli.main([*argv, "--no-progress"]) == 0
    assert f"tiny-test on test of {tmp_path / 'prep'}: n 3, accuracy" in capsys.readouterr().out
    assert json.loads(out_json.read_text())[0]["metrics"]["confusion_matrix"] == tm["confusion_matrix"]
    wrong_task = ["--data", str(prepared), "--card", str(tmp_path / "model"), "--no-progress"]
    assert evaluate_cli.main(wrong_task) == 2
    assert "score it on a dataset of its own task" in capsys.readouterr().err


def test_two_rank_gloo_run_produces_a_loadable_card(prepared: Path, tmp_path: Path) -> None:
    from bonecls.weights import load_pytorch

    p = torchrun(2, base_args(prepared, tmp_path, "--batch-size", "8"))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    _, card = load_pytorch(tmp_path / "model")
    assert card.command.startswith("torchrun --nnodes=1 --nproc_per_node=2")
    assert card.extra["world_size"] == 2 and card.extra["global_batch"] == 16
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["lr"] == pytest.approx(2e-3)  # 8 per rank x 2 ranks = the base batch: same lr as serial
    assert "World size 2 (gloo, cpu, 1 thread(s)/rank)" in p.stdout
    assert p.stdout.count("epoch 1/1:") == 1  # only rank 0 prints


def _checkpoint_model(run_dir: Path, epoch: int) -> dict[str, torch.Tensor]:
    return ckpt.load(ckpt.checkpoint_path(run_dir / "checkpoints", epoch))["model"]


def test_fsdp_two_ranks_match_ddp_and_resume_after_a_kill(prepared: Path, tmp_path: Path) -> None:
    """FSDP2 on 2 gloo ranks trains the same model as DDP (same data, global batch, seed), its checkpoints
    hold plain full state dicts, and a rank killed after epoch 1 resumes into the sharded model."""
    from bonecls.weights import load_pytorch

    # shard every submodule of >= 1000 parameters (simple_cnn's convs and linears) as well as the root
    two_epochs = ["--batch-size", "8", "--epochs", "2", "--resume", "auto"]
    p = torchrun(2, base_args(prepared, tmp_path / "ddp", *two_epochs))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    fsdp_args = base_args(prepared, tmp_path / "fsdp", *two_epochs, "--strategy", "fsdp")
    fsdp_args += ["--fsdp-min-params", "1000"]
    p = torchrun(2, [*fsdp_args, "--fault-exit-after-epoch", "1"])
    assert p.returncode != 0 and not (tmp_path / "fsdp" / "model" / "card.json").exists()
    assert [e for e, _ in ckpt.list_checkpoints(tmp_path / "fsdp" / "run" / "checkpoints")] == [1]
    p = torchrun(2, fsdp_args)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "epoch 1 done); continuing at epoch 2" in p.stdout and "epoch 1/2:" not in p.stdout
    for epoch in (1, 2):
        ddp = _checkpoint_model(tmp_path / "ddp" / "run", epoch)
        fsdp = _checkpoint_model(tmp_path / "fsdp" / "run", epoch)
        assert sorted(fsdp) == sorted(ddp) and not any(k.startswith(("module.", "_fsdp")) for k in fsdp)
        for k, v in ddp.items():
            assert type(fsdp[k]) is torch.Tensor, k  # gathered, not a DTensor shard
            torch.testing.assert_close(fsdp[k], v, rtol=1e-4, atol=1e-5, msg=f"{k} after epoch {epoch}")
    _, ddp_card = load_pytorch(tmp_path / "ddp" / "model")
    _, fsdp_card = load_pytorch(tmp_path / "fsdp" / "model")
    assert fsdp_card.extra["strategy"] == "fsdp" and fsdp_card.extra["world_size"] == 2
    assert fsdp_card.test_metrics["confusion_matrix"] == ddp_card.test_metrics["confusion_matrix"]


def test_amp_bf16_on_cpu(prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--amp on CPU trains under bf16 autocast (the GPU's fp16 + GradScaler path needs CUDA) and still
    writes fp32-trained, loadable weights whose predictions are finite."""
    from bonecls.weights import load_pytorch

    summary = run(parse_args(base_args(prepared, tmp_path, "--amp")))
    assert "amp torch.bfloat16" in capsys.readouterr().out
    model, card = load_pytorch(tmp_path / "model")
    assert card.extra["amp"] == "auto" and summary["world_size"] == 1
    state = _checkpoint_model(tmp_path / "run", 1)
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())  # master weights
    with torch.no_grad():
        assert torch.isfinite(model(torch.rand(2, 1, 32, 32))).all()


def test_two_nodes_rendezvous_on_loopback(prepared: Path, tmp_path: Path) -> None:
    """Multi-node: two torchrun launchers (--nnodes=2, one rank each) meet through the c10d rendezvous
    on a loopback endpoint, as two machines would on their network; rank 0 writes the card."""
    import socket

    from bonecls.weights import load_pytorch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = base_args(prepared, tmp_path, "--batch-size", "8")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")

    def node(rank: int) -> subprocess.CompletedProcess:
        launcher = [
            "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d",
            f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=bonecls-test", f"--node-rank={rank}",
        ]  # fmt: skip
        return run_tree([sys.executable, *launcher, SCRIPT, *args], env, 180)

    with ThreadPoolExecutor(max_workers=2) as pool:  # both launchers at once: each waits for the other
        nodes = [f.result() for f in [pool.submit(node, rank) for rank in range(2)]]
    logs = [p.stdout + p.stderr for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(t[-3000:] for t in logs)
    _, card = load_pytorch(tmp_path / "model")
    assert card.command.startswith("torchrun --nnodes=2 --nproc_per_node=1")
    assert card.extra["world_size"] == 2 and card.extra["global_batch"] == 16
    assert sum("World size 2 (gloo, cpu, 1 thread(s)/rank)" in t for t in logs) == 1  # rank 0 only


def test_mlflow_and_wandb_log_offline(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no tracking server configured, --mlflow writes a SQLite tracking store in the run dir and
    --wandb an offline run there: each holds the epoch metrics the run printed."""
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    for var in ("MLFLOW_TRACKING_URI", "WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    p = serial(base_args(prepared, tmp_path, "--epochs", "2", "--mlflow", "--wandb"))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if client.search_runs([e.experiment_id])]
    (mlrun,) = client.search_runs([experiment.experiment_id])
    assert mlrun.data.params["model"] == "simple_cnn" and mlrun.info.status == "FINISHED"
    history = client.get_metric_history(mlrun.info.run_id, "val/loss")
    assert [m.step for m in history] == [1, 2] and all(math.isfinite(m.value) for m in history)
    (offline,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    wandb_rows = _wandb_history(offline)
    assert [row["_step"] for row in wandb_rows] == [1, 2]
    assert [row["val/loss"] for row in wandb_rows] == pytest.approx([m.value for m in history])


@pytest.mark.parametrize(("flag", "missing"), [("--mlflow", "sqlalchemy"), ("--wandb", "wandb")])
def test_missing_tracking_package_is_a_sentence(
    flag: str, missing: str, prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bonecls.training.tracking import RunLogger

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setitem(sys.modules, missing, None)  # import fails as if it were not installed
    args = parse_args([*base_args(prepared, tmp_path), flag])
    with pytest.raises(TrainingError, match=r"pip install -r requirements-tracking\.txt"):
        RunLogger(args, tmp_path / "run", enabled=True)


def _wandb_history(path: Path) -> list[dict]:
    """The history rows of an offline W&B run file: a 7-byte header, then LevelDB-log blocks of 32 KiB
    whose chunks (crc32, length, type: full / first / middle / last) carry protobuf ``Record``s."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, records, partial = path.read_bytes(), 7, [], b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        size, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7 : pos + 7 + size], pos + 7 + size
        if kind in (1, 2):
            partial = chunk
        elif kind in (3, 4):
            partial += chunk
        if kind in (1, 4):
            records.append(partial)
    rows = []
    for raw in records:
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            items = record.history.item
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items})
    return rows


def test_resume_after_a_killed_run(prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = base_args(prepared, tmp_path, "--epochs", "2", "--resume", "auto")
    p = serial([*args, "--fault-exit-after-epoch", "1"])
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    ck = tmp_path / "run" / "checkpoints"
    assert [e for e, _ in ckpt.list_checkpoints(ck)] == [1] and not (
        tmp_path / "model" / "card.json"
    ).exists()
    run(parse_args(args))  # the resumed run, in-process (one interpreter start less)
    out = capsys.readouterr().out
    assert "epoch 1 done); continuing at epoch 2" in out and "epoch 1/2:" not in out and "epoch 2/2:" in out
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["resumed_from"] == 1 and s["epochs"] == [1, 2]
    assert (tmp_path / "model" / "card.json").is_file()
    # the resumed run is the uninterrupted run: same RNG streams, optimizer and schedule state
    whole = tmp_path / "uninterrupted"
    run(parse_args(base_args(prepared, whole, "--epochs", "2")))
    resumed, uninterrupted = _checkpoint_model(tmp_path / "run", 2), _checkpoint_model(whole / "run", 2)
    for k, v in uninterrupted.items():
        assert torch.equal(resumed[k], v), k


def test_kill_during_checkpoint_save_keeps_the_previous_one(tmp_path: Path) -> None:
    code = (
        "import torch; from bonecls.training import checkpoint as c\n"
        "c.atomic_save({'epoch': 1, 'w': torch.ones(3)}, c.checkpoint_path(D, 1))\n"
        "c.atomic_save({'epoch': 2, 'w': torch.ones(10**6)}, c.checkpoint_path(D, 2))\n"
    ).replace("D", repr(str(tmp_path)))
    env = dict(os.environ, BONECLS_FAULT_KILL_IN_SAVE="epoch_002.pt")
    p = run_tree([sys.executable, "-c", code], env, 60)
    assert p.returncode == -signal.SIGKILL
    assert [e for e, _ in ckpt.list_checkpoints(tmp_path)] == [1]
    assert len(list(tmp_path.glob(".epoch_002.pt.*.tmp"))) == 1  # the partial file, never renamed
    path, state = ckpt.find_latest(tmp_path)
    assert path.name == "epoch_001.pt" and state["epoch"] == 1
    assert len(ckpt.clean_stale_temp(tmp_path)) == 1 and not list(tmp_path.glob("*.tmp"))
    # a truncated newest checkpoint falls back to the one before
    ckpt.atomic_save({"epoch": 2}, ckpt.checkpoint_path(tmp_path, 2))
    (tmp_path / "epoch_003.pt").write_bytes(ckpt.checkpoint_path(tmp_path, 2).read_bytes()[:20])
    assert ckpt.find_latest(tmp_path)[1]["epoch"] == 2


def test_unwritable_output_or_no_space_fails_before_training(prepared: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    args = base_args(prepared, tmp_path, "--epochs", "50")
    args[args.index("--output") + 1] = str(blocker / "model")
    with pytest.raises(TrainingError, match="Cannot write to the output folder"):
        run(parse_args(args))
    with pytest.raises(TrainingError, match="Not enough free disk space"):
        run(parse_args(base_args(prepared, tmp_path, "--epochs", "50", "--min-free-gb", "1e9")))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_rng_state_and_args_round_trip_weights_only(tmp_path: Path) -> None:
    import random

    state = {"rng": [ckpt.rng_state()], "args": ckpt.plain({"p": Path("/x"), "t": (1, 2), "n": None})}
    ckpt.atomic_save(state, tmp_path / "s.pt")
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.set_rng_state(ckpt.load(tmp_path / "s.pt")["rng"][0])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a
    assert ckpt.load(tmp_path / "s.pt")["args"] == {"p": "/x", "t": [1, 2], "n": None}


# ----------------------------------------------------------------------------- exact distributed metrics


def _rank_eval(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.utils.data import DataLoader

    from bonecls.training.engine import evaluate
    from bonecls.training.shards import EvalSampler

    torch.set_num_threads(
        1
    )  # a forked child must not reuse the parent's OpenMP pool (as DataLoader workers do)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    x, y, model = _toy_problem()
    ds = [(x[i], int(y[i]), i) for i in range(len(y))]
    loader = DataLoader(ds, batch_size=4, sampler=EvalSampler(len(ds), rank, world))
    out = evaluate(model, loader, lambda b, train=False: b.float(), torch.device("cpu"))
    m = classification_metrics(out.labels, out.probs, ["a", "b", "c"], ["b", "c"])
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"m": m, "n": len(out.labels), "loss": out.loss}))
    dist.destroy_process_group()


def _toy_problem() -> tuple[torch.Tensor, torch.Tensor, torch.nn.Module]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(37, 5, generator=g)  # 37: uneven over 2 ranks -> the sampler pads one duplicate
    y = torch.randint(0, 3, (37,), generator=g)
    model = torch.nn.Linear(5, 3)
    with torch.no_grad():
        model.weight.copy_(torch.randn(3, 5, generator=g))
        model.bias.zero_()
    return x, y, model


def test_metrics_gathered_across_ranks_equal_serial_metrics(tmp_path: Path) -> None:
    import torch.multiprocessing as mp
    from torch.utils.data import DataLoader

    from bonecls.training.engine import evaluate

    # fork: the children start with torch already imported (spawn would re-import it: slow on 2 cores)
    ctx = mp.start_processes(
        _rank_eval, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=False, start_method="fork"
    )
    deadline = time.monotonic() + 60
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail("the 2-rank evaluation did not finish within 60 s")
    x, y, model = _toy_problem()
    ds = [(x[i], int(y[i]), i) for i in range(len(y))]
    ref = evaluate(model, DataLoader(ds, batch_size=4), lambda b, train=False: b.float(), torch.device("cpu"))
    serial_m = classification_metrics(ref.labels, ref.probs, ["a", "b", "c"], ["b", "c"])
    for r in range(2):
        got = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert got["n"] == 37
        assert got["m"] == json.loads(json.dumps(serial_m))
        assert got["loss"] == pytest.approx(ref.loss)


# ----------------------------------------------------------------------------------- calibration, metrics


def test_temperature_scaling_reduces_nll_on_a_miscalibrated_set() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    y = rng.integers(0, 2, n)
    clean = np.where(y[:, None] == np.arange(2), 1.0, -1.0) * 0.8 + rng.normal(0, 1.0, (n, 2))
    over = clean * 6  # overconfident
    t = fit_temperature(over, y)
    assert t > 2 and nll(over, y, t) < nll(over, y, 1.0) - 0.1
    assert reliability(softmax_np(over, t), y)["ece"] < reliability(softmax_np(over), y)["ece"]
    under = clean * 0.2  # underconfident
    t2 = fit_temperature(under, y)
    assert t2 < 0.5 and nll(under, y, t2) < nll(under, y, 1.0)
    assert (softmax_np(over, t).argmax(1) == over.argmax(1)).all()  # argmax unchanged


def test_threshold_selection_properties() -> None:
    for seed in range(20):
        rng = np.random.default_rng(seed)
        n_pos, n_neg = int(rng.integers(5, 200)), int(rng.integers(5, 200))
        score = np.concatenate([rng.beta(4, 2, n_pos), rng.beta(2, 4, n_neg)])
        pos = np.arange(n_pos + n_neg) < n_pos
        th = choose_thresholds(score, pos, 0.95, 0.95)
        nb, pa = th["negative_below"], th["positive_at"]
        assert 0 <= nb <= pa <= 1
        if nb < pa:  # targets met on the calibration set
            assert (score[pos] >= nb).mean() >= 0.95
            assert (score[~pos] < pa).mean() >= 0.95
    # separable: one cut between the classes, no uncertain band
    th = choose_thresholds(np.r_[np.full(10, 0.9), np.full(10, 0.1)], np.arange(20) < 10)
    assert th["negative_below"] == th["positive_at"] == pytest.approx(0.5) and th["uncertain_fraction"] == 0
    assert choose_thresholds(np.array([0.2, 0.4]), np.array([False, False]))["notes"]


def test_metrics_binary_and_multiclass() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array(
        [[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.1, 0.2, 0.7]]
    )
    m = classification_metrics(
        y, p, ["healthy", "fractured", "beyond_repair"], ["fractured", "beyond_repair"]
    )
    assert m["accuracy"] == pytest.approx(5 / 6) and m["confusion_matrix"][0] == [1, 1, 0]
    assert m["roc_auc"] is not None and m["suspicion_auc"] == pytest.approx(1.0)
    b = classification_metrics([0, 1, 1], np.array([[0.9, 0.1], [0.4, 0.6], [0.6, 0.4]]), ["n", "p"], ["p"])
    assert b["recall"] == pytest.approx(0.5) and b["precision"] == 1.0 and b["roc_auc"] == 1.0
    assert classification_metrics([1, 1], np.array([[0.2, 0.8], [0.3, 0.7]]), ["n", "p"])["roc_auc"] is None


# ----------------------------------------------------------------------------------------- small pieces


def test_augmentation_on_device_batches() -> None:
    torch.manual_seed(0)
    x = torch.rand(8, 1, 32, 32)
    out = BatchAugment(AugmentConfig(shear_deg=10))(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1 and not torch.equal(out, x)
    assert torch.equal(BatchAugment(AugmentConfig.off())(x), x)
    # draws by dataset index: a sample is augmented the same in a batch of 8 (serial) or of 4 (one of 2 ranks)
    table = augment_table(8, seed=3, epoch=2)
    assert torch.equal(table, augment_table(8, seed=3, epoch=2)) and not torch.equal(
        table, augment_table(8, 3, 3)
    )
    aug = BatchAugment(AugmentConfig(shear_deg=5))
    whole = aug(x, table)
    halves = torch.cat([aug(x[0::2], table[0::2]), aug(x[1::2], table[1::2])])
    assert torch.allclose(whole[torch.tensor([0, 2, 4, 6, 1, 3, 5, 7])], halves, atol=1e-6)
    prep = DevicePreprocess("cpu", 48, 3, [0.5] * 3, [0.25] * 3, AugmentConfig())
    b = prep(torch.full((2, 1, 32, 32), 255, dtype=torch.uint8), train=False)
    assert b.shape == (2, 3, 48, 48) and torch.allclose(b, torch.full_like(b, 2.0))


@pytest.mark.parametrize("size", [32, 48])
@pytest.mark.parametrize("in_chans", [1, 3])
def test_device_preprocess_equals_the_textbook_normalisation(size: int, in_chans: int) -> None:
    """Both forms of the normalisation (per-channel copy + in-place multiply-add on CPU, one
    addcmul for channels-last / GPU; the /255 folded into the scale when not augmenting) give
    (x / 255 - mean) / std, resized or not, with and without the augmentation path."""
    import torch.nn.functional as F

    mean, std = [0.485, 0.456, 0.406][:in_chans], [0.229, 0.224, 0.225][:in_chans]
    x8 = torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ref = x8.float() / 255.0
    if size != 32:
        ref = F.interpolate(ref, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    ref = (ref.expand(-1, in_chans, -1, -1) - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(
        1, -1, 1, 1
    )
    for augment, train in ((None, False), (AugmentConfig.off(), True), (AugmentConfig(), False)):
        got = DevicePreprocess("cpu", size, in_chans, mean, std, augment)(x8, train=train)
        assert got.shape == ref.shape and got.is_contiguous()
        torch.testing.assert_close(got, ref, atol=2e-5, rtol=0)
    floats = DevicePreprocess("cpu", size, in_chans, mean, std)(x8.float() / 255.0)  # already in [0, 1]
    torch.testing.assert_close(floats, ref, atol=2e-5, rtol=0)
    # channels-last takes the single-addcmul branch (the GPU form): same values, channels-last memory
    cl = DevicePreprocess("cpu", size, in_chans, mean, std, channels_last=True)(x8)
    assert cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl, ref, atol=2e-5, rtol=0)


def test_presets_lr_scaling_and_class_weights() -> None:
    a = parse_args(["--data", "d", "--output", "o", "--preset", "seed002", "--epochs", "5"])
    assert (a.model, a.image_size, a.in_chans, a.batch_size, a.epochs) == ("efficientnet_b6", 224, 3, 16, 5)
    assert a.freeze_backbone and a.pretrained and a.optimizer == "adam" and a.lr == 1e-3
    assert scaled_lr(a.lr, 16, a.lr_base_batch) == pytest.approx(1e-3)  # serial seed 002: exactly its lr
    assert scaled_lr(1e-3, 64, 16) == pytest.approx(4e-3)
    t = parse_args(["--data", "d", "--output", "o", "--preset", "seed004"])
    assert t.model == "inception_v3" and t.head == "dense_bn" and t.shear == 0.0 and t.weight_decay > 0
    assert parse_args(["--data", "d", "--output", "o", "--preset", "seed003"]).model == "simple_cnn"
    w = class_weights([90, 10])
    assert w.tolist() == pytest.approx([100 / 180, 100 / 20]) and class_weights([1, 1], "none") is None
    assert math.isclose(float((w * torch.tensor([90.0, 10.0])).sum()) / 100, 1.0)


def test_scaling_table_states_the_fair_comparison() -> None:
    from bonecls.training.scaling import ScalingRow, markdown

    rows = [
        ScalingRow("serial-1", 1, 1, 1, 32, 30.0, 20.0, 100.0, 0.99, 1.0, 1.0),
        ScalingRow("serial-2t", 1, 2, 2, 32, 25.0, 15.0, 130.0, 0.99, 20 / 15, 20 / 30),
        ScalingRow("ddp-2", 2, 1, 2, 16, 20.0, 10.5, 190.0, 0.98, 20 / 10.5, 20 / 21),
    ]
    md = markdown(rows, 32, 3, "simple_cnn", "cpu", 2)
    assert "baseline is serial on 1 core" in md and "cores/k intra-op threads each" in md
    assert "| ddp-2 | 2 x 1 | 2 | 16 | 10.5 | 20.0 | 190 | 1.90 | 0.95 | 0.980 | -1.0 pt |" in md
