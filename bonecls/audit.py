"""SQLite audit log of predictions: what was predicted, by which model, when. Never patient data.

One row per prediction shown: UTC time (ISO 8601), the sha256 of the image bytes, the model id and
its weights' sha256, the task, the result label, the status and the suspicion. Nothing else is
accepted: no file names, no DICOM fields, no free text, so that the log can be kept and shared
without de-identification.

The database lives at ``$BONECLS_AUDIT_DB`` (default ``~/.cache/bonecls/audit.sqlite``). Writes are
safe from many threads and processes: every call opens its own connection, the journal is WAL and
a process-wide lock serialises writers inside one process.
"""

from __future__ import annotations

import csv
import io
import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from bonecls.errors import BoneclsError

__all__ = ["AuditEntry", "AuditLog", "audit_path", "default_log", "scope_reason_codes"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Identifiers of models, tasks, labels and statuses: short tokens, never free text.
_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._+\-/]{0,63}$")
STATUSES = ("positive", "uncertain", "negative", "detected", "none", "out_of_distribution", "out_of_scope")
COLUMNS = (
    "time_utc",
    "image_sha256",
    "model_id",
    "model_sha256",
    "task",
    "label",
    "status",
    "suspicion",
    "in_scope",
    "scope_reasons",
)
#: Columns added after the first release: an older database gets them on first use (NULL in old rows).
_ADDED_COLUMNS = {"in_scope": "INTEGER", "scope_reasons": "TEXT"}

#: Why the scope gate refused, as codes (the log takes no free text): the opening words of each of
#: bonecls.scope's reason sentences -> its code; any other sentence is an image heuristic's.
SCOPE_REASON_CODES = (
    ("The DICOM header gives the modality", "header-modality"),
    ("The DICOM header says this is a", "header-body-part"),
    ("The DICOM header gives the view", "header-view"),
    ("The DICOM header gives the patient's age", "header-age"),
    ("This image does not resemble", "learned-distance"),
    ("This model's learned scope is not fitted", "learned-not-fitted"),
    ("This detector's learned scope is not fitted", "learned-not-fitted"),
    ("The model's learned scope could not be checked", "learned-not-checked"),
    ("The learned scope could not be checked", "learned-not-checked"),
)


def scope_reason_codes(reasons: tuple[str, ...] | list[str]) -> str:
    """The scope gate's reason sentences as a comma-separated list of codes (``heuristic`` for the rest)."""
    codes = []
    for reason in reasons:
        code = next((c for start, c in SCOPE_REASON_CODES if str(reason).startswith(start)), "heuristic")
        if code not in codes:
            codes.append(code)
    return ",".join(codes)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_utc TEXT NOT NULL,
    image_sha256 TEXT NOT NULL,
    model_id TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    task TEXT NOT NULL,
    label TEXT NOT NULL,
    status TEXT NOT NULL,
    suspicion REAL,
    in_scope INTEGER,
    scope_reasons TEXT
);
CREATE INDEX IF NOT EXISTS predictions_image ON predictions (image_sha256);
"""

_LOCK = threading.RLock()


def audit_path() -> Path:
    """``$BONECLS_AUDIT_DB`` or ``~/.cache/bonecls/audit.sqlite``."""
    env = os.environ.get("BONECLS_AUDIT_DB")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "bonecls" / "audit.sqlite"


@dataclass(frozen=True)
class AuditEntry:
    time_utc: str
    image_sha256: str
    model_id: str
    model_sha256: str
    task: str
    label: str
    status: str
    suspicion: float | None
    in_scope: bool | None = None  # the scope gate's verdict (None: not recorded)
    scope_reasons: str = ""  # its reasons as codes (scope_reason_codes), never sentences


def _check_token(name: str, value: str) -> str:
    value = str(value)
    if not _TOKEN.match(value):
        raise BoneclsError(
            f"The audit log refused the {name} {value[:20]!r}: only short identifiers are stored."
        )
    return value


def _check_sha(name: str, value: str) -> str:
    value = str(value).lower()
    if not _SHA256.match(value):
        raise BoneclsError(f"The audit log needs a sha256 (64 hex digits) for the {name}.")
    return value


class AuditLog:
    """The audit database at ``path`` (created on first use)."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else audit_path()
        self._ready = False

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with _LOCK:
            if self._ready and not self.path.exists():  # removed (rotated) while we ran: set it up again
                self._ready = False
            if not self._ready:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(sqlite3.connect(self.path, timeout=30.0)) as conn:
                if not self._ready:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.executescript(_SCHEMA)
                    present = {row[1] for row in conn.execute("PRAGMA table_info(predictions)")}
                    for column, kind in _ADDED_COLUMNS.items():
                        if column not in present:  # a database written before the scope gate
                            conn.execute(f"ALTER TABLE predictions ADD COLUMN {column} {kind}")
                    self._ready = True
                with conn:  # commit or roll back
                    yield conn

    def record(
        self,
        *,
        image_sha256: str,
        model_id: str,
        model_sha256: str,
        task: str,
        label: str,
        status: str,
        suspicion: float | None,
        time_utc: datetime | None = None,
        in_scope: bool | None = None,
        scope_reasons: tuple[str, ...] | list[str] = (),
    ) -> AuditEntry:
        """Append one prediction; returns what was stored. Anything but identifiers is refused."""
        if status not in STATUSES:
            raise BoneclsError(f"The audit log does not know the status {status[:20]!r}.")
        when = (time_utc or datetime.now(UTC)).astimezone(UTC)
        entry = AuditEntry(
            time_utc=when.isoformat(timespec="seconds").replace("+00:00", "Z"),
            image_sha256=_check_sha("image", image_sha256),
            model_id=_check_token("model id", model_id),
            model_sha256=_check_sha("model", model_sha256),
            task=_check_token("task", task),
            label=_check_token("label", label),
            status=status,
            suspicion=None if suspicion is None else round(float(suspicion), 6),
            in_scope=None if in_scope is None else bool(in_scope),
            scope_reasons=scope_reason_codes(tuple(scope_reasons)),
        )
        with self._connect() as conn:
            conn.execute(
                f"INSERT INTO predictions ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                tuple(asdict(entry).values()),
            )
        return entry

    def count(self) -> int:
        """Number of predictions logged (0 when the database does not exist yet)."""
        if not self.path.exists():
            return 0
        with self._connect() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0])

    def entries(self, limit: int | None = None) -> list[AuditEntry]:
        """The newest entries first."""
        if not self.path.exists():
            return []
        sql = f"SELECT {', '.join(COLUMNS)} FROM predictions ORDER BY id DESC"
        params: tuple = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (int(limit),)
        with self._connect() as conn:
            return [
                AuditEntry(*row[:-2], None if row[-2] is None else bool(row[-2]), row[-1] or "")
                for row in conn.execute(sql, params)
            ]

    def export_csv(self) -> str:
        """The whole log as CSV text (header + one row per prediction, oldest first)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(COLUMNS)
        if self.path.exists():
            with self._connect() as conn:
                for row in conn.execute(f"SELECT {', '.join(COLUMNS)} FROM predictions ORDER BY id"):
                    writer.writerow(row)
        return buf.getvalue()


_OPEN_LOGS: dict[Path, AuditLog] = {}


def default_log() -> AuditLog:
    """The log at :func:`audit_path`, one object per path: the schema/WAL set-up runs once per process,
    while the path is re-read each call (so a changed ``$BONECLS_AUDIT_DB`` takes effect at once)."""
    path = audit_path()
    with _LOCK:
        log = _OPEN_LOGS.get(path)
        if log is None:
            log = _OPEN_LOGS[path] = AuditLog(path)
    return log
