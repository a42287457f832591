"""Helpers shared by the bench scripts: the machine line, load average, percentiles, timing loops.

Why one module: every table in BENCHMARKS.md must say on what machine, and under what load, it was
taken (the build machine is a shared 2-core box), in the same words; and every p50/p95 must come
from the same timing loop (one warm-up, then ``runs`` timed calls).

Bench scripts run as ``python bench/<script>.py``, so this folder is first on ``sys.path`` and
``from _common import ...`` works; :func:`add_repo_to_path` makes ``bonecls`` (and ``tests/`` for
the factories) importable from a checkout without installing it.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def add_repo_to_path(tests: bool = False) -> None:
    for p in [ROOT, *([ROOT / "tests"] if tests else [])]:
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))


def load_average() -> str:
    """``"0.4, 1.2, 2.8"`` (1, 5, 15 minutes) or ``"n/a"``."""
    return ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine(threads: int | None = None, versions: Iterable[str] = ("torch",)) -> str:
    """One line: platform, python, library versions, usable CPUs, torch threads, load average."""
    libs = []
    for name in versions:
        try:
            libs.append(f"{name} {importlib.import_module(name).__version__}")
        except ImportError:
            libs.append(f"{name} (not installed)")
    parts = [
        platform.platform(),
        f"python {platform.python_version()}",
        ", ".join(libs),
        f"{usable_cpus()} usable CPUs ({cpu_model()})",
    ]
    if threads is not None:
        parts.append(f"torch threads {threads}")
    parts.append(f"load average {load_average()}")
    return " | ".join(p for p in parts if p)


def pct(seconds: list[float], q: float) -> float:
    """The ``q``-th percentile of ``seconds``, in milliseconds."""
    return float(np.percentile(np.asarray(seconds) * 1000.0, q))


def time_calls(fn: Callable[[], object], runs: int, warmup: int = 1) -> list[float]:
    """Seconds per call of ``fn`` over ``runs`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def time_ab(fns: dict[str, Callable[[], object]], runs: int) -> dict[str, list[float]]:
    """Seconds per call for each function, the order rotating every run so that no engine always runs
    first or after the same neighbour (one warm-up each)."""
    names = list(fns)
    for name in names:
        fns[name]()
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(runs):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            fns[name]()
            out[name].append(time.perf_counter() - t0)
    return out


def _status_mb(key: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def current_rss_mb() -> float:
    return _status_mb("VmRSS")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux ``clear_refs`` 5), so :func:`peak_rss_since_reset_mb`
    measures one phase alone; False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_since_reset_mb() -> float:
    """Peak RSS since :func:`reset_peak_rss` (``VmHWM``), or since start where it could not reset."""
    return _status_mb("VmHWM")


def phantom_image(
    size: int = 1024, task: str = "fracture", cls: str = "fractured", seed: int = 7
) -> np.ndarray:
    """One phantom view resized (bicubic) to ``size`` px square as uint16 (12-bit range, as a DX)."""
    import cv2

    add_repo_to_path()
    from bonecls.phantom import generate

    sample = next(generate(task, 1, 256, seed=seed, classes=[cls]))  # type: ignore[arg-type]
    img = cv2.resize(sample.image, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.asarray(img).astype(np.uint16)


def phantom_inputs(size: int = 1024) -> dict[str, bytes]:
    """A 16-bit PNG and a 16-bit DX DICOM of one phantom chest view, ``size`` px square."""
    add_repo_to_path(tests=True)
    from factories import make_dicom, make_png

    img = phantom_image(size)
    return {"png16": make_png(img, bits=16), "dicom": make_dicom(img, bits_stored=12)}
