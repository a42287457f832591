"""A throw-away Orthanc (with its DICOMweb plugin) on loopback, for development, the tests and the demo.

Orthanc is the open-source PACS many hospitals test against; running the real server keeps the DICOMweb
and C-STORE code honest. This module writes Orthanc its own JSON configuration and storage folder (never
the Debian service's /etc/orthanc or /var/lib/orthanc), starts it on free ports, waits until its REST API
and the DICOMweb plugin answer, and stops it cleanly.

Loopback only: Orthanc 1.10 has no bind-address option, so its two ports listen on every interface; the
configuration therefore refuses every client that is not on this machine: HTTP with
``RemoteAccessAllowed: false`` (plus a user and password), DICOM by accepting associations only from the
declared peers at 127.0.0.1 (``DicomAlwaysAllowStore: false``, ``DicomCheckModalityHost: true``).

Usage (also through ``scripts/orthanc.sh``)::

    python -m bonecls.pacs.orthanc_server start [--dir DIR]   # prints the URLs and the test user
    python -m bonecls.pacs.orthanc_server status [--dir DIR]
    python -m bonecls.pacs.orthanc_server stop [--dir DIR]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bonecls.pacs.errors import OrthancNotAvailable
from bonecls.paths import cache_root

__all__ = ["OrthancServer", "dicomweb_plugin", "free_port", "orthanc_executable"]

INSTALL_HINT = (
    "Install the Debian packages with `apt-get install orthanc orthanc-dicomweb` "
    "(`bash scripts/setup.sh --dev` does this)."
)
PLUGIN_ENV = "BONECLS_ORTHANC_DICOMWEB_PLUGIN"
STATE_FILE = "state.json"
#: AE titles allowed to C-STORE into the development Orthanc (from 127.0.0.1 only).
DEFAULT_PEERS = {"bonecls": "BONECLS", "bonecls-test": "BONECLS-TEST", "bonecls-node": "BONECLS-NODE"}


def orthanc_executable() -> str:
    """Path of the ``Orthanc`` binary (Debian installs it in /usr/sbin, not always on PATH)."""
    found = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise OrthancNotAvailable(f"Orthanc is not installed on this machine. {INSTALL_HINT}")
    return found


def dicomweb_plugin() -> Path:
    """The DICOMweb plugin's shared library, found with ``dpkg -L orthanc-dicomweb`` (or ``$PLUGIN_ENV``)."""
    env = os.environ.get(PLUGIN_ENV)
    if env:
        return Path(env)
    try:
        listing = subprocess.run(
            ["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        listing = ""
    libraries = [Path(line) for line in listing.splitlines() if line.endswith("libOrthancDicomWeb.so")]
    libraries += [Path(line) for line in listing.splitlines() if ".so" in Path(line).name]
    for lib in libraries:
        if lib.is_file():
            return lib
    raise OrthancNotAvailable(f"Orthanc's DICOMweb plugin is not installed. {INSTALL_HINT}")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class OrthancState:
    """What a running development Orthanc needs to be found again (``state.json`` in its folder)."""

    pid: int
    http_port: int
    dicom_port: int
    aet: str
    user: str
    password: str


@dataclass
class OrthancServer:
    """One Orthanc process with its own configuration and storage under ``folder``."""

    folder: Path
    http_port: int = 0
    dicom_port: int = 0
    aet: str = "ORTHANC"
    user: str = "bonecls"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    peers: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_PEERS))
    _process: subprocess.Popen | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)

    # -- addresses ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def auth(self) -> tuple[str, str]:
        return (self.user, self.password)

    @property
    def log_path(self) -> Path:
        return self.folder / "orthanc.log"

    # -- configuration -----------------------------------------------------------------------------

    def configuration(self) -> dict:
        """Orthanc's JSON configuration: loopback-only HTTP and DICOM, DICOMweb on, own storage."""
        storage = self.folder / "storage"
        return {
            "Name": "bonecls-dev",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "StorageCompression": False,
            "Plugins": [str(dicomweb_plugin())],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "HttpDescribeErrors": True,
            "HttpThreadsCount": 8,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.user: self.password},
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowStore": False,
            "DicomCheckModalityHost": True,
            "DicomModalities": {name: [aet, "127.0.0.1", 104] for name, aet in self.peers.items()},
            "DicomThreadsCount": 4,
            "OverwriteInstances": False,
            "SaveJobs": False,
            "ConcurrentJobs": 1,
            "DeidentifyLogs": True,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "Ssl": False},
        }

    # -- life cycle --------------------------------------------------------------------------------

    def start(self, timeout: float = 60.0, attempts: int = 3) -> OrthancServer:
        """Start Orthanc and wait until its REST API and the DICOMweb plugin answer.

        Free ports are picked just before the start; another process may take one in between, so a
        failed start is retried on new ports (``attempts`` times).
        """
        executable = orthanc_executable()
        fixed_ports = bool(self.http_port and self.dicom_port)
        last_error = ""
        for _ in range(attempts if not fixed_ports else 1):
            if not fixed_ports:
                self.http_port, self.dicom_port = free_port(), free_port()
            self.folder.mkdir(parents=True, exist_ok=True)
            config = self.folder / "orthanc.json"
            config.write_text(json.dumps(self.configuration(), indent=2))
            config.chmod(0o600)  # it holds the test user's password
            with open(self.log_path, "ab") as log:
                self._process = subprocess.Popen(
                    [executable, str(config)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # a Ctrl-C in the terminal does not kill it mid-write
                )
            if self._wait_healthy(timeout):
                self._save_state()
                return self
            last_error = self._log_tail()
            self.stop()
        raise OrthancNotAvailable(
            f"Orthanc did not start (its log, {self.log_path}, ends with: {last_error.strip()[-400:]!r})."
        )

    def _wait_healthy(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                return False
            if self.healthy():
                return True
            time.sleep(0.1)
        return False

    def healthy(self) -> bool:
        """True when the REST API answers and the DICOMweb plugin is loaded."""
        try:
            plugins = self.get_json("/plugins")
        except (OSError, ValueError):
            return False
        return "dicom-web" in plugins

    def get_json(self, path: str) -> object:
        """GET a REST path of this Orthanc (with its user) and decode the JSON answer."""
        request = urllib.request.Request(self.url + path)
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (Orthanc closes its index cleanly), SIGKILL after ``timeout`` seconds."""
        pid = self._process.pid if self._process is not None else self._state_pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid, self._process):
            time.sleep(0.1)
        if _alive(pid, self._process):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self._process is not None:
            self._process.wait(timeout=timeout)
            self._process = None
        (self.folder / STATE_FILE).unlink(missing_ok=True)

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- state file (for the start/stop/status commands, which run in separate processes) -------------

    def _save_state(self) -> None:
        assert self._process is not None
        state = OrthancState(
            self._process.pid, self.http_port, self.dicom_port, self.aet, self.user, self.password
        )
        path = self.folder / STATE_FILE
        path.write_text(json.dumps(asdict(state)))
        path.chmod(0o600)

    def _state_pid(self) -> int | None:
        state = read_state(self.folder)
        return state.pid if state is not None else None

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    @classmethod
    def attach(cls, folder: Path) -> OrthancServer | None:
        """The server described by ``folder``'s state file, or None when none was started there."""
        state = read_state(folder)
        if state is None:
            return None
        return cls(Path(folder), state.http_port, state.dicom_port, state.aet, state.user, state.password)


def read_state(folder: Path) -> OrthancState | None:
    try:
        return OrthancState(**json.loads((Path(folder) / STATE_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _alive(pid: int, process: subprocess.Popen | None) -> bool:
    if process is not None:
        return process.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by the process that started it) is not alive
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bonecls.pacs.orthanc_server", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument("--dir", default=str(cache_root() / "orthanc"), help="state and storage folder")
    args = parser.parse_args(argv)
    folder = Path(args.dir)
    running = OrthancServer.attach(folder)
    try:
        if args.action == "start":
            if running is not None and running.healthy():
                server = running
            else:
                server = OrthancServer(folder).start()
                server._process = None  # leave it running after this command exits
            print(
                f"Orthanc running: REST {server.url}  DICOMweb {server.dicomweb_url}  DICOM {server.aet}@"
                f"127.0.0.1:{server.dicom_port}"
            )
            print(f"export BONECLS_DICOMWEB_URL={server.dicomweb_url}")
            print(f"export BONECLS_DICOMWEB_USER={server.user} BONECLS_DICOMWEB_PASSWORD={server.password}")
            return 0
        if args.action == "stop":
            if running is None:
                print(f"No Orthanc was started from {folder}.")
                return 0
            running.stop()
            print("Orthanc stopped.")
            return 0
        if running is not None and running.healthy():
            print(f"Orthanc running: DICOMweb {running.dicomweb_url}")
            return 0
        print(f"Orthanc is not running (folder {folder}).")
        return 3
    except OrthancNotAvailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
