"""Training input pipeline: images/s from prepared uint8 shards vs decoding + resizing files every epoch.

    .venv/bin/python bench/bench_input_pipeline.py [--runs 5] [--workers 0 2] [--batch-size 32] [--quick]
    .venv/bin/python bench/bench_input_pipeline.py --data DIR --prepared DIR2   # reuse existing folders

Without ``--data`` a phantom fracture dataset in the Kaggle class-folder layout is written to a
temporary folder (``python -m bonecls.phantom --task fracture --layout kaggle --n 512 --size 256
--seed 5``) and prepared with ``train/prepare.py --size 224`` (both timed: the one-off cost the
shards amortise). Then, for each ``--workers`` count, the median over ``--runs`` epochs (after one
warm-up epoch) of images/s over the train split, same batch size, shuffled, for

* shards, loader: ``bonecls.training.shards.ShardDataset`` in the training DataLoader (as
  ``training.builders.build_loaders`` builds it: persistent workers, prefetch 4): uint8 (B, 1, S, S)
  batches, what the loader feeds (on a GPU the conversion below runs on the device);
* shards, model-ready: the same followed by ``DevicePreprocess`` on the CPU (uint8 -> float,
  3 channels, ImageNet normalisation), as a CPU training step runs it;
* seed 001/002 style: ``torchvision.datasets.ImageFolder`` + ``Resize((224, 224))`` + ``ToTensor``
  + ``Normalize`` (PIL decodes and resizes every file every epoch), same loader settings.

The model-ready and seed-style pipelines yield the same (B, 3, 224, 224) float batches; nothing
else (no model) runs. The phantoms' side (``--image-size``, 256 px by default) sets what the
seed-style pipeline decodes and resizes; real radiographs are 1-3k px a side. Prints a Markdown
table with the machine line and the load average. Not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, add_repo_to_path, load_average, machine

add_repo_to_path()

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _run(cmd: list[str]) -> None:
    """Run a set-up command quietly (Dask logs to stderr); show its output only if it fails."""
    proc = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"set-up command failed ({proc.returncode}): {' '.join(cmd)}")


def make_dataset(tmp: Path, n: int, size: int, prep_size: int) -> tuple[Path, Path, float, float]:
    """Write the phantom dataset and prepare it; returns (data, prepared, write s, prepare s)."""
    data, prepared = tmp / "phantoms", tmp / "prepared"
    t0 = time.perf_counter()
    _run(
        [
            *(sys.executable, "-m", "bonecls.phantom", "--task", "fracture", "--layout", "kaggle"),
            *("--n", str(n), "--size", str(size), "--seed", "5", "--no-progress", str(data)),
        ]
    )
    t1 = time.perf_counter()
    _run(
        [
            *(sys.executable, str(ROOT / "train" / "prepare.py"), "--source", str(data)),
            *("--out", str(prepared), "--size", str(prep_size), "--no-progress"),
        ]
    )
    return data, prepared, t1 - t0, time.perf_counter() - t1


def loader_kwargs(workers: int) -> dict:
    """The training loader's settings on CPU (bonecls.training.builders.build_loaders)."""
    kw: dict = {"num_workers": workers, "pin_memory": False, "persistent_workers": workers > 0}
    if workers > 0:
        kw["prefetch_factor"] = 4
    return kw


def shard_pipeline(prepared: Path, batch_size: int, workers: int, size: int, model_ready: bool):
    """Epoch function over the shards: uint8 batches as the loader feeds them, or (``model_ready``)
    followed by ``DevicePreprocess`` on the CPU, as a CPU training step would run it."""
    from torch.utils.data import DataLoader

    from bonecls.training.augment import DevicePreprocess
    from bonecls.training.shards import ShardDataset

    ds = ShardDataset(prepared, "train")
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, **loader_kwargs(workers))
    prep = DevicePreprocess("cpu", size, 3, IMAGENET_MEAN, IMAGENET_STD)

    def epoch() -> int:
        n = 0
        for batch in loader:
            x = prep(batch[0]) if model_ready else batch[0]
            n += int(x.shape[0])
        return n

    return epoch


def seed_pipeline(data: Path, batch_size: int, workers: int, size: int):
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    tf = transforms.Compose(
        [
            transforms.Resize((size, size)),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    ds = datasets.ImageFolder(str(data / "train"), transform=tf)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, **loader_kwargs(workers))

    def epoch() -> int:
        n = 0
        for x, _ in loader:
            n += int(x.shape[0])
        return n

    return epoch


def rate(epoch, runs: int) -> tuple[float, list[float]]:
    """Median images/s over ``runs`` timed epochs after one warm-up epoch (starts the workers)."""
    epoch()
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        n = epoch()
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates), rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed epochs per pipeline and worker count")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads in the main process")
    parser.add_argument("--n", type=int, default=512, help="phantom images to write (without --data)")
    parser.add_argument("--image-size", type=int, default=256, help="phantom side in px (without --data)")
    parser.add_argument("--size", type=int, default=224, help="model input / prepared size")
    parser.add_argument("--data", type=Path, help="existing class-folder dataset (train/<class>/*)")
    parser.add_argument("--prepared", type=Path, help="existing train/prepare.py output for --data")
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 images, 1 run, 0 workers")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.n, args.workers = 1, 64, [0]
    if (args.data is None) != (args.prepared is None):
        parser.error("give both --data and --prepared, or neither")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)

    print(f"Machine: {machine(args.threads, versions=('torch', 'torchvision', 'PIL'))}\n")
    with tempfile.TemporaryDirectory(prefix="bonecls-bench-input-") as tmp:
        if args.data is None:
            data, prepared, write_s, prep_s = make_dataset(Path(tmp), args.n, args.image_size, args.size)
            print(
                f"dataset: {args.n} phantoms at {args.image_size} px written in {write_s:.1f} s; "
                f"train/prepare.py --size {args.size} took {prep_s:.1f} s (once)\n"
            )
        else:
            data, prepared = args.data, args.prepared
        from bonecls.training.shards import ShardDataset

        print(f"train split: {len(ShardDataset(prepared, 'train'))} images\n")
        rows = []
        for workers in args.workers:
            loader, loader_runs = rate(
                shard_pipeline(prepared, args.batch_size, workers, args.size, False), args.runs
            )
            ready, ready_runs = rate(
                shard_pipeline(prepared, args.batch_size, workers, args.size, True), args.runs
            )
            seed, seed_runs = rate(seed_pipeline(data, args.batch_size, workers, args.size), args.runs)
            runs = "; ".join(", ".join(f"{r:.0f}" for r in rr) for rr in (loader_runs, ready_runs, seed_runs))
            rows.append(
                f"| {workers} | {loader:.0f} | {ready:.0f} | {seed:.0f} | {loader / seed:.1f}x | "
                f"{ready / seed:.1f}x | {runs} | {load_average()} |"
            )
            print(f"workers {workers} done", flush=True)
    print(
        f"\n### Training input pipeline: images/s (batch {args.batch_size}, {args.size} px, "
        f"median of {args.runs} epochs after a warm-up)\n"
    )
    print(
        "| DataLoader workers | shards: loader (uint8) img/s | shards + DevicePreprocess (CPU) img/s | "
        "seed-style ImageFolder + PIL Resize/ToTensor/Normalize img/s | ratio, loader | "
        "ratio, model-ready | runs (loader; +preprocess; seed-style) | load average after |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\n(load average at the end {load_average()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
