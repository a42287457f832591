"""The SQLite audit log: one row per prediction, identifiers only, UTC times, thread-safe, WAL."""

from __future__ import annotations

import csv
import hashlib
import io
import sqlite3
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from bonecls.audit import COLUMNS, AuditLog, audit_path, default_log
from bonecls.errors import BoneclsError

IMG = hashlib.sha256(b"image").hexdigest()
MODEL = hashlib.sha256(b"model").hexdigest()


def record(log: AuditLog, **changes):
    fields = dict(
        image_sha256=IMG,
        model_id="fracture",
        model_sha256=MODEL,
        task="fracture",
        label="fractured",
        status="positive",
        suspicion=0.91234567,
    )
    fields.update(changes)
    return log.record(**fields)


def test_path_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BONECLS_AUDIT_DB", str(tmp_path / "sub" / "a.sqlite"))
    assert audit_path() == tmp_path / "sub" / "a.sqlite"
    assert default_log().count() == 0  # no file yet: nothing created by reading
    assert not (tmp_path / "sub").exists()
    record(default_log())
    assert (tmp_path / "sub" / "a.sqlite").is_file()
    monkeypatch.delenv("BONECLS_AUDIT_DB")
    assert audit_path() == Path.home() / ".cache" / "bonecls" / "audit.sqlite"


def test_record_count_entries_and_csv(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.sqlite")
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    entry = record(log, time_utc=when)
    assert entry.time_utc == "2026-01-02T01:04:05Z"  # converted to UTC, ISO 8601
    record(log, label="not fractured", status="negative", suspicion=0.02)
    record(log, model_id="pneumonia-det", task="pneumonia-det", label="none", status="none", suspicion=None)
    assert log.count() == 3
    newest = log.entries(limit=1)[0]
    assert newest.model_id == "pneumonia-det" and newest.suspicion is None
    rows = list(csv.reader(io.StringIO(log.export_csv())))
    assert tuple(rows[0]) == COLUMNS
    assert len(rows) == 4 and rows[1][1] == IMG and rows[1][6] == "positive" and rows[1][7] == "0.912346"
    now = datetime.now(UTC)
    fresh = record(log)
    assert abs(datetime.fromisoformat(fresh.time_utc.replace("Z", "+00:00")) - now) < timedelta(seconds=5)


def test_empty_log_exports_a_header(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "none.sqlite")
    assert log.count() == 0 and log.entries() == []
    assert log.export_csv().strip() == ",".join(COLUMNS)


def test_only_identifiers_are_accepted(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.sqlite")
    with pytest.raises(BoneclsError):
        record(log, image_sha256="Zyxwvutson^Qwertina")
    with pytest.raises(BoneclsError):
        record(log, model_sha256="abc")
    with pytest.raises(BoneclsError):
        record(log, label="Patient: Doe^John, born 1931-04-17")  # free text
    with pytest.raises(BoneclsError):
        record(log, status="maybe")
    assert log.count() == 0
    record(log)
    assert log.count() == 1
    with sqlite3.connect(log.path) as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(predictions)")]
    assert cols == ["id", *COLUMNS]  # no column for names, IDs, dates of birth, file names ...


def test_wal_and_many_threads(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.sqlite")
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(25):
                record(AuditLog(log.path) if i % 2 else log, suspicion=(n * 25 + i) / 1000)
                log.count()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert log.count() == 200
    with sqlite3.connect(log.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert len({r[0] for r in conn.execute("SELECT suspicion FROM predictions")}) == 200


def test_default_log_is_one_object_per_path_and_survives_a_removed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BONECLS_AUDIT_DB", str(tmp_path / "a.sqlite"))
    first = default_log()
    assert default_log() is first  # schema set-up once per process, not per write
    record(first)
    (tmp_path / "a.sqlite").unlink()  # rotated away by an administrator while the app runs
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"a.sqlite{suffix}").unlink(missing_ok=True)
    record(default_log())
    assert default_log().count() == 1
    monkeypatch.setenv("BONECLS_AUDIT_DB", str(tmp_path / "b.sqlite"))
    assert default_log() is not first and default_log().path == tmp_path / "b.sqlite"
