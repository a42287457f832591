"""A very large upload in the real app: server RSS while an 8000×8000 PNG is read on a reading page.

    .venv/bin/python bench/bench_large_upload.py [--side 8000] [--page Pneumonia]

Writes a grey PNG of ``--side``² pixels (a smooth film-like picture with noise), starts
`streamlit run app.py` on a free loopback port, uploads the file in Debian Chromium through Playwright,
opens the reading page and waits for its overlay, then reports the server's RSS (the process and its
children) and its peak RSS (``VmHWM``, the kernel's high-water mark of the server process itself).
The app's goal is 1.5 GB with every shipped model loaded (BENCHMARKS.md, the app). Not a test.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from _common import load_average
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import streamlit_server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def film_png(side: int) -> bytes:
    """A grey ``side``² PNG: smooth bands plus noise, so it neither compresses to nothing nor is random."""
    rng = np.random.default_rng(0)
    axis = np.arange(side, dtype=np.float32)
    grey = np.sin(axis / 300.0)[None, :] * 60 + np.cos(axis / 250.0)[:, None] * 60 + 128
    grey += rng.normal(0, 8, (side, side)).astype(np.float32)
    buf = io.BytesIO()
    Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def phantom_png(side: int) -> bytes:
    """A pneumonia phantom (classic recipe, dataset seed 4242, no model trained on it) rendered at 1024 px
    and enlarged to ``side``², so the image is one the models answer rather than refuse: the answered
    path (prediction, heat map, overlay) is what is measured."""
    import cv2

    sys.path.insert(0, str(ROOT))
    from bonecls.phantom import generate

    sample = next(iter(generate("pneumonia", 2, 1024, 4242)))
    big = cv2.resize(sample.to_uint8(), (side, side), interpolation=cv2.INTER_LINEAR)
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(tmp: Path, image: Path, page_name: str) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    log_path = tmp / "server.log"
    proc, url = streamlit_server.start(log_path, {"BONECLS_AUDIT_DB": str(tmp / "audit.sqlite")})
    out: dict[str, float] = {}
    try:
        streamlit_server.wait_healthy(proc, url, log_path)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 1440, "height": 1500})
            page.goto(url)
            page.wait_for_selector("text=Reading aid, not a diagnosis.", timeout=120_000)
            time.sleep(5)  # the warm-up loads every shipped model
            out["rss_models_loaded_mb"] = rss_mb(proc.pid)
            t0 = time.perf_counter()
            page.locator("input[type=file]").set_input_files(str(image))
            page.wait_for_selector("text=Images in this session (1 readable)", timeout=300_000)
            out["upload_read_s"] = time.perf_counter() - t0
            page.get_by_role("button", name=page_name, exact=True).first.click()
            page.wait_for_selector("text=Answered in", timeout=300_000)
            # the overlay, or the scope gate's refusal panel (a synthetic film may be out of scope)
            page.wait_for_function(
                "() => document.querySelectorAll('.js-plotly-plot image').length >= 1"
                " || document.body.innerText.includes('Outside what this model was trained on')",
                timeout=120_000,
            )
            out["answered_s"] = time.perf_counter() - t0
            out["refused_by_scope_gate"] = float(
                "Outside what this model was trained on" in page.inner_text("body")
            )
            out["rss_after_answer_mb"] = rss_mb(proc.pid)
            out["server_peak_rss_mb"] = hwm_mb(proc.pid)
            browser.close()
    finally:
        streamlit_server.stop(proc)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=8000, help="image side in pixels (default 8000)")
    parser.add_argument("--page", default="Pneumonia", help="reading page to open: Fracture, Pneumonia ...")
    parser.add_argument(
        "--phantom",
        action="store_true",
        help="an enlarged pneumonia phantom (answered) instead of bands (refused)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / f"film-{args.side}.png"
        image.write_bytes(phantom_png(args.side) if args.phantom else film_png(args.side))
        size_mb = image.stat().st_size / 2**20
        result = run(Path(tmp), image, args.page)
    print(f"Machine: {os.cpu_count()} CPUs, load average {load_average()}")
    print(f"{args.side}×{args.side} grey PNG, {size_mb:.0f} MB, page {args.page}\n")
    print("| measure | value |")
    print("|---|---|")
    for key, value in result.items():
        print(f"| {key} | {value:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
