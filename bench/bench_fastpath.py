"""Is the ONNX Runtime fast path (bonecls.inference.onnx) faster than PyTorch for predict-only? By how much?

    .venv/bin/python bench/bench_fastpath.py [--runs 20] [--threads 1 2] [--sizes 192 224] [--quick]

For the shipped ``pneumonia-cls`` (ResNet-18, 1 channel, 128 px) and a random-weight ResNet-18
(1 channel) at each of ``--sizes``: export time (cold cache) and load time (warm cache, sha256
verified + parity probe), agreement with PyTorch on phantom images (max |delta p|, same label), then
p50/p95 of ``predict`` on one decoded 1024x1024 radiograph (batch 1) and of ``predict_batch`` on 32
(batch 32), plus the model alone on a preprocessed batch (engine only, without the identical
preprocessing). PyTorch and ONNX Runtime calls alternate run by run, so background load hits both
alike; both get the same number of intra-op threads, for each of ``--threads``. The ONNX cache is
a temporary folder (the user's cache is untouched). Prints Markdown tables with the machine line
and the load average after each model (the build machine is shared). Not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import add_repo_to_path, load_average, machine, pct, phantom_image, time_ab

add_repo_to_path()


def random_resnet18(out_dir: Path, size: int) -> Path:
    """A seeded random ResNet-18 (1 channel, 2 classes) saved as a card at ``size`` px."""
    import torch

    from bonecls.models import create_model
    from bonecls.weights import ModelCard, save_pytorch

    torch.manual_seed(0)
    card = ModelCard(
        id=f"resnet18-{size}",
        task="pneumonia",
        architecture="resnet18",
        class_names=["normal", "pneumonia"],
        positive_classes=["pneumonia"],
        input_size=size,
        in_chans=1,
        normalization={"mean": [0.449], "std": [0.226]},
        training_data="none (random weights, benchmark)",
    )
    model = create_model("resnet18", 2, 1).eval()
    save_pytorch(model, card, out_dir, fp16=False)
    return out_dir


def parity(torch_pred, onnx_pred, n: int = 8) -> tuple[float, bool]:
    """Max |delta p| and label agreement over ``n`` phantom chest views (both classes)."""
    from bonecls.phantom import generate

    imgs = [s.image.astype(np.float32) / 4095.0 for s in generate("pneumonia", n, 256, seed=11)]
    a, b = torch_pred.predict_batch(imgs), onnx_pred.predict_batch(imgs)
    diff = max(
        abs(pa.probabilities[k] - pb.probabilities[k])
        for pa, pb in zip(a, b, strict=True)
        for k in pa.probabilities
    )
    return diff, all(pa.label == pb.label for pa, pb in zip(a, b, strict=True))


def bench_model(label: str, card_dir: str | Path, runs: int, threads: int, rg) -> tuple[list[str], str]:
    """Rows of the speed table for one model at one thread count, and its row of the export table."""
    import torch

    from bonecls.inference.onnx import OnnxPredictor, onnx_cache_dir
    from bonecls.inference.predictor import Predictor

    torch.set_num_threads(threads)
    tp = Predictor.from_card(card_dir)
    shutil.rmtree(onnx_cache_dir(tp.card.sha256), ignore_errors=True)  # cold: export again
    t0 = time.perf_counter()
    op = OnnxPredictor.from_predictor(tp, threads=threads)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    op = OnnxPredictor.from_predictor(tp, threads=threads)
    warm = time.perf_counter() - t0
    diff, same = parity(tp, op)

    batch32 = [rg] * 32
    x1 = tp.preprocess(rg)
    x32 = torch.cat([x1] * 32)
    timings = time_ab(
        {
            "pt1": lambda: tp.predict(rg),
            "ort1": lambda: op.predict(rg),
            "pt32": lambda: tp.predict_batch(batch32),
            "ort32": lambda: op.predict_batch(batch32),
            "pt1e": lambda: tp.logits(x1),
            "ort1e": lambda: op.logits(x1),
            "pt32e": lambda: tp.logits(x32),
            "ort32e": lambda: op.logits(x32),
        },
        runs,
    )
    p50 = {k: pct(v, 50) for k, v in timings.items()}
    p95 = {k: pct(v, 95) for k, v in timings.items()}
    card = tp.card
    name = f"{label} ({card.architecture} {card.input_size}px) | {threads}"
    rows = []
    for eng, key in (("PyTorch", "pt"), ("ONNX Runtime", "ort")):
        speed1 = p50["pt1"] / p50[f"{key}1"]
        speed32 = p50["pt32"] / p50[f"{key}32"]
        rows.append(
            f"| {name} | {eng} | {p50[f'{key}1']:.1f} / {p95[f'{key}1']:.1f} | {speed1:.2f}x | "
            f"{p50[f'{key}32']:.0f} / {p95[f'{key}32']:.0f} | {32000 / p50[f'{key}32']:.0f} | "
            f"{speed32:.2f}x | "
            f"{p50[f'{key}1e']:.1f} | {p50[f'{key}32e']:.0f} |"
        )
    info = f"| {name} | {cold:.2f} | {warm:.2f} | {diff:.1e} | {'yes' if same else 'NO'} | {load_average()} |"
    return rows, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="intra-op threads (each)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[192, 224], help="random ResNet-18 sizes")
    parser.add_argument("--model", default="pneumonia-cls", help="shipped card id or folder")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 runs, shipped model only")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.sizes = 3, []
    os.environ.setdefault("OMP_NUM_THREADS", str(max(args.threads)))
    from bonecls.imaging import load_radiograph

    print(f"Machine: {machine(max(args.threads), versions=('torch', 'onnxruntime'))}\n")
    with tempfile.TemporaryDirectory(prefix="bonecls-bench-fastpath-") as tmp:
        os.environ["BONECLS_CACHE"] = str(Path(tmp) / "cache")
        import cv2

        ok, buf = cv2.imencode(".png", phantom_image(1024))
        assert ok
        rg = load_radiograph(buf.tobytes())
        print("### Predict-only: PyTorch vs ONNX Runtime (bonecls.inference.onnx), decoded 1024x1024 input\n")
        print(
            "| model | threads | engine | batch 1 p50 / p95 ms | batch 1 vs PyTorch | "
            "batch 32 p50 / p95 ms | batch 32 img/s | batch 32 vs PyTorch | "
            "engine only, batch 1 ms | engine only, batch 32 ms |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        infos = []
        models: list[tuple[str, str | Path]] = [(f"`{args.model}`", args.model)]
        for size in args.sizes:
            models.append(("random", random_resnet18(Path(tmp) / f"resnet18-{size}", size)))
        for label, card_dir in models:
            for threads in args.threads:
                rows, info = bench_model(label, card_dir, args.runs, threads, rg)
                print("\n".join(rows), flush=True)
                infos.append(info)
    print("\n### Export (cold cache), load (warm cache: sha256 + parity probe), agreement on 8 phantoms\n")
    print("| model | threads | export s | load s | max abs delta p | same labels | load average after |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(infos))
    print(
        f"\n(p50/p95 of {args.runs} runs after one warm-up, PyTorch and ONNX Runtime alternating; "
        f"same intra-op thread count for both; load average at the end {load_average()})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
