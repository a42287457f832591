"""Running the training scripts from tests: a timeout kills the whole process tree."""

from __future__ import annotations

import contextlib
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_tree(cmd: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    """subprocess.run, but a timeout kills the whole process tree (torchrun's workers live in their own
    sessions and would outlive a killed launcher)."""
    import psutil

    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        procs = [psutil.Process(p.pid), *psutil.Process(p.pid).children(recursive=True)]
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        out, err = p.communicate()
        pytest.fail(f"timed out after {timeout} s: {shlex.join(cmd)}\n{out[-3000:]}\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)
