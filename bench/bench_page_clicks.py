"""Quick clicks between pages: how long after the last click the last page is drawn, and what came first.

    .venv/bin/python bench/bench_page_clicks.py [--clicks 28]

Starts `streamlit run app.py` with the shipped weights, uploads the first Pneumonia example DICOM,
reads it on the Pneumonia page, then clicks ``--clicks`` times through Fracture, Pneumonia, Worklist
and Fracture severity as fast as Playwright can (the last click on Fracture) and prints every change
of the page's h1 for 25 s, with seconds since the first click. Run it with
``STREAMLIT_RUNNER_FAST_RERUNS=true`` to see Streamlit's default (issue 25). Not a test.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _common import load_average

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import streamlit_server  # noqa: E402

LINKS = ["Fracture", "Pneumonia", "Worklist", "Fracture severity"]
H1 = "() => Array.from(document.querySelectorAll('h1')).map(e => e.innerText).join('|')"


def main(argv: list[str] | None = None) -> int:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clicks", type=int, default=28)
    args = parser.parse_args(argv)
    dicom = sorted((ROOT / "examples" / "pneumonia").rglob("*.dcm"))[0]
    tmp = Path(tempfile.mkdtemp())
    proc, url = streamlit_server.start(tmp / "server.log", {"BONECLS_AUDIT_DB": str(tmp / "a.sqlite")})
    try:
        streamlit_server.wait_healthy(proc, url, tmp / "server.log")
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 1440, "height": 1500})
            page.goto(url)
            page.wait_for_selector("text=Reading aid, not a diagnosis.", timeout=120_000)
            page.locator("input[type=file]").set_input_files(str(dicom))
            page.wait_for_selector("text=Images in this session (1 readable)", timeout=120_000)
            page.get_by_role("button", name="Pneumonia", exact=True).first.click()
            page.wait_for_selector("text=Answered in", timeout=180_000)
            time.sleep(2)
            clicks = [LINKS[i % len(LINKS)] for i in range(args.clicks - 1)] + ["Fracture"]
            t0 = time.perf_counter()
            for name in clicks:
                page.get_by_role("link", name=name, exact=True).click(no_wait_after=True)
            print(f"load average {load_average()}; {len(clicks)} clicks in {time.perf_counter() - t0:.2f} s")
            last = None
            while time.perf_counter() - t0 < 25:
                h1 = page.evaluate(H1)
                if h1 != last:
                    print(f"{time.perf_counter() - t0:6.2f} s  h1={h1!r}")
                    last = h1
                time.sleep(0.1)
            browser.close()
    finally:
        streamlit_server.stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
