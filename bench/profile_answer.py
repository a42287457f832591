"""Where the time to answer goes: decode -> preprocess -> predict + Grad-CAM -> overlay -> PNG, per stage.

    .venv/bin/python bench/profile_answer.py [--runs 30] [--model pneumonia-cls] [--input png16] [--py-spy]

Two independent measurements of the same loop (``bench/bench_inference.py``'s time to answer on a
1024x1024 16-bit PNG or DICOM of a phantom chest view):

1. Instrumented (default): the functions that make up each stage are wrapped with timers that
   subtract their children, so each stage's time is exclusive and the stages add up to the whole;
   median per stage over ``--runs``. Wrapping costs ~1 us per call (a few dozen calls per answer).
2. Sampling (``--py-spy``): the same loop runs under ``py-spy record`` (raw collapsed stacks, 250 Hz)
   and every sample inside the timed loop is credited to the innermost stage function on its stack.

Then two small tables on the same image: PNG encoders/levels for the 1024x1024 overlay (the app
encodes with Pillow level 1, the CLI's ``--cam`` with Pillow's default, this loop with OpenCV's
default) and resize choices for the 1024 -> input-size shrink. Prints Markdown with the machine line
and the load average. Not a test.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import add_repo_to_path, load_average, machine, pct, phantom_inputs, time_calls

add_repo_to_path(tests=True)

# stage label -> the functions whose (exclusive) time is that stage, as (module, qualified name)
STAGES: dict[str, list[tuple[str, str]]] = {
    "decode: PNG/DICOM decode": [
        ("bonecls.imaging.load", "decode_pil"),  # load_radiograph looks them up in its own module
        ("bonecls.imaging.load", "decode_dicom"),
    ],
    "decode: window, checks": [("bonecls.imaging.load", "finish_radiograph")],
    "decode: sniff, sha256": [("bonecls.imaging", "load_radiograph")],
    "preprocess: resize + normalise": [("bonecls.inference.predictor", "Predictor.preprocess")],
    "forward (CAM pass = prediction)": [
        ("pytorch_grad_cam.activations_and_gradients", "ActivationsAndGradients.__call__")
    ],
    "backward (to the target layer)": [("torch", "Tensor.backward")],
    "Grad-CAM weights + map": [
        ("pytorch_grad_cam.base_cam", "BaseCAM.compute_cam_per_layer"),
        ("pytorch_grad_cam.base_cam", "BaseCAM.aggregate_multi_layers"),
    ],
    "heat map: sanitise + resize to 1024": [
        ("bonecls.inference.heatmap", "sanitize_heatmap"),
        ("bonecls.inference.heatmap", "resize_heatmap"),
    ],
    "colormap + overlay": [("bonecls.inference.predictor", "overlay")],
    "PNG encode": [("bonecls.imaging", "encode_png")],
    "explain: hooks, set-up, softmax": [
        ("bonecls.inference.predictor", "Predictor.explain"),
        ("bonecls.inference.predictor", "explain_with_logits"),  # predictor.py's own reference to it
    ],
}
# py-spy frame patterns for the same stages: (function name without its class, file suffix); py-spy
# names frames "Class.method (path/file.py:line)"
SPY: dict[str, list[tuple[str, str]]] = {
    "decode: PNG/DICOM decode": [("decode_pil", "imaging/pil.py"), ("decode_dicom", "imaging/dicom.py")],
    "decode: window, checks": [("finish_radiograph", "imaging/radiograph.py")],
    "decode: sniff, sha256": [("load_radiograph", "imaging/load.py")],
    "preprocess: resize + normalise": [("preprocess", "predictor.py")],
    "forward (CAM pass = prediction)": [("__call__", "activations_and_gradients.py")],
    "backward (to the target layer)": [("backward", "_tensor.py")],
    "Grad-CAM weights + map": [
        ("compute_cam_per_layer", "base_cam.py"),
        ("aggregate_multi_layers", "base_cam.py"),
    ],
    "heat map: sanitise + resize to 1024": [
        ("sanitize_heatmap", "heatmap.py"),
        ("resize_heatmap", "heatmap.py"),
    ],
    "colormap + overlay": [("overlay", "heatmap.py")],
    "PNG encode": [("encode_png", "imaging/radiograph.py")],
    "explain: hooks, set-up, softmax": [("explain", "predictor.py"), ("explain_with_logits", "torch_cam.py")],
}


class StageTimer:
    """Exclusive wall time per stage: a stage's time excludes the stages called inside it."""

    def __init__(self) -> None:
        self.totals: collections.Counter[str] = collections.Counter()
        self._stack: list[list] = []

    def wrap(self, owner: object, name: str, stage: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            self._stack.append([stage, time.perf_counter(), 0.0])
            try:
                return original(*args, **kwargs)
            finally:
                label, t0, child = self._stack.pop()
                elapsed = time.perf_counter() - t0
                self.totals[label] += elapsed - child
                if self._stack:
                    self._stack[-1][2] += elapsed

        setattr(owner, name, timed)

    def install(self) -> None:
        import importlib

        for stage, targets in STAGES.items():
            for module, qualname in targets:
                owner: object = (
                    sys.modules[__name__] if module == "__main__" else importlib.import_module(module)
                )
                *path, attr = qualname.split(".")
                for part in path:
                    owner = getattr(owner, part)
                self.wrap(owner, attr, stage)


def answer_fn(model: str, data: bytes) -> Callable[[], bytes]:
    from bonecls import imaging
    from bonecls.inference.predictor import Predictor

    predictor = Predictor.from_card(model)

    def answer() -> bytes:
        rg = imaging.load_radiograph(data)  # looked up per call, so the stage wrapper sees it
        return imaging.encode_png(predictor.explain(rg, method="gradcam").overlay)

    return answer


def instrumented(answer: Callable[[], bytes], runs: int) -> tuple[dict[str, float], float]:
    """Median exclusive ms per stage over ``runs`` answers, and the median total ms."""
    timer = StageTimer()
    timer.install()
    answer()
    per_run: dict[str, list[float]] = collections.defaultdict(list)
    totals = []
    for _ in range(runs):
        timer.totals.clear()
        t0 = time.perf_counter()
        answer()
        total = time.perf_counter() - t0
        totals.append(total * 1000)
        accounted = sum(timer.totals.values())
        for stage in STAGES:
            per_run[stage].append(timer.totals.get(stage, 0.0) * 1000)
        per_run["other (loop, unwrapped calls)"].append((total - accounted) * 1000)
    return {k: statistics.median(v) for k, v in per_run.items()}, statistics.median(totals)


def sampled(args: argparse.Namespace) -> tuple[dict[str, float], int]:
    """Share of py-spy samples per stage inside the timed loop (re-runs this script under py-spy)."""
    with tempfile.TemporaryDirectory(prefix="bonecls-pyspy-") as tmp:
        raw = Path(tmp) / "stacks.txt"
        spy = Path(sys.executable).with_name("py-spy")
        cmd = [str(spy), "record", "-r", "250", "-f", "raw", "-o", str(raw), "--", sys.executable, __file__]
        cmd += ["--loop-only", "--runs", str(args.runs * 3), "--model", args.model, "--input", args.input]
        subprocess.run(cmd, check=True, capture_output=True)
        counts: collections.Counter[str] = collections.Counter()
        total = 0
        frame_re = re.compile(r"^(?P<fn>[^ ]+) \((?P<file>[^:)]+)")
        for line in raw.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            frames = stack.split(";")
            if not any(f.startswith("timed_loop ") for f in frames):
                continue
            total += int(n)
            for frame in reversed(frames):  # innermost first
                m = frame_re.match(frame)
                if not m:
                    continue
                hit = next(
                    (
                        stage
                        for stage, pats in SPY.items()
                        if any(m["fn"].rsplit(".", 1)[-1] == fn and m["file"].endswith(f) for fn, f in pats)
                    ),
                    None,
                )
                if hit:
                    counts[hit] += int(n)
                    break
            else:
                counts["other (loop, unwrapped calls)"] += int(n)
    return {k: 100.0 * v / max(total, 1) for k, v in counts.items()}, total


def timed_loop(answer: Callable[[], bytes], runs: int) -> None:
    answer()
    for _ in range(runs):
        answer()


def png_table(rgb: np.ndarray, runs: int) -> list[str]:
    import io

    import cv2
    from PIL import Image

    bgr = np.ascontiguousarray(rgb[:, :, ::-1])

    def cv(level: int | None, row_filter: int | None = None) -> Callable[[], bytes]:
        params = [] if level is None else [cv2.IMWRITE_PNG_COMPRESSION, level]
        if row_filter is not None:
            params += [cv2.IMWRITE_PNG_FILTER, row_filter]
        return lambda: cv2.imencode(".png", bgr, params)[1].tobytes()

    def pil(level: int | None) -> Callable[[], bytes]:
        def run() -> bytes:
            buf = io.BytesIO()
            kw = {} if level is None else {"compress_level": level}
            Image.fromarray(rgb).save(buf, format="PNG", **kw)
            return buf.getvalue()

        return run

    rows = ["| encoder | p50 ms | size KiB | used by |", "|---|---|---|---|"]
    for name, fn, who in (
        ("OpenCV default", cv(None), ""),
        (
            "OpenCV level 1, Up filter",
            cv(1, cv2.IMWRITE_PNG_FILTER_UP),
            "bonecls.imaging.encode_png: the app, `--cam`, these benches",
        ),
        ("OpenCV level 1, all filters tried", cv(1), "encode_png before 2026-12-03 (session 5)"),
        ("OpenCV level 0, no filter", cv(0, cv2.IMWRITE_PNG_FILTER_NONE), "(uncompressed: 4x the bytes)"),
        ("Pillow level 1", pil(1), "the app before 2026-12"),
        ("Pillow default (6)", pil(None), "`--cam` before 2026-12"),
    ):
        t = time_calls(fn, runs)
        rows.append(f"| {name} | {pct(t, 50):.1f} | {len(fn()) / 1024:.0f} | {who} |")
    return rows


def resize_table(pixels: np.ndarray, size: int, runs: int) -> list[str]:
    import cv2

    rows = ["| 1024 -> input resize | p50 ms | max abs diff vs INTER_AREA |", "|---|---|---|"]
    ref = cv2.resize(pixels, (size, size), interpolation=cv2.INTER_AREA)
    for name, interp in (
        ("INTER_AREA (bonecls)", cv2.INTER_AREA),
        ("INTER_LINEAR", cv2.INTER_LINEAR),
        ("INTER_NEAREST", cv2.INTER_NEAREST),
    ):
        t = time_calls(lambda interp=interp: cv2.resize(pixels, (size, size), interpolation=interp), runs)
        diff = float(np.abs(cv2.resize(pixels, (size, size), interpolation=interp) - ref).max())
        rows.append(f"| {name} | {pct(t, 50):.2f} | {diff:.3f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--model", default="pneumonia-cls")
    parser.add_argument("--input", choices=["png16", "dicom"], default="png16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--py-spy", action="store_true", help="also sample the loop with py-spy")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 runs")
    parser.add_argument("--loop-only", action="store_true", help=argparse.SUPPRESS)  # py-spy's child
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = 3
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    data = phantom_inputs(1024)[args.input]
    answer = answer_fn(args.model, data)
    if args.loop_only:
        timed_loop(answer, args.runs)
        return 0

    print(f"Machine: {machine(args.threads)}\n")
    stages, total = instrumented(answer, args.runs)
    spy: dict[str, float] = {}
    samples = 0
    if args.py_spy:
        spy, samples = sampled(args)
    print(
        f"### Where the time goes: `{args.model}`, {args.input} 1024x1024 -> Grad-CAM overlay PNG "
        f"(p50 total {total:.1f} ms)\n"
    )
    head = "| stage | ms (median, exclusive) | % of total |" + (" % of py-spy samples |" if spy else "")
    print(head)
    print("|---|---|---|" + ("---|" if spy else ""))
    for stage, ms in stages.items():
        row = f"| {stage} | {ms:.1f} | {100 * ms / total:.0f}% |"
        if spy:
            row += f" {spy.get(stage, 0.0):.0f}% |"
        print(row)
    note = f"; py-spy: {samples} samples at 250 Hz over {args.runs * 3} answers" if spy else ""
    print(f"\n(median of {args.runs} instrumented answers after one warm-up{note}; load {load_average()})")

    from bonecls.imaging import load_radiograph
    from bonecls.inference.predictor import Predictor

    rg = load_radiograph(data)
    predictor = Predictor.from_card(args.model)
    overlay = predictor.explain(rg).overlay
    print("\n### PNG encoding of the 1024x1024 RGB overlay\n")
    print("\n".join(png_table(overlay, args.runs)))
    print(f"\n### Preprocess resize, 1024 -> {predictor.card.input_size} px (float32)\n")
    print(
        "\n".join(resize_table(np.asarray(rg.pixels, dtype=np.float32), predictor.card.input_size, args.runs))
    )
    print(f"\n(load average at the end {load_average()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
