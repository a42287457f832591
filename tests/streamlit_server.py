"""One way to run the real app for the browser test, the app benchmark and the soak: ``streamlit run
app.py`` on a free loopback port, its output in a log file, a wait on ``/_stcore/health`` and a stop that
also ends the server's children."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerNotHealthy(RuntimeError):
    """The server exited or did not answer its health check in time; the message ends with its log."""


def start(
    log_path: Path, env: dict[str, str] | None = None, port: int | None = None, launcher: bool = False
) -> tuple[subprocess.Popen, str]:
    """Start the app (no usage stats, no file watcher) and return the process and its URL; with
    ``launcher`` through ``python -m bonecls.serve`` (models load from server start), else with
    ``streamlit run app.py`` (models load with the first session, as on Streamlit Community Cloud)."""
    port = port or free_port()
    full_env = {
        **os.environ,
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", *(["bonecls.serve"] if launcher else ["streamlit", "run", "app.py"]),
             "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true",
             "--server.fileWatcherType", "none"],
            cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return proc, f"http://127.0.0.1:{port}"


def wait_healthy(proc: subprocess.Popen, url: str, log_path: Path, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.read().strip() == b"ok":
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() - t0 > timeout:
            raise ServerNotHealthy(f"streamlit did not become healthy:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.3)


def stop(proc: subprocess.Popen) -> None:
    import psutil

    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        children = []
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    for child in children:  # ours: started by the server we started
        with contextlib.suppress(psutil.Error):
            child.kill()
