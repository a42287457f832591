"""Serial vs data-parallel scaling benchmark (``train/scaling.py``, whose command line is :func:`main`).

The same model is trained on the same prepared data with the same global batch, learning rate,
epochs and seed, once serially and once per rank count under ``torchrun --standalone``; each run's
``summary.json`` gives the training-loop time (sum of epoch times, slowest rank), images/s and test
accuracy. Output: a Markdown table, a JSON file and a plot.

Fairness on CPU: ``C`` cores are shared out. The baseline is serial on **one** core (1 intra-op
thread); ``k`` ranks get ``C // k`` threads each; the serial run with ``C`` threads is listed too
(intra-op parallelism on the same cores). Speedup = baseline time / run time, efficiency =
speedup / cores used. On GPUs: the baseline is one GPU, ``k`` ranks use ``k`` GPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bonecls.errors import BoneclsError
from bonecls.training import TrainingError

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "train" / "classify.py"
DESCRIPTION = "Serial vs torchrun data-parallel scaling: same model, data, global batch and epochs."


@dataclass
class ScalingRow:
    name: str
    ranks: int
    threads_per_rank: int
    cores: int  # CPU cores or GPUs used
    batch_per_rank: int
    wall_s: float  # whole process (start-up, evaluation, card)
    train_s: float  # training loop only
    images_per_s: float
    test_accuracy: float | None
    speedup: float = 0.0
    efficiency: float = 0.0


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_one(
    name: str,
    ranks: int,
    threads: int,
    batch_per_rank: int,
    common: list[str],
    out: Path,
    device: str,
    log: Path,
) -> ScalingRow:
    run_dir = out / name
    args = [
        *common,
        "--batch-size",
        str(batch_per_rank),
        "--threads",
        str(threads),
        "--output",
        str(run_dir / "model"),
        "--run-dir",
        str(run_dir / "run"),
        "--id",
        f"scaling-{name}",
    ]
    if ranks == 1:
        cmd = [sys.executable, str(SCRIPT), *args]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={ranks}",
            str(SCRIPT),
            *args,
        ]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    t0 = time.perf_counter()
    with open(log, "a") as fh:
        fh.write(f"\n$ {shlex.join(cmd)}\n")
        fh.flush()
        p = subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise TrainingError(f"The {name} run failed (exit {p.returncode}); see {log}.")
    s = json.loads((run_dir / "run" / "summary.json").read_text())
    return ScalingRow(
        name,
        ranks,
        threads,
        0,
        batch_per_rank,
        wall,
        s["train_seconds"],
        s["images_per_s"],
        s["test_accuracy"],
    )


def benchmark(
    data: str,
    out: str | os.PathLike,
    *,
    ranks: list[int],
    global_batch: int,
    epochs: int,
    model: str = "simple_cnn",
    lr: float = 1e-3,
    seed: int = 0,
    device: str = "cpu",
    extra: list[str] | None = None,
    include_serial_all_cores: bool = True,
) -> list[ScalingRow]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "scaling.log"
    log.write_text("")
    cuda = device == "cuda"
    cores = _cores()
    common = [
        "--data",
        data,
        "--model",
        model,
        "--epochs",
        str(epochs),
        "--lr",
        str(lr),
        "--lr-base-batch",
        str(global_batch),
        "--seed",
        str(seed),
        "--patience",
        "0",
        "--no-progress",
        "--no-tensorboard",
        "--device",
        device,
        *(extra or []),
    ]
    if not cuda and "--workers" not in common:
        common += ["--workers", "0"]
    rows: list[ScalingRow] = []
    for k in ranks:
        if global_batch % k:
            raise TrainingError(f"The global batch {global_batch} does not split evenly over {k} ranks.")
        if cuda:
            threads = max(1, cores // k)
            used = k
        else:
            if k > cores:
                raise TrainingError(f"{k} ranks need {k} cores; this machine has {cores}.")
            threads = 1 if k == 1 else cores // k
            used = k * threads
        name = "serial-1" if k == 1 else f"ddp-{k}"
        print(
            f"running {name}: {k} rank(s) x {threads} thread(s), batch {global_batch // k}/rank", flush=True
        )
        row = run_one(name, k, threads, global_batch // k, common, out, device, log)
        row.cores = used
        rows.append(row)
        if k == 1 and not cuda and include_serial_all_cores and cores > 1:
            print(f"running serial-{cores}t: 1 rank x {cores} threads", flush=True)
            row = run_one(f"serial-{cores}t", 1, cores, global_batch, common, out, device, log)
            row.cores = cores
            rows.append(row)
    base = next((r for r in rows if r.name == "serial-1"), rows[0])
    for r in rows:
        r.speedup = base.train_s / r.train_s if r.train_s > 0 else 0.0
        r.efficiency = r.speedup / max(1, r.cores)
    (out / "scaling.json").write_text(json.dumps([asdict(r) for r in rows], indent=2))
    (out / "scaling.md").write_text(markdown(rows, global_batch, epochs, model, device, cores) + "\n")
    plot(rows, out / "scaling.png")
    return rows


def markdown(
    rows: list[ScalingRow], global_batch: int, epochs: int, model: str, device: str, cores: int
) -> str:
    unit = "GPUs" if device == "cuda" else "cores"
    base = next((r for r in rows if r.name == "serial-1"), rows[0])
    share = "one GPU each" if device == "cuda" else "cores/k intra-op threads each"
    head = (
        f"Scaling of `{model}`, global batch {global_batch}, {epochs} epoch(s), same data/lr/seed "
        f"({device}, {cores} CPU cores). Fair comparison: the baseline is serial on 1 "
        f"{unit[:-1]}; k ranks get {share}; "
        "speedup = baseline training time / training time, efficiency = speedup / "
        f"{unit} used. The serial run with all cores as intra-op threads is listed for reference. Times are "
        "the training loop (slowest rank); wall includes start-up, evaluation and saving."
    )
    lines = [
        head,
        "",
        f"| run | ranks x threads | {unit} | batch/rank | train s | wall s | images/s | speedup | efficiency "
        "| test acc | acc vs baseline |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        acc = "n/a" if r.test_accuracy is None else f"{r.test_accuracy:.3f}"
        delta = (
            "n/a"
            if r.test_accuracy is None or base.test_accuracy is None
            else f"{100 * (r.test_accuracy - base.test_accuracy):+.1f} pt"
        )
        lines.append(
            f"| {r.name} | {r.ranks} x {r.threads_per_rank} | {r.cores} | {r.batch_per_rank} | "
            f"{r.train_s:.1f} | {r.wall_s:.1f} | {r.images_per_s:.0f} | {r.speedup:.2f} | "
            f"{r.efficiency:.2f} | {acc} | {delta} |"
        )
    return "\n".join(lines)


def plot(rows: list[ScalingRow], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=120)
    names = [r.name for r in rows]
    a1.bar(names, [r.images_per_s for r in rows], color="tab:blue")
    a1.set_ylabel("training images/s")
    a2.bar(names, [r.efficiency for r in rows], color="tab:green")
    a2.axhline(0.9, ls="--", color="grey")
    a2.set_ylabel("efficiency (speedup / cores)")
    a2.set_ylim(0, max(1.1, max(r.efficiency for r in rows) * 1.1))
    for ax in (a1, a2):
        ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=DESCRIPTION)
    p.add_argument("--data", required=True, help="prepared dataset (train/prepare.py)")
    p.add_argument("--out", default="runs/scaling")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--global-batch", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--model", default="simple_cnn")
    p.add_argument(
        "--lr", type=float, default=1e-3, help="learning rate at the global batch (same for all runs)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--no-serial-all-cores", action="store_true", help="skip the serial run on all cores")
    return p


def main(argv: list[str] | None = None) -> int:
    """``train/scaling.py``: run the benchmark and print its table; arguments after ``--`` go to every
    ``train/classify.py`` run unchanged."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    a = build_parser().parse_args(argv)
    try:
        benchmark(
            a.data,
            a.out,
            ranks=sorted(set(a.ranks)),
            global_batch=a.global_batch,
            epochs=a.epochs,
            model=a.model,
            lr=a.lr,
            seed=a.seed,
            device=a.device,
            extra=extra,
            include_serial_all_cores=not a.no_serial_all_cores,
        )
    except BoneclsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((Path(a.out) / "scaling.md").read_text())
    return 0
