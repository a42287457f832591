"""Long fuzzing campaign for bonecls.imaging.load_radiograph (the CI tests run a short one).

The property is the same as tests/test_fuzz_imaging.py: any byte string either loads as a sane
Radiograph or raises ImageError, in bounded time. Engines:

* ``atheris`` (default when importable): coverage-guided libFuzzer over bonecls, Pillow and pydicom,
  seeded with tests/factories.fuzz_seeds();
* ``hypothesis``: a hypothesis loop over mutated seeds (shrinks a failure to a small edit);
* ``random``: a plain mutation loop (fastest, no extra dependency).

Usage::

    .venv/bin/python bench/fuzz_imaging.py --runs 200000            # atheris if installed
    .venv/bin/python bench/fuzz_imaging.py --engine random --seconds 600

It reports the inputs run, outcomes by message and the slowest input; an input that raises anything
else (or takes longer than --timeout) is written to --crash-dir and the exit code is 1. Only fuzz
inputs are written (never uploaded data). ``pip install atheris`` enables the atheris engine.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

LIMIT_PIXELS = 4_000_000  # as in the tests: keeps mutated headers from allocating hundreds of MB


class Stats:
    """Counts and the slowest input of a campaign."""

    def __init__(self, engine: str, crash_dir: Path, timeout: float) -> None:
        self.engine, self.crash_dir, self.timeout = engine, crash_dir, timeout
        self.runs = 0
        self.loaded = 0
        self.messages: collections.Counter[str] = collections.Counter()
        self.slowest = (0.0, b"")
        self.max_rss_growth = (0.0, b"")
        self.failures = 0
        self.started = time.perf_counter()

    def report(self) -> None:
        elapsed = time.perf_counter() - self.started
        rate = self.runs / max(elapsed, 1e-9)
        print(f"\n[{self.engine}] inputs run: {self.runs} in {elapsed:.0f} s ({rate:.0f}/s)")
        errors = sum(self.messages.values())
        print(f"  loaded: {self.loaded}; ImageError: {errors}; other failures: {self.failures}")
        for message, count in self.messages.most_common(12):
            print(f"  {count:8d}  {message[:100]}")
        slow_note = f" -> {self.save(self.slowest[1], 'slowest')}" if self.slowest[0] > 0.25 else ""
        print(f"  slowest input: {self.slowest[0] * 1000:.1f} ms ({len(self.slowest[1])} bytes){slow_note}")
        growth = self.max_rss_growth[0]
        print(f"  largest resident-memory growth on one input: {growth:.0f} MB; now {_rss_mb():.0f} MB")
        sys.stdout.flush()

    def save(self, data: bytes, kind: str) -> Path:
        self.crash_dir.mkdir(parents=True, exist_ok=True)
        path = self.crash_dir / f"{kind}-{hashlib.sha256(data).hexdigest()[:16]}.bin"
        path.write_bytes(data)
        return path


def _rss_mb() -> float:
    """Resident memory of this process in MB (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def make_target(stats: Stats, load_radiograph, image_error, limits):
    """The function fuzzed by every engine: classify one input, re-raise anything unexpected."""

    def one_input(data: bytes) -> None:
        stats.runs += 1
        rss_before = _rss_mb()
        start = time.perf_counter()
        try:
            load_radiograph(data, limits=limits)
            stats.loaded += 1
        except image_error as exc:
            stats.messages[str(exc).split(";")[0]] += 1
            if "memory available" in str(exc):  # run under `ulimit -v` to catch runaway allocations
                print(f"\nMemoryError -> {stats.save(data, 'memory')}", file=sys.stderr)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            stats.failures += 1
            path = stats.save(data, "crash")
            print(f"\nUNEXPECTED {type(exc).__name__}: {exc} -> {path}", file=sys.stderr)
            traceback.print_exc()
            raise
        elapsed = time.perf_counter() - start
        grown = _rss_mb() - rss_before
        if grown > stats.max_rss_growth[0]:
            stats.max_rss_growth = (grown, data)
        if grown > 512:
            print(f"\nresident memory grew {grown:.0f} MB -> {stats.save(data, 'memory')}", file=sys.stderr)
        if elapsed > stats.slowest[0]:
            stats.slowest = (elapsed, data)
        if elapsed > stats.timeout:
            stats.failures += 1
            path = stats.save(data, "slow")
            raise AssertionError(f"input took {elapsed:.1f} s (> {stats.timeout} s): {path}")
        if stats.runs % 10000 == 0:
            print(f"[{stats.engine}] {stats.runs} inputs ...", flush=True)

    return one_input


def run_atheris(args: argparse.Namespace, stats: Stats) -> None:
    import atheris

    with atheris.instrument_imports(include=["bonecls", "PIL", "pydicom"]):
        from bonecls.errors import ImageError
        from bonecls.imaging import Limits, load_radiograph
    from factories import fuzz_seeds

    inner = make_target(stats, load_radiograph, ImageError, Limits(max_pixels=LIMIT_PIXELS))
    deadline = time.perf_counter() + args.seconds
    seed_dir = Path(tempfile.mkdtemp(prefix="bonecls-fuzz-seeds-"))

    def target(data: bytes) -> None:
        # libFuzzer ends the process without running Python's atexit hooks: report and leave here
        if time.perf_counter() > deadline or (args.runs and stats.runs >= args.runs):
            stats.report()
            shutil.rmtree(seed_dir, ignore_errors=True)
            os._exit(1 if stats.failures else 0)
        inner(data)

    for name, data in fuzz_seeds().items():
        (seed_dir / name).write_bytes(data)
    stats.crash_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.argv[0],
        f"-max_total_time={args.seconds + 60}",  # backstop; the target ends the campaign
        "-max_len=65536",
        "-rss_limit_mb=6144",
        f"-timeout={max(1, int(args.timeout))}",
        f"-artifact_prefix={stats.crash_dir}{os.sep}",
        str(seed_dir),
    ]
    atheris.Setup(argv, target)
    atheris.Fuzz()


def run_hypothesis(args: argparse.Namespace, stats: Stats) -> None:
    from factories import fuzz_seeds, mutate
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from bonecls.errors import ImageError
    from bonecls.imaging import Limits, load_radiograph

    seeds = fuzz_seeds()
    target = make_target(stats, load_radiograph, ImageError, Limits(max_pixels=LIMIT_PIXELS))
    deadline = time.perf_counter() + args.seconds

    @settings(
        max_examples=args.runs or 10**9, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(st.sampled_from(sorted(seeds)), st.integers(0, 2**63 - 1), st.binary(max_size=256))
    def prop(seed: str, rnd: int, raw: bytes) -> None:
        if time.perf_counter() > deadline:
            return
        target(mutate(seeds[seed], random.Random(rnd)))
        target(raw)

    try:
        prop()
    finally:
        stats.report()


def run_random(args: argparse.Namespace, stats: Stats) -> None:
    from factories import fuzz_seeds, mutate

    from bonecls.errors import ImageError
    from bonecls.imaging import Limits, load_radiograph

    seeds = list(fuzz_seeds().values())
    target = make_target(stats, load_radiograph, ImageError, Limits(max_pixels=LIMIT_PIXELS))
    rng = random.Random(args.seed)
    deadline = time.perf_counter() + args.seconds
    try:
        while time.perf_counter() < deadline and (not args.runs or stats.runs < args.runs):
            if rng.random() < 0.05:
                target(rng.randbytes(rng.randint(0, 4096)))
            else:
                target(mutate(rng.choice(seeds), rng, rounds=rng.randint(1, 8)))
    finally:
        stats.report()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=["auto", "atheris", "hypothesis", "random"], default="auto")
    parser.add_argument("--runs", type=int, default=0, help="inputs to run (0: until --seconds)")
    parser.add_argument("--seconds", type=int, default=300, help="time budget")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds one input may take")
    parser.add_argument("--seed", type=int, default=0, help="random engine seed")
    parser.add_argument("--crash-dir", type=Path, default=ROOT / "artifacts" / "fuzz")
    args = parser.parse_args(argv)
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
        except ImportError:
            engine = "hypothesis"
        else:
            engine = "atheris"
    warnings.simplefilter("ignore")  # decoders warn about every damaged input
    import logging

    logging.disable(logging.CRITICAL)
    stats = Stats(engine, args.crash_dir, args.timeout)
    {"atheris": run_atheris, "hypothesis": run_hypothesis, "random": run_random}[engine](args, stats)
    return 1 if stats.failures else 0


if __name__ == "__main__":
    sys.exit(main())
