"""Where results may go: a model trained on synthetic data sends only to this machine unless told otherwise.

Objects written into a PACS look official. A model whose card says it learned from synthetic data (the
shipped phantoms) has never seen a patient's film, so its results go only to loopback destinations (a
local test PACS); sending them anywhere else needs the operator's explicit research flag, and every such
send is recorded in the audit database (table ``pacs_research_sends``: time, model id and sha256, the
destination's scheme, host and port, how many objects; never patient data or study identifiers).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from datetime import UTC, datetime
from urllib.parse import urlsplit

from bonecls.audit import audit_path
from bonecls.pacs.errors import DestinationRefused
from bonecls.pacs.results import ModelInfo

__all__ = ["check_destination", "is_loopback", "research_sends", "trained_on_synthetic"]

_SYNTHETIC = re.compile(r"\b(synthetic|phantoms?|simulated)\b", re.IGNORECASE)
RESEARCH_FLAG = "--research-destination"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pacs_research_sends (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_utc TEXT NOT NULL,
    model_id TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    destination TEXT NOT NULL,
    objects INTEGER NOT NULL
);
"""


def trained_on_synthetic(model: ModelInfo) -> bool:
    """True when the card's training-data sentence says synthetic, phantom or simulated data."""
    return bool(_SYNTHETIC.search(model.training_data or ""))


def is_loopback(host: str) -> bool:
    """True when every address ``host`` resolves to is on this machine (127.0.0.0/8, ::1)."""
    host = (host or "").strip("[]")
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def destination_address(destination: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a destination URL: ``http(s)://host:port/...`` or ``dicom://AET@host:port``."""
    parts = urlsplit(destination)
    return parts.scheme, parts.hostname or "", parts.port


def check_destination(
    destination: str, models: Sequence[ModelInfo], *, research: bool = False, objects: int = 0
) -> None:
    """Refuse (:class:`DestinationRefused`) results of synthetic-data models bound off this machine, unless
    ``research``; a research send is recorded in the audit database before it happens."""
    synthetic = [m for m in models if trained_on_synthetic(m)]
    scheme, host, port = destination_address(destination)
    if not synthetic or is_loopback(host):
        return
    names = ", ".join(m.model_id for m in synthetic)
    if not research:
        raise DestinationRefused(
            f"Model(s) {names} were trained on synthetic data, so their results go only to a PACS on this "
            f"machine (127.0.0.1); {host} is not. For a research PACS, pass {RESEARCH_FLAG} (it is audited)."
        )
    where = f"{scheme}://{host}" + (f":{port}" if port else "")
    record_research_send(synthetic, where, objects)


def record_research_send(models: Sequence[ModelInfo], destination: str, objects: int) -> None:
    """One audit row per model for a send of synthetic-data results off this machine."""
    path = audit_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    with closing(sqlite3.connect(path, timeout=30.0)) as conn, conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
        conn.executemany(
            "INSERT INTO pacs_research_sends (time_utc, model_id, model_sha256, destination, objects) "
            "VALUES (?, ?, ?, ?, ?)",
            [(now, m.model_id, m.sha256, destination, int(objects)) for m in models],
        )


def research_sends() -> list[tuple[str, str, str, str, int]]:
    """The recorded research sends (time, model id, model sha256, destination, objects), oldest first."""
    path = audit_path()
    if not path.exists():
        return []
    with closing(sqlite3.connect(path, timeout=30.0)) as conn:
        conn.executescript(_SCHEMA)
        rows = conn.execute(
            "SELECT time_utc, model_id, model_sha256, destination, objects "
            "FROM pacs_research_sends ORDER BY id"
        )
        return [tuple(row) for row in rows]
