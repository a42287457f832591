"""Cost growth with batch size: predict-only time and memory at batch 1, 8, 32, 64 (PyTorch and ORT).

    .venv/bin/python bench/bench_growth.py [--runs 10] [--batches 1 8 32 64] [--threads 2] [--quick]

``bench/bench_inference.py`` covers growth with the input size; this covers the batch. Each
(engine, batch) runs in a fresh process, so its peak RSS is its own: the process loads the model
(``pneumonia-cls`` by default; ``Predictor``, or ``bonecls.inference.onnx.OnnxPredictor`` from an export
made once beforehand in a temporary cache), notes its RSS, then calls ``predict_batch`` on ``batch``
decoded 1024x1024 radiographs (one chunk: the predictor's ``batch_size`` is set to the batch) once
as a warm-up and ``--runs`` times timed. Reported: p50 per batch, per image, images/s, RSS after
loading, peak RSS during the calls (the kernel's peak mark is reset after loading), and the growth
(peak minus loaded: activations, allocator arenas, the preprocessed batch).
Prints a Markdown table with the machine line and the load average. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from _common import (
    add_repo_to_path,
    current_rss_mb,
    load_average,
    machine,
    pct,
    peak_rss_since_reset_mb,
    phantom_image,
    reset_peak_rss,
)

add_repo_to_path()


def child(engine: str, batch: int, runs: int, model: str, threads: int, image: str) -> dict:
    """One measurement in this (fresh) process; returns the figures as a dict."""
    import gc

    import torch

    torch.set_num_threads(threads)
    from bonecls.imaging import load_radiograph
    from bonecls.inference import load_classifier

    rg = load_radiograph(image)
    predictor = load_classifier(model, engine=engine, threads=threads)  # "pytorch" or "onnx"
    predictor.batch_size = batch
    rgs = [rg] * batch
    gc.collect()
    loaded = current_rss_mb()
    reset = reset_peak_rss()
    predictor.predict_batch(rgs)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        predictor.predict_batch(rgs)
        times.append(time.perf_counter() - t0)
    peak = peak_rss_since_reset_mb()
    return {"p50": pct(times, 50), "p95": pct(times, 95), "loaded": loaded, "peak": peak, "reset": reset}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--engines", nargs="+", choices=["pytorch", "onnx"], default=["pytorch", "onnx"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="pneumonia-cls")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 runs, batches 1 and 8")
    parser.add_argument("--child", nargs=3, metavar=("ENGINE", "BATCH", "PNG"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.batches = 2, [1, 8]
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args.child:
        engine, batch, image = args.child
        print(json.dumps(child(engine, int(batch), args.runs, args.model, args.threads, image)))
        return 0

    print(f"Machine: {machine(args.threads, versions=('torch', 'onnxruntime'))}\n")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bonecls-bench-growth-") as tmp:
        env = {**os.environ, "BONECLS_CACHE": tmp}
        import cv2

        image = os.path.join(tmp, "chest-1024.png")  # rendered once: children only decode it
        cv2.imwrite(image, phantom_image(1024))
        if "onnx" in args.engines:  # export once, so every child loads the cached graph
            os.environ["BONECLS_CACHE"] = tmp
            from bonecls.inference import load_classifier

            load_classifier(args.model, engine="onnx")
        for engine in args.engines:
            for batch in args.batches:
                cmd = [
                    sys.executable,
                    __file__,
                    "--child",
                    engine,
                    str(batch),
                    image,
                    "--runs",
                    str(args.runs),
                ]
                cmd += ["--threads", str(args.threads), "--model", args.model]
                out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                name = "PyTorch" if engine == "pytorch" else "ONNX Runtime"
                rows.append(
                    f"| {name} | {batch} | {r['p50']:.1f} / {r['p95']:.1f} | {r['p50'] / batch:.2f} | "
                    f"{1000 * batch / r['p50']:.0f} | {r['loaded']:.0f} | {r['peak']:.0f} | "
                    f"{r['peak'] - r['loaded']:.0f} | {load_average()} |"
                )
                print(f"{engine} batch {batch} done", flush=True)
    print(
        f"\n### Predict-only cost vs batch size (`{args.model}`, decoded 1024x1024 inputs, "
        f"{args.threads} threads)\n"
    )
    print(
        "| engine | batch | p50 / p95 ms per batch | ms per image | img/s | RSS loaded MB | peak RSS MB | "
        "growth MB | load average after |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\n(p50/p95 of {args.runs} calls after one warm-up, one fresh process per row)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
