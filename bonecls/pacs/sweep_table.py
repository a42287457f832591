"""The sweep's result table: one SQLite file, one row per (instance, model), written so a sweep can resume.

An instance is keyed by the sha256 of its file (a folder sweep) or by its SOPInstanceUID (a DICOMweb
sweep). The primary key is (instance key, model weights sha256) and every completed instance is written
in one transaction with ``INSERT OR IGNORE``: a sweep killed at any moment leaves whole instances or
nothing, and a resumed sweep that meets an instance again adds no second row. An instance that cannot be
read gets one row with an empty model sha256 and status ``not read`` (it is not retried: decoding is
deterministic).

Rows hold DICOM UIDs, the model's identity and its answer, never patient data: no names, patient IDs,
birth dates, accession numbers, nor file paths (a folder exported from a PACS often names files after the
patient); a file is found again by its sha256.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path

__all__ = ["COLUMNS", "NOT_READ", "ResultTable"]

NOT_READ = "not read"
#: Every column, in order (what the CSV export holds too).
COLUMNS = (
    "instance_key",
    "key_kind",
    "source_format",
    "study_instance_uid",
    "series_instance_uid",
    "sop_instance_uid",
    "model_id",
    "model_sha256",
    "finding",
    "status",
    "label",
    "suspicion",
    "probabilities",
    "boxes",
    "scope_reasons",
    "note",
    "results_stored",
    "time_utc",
)
_JSON_COLUMNS = ("probabilities", "boxes", "scope_reasons")

_COLUMN_TYPES = ", ".join(
    f"{c} REAL" if c == "suspicion" else f"{c} TEXT NOT NULL DEFAULT ''" for c in COLUMNS
)
_SCHEMA = f"CREATE TABLE IF NOT EXISTS results ({_COLUMN_TYPES}, PRIMARY KEY (instance_key, model_sha256));"
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM results ORDER BY instance_key, model_id"
_INSERT = f"INSERT OR IGNORE INTO results ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


class ResultTable:
    """The SQLite result table at ``path`` (created when missing; safe to reopen after a kill)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=60.0)) as conn:
            conn.execute("PRAGMA synchronous=FULL")
            with conn:
                yield conn

    def done_keys(self, model_sha256s: Sequence[str]) -> set[str]:
        """Instances needing no more work: a row for every model in ``model_sha256s``, or a ``not read``
        row (a file no model can read)."""
        wanted = sorted(set(model_sha256s))
        with self._connect() as conn:
            found = conn.execute("SELECT instance_key FROM results WHERE model_sha256 = ''")
            unreadable = {k for (k,) in found}
            if not wanted:
                return unreadable
            marks = ",".join("?" * len(wanted))
            complete = conn.execute(
                f"SELECT instance_key FROM results WHERE model_sha256 IN ({marks}) "
                "GROUP BY instance_key HAVING COUNT(DISTINCT model_sha256) = ?",
                (*wanted, len(wanted)),
            )
            return unreadable | {k for (k,) in complete}

    def write(self, rows: Iterable[Mapping[str, object]]) -> int:
        """Write one instance's rows in one transaction; returns how many were new."""
        values = [_values(row) for row in rows]
        if not values:
            return 0
        with self._connect() as conn:
            before = conn.total_changes
            conn.executemany(_INSERT, values)
            return conn.total_changes - before

    def rows(self) -> list[dict[str, object]]:
        """Every row (JSON columns decoded), in key order."""
        with self._connect() as conn:
            found = conn.execute(_SELECT)
            out = []
            for record in found:
                row = dict(zip(COLUMNS, record, strict=True))
                for column in _JSON_COLUMNS:
                    row[column] = json.loads(str(row[column]) or "null")
                out.append(row)
            return out

    def counts(self) -> dict[str, int]:
        """Rows per status."""
        with self._connect() as conn:
            return dict(conn.execute("SELECT status, COUNT(*) FROM results GROUP BY status").fetchall())

    def export_csv(self, path: str | os.PathLike) -> int:
        """Every row as CSV (JSON columns as JSON text); returns the number of rows."""
        with self._connect() as conn, open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            count = 0
            for record in conn.execute(_SELECT):
                writer.writerow(record)
                count += 1
        return count


def _values(row: Mapping[str, object]) -> tuple:
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise ValueError(f"not sweep columns: {sorted(unknown)}")
    out = []
    for column in COLUMNS:
        value = row.get(column)
        if column in _JSON_COLUMNS:
            value = json.dumps(value if value is not None else [], sort_keys=True)
        elif column == "suspicion":
            value = None if value is None else float(value)
        else:
            value = "" if value is None else str(value)
        out.append(value)
    return tuple(out)
