"""Pneumonia box detection speed: plain Ultralytics vs ``Detector`` (PyTorch) vs ``OnnxDetector`` (ORT).

    .venv/bin/python bench/bench_detect.py [--runs 20] [--threads 1 2] [--sizes 192 512] [--n 16] [--quick]

The shipped ``weights/pneumonia-det`` (YOLOv8n) is copied to a temporary folder once per input
size (``--sizes``; the card's own 192 px and 512 px): the copy's card gets that ``input_size`` and
``bonecls.detection.detector.export_onnx`` writes ``model.onnx`` into the copy, so ``weights/`` is never
modified. For each size and thread count:

* p50/p95 of one call on a decoded 1024x1024 phantom chest radiograph, three engines alternating run
  by run: the baseline, plain ``ultralytics.YOLO(model.pt).predict(img, imgsz=S, conf, iou=0.5)`` on
  the same 8-bit BGR array; ``Detector.detect`` (same model, our conversion from the radiograph and
  sha256-verified load); ``OnnxDetector.detect`` (ONNX Runtime, our letterbox and NMS). The ratio
  is the baseline's p50 over each engine's, measured in the same run.
* box agreement on ``--n`` test phantoms (both classes, 256 px, seed 7; the training set used seed
  101): per image, the same number of boxes and each matched box at IoU >= 0.99 with the same label,
  for Detector vs baseline and OnnxDetector vs Detector, at the card's confidence threshold and at
  0.05 (more boxes, a stricter check).

Ultralytics runs offline (``bonecls.detection.offline.configure_offline`` before it is imported). Prints
Markdown tables with the machine line and the load average. Not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import ROOT, add_repo_to_path, load_average, machine, pct, phantom_image, time_ab

add_repo_to_path()

IOU_MIN = 0.99


def sized_copy(src: Path, dst: Path, size: int) -> Path:
    """A copy of the card folder whose card says ``input_size=size`` (weights unchanged, sha256 intact)."""
    from bonecls.weights import ModelCard, write_card

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.onnx"))
    card = ModelCard.model_validate_json((dst / "card.json").read_text(encoding="utf-8"))
    extra = {k: v for k, v in card.extra.items() if k != "onnx"}
    write_card(ModelCard.model_validate({**card.model_dump(), "input_size": size, "extra": extra}), dst)
    return dst


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 1.0


def same_boxes(ref: list, got: list) -> tuple[bool, float]:
    """(same count, labels, and greedy one-to-one matches all at IoU >= IOU_MIN; the worst IoU)."""
    if len(ref) != len(got):
        return False, 0.0
    left = list(got)
    worst = 1.0
    for r in ref:
        if not left:
            return False, 0.0
        scores = [iou(r.xyxy(), g.xyxy()) if g.label == r.label else -1.0 for g in left]
        k = int(np.argmax(scores))
        worst = min(worst, scores[k])
        left.pop(k)
    return worst >= IOU_MIN, worst


def baseline_detect(yolo, size: int, conf: float) -> Callable:
    """Plain Ultralytics on a BGR uint8 array -> our DetBox list (for the agreement check)."""
    from bonecls.detection.boxes import DetBox

    def run(bgr: np.ndarray) -> list:
        res = yolo.predict(bgr, imgsz=size, conf=conf, iou=0.5, max_det=100, verbose=False, save=False)[0]
        names = res.names
        b = res.boxes
        return [
            DetBox(*map(float, xyxy), float(c), names[int(k)])
            for xyxy, c, k in zip(
                b.xyxy.cpu().numpy(), b.conf.cpu().numpy(), b.cls.cpu().numpy(), strict=True
            )
        ]

    return run


def agreement_phantoms(n: int) -> list:
    """``n`` pneumonia-task phantoms (both classes, 256 px, seed 7) as decoded radiographs."""
    import cv2

    from bonecls.imaging import load_radiograph
    from bonecls.phantom import generate

    out = []
    for s in generate("pneumonia", n, 256, seed=7):
        ok, buf = cv2.imencode(".png", s.image)
        assert ok
        out.append(load_radiograph(buf.tobytes()))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sizes", type=int, nargs="+", default=[192, 512])
    parser.add_argument("--n", type=int, default=16, help="test phantoms for the box agreement")
    parser.add_argument("--model", default=str(ROOT / "weights" / "pneumonia-det"), help="card folder")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 runs, 4 phantoms, 2 threads")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.n, args.threads = 3, 4, [2]
    os.environ.setdefault("OMP_NUM_THREADS", str(max(args.threads)))

    from bonecls.detection.boxes import to_bgr_uint8
    from bonecls.detection.detector import Detector, OnnxDetector, export_onnx
    from bonecls.detection.offline import configure_offline

    configure_offline()
    import cv2
    import torch
    import ultralytics

    from bonecls.imaging import load_radiograph

    print(f"Machine: {machine(max(args.threads), versions=('torch', 'ultralytics', 'onnxruntime'))}\n")
    ok, buf = cv2.imencode(".png", phantom_image(1024, task="pneumonia", cls="pneumonia", seed=5))
    assert ok
    rg = load_radiograph(buf.tobytes())
    bgr = to_bgr_uint8(rg)
    phantoms = agreement_phantoms(args.n)

    speed = [
        "| input px | threads | engine | p50 ms | p95 ms | vs plain Ultralytics (p50) |",
        "|---|---|---|---|---|---|",
    ]
    agree = [
        "| input px | conf | pair | images with the same boxes | boxes (ref) | worst matched IoU |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="bonecls-bench-detect-") as tmp:
        for size in args.sizes:
            card_dir = sized_copy(Path(args.model), Path(tmp) / f"det-{size}", size)
            t0 = time.perf_counter()
            export_onnx(card_dir)
            export_s = time.perf_counter() - t0
            det = Detector.from_card(card_dir)
            conf = det.default_conf()
            yolo = ultralytics.YOLO(str(card_dir / "model.pt"), task="detect")
            base = baseline_detect(yolo, size, conf)
            for threads in args.threads:
                torch.set_num_threads(threads)
                onnx = OnnxDetector.from_card(card_dir, threads=threads)
                times = time_ab(
                    {
                        "plain Ultralytics `YOLO.predict`": lambda base=base: base(bgr),
                        "`Detector.detect` (PyTorch)": lambda det=det: det.detect(rg),
                        "`OnnxDetector.detect` (ONNX Runtime)": lambda onnx=onnx: onnx.detect(rg),
                    },
                    args.runs,
                )
                ref = pct(next(iter(times.values())), 50)
                for name, t in times.items():
                    speed.append(
                        f"| {size} | {threads} | {name} | {pct(t, 50):.1f} | {pct(t, 95):.1f} | "
                        f"{ref / pct(t, 50):.2f}x |"
                    )
                speed.append(f"| {size} | {threads} | (load average after: {load_average()}) | | | |")
                print(f"size {size}, {threads} thread(s) done (ONNX export {export_s:.1f} s)", flush=True)
            for c in (conf, 0.05):
                plain = baseline_detect(yolo, size, c)
                ref_boxes = [plain(to_bgr_uint8(p)) for p in phantoms]
                det_boxes = [det.detect(p, conf=c) for p in phantoms]
                onnx_boxes = [onnx.detect(p, conf=c) for p in phantoms]
                for pair, a, b in (
                    ("Detector vs plain Ultralytics", ref_boxes, det_boxes),
                    ("OnnxDetector vs Detector", det_boxes, onnx_boxes),
                ):
                    results = [same_boxes(x, y) for x, y in zip(a, b, strict=True)]
                    n_same = sum(ok for ok, _ in results)
                    worst = min((w for (_, w), x in zip(results, a, strict=True) if x), default=float("nan"))
                    agree.append(
                        f"| {size} | {c:.2f} | {pair} | {n_same}/{len(results)} | "
                        f"{sum(len(x) for x in a)} | {worst:.4f} |"
                    )
    print("\n### Detection time per image (decoded 1024x1024 phantom chest radiograph)\n")
    print("\n".join(speed))
    print(f"\n### Box agreement on {args.n} test phantoms (IoU >= {IOU_MIN}, same label, same count)\n")
    print("\n".join(agree))
    print(
        f"\n(p50/p95 of {args.runs} runs after one warm-up, engines rotating; load average at the end "
        f"{load_average()})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
