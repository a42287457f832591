"""Time to answer and batch throughput of the shipped classifiers, against the seed 002 pipeline.

    .venv/bin/python bench/bench_inference.py [--runs 30] [--models pneumonia-cls] [--threads 2] [--quick]

1. Time to answer, per image: decode (1024x1024 16-bit PNG, and the same as a DICOM) -> preprocess
   -> predict -> Grad-CAM -> overlay encoded as PNG. p50/p95 over --runs, for each shipped model.
   Baseline measured in the same run: seed 002's pipeline (EfficientNet-B6 at 224, 3 channels,
   ImageNet normalisation, pytorch-grad-cam's GradCAM called the plain way, a second forward for
   the prediction), on the same decoded image. Random weights: speed does not depend on them.
2. Batch throughput (worklist / CLI over a folder): images/s for predict only (batch 32) and for
   predict + CAM (one image at a time, the CAM pass giving the prediction).
3. Growth with input size: decode + predict + CAM for 512..4096 px inputs (time, and the memory one
   answer adds to the resting process at each size: the kernel's peak mark is reset per size).
   (Growth with the batch size: ``bench/bench_growth.py``; ONNX Runtime: ``bench/bench_fastpath.py``.)

Prints Markdown tables with the machine line; figures go to BENCHMARKS.md. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
from _common import (
    add_repo_to_path,
    current_rss_mb,
    machine,
    pct,
    peak_rss_since_reset_mb,
    phantom_inputs,
    reset_peak_rss,
)
from _common import time_calls as time_answer

add_repo_to_path(tests=True)

from bonecls.imaging import encode_png  # noqa: E402  (the app's and the CLI's PNG encoder)


def ours(model_id: str, data: bytes):
    from bonecls.imaging import load_radiograph
    from bonecls.inference.predictor import Predictor

    predictor = Predictor.from_card(model_id)

    def answer() -> bytes:
        rg = load_radiograph(data)
        explanation = predictor.explain(rg, method="gradcam")
        return encode_png(explanation.overlay)

    return predictor, answer


def seed002_baseline(data: bytes):
    """Seed 002: EfficientNet-B6 at 224 + pytorch-grad-cam GradCAM, prediction from its own forward."""
    import torch
    import torch.nn.functional as F
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import show_cam_on_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchvision.models import efficientnet_b6

    from bonecls.imaging import load_radiograph

    model = efficientnet_b6(num_classes=2).eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def answer() -> bytes:
        rg = load_radiograph(data)
        x = torch.from_numpy(np.array(rg.pixels))[None, None]
        x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True).repeat(1, 3, 1, 1)
        x = (x - mean) / std
        with torch.no_grad():
            label = int(model(x).softmax(1).argmax())
        with GradCAM(model=model, target_layers=[model.features[-1]]) as cam:
            heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(label)])[0]
        import cv2

        heat = cv2.resize(heat, rg.pixels.shape[::-1])
        rgb = np.repeat(rg.pixels[:, :, None], 3, axis=2)
        return encode_png(show_cam_on_image(rgb, heat, use_rgb=True))

    return answer


def growth_child(model_id: str, size: int) -> dict:
    """One input size in this fresh process: what an answer at ``size`` px costs in time and in memory
    above the warm, resting process (model loaded, one small answer done; the kernel's peak mark reset)."""
    import gc

    from bonecls.imaging import load_radiograph

    predictor, warm = ours(model_id, phantom_inputs(256)["png16"])
    warm()
    payload = phantom_inputs(size)["png16"]

    def answer() -> bytes:
        return encode_png(predictor.explain(load_radiograph(payload), method="gradcam").overlay)

    gc.collect()
    resting = current_rss_mb()
    reset_peak_rss()
    times = time_answer(answer, 5)
    return {"p50": pct(times, 50), "resting": resting, "peak": peak_rss_since_reset_mb()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--models", nargs="+", default=["fracture", "threeclass"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--no-growth", action="store_true")
    parser.add_argument("--growth-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 runs, no baseline, no growth")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.no_baseline, args.no_growth = 3, True, True

    import torch

    torch.set_num_threads(args.threads)
    if args.growth_child:
        print(json.dumps(growth_child(args.models[0], args.growth_child)))
        return 0
    from bonecls.imaging import load_radiograph

    print(f"Machine: {machine(args.threads)}\n")
    data = phantom_inputs(1024)

    print("### Time to answer: decode -> predict -> Grad-CAM -> overlay PNG (1024x1024 input)\n")
    print("| pipeline | input | p50 ms | p95 ms | vs seed 002 (p50) |")
    print("|---|---|---|---|---|")
    base_p50: dict[str, float] = {}
    if not args.no_baseline:
        for kind, payload in data.items():
            times = time_answer(seed002_baseline(payload), max(5, args.runs // 3))
            base_p50[kind] = pct(times, 50)
            name = "seed 002: EfficientNet-B6 224 + GradCAM"
            print(f"| {name} | {kind} | {pct(times, 50):.1f} | {pct(times, 95):.1f} | 1.00x |")
    predictors = {}
    for model_id in args.models:
        for kind, payload in data.items():
            predictor, answer = ours(model_id, payload)
            predictors[model_id] = predictor
            times = time_answer(answer, args.runs)
            p50 = pct(times, 50)
            ratio = f"{base_p50[kind] / p50:.2f}x faster" if kind in base_p50 else "-"
            card = predictor.card
            print(
                f"| bonecls `{model_id}` ({card.architecture} {card.input_size}px) | {kind} | {p50:.1f} | "
                f"{pct(times, 95):.1f} | {ratio} |"
            )

    print("\n### Batch throughput (decoded images, 1024x1024)\n")
    print("| model | predict only (batch 32) img/s | predict + Grad-CAM img/s |")
    print("|---|---|---|")
    rg = load_radiograph(data["png16"])
    batch = [rg] * 64
    for model_id, predictor in predictors.items():
        # one warm-up, then the median of five timed calls (one call alone varied 40-82 img/s between runs)
        pred_rate = len(batch) / pct(time_answer(lambda p=predictor: p.predict_batch(batch), 5), 50) * 1000
        predictor.explain(rg)
        t0 = time.perf_counter()
        for _ in range(16):
            predictor.explain(rg)
        cam_rate = 16 / (time.perf_counter() - t0)
        print(f"| `{model_id}` | {pred_rate:.1f} | {cam_rate:.1f} |")

    if not args.no_growth:
        model_id = args.models[0]
        print(f"\n### Growth with input size (`{model_id}`, decode + predict + Grad-CAM + PNG)\n")
        print(
            "| input px | megapixels | p50 ms | ms per megapixel | RSS resting MB | peak RSS MB "
            "| answer's own MB | MB per megapixel |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for size in (512, 1024, 2048, 4096):
            cmd = [sys.executable, __file__, "--growth-child", str(size), "--models", model_id]
            cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            mp, own = size * size / 1e6, r["peak"] - r["resting"]
            print(
                f"| {size} | {mp:.2f} | {r['p50']:.1f} | {r['p50'] / mp:.1f} | {r['resting']:.0f} | "
                f"{r['peak']:.0f} | {own:.0f} | {own / mp:.0f} |"
            )
        print("\n(growth: one fresh process per size, 5 answers after a warm-up on a 256-px image)")
    print(f"\n(p50/p95 of {args.runs} runs after one warm-up)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
