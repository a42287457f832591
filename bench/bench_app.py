"""The app as a radiologist meets it: cold start, first and warm answers, memory with all models loaded.

    .venv/bin/python bench/bench_app.py [--runs 3] [--launcher] [--arrive-after S]

Starts `streamlit run app.py` (with ``--launcher``: ``python -m bonecls.serve``, which starts the
model warm-up with the server) on a free loopback port with the shipped weights; after
``--arrive-after`` seconds (0: the first reader arrives at once, the worst case) drives Debian
Chromium through Playwright (the same steps as tests/test_browser.py: upload a DICOM, open the
Fracture page, wait for the prediction and the overlay), and reports per run:
- server start to healthy (s), page load (s),
- cold: first image, click to overlay (s) — includes importing torch and loading the models,
- warm: a second image, the server's own "Answered in" figure and click to overlay (s): as Playwright sees
  it (its click waits for the button to be stable, then two waits poll the page over the DevTools
  protocol) and as the page itself sees it (``..._in_page_s``: from the click event to the DOM mutation
  that shows both the answer and the overlay, timed by ``performance.now()`` in the page),
- server RSS after all shipped models are loaded (MB, the process and its children).
Not a test; figures go to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
from _common import load_average

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import streamlit_server  # noqa: E402  (tests/streamlit_server.py: start, health wait, stop)

CHROMIUM = "/usr/bin/chromium"
PAGE = "Pneumonia"  # the reading page driven (its models must be installed)


def rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def one_run(
    tmp: Path, dicoms: list[Path], launcher: bool = False, arrive_after: float = 0.0
) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    log_path = tmp / "server.log"
    t0 = time.perf_counter()
    env = {"BONECLS_AUDIT_DB": str(tmp / "audit.sqlite")}
    proc, url = streamlit_server.start(log_path, env, launcher=launcher)
    out: dict[str, float] = {}
    try:
        streamlit_server.wait_healthy(proc, url, log_path)
        out["server_healthy_s"] = time.perf_counter() - t0
        time.sleep(arrive_after)  # the first reader arrives this long after the server is up
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = browser.new_page(viewport={"width": 1440, "height": 1500})
            t1 = time.perf_counter()
            page.goto(url)
            page.wait_for_selector("text=Reading aid, not a diagnosis.", timeout=120_000)
            out["page_loaded_s"] = time.perf_counter() - t1
            page.locator("input[type=file]").set_input_files(str(dicoms[0]))
            page.wait_for_selector("text=Images in this session (1 readable)", timeout=120_000)
            t1 = time.perf_counter()
            page.get_by_role("button", name=PAGE, exact=True).first.click()
            wait_answer(page)
            out["cold_first_answer_s"] = time.perf_counter() - t1
            out["cold_from_server_start_s"] = time.perf_counter() - t0
            page.get_by_role("link", name="Home — upload").click()
            page.locator("input[type=file]").set_input_files(str(dicoms[1]))
            page.wait_for_selector("text=Images in this session (2 readable)", timeout=120_000)
            page.evaluate(IN_PAGE_CLOCK)
            t1 = time.perf_counter()
            page.get_by_role("button", name=PAGE, exact=True).nth(1).click()
            page.wait_for_selector(f"text={dicoms[1].name}", timeout=60_000)
            wait_answer(page)
            out["warm_click_to_overlay_s"] = time.perf_counter() - t1
            page.wait_for_function("() => window.__bcOverlay !== null", timeout=10_000)
            out["warm_click_to_overlay_in_page_s"] = page.evaluate(
                "() => (window.__bcOverlay - window.__bcClick) / 1000"
            )
            answered = page.locator("text=Answered in").inner_text()
            out["warm_server_answer_s"] = float(answered.split("Answered in ")[1].split(" s")[0])
            time.sleep(3)  # the background warm-up has loaded every shipped model by now
            out["server_rss_all_models_mb"] = rss_mb(proc.pid)
            browser.close()
    finally:
        streamlit_server.stop(proc)
    return out


#: in the page: the time of the next click and of the first DOM change after it that shows the answer and
#: an overlay image (textContent, not innerText: reading it forces no layout)
IN_PAGE_CLOCK = """() => {
  window.__bcClick = null; window.__bcOverlay = null;
  const onClick = () => { if (window.__bcClick === null) window.__bcClick = performance.now(); };
  document.addEventListener('click', onClick, {capture: true, once: true});
  const obs = new MutationObserver(() => {
    if (window.__bcClick === null) return;
    if (document.body.textContent.includes('Answered in')
        && document.querySelectorAll('.js-plotly-plot image').length >= 1) {
      window.__bcOverlay = performance.now(); obs.disconnect();
    }
  });
  obs.observe(document.body, {childList: true, subtree: true, characterData: true});
}"""


def wait_answer(page) -> None:
    page.wait_for_selector("text=Answered in", timeout=180_000)
    page.wait_for_function(
        "() => document.querySelectorAll('.js-plotly-plot image').length >= 1", timeout=120_000
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--page", default=PAGE, help="reading page to drive: Fracture, Pneumonia ...")
    parser.add_argument(
        "--launcher",
        action="store_true",
        help="start the server with `python -m bonecls.serve` (models load from server start)",
    )
    parser.add_argument(
        "--arrive-after",
        type=float,
        default=0.0,
        metavar="S",
        help="open the page S seconds after the server is healthy (a reader who is not the first to "
        "arrive; 0 = at once, the worst case)",
    )
    args = parser.parse_args(argv)
    globals()["PAGE"] = args.page
    examples = sorted((ROOT / "examples" / args.page.lower()).rglob("*.dcm"))
    if len(examples) < 2:
        print("need two example DICOMs under examples/ (scripts/make_examples.py)")
        return 2
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            run_dir = Path(tmp) / str(i)
            run_dir.mkdir()
            runs.append(
                one_run(run_dir, examples[:2], launcher=args.launcher, arrive_after=args.arrive_after)
            )
    print(f"Machine: {os.cpu_count()} CPUs, load average {load_average()}\n")
    print("| measure | median | runs |")
    print("|---|---|---|")
    for key in runs[0]:
        values = [r[key] for r in runs]
        print(f"| {key} | {statistics.median(values):.2f} | {', '.join(f'{v:.2f}' for v in values)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
