"""Phantom generation speed: cold cache build, warm load, and images/s per task.

    .venv/bin/python bench/bench_phantom.py [--size 256] [--n 120] [--runs 3] [--workers 2] [--no-cold]
        [--recipe classic|varied]

Prints the machine, the cold build time of the cache (in a temporary cache folder, so the real
one is untouched), the warm load time, then for each task the median over ``--runs`` of
images/s in one process (wall clock and per CPU-second, the latter being what the code costs
when the machine is shared) and with ``--workers`` processes generating disjoint index ranges.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import add_repo_to_path, machine

add_repo_to_path()

from bonecls.phantom import volume as volume_mod  # noqa: E402
from bonecls.phantom.render import TASK_CLASSES  # noqa: E402
from bonecls.phantom.samples import generate  # noqa: E402
from bonecls.phantom.varied import Variants  # noqa: E402


def _worker(args: tuple[str, int, int, int, int, str]) -> int:
    import cv2

    cv2.setNumThreads(1)
    task, start, n, size, seed, recipe = args
    variants = Variants.varied() if recipe == "varied" else None
    for _ in generate(task, n, size, seed, start=start, variants=variants):  # type: ignore[arg-type]
        pass
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--n", type=int, default=120)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-cold", action="store_true", help="skip the cold cache build")
    ap.add_argument("--recipe", choices=("classic", "varied"), default="classic")
    args = ap.parse_args(argv)
    variants = Variants.varied() if args.recipe == "varied" else None

    print("machine:", machine(versions=("numpy", "cv2")))
    if not args.no_cold:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            c0 = time.process_time()
            vol = volume_mod.load_volume(cache_dir=tmp, rebuild=True)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            size_mb = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file()) / 2**20
            print(f"cold cache build: {wall:.1f} s wall ({cpu:.1f} s CPU), cache {size_mb:.1f} MiB")
            del vol
        volume_mod._MEMO.clear()
    volume_mod.load_volume()  # make sure the real cache exists
    volume_mod._MEMO.clear()
    t0 = time.perf_counter()
    vol = volume_mod.load_volume()
    print(f"warm load: {1000 * (time.perf_counter() - t0):.0f} ms from {vol.path}")

    sys.stdout.flush()
    print(
        f"\nrecipe {args.recipe}: images/s at {args.size}x{args.size}, n={args.n} per run, "
        f"median of {args.runs} runs"
    )
    for task in TASK_CLASSES:
        list(generate(task, 4, args.size, 10_000, variants=variants))  # warm-up (imports, renderer)
        walls, cpus = [], []
        for run in range(args.runs):
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in generate(task, args.n, args.size, seed=run, variants=variants):  # type: ignore[arg-type]
                pass
            walls.append(args.n / (time.perf_counter() - t0))
            cpus.append(args.n / max(time.process_time() - c0, 1e-9))
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        line = f"  {task:10s} 1 process: {wall:6.1f} img/s wall, {cpu:6.1f} img/CPU-s"
        if args.workers > 1:
            per = args.n // args.workers
            jobs = [(task, k * per, per, args.size, 99, args.recipe) for k in range(args.workers)]
            ctx = mp.get_context("spawn")  # fork after OpenCV's thread pool started can deadlock
            rates = []
            with ctx.Pool(args.workers) as pool:
                pool.map(
                    _worker, [(task, 0, 2, args.size, 7, args.recipe)] * args.workers
                )  # warm the workers
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    done = sum(pool.map(_worker, jobs))
                    rates.append(done / (time.perf_counter() - t0))
            line += f" | {args.workers} processes: {statistics.median(rates):6.1f} img/s wall"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
