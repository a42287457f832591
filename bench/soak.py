"""Soak the app: many short browser sessions against one running server, watching failures and memory.

    .venv/bin/python bench/soak.py [--minutes 5] [--sessions 2] [--max-iterations 2000]

Starts ``streamlit run app.py`` on a free 127.0.0.1 port (weights from ``$BONECLS_WEIGHTS`` or the
shipped ``weights/``; the audit database in a temporary folder), then for ``--minutes`` drives it
with ``--sessions`` concurrent headless Debian Chromium sessions through Playwright. Each iteration
is a fresh browser context (a new Streamlit session) that

1. opens Home and uploads a mix of good files (``examples/**/*.dcm`` and ``*.png``, in rotation) and
   one bad file (a few cases of the tests/bad_inputs.py corpus, written to a temporary folder), and
   waits for "Images in this session (2 readable, 1 unreadable)" and the bad file's sentence;
2. opens the Fracture page and waits for "Answered in" and the two viewer panels;

every third iteration uploads the bad file alone and waits for its sentence on the Fracture page.
A failure is a timeout, any "Traceback", "error id" or "No model is installed" on the page, or a
missing expected sentence. The server's RSS (process and children, psutil) is sampled at start,
after the first answer (warm: torch and the models loaded), every minute and at the
end. Chromium may only reach 127.0.0.1 (every other request is aborted and counted). The loop stops
by itself (time and iteration bounds, a per-step timeout) and the server is always terminated.
Prints a Markdown table for BENCHMARKS.md; exits 1 if an iteration failed or the server logged an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from _common import load_average

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import streamlit_server  # noqa: E402  (tests/streamlit_server.py: start, health wait, stop)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
BANNER = "Reading aid, not a diagnosis."
FRACTURE_TITLE = "Fracture (binary)"
BAD_TEXT = ("Traceback", "error id", "No model is installed")
DEFAULT_BAD = (
    "text-renamed-png",
    "truncated-png",
    "pdf-renamed-dcm",
    "dicom-truncated-header",
    "zip-archive",
    "dicom-rle-segment-overrun",
)


def rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total / 2**20


@dataclass
class Stats:
    iterations: int = 0
    good_uploads: int = 0
    bad_uploads: int = 0
    failures: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    answer_s: list[float] = field(default_factory=list)  # Fracture click -> answer and overlay shown
    blocked: list[str] = field(default_factory=list)  # requests to anything but 127.0.0.1
    rss: list[tuple[str, float, float]] = field(default_factory=list)  # (when, t seconds, MB)


def good_files() -> list[Path]:
    files = sorted((ROOT / "examples").rglob("*.dcm")) + sorted((ROOT / "examples").rglob("*.png"))
    dicoms = [f for f in files if f.suffix == ".dcm"]
    pngs = [f for f in files if f.suffix == ".png"]
    mixed = [f for pair in itertools.zip_longest(dicoms, pngs) for f in pair if f is not None]
    return mixed


def bad_files(names: list[str], folder: Path) -> list[tuple[Path, str]]:
    """Write the corpus cases; each with the exact sentence the app shows for it (same code path)."""
    from bad_inputs import data

    from bonecls.ui.session import ingest_uploads

    out = []
    for name in names:
        payload = data(name)
        result = ingest_uploads([(name, payload)])[0]
        if result.ok:
            raise SystemExit(f"corpus case {name!r} loads fine; pick cases that are refused")
        path = folder / name
        path.write_bytes(payload)
        out.append((path, str(result.error)))
    return out


class StepFailed(Exception):
    pass


async def wait_for(page, expect: list[str], timeout_s: float, absent: tuple[str, ...] = ()) -> None:
    """Wait until the page shows every text in ``expect`` and none in ``absent`` (stale content of the
    previous page), failing at once on any BAD_TEXT."""
    await page.wait_for_function(
        """([expect, absent, bad]) => {
            const text = document.body ? document.body.innerText : "";
            if (bad.some(b => text.includes(b))) return true;
            return expect.every(e => text.includes(e)) && !absent.some(a => text.includes(a));
        }""",
        arg=[expect, list(absent), list(BAD_TEXT)],
        timeout=timeout_s * 1000,
        polling=250,
    )
    text = await page.inner_text("body")
    found = [b for b in BAD_TEXT if b in text]
    if found:
        raise StepFailed(f"page shows {found[0]!r}")


async def iteration(
    browser, url: str, n: int, good: list[Path], bad: list[tuple[Path, str]], stats: Stats, timeout_s: float
) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 1400})

    async def guard(route) -> None:
        host = urllib.parse.urlsplit(route.request.url).hostname
        if host == "127.0.0.1" or route.request.url.startswith(("data:", "blob:")):
            await route.continue_()
        else:
            stats.blocked.append(route.request.url[:120])
            await route.abort()

    await context.route("**/*", guard)
    page = await context.new_page()
    try:
        await page.goto(url, timeout=timeout_s * 1000)
        await wait_for(page, [BANNER], timeout_s)
        bad_path, sentence = bad[n % len(bad)]
        uploader = page.locator("input[type=file]")
        if n % 3 == 2:  # the bad file alone: its sentence on the Fracture page
            await uploader.set_input_files([str(bad_path)])
            stats.bad_uploads += 1
            await wait_for(page, ["Images in this session (0 readable, 1 unreadable)", sentence], timeout_s)
            await page.get_by_role("link", name="Fracture", exact=True).click()
            await wait_for(page, [FRACTURE_TITLE, sentence], timeout_s, absent=("Images in this session",))
            return
        files = [good[(2 * n + k) % len(good)] for k in range(2)]
        await uploader.set_input_files([str(f) for f in files] + [str(bad_path)])
        stats.good_uploads += len(files)
        stats.bad_uploads += 1
        readable = len({f.read_bytes() for f in files})  # the same bytes twice is one image
        await wait_for(
            page, [f"Images in this session ({readable} readable, 1 unreadable)", sentence], timeout_s
        )
        t0 = time.perf_counter()
        await page.get_by_role("button", name="Fracture", exact=True).first.click()
        await wait_for(page, [FRACTURE_TITLE, "Answered in"], timeout_s, absent=("Images in this session",))
        await page.wait_for_function(
            "() => document.querySelectorAll('.js-plotly-plot image').length >= 2", timeout=timeout_s * 1000
        )
        stats.answer_s.append(time.perf_counter() - t0)
    finally:
        await context.close()


async def worker(
    browser,
    url: str,
    counter: itertools.count,
    deadline: float,
    max_iter: int,
    good: list[Path],
    bad: list[tuple[Path, str]],
    stats: Stats,
    timeout_s: float,
) -> None:
    from playwright.async_api import Error as PlaywrightError

    while time.monotonic() < deadline:
        n = next(counter)
        if n >= max_iter:
            return
        try:
            await asyncio.wait_for(
                iteration(browser, url, n, good, bad, stats, timeout_s), timeout=4 * timeout_s + 30
            )
        except (StepFailed, PlaywrightError, TimeoutError) as exc:
            stats.failures += 1
            reason = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else type(exc).__name__
            stats.reasons[reason] += 1
            print(f"iteration {n} failed: {reason}", file=sys.stderr, flush=True)
        stats.iterations += 1


async def sampler(pid: int, t0: float, stats: Stats, stop: asyncio.Event) -> None:
    """RSS once warm (the first answer shown: torch and a model loaded), then every minute, until ``stop``."""
    warm_taken = False
    next_minute = t0 + 60
    while not stop.is_set():
        now = time.monotonic()
        if not warm_taken and stats.answer_s:
            stats.rss.append(("warm", now - t0, rss_mb(pid)))
            warm_taken = True
        if now >= next_minute:
            stats.rss.append((f"minute {round((now - t0) / 60)}", now - t0, rss_mb(pid)))
            next_minute += 60
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)


async def drive(
    url: str, pid: int, args: argparse.Namespace, good: list[Path], bad: list[tuple[Path, str]], stats: Stats
) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            t0 = time.monotonic()
            stats.rss.append(("start", 0.0, rss_mb(pid)))
            deadline = t0 + args.minutes * 60
            counter = itertools.count()
            stop = asyncio.Event()
            sample = asyncio.create_task(sampler(pid, t0, stats, stop))
            try:
                await asyncio.gather(
                    *(
                        worker(
                            browser, url, counter, deadline, args.max_iterations, good, bad, stats, timeout
                        )
                        for timeout in [args.step_timeout] * args.sessions
                    )
                )
            finally:
                stop.set()
                await sample
                stats.rss.append(("end", time.monotonic() - t0, rss_mb(pid)))
        finally:
            await browser.close()


def table(stats: Stats, args: argparse.Namespace, wall_s: float, log_errors: int) -> str:
    mb = {when: v for when, _, v in stats.rss}
    start, end = mb["start"], stats.rss[-1][2]
    warm = mb.get("warm", start)
    peak = max(v for _, _, v in stats.rss)
    answers = sorted(stats.answer_s)
    p95 = answers[min(len(answers) - 1, int(0.95 * len(answers)))] if answers else float("nan")
    rows = [
        ("duration (min), concurrent sessions", f"{wall_s / 60:.1f}, {args.sessions}"),
        ("iterations (one fresh browser session each)", f"{stats.iterations}"),
        ("uploads good / bad", f"{stats.good_uploads} / {stats.bad_uploads}"),
        ("failures (timeouts, tracebacks, error ids)", f"{stats.failures}"),
        ("server log: tracebacks / logged errors", f"{log_errors}"),
        ("requests blocked (not 127.0.0.1)", f"{len(stats.blocked)}"),
        (
            "Fracture answer + overlay, median / p95 (s)",
            f"{statistics.median(answers):.2f} / {p95:.2f}" if answers else "n/a",
        ),
        ("server RSS start (healthy, nothing loaded) MB", f"{start:.0f}"),
        ("server RSS warm (after the first answer) MB", f"{warm:.0f}"),
        ("server RSS end / max MB", f"{end:.0f} / {peak:.0f}"),
        ("RSS growth end − warm MB (end − start)", f"{end - warm:+.0f} ({end - start:+.0f})"),
    ]
    out = ["| soak measure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    samples = ", ".join(f"{when} {v:.0f}" for when, _, v in stats.rss)
    out.append(f"\nRSS samples (MB): {samples}")
    if stats.blocked:
        out.append("Blocked: " + ", ".join(sorted(set(stats.blocked))[:5]))
    if stats.reasons:
        out.append("Failure reasons: " + "; ".join(f"{r} ×{c}" for r, c in stats.reasons.most_common(5)))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--sessions", type=int, default=2, help="concurrent browser sessions")
    parser.add_argument("--max-iterations", type=int, default=2000)
    parser.add_argument("--step-timeout", type=float, default=90.0, help="seconds per wait")
    parser.add_argument("--bad", nargs="+", default=list(DEFAULT_BAD), help="tests/bad_inputs.py case names")
    args = parser.parse_args(argv)
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        print(f"Debian chromium is not installed at {CHROMIUM}")
        return 2
    from bonecls.weights import scan_cards, weights_root

    root = weights_root()
    tasks = {getattr(e.card, "task", None) for e in scan_cards(root) if getattr(e, "card", None)}
    if "fracture" not in tasks:
        print(f"No fracture model under {root}; set $BONECLS_WEIGHTS to a weights folder with one.")
        return 2
    good = good_files()
    if len(good) < 2:
        print("need example images under examples/ (scripts/make_examples.py)")
        return 2
    # dicom-rle-segment-overrun makes pylibjpeg-rle panic (bonecls.imaging catches it): no backtrace
    os.environ["RUST_BACKTRACE"] = "0"
    stats = Stats()
    with tempfile.TemporaryDirectory(prefix="bonecls-soak-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "bad").mkdir()
        bad = bad_files(args.bad, tmp / "bad")
        log_path = tmp / "server.log"
        proc, url = streamlit_server.start(log_path, {"BONECLS_AUDIT_DB": str(tmp / "audit.sqlite")})
        t0 = time.monotonic()
        try:
            streamlit_server.wait_healthy(proc, url, log_path)
            budget = args.minutes * 60 + 4 * args.step_timeout + 120
            asyncio.run(asyncio.wait_for(drive(url, proc.pid, args, good, bad, stats), timeout=budget))
        finally:
            wall = time.monotonic() - t0
            streamlit_server.stop(proc)
            log_text = log_path.read_text(errors="replace")
        log_errors = log_text.count("Traceback") + log_text.count(" ERROR ")
        if log_errors:
            print(log_text[-4000:], file=sys.stderr)
    print(
        f"Machine: {os.cpu_count()} CPUs, load average {load_average()}; "
        f"weights {root}; bad cases: {', '.join(args.bad)}\n"
    )
    print(table(stats, args, wall, log_errors))
    return 1 if stats.failures or log_errors else 0


if __name__ == "__main__":
    sys.exit(main())
