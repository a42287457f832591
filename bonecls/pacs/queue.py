"""The node's durable queue: every received instance is on disk before the sender hears "stored".

Files go to ``<folder>/instances/`` (written to a temporary name, fsynced, renamed, the folder fsynced),
then a row goes into ``<folder>/queue.sqlite`` (WAL, ``synchronous=FULL``: the commit is on disk when it
returns). Only then does the C-STORE handler answer success, so a SIGKILL at any moment loses nothing the
sender was told is stored. Rows are keyed by SOPInstanceUID: a sender that retries an instance (because
its answer was lost in the crash) adds nothing.

Rows hold UIDs, states and error sentences, never patient data (that stays inside the DICOM files).
States: ``pending`` (to read and send), ``done``, ``skipped`` (not an image or not decodable; never
retried) and ``failed`` (the destination refused it ``MAX_ATTEMPTS`` times).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DurableQueue", "QueueItem"]

MAX_ATTEMPTS = 5
STATES = ("pending", "done", "skipped", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    study_instance_uid TEXT NOT NULL,
    file TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    received REAL NOT NULL,
    finished REAL,
    results TEXT NOT NULL DEFAULT '',
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS instances_state ON instances (state, received);
"""


@dataclass(frozen=True)
class QueueItem:
    sop_instance_uid: str
    study_instance_uid: str
    path: Path
    state: str
    attempts: int
    note: str


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DurableQueue:
    """Received instances and their processing state under ``folder`` (safe across threads and processes)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.files = self.folder / "instances"
        self.files.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "queue.sqlite"
        self._lock = threading.Lock()
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with self._lock, closing(sqlite3.connect(self.path, timeout=30.0)) as conn:
            conn.execute("PRAGMA synchronous=FULL")
            with conn:
                yield conn

    def receive(self, sop_instance_uid: str, study_instance_uid: str, write: Callable) -> bool:
        """Make one received instance durable: ``write(file_object)`` writes its Part 10 bytes. Returns
        False when the instance was already queued (a retried send), True when it is new."""
        name = hashlib.sha256(sop_instance_uid.encode()).hexdigest()[:40] + ".dcm"
        final = self.files / name
        with self._connect() as conn:
            if conn.execute(
                "SELECT 1 FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,)
            ).fetchone():
                return False
        temporary = final.with_suffix(f".{os.getpid()}.{threading.get_ident()}.part")
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, final)
        _fsync_dir(self.files)
        with self._connect() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO instances (sop_instance_uid, study_instance_uid, file, received) "
                "VALUES (?, ?, ?, ?)",
                (sop_instance_uid, study_instance_uid, name, time.time()),
            )
            return cursor.rowcount == 1

    def next_pending(self) -> QueueItem | None:
        """The oldest pending instance whose retry time has come, or None."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT sop_instance_uid, study_instance_uid, file, state, attempts, note FROM instances "
                "WHERE state = 'pending' AND not_before <= ? ORDER BY received LIMIT 1",
                (time.time(),),
            ).fetchone()
        if row is None:
            return None
        return QueueItem(row[0], row[1], self.files / row[2], row[3], row[4], row[5])

    def mark_done(self, sop_instance_uid: str, result_uids: list[str]) -> None:
        self._finish(sop_instance_uid, "done", " ".join(result_uids), "")

    def mark_skipped(self, sop_instance_uid: str, reason: str) -> None:
        self._finish(sop_instance_uid, "skipped", "", reason)

    def _finish(self, sop_instance_uid: str, state: str, results: str, note: str) -> None:
        with self._connect() as conn:
            conn.execute(
                "UPDATE instances SET state = ?, results = ?, note = ?, finished = ? "
                "WHERE sop_instance_uid = ?",
                (state, results, note[:500], time.time(), sop_instance_uid),
            )

    def mark_retry(self, sop_instance_uid: str, reason: str) -> str:
        """Count a failed send: pending after a back-off, ``failed`` after MAX_ATTEMPTS; returns the state."""
        with self._connect() as conn:
            (attempts,) = conn.execute(
                "SELECT attempts FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,)
            ).fetchone()
            attempts += 1
            state = "failed" if attempts >= MAX_ATTEMPTS else "pending"
            conn.execute(
                "UPDATE instances SET state = ?, attempts = ?, not_before = ?, note = ? "
                "WHERE sop_instance_uid = ?",
                (state, attempts, time.time() + min(60.0, 2.0**attempts), reason[:500], sop_instance_uid),
            )
        return state

    def counts(self) -> dict[str, int]:
        """Instances per state (every state listed, zeros included)."""
        with self._connect() as conn:
            found = dict(conn.execute("SELECT state, COUNT(*) FROM instances GROUP BY state").fetchall())
        return {state: int(found.get(state, 0)) for state in STATES}

    def items(self, limit: int = 200) -> list[QueueItem]:
        """The newest instances first (for the worklist page)."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT sop_instance_uid, study_instance_uid, file, state, attempts, note FROM instances "
                "ORDER BY received DESC LIMIT ?",
                (int(limit),),
            ).fetchall()
        return [QueueItem(r[0], r[1], self.files / r[2], r[3], r[4], r[5]) for r in rows]

    def results_of(self, sop_instance_uid: str) -> list[str]:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT results FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,)
            ).fetchone()
        return row[0].split() if row and row[0] else []
