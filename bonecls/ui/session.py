"""Upload handling: bytes in memory keyed by sha256, one result per file, errors kept in place.

:func:`ingest_uploads` is the one function the uploader (and "try an example") calls; tests call it
too. Nothing is written to disk: the bytes, the decoded :class:`~bonecls.imaging.Radiograph` and
the out-of-distribution verdict live in the session's :class:`UploadStore` (``st.session_state``).

A file that cannot be read keeps its :class:`~bonecls.errors.ImageError` sentence in its own
result; the other files go on. An unexpected failure is logged server-side (with the image hash,
never the file name) and the result carries a sentence with an error id instead of a traceback.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bonecls.errors import BoneclsError
from bonecls.ood import OodResult

log = logging.getLogger("bonecls.ui")

__all__ = [
    "STORE_KEY",
    "Example",
    "UploadResult",
    "UploadStore",
    "examples_by_task",
    "get_store",
    "ingest_example",
    "ingest_uploads",
    "list_examples",
]

STORE_KEY = "bonecls_uploads"
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"


@dataclass(frozen=True)
class UploadResult:
    """One uploaded file: either ``radiograph`` or ``error`` is set."""

    name: str
    sha256: str
    size: int
    data: bytes = field(repr=False, compare=False)
    radiograph: Any = field(default=None, repr=False, compare=False)  # bonecls.imaging.Radiograph
    error: str | None = None
    ood: OodResult | None = None
    note: str | None = None  # e.g. the true class of a shipped phantom example

    @property
    def ok(self) -> bool:
        return self.radiograph is not None and self.error is None

    @property
    def short_id(self) -> str:
        return self.sha256[:10]


def _name_and_bytes(item: Any, index: int) -> tuple[str, bytes]:
    """Accept Streamlit UploadedFile, (name, bytes) pairs, plain bytes, or any object with read()."""
    if isinstance(item, bytes | bytearray | memoryview):
        return f"file {index + 1}", bytes(item)
    if isinstance(item, tuple) and len(item) >= 2:
        return str(item[0]), bytes(item[1])
    name = str(getattr(item, "name", None) or f"file {index + 1}")
    if hasattr(item, "getvalue"):
        return name, bytes(item.getvalue())
    if hasattr(item, "read"):
        if hasattr(item, "seek"):
            item.seek(0)
        return name, bytes(item.read())
    raise TypeError(f"cannot read an upload of type {type(item).__name__}")


def _decode(name: str, data: bytes, sha: str) -> UploadResult:
    from bonecls import ood
    from bonecls.imaging import load_radiograph

    try:
        if not data:
            raise BoneclsError("The file is empty (0 bytes); please upload it again.")
        rg = load_radiograph(data)
        verdict = ood.check(rg)
        return UploadResult(name=name, sha256=sha, size=len(data), data=data, radiograph=rg, ood=verdict)
    except BoneclsError as exc:  # ImageError and friends: a sentence for the reader
        return UploadResult(name=name, sha256=sha, size=len(data), data=data, error=str(exc))
    except Exception as exc:  # a bug: log it (hash only, never the name), show an id
        from bonecls.ui.error_policy import report_exception

        message = report_exception(exc, f"decoding upload sha256={sha[:12]}")
        return UploadResult(name=name, sha256=sha, size=len(data), data=data, error=message)


def ingest_uploads(files: Iterable[Any], store: UploadStore | None = None) -> list[UploadResult]:
    """Decode every file (in order), one :class:`UploadResult` each; never raises for a bad file.

    With ``store``, files already held (same sha256) are not decoded again and new results are
    added to it, so calling this on every Streamlit rerun is cheap.
    """
    results: list[UploadResult] = []
    for index, item in enumerate(files or ()):
        try:
            name, data = _name_and_bytes(item, index)
        except Exception as exc:
            from bonecls.ui.error_policy import report_exception

            message = report_exception(exc, "reading an upload")
            results.append(UploadResult(name=f"file {index + 1}", sha256="", size=0, data=b"", error=message))
            continue
        sha = hashlib.sha256(data).hexdigest()
        known = store.get(sha) if store is not None else None
        if known is not None:
            result = known if known.name == name else _renamed(known, name)
        else:
            result = _decode(name, data, sha)
        if store is not None:
            store.add(result)
        results.append(result)
    return results


def _renamed(result: UploadResult, name: str, note: str | None = None) -> UploadResult:
    return dataclasses.replace(result, name=name, note=note if note is not None else result.note)


def _result_bytes(result: UploadResult) -> int:
    rg = result.radiograph
    arrays = 0 if rg is None else sum(getattr(getattr(rg, a, None), "nbytes", 0) for a in ("pixels", "raw"))
    return len(result.data) + int(arrays)


def _default_max_bytes() -> int:
    try:
        return int(float(os.environ.get("BONECLS_SESSION_MAX_MB", "2048")) * 2**20)
    except ValueError:
        return 2048 * 2**20


class UploadStore:
    """The session's images, in upload order, keyed by sha256 (a re-upload replaces, not duplicates).

    Memory is bounded: beyond ``max_bytes`` (``$BONECLS_SESSION_MAX_MB``, default 2048) or
    ``max_items`` the oldest images are dropped and their names kept in ``evicted`` so that the page
    can say so.
    """

    def __init__(self, max_items: int = 500, max_bytes: int | None = None) -> None:
        self._items: OrderedDict[str, UploadResult] = OrderedDict()
        self.max_items = max_items
        self.max_bytes = _default_max_bytes() if max_bytes is None else max_bytes
        self.selected: str | None = None
        self.seen_uploads: set[str] = set()  # uploader file ids already ingested
        self.evicted: list[str] = []

    def get(self, sha: str) -> UploadResult | None:
        return self._items.get(sha)

    @property
    def nbytes(self) -> int:
        return sum(_result_bytes(r) for r in self._items.values())

    def add(self, result: UploadResult) -> None:
        key = result.sha256 or f"error-{len(self._items)}"
        self._items[key] = result
        total = self.nbytes
        while len(self._items) > 1 and (len(self._items) > self.max_items or total > self.max_bytes):
            old_key, old = self._items.popitem(last=False)
            total -= _result_bytes(old)
            self.evicted.append(old.name)
            if self.selected == old_key:
                self.selected = None
        if self.selected is None and result.ok:
            self.selected = key

    def remove(self, sha: str) -> None:
        self._items.pop(sha, None)
        if self.selected == sha:
            self.selected = next((k for k, r in self._items.items() if r.ok), None)

    def clear(self) -> None:
        self._items.clear()
        self.selected = None
        self.evicted.clear()

    def __iter__(self) -> Iterator[UploadResult]:
        return iter(list(self._items.values()))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, sha: object) -> bool:
        return sha in self._items

    def readable(self) -> list[UploadResult]:
        return [r for r in self._items.values() if r.ok]

    def failed(self) -> list[UploadResult]:
        return [r for r in self._items.values() if not r.ok]


def get_store() -> UploadStore:
    """The current Streamlit session's store (created on first use)."""
    import streamlit as st

    store = st.session_state.get(STORE_KEY)
    if not isinstance(store, UploadStore):
        store = UploadStore()
        st.session_state[STORE_KEY] = store
    return store


# --- examples -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    path: Path
    label: str  # what the button says, e.g. "Fracture (DICOM)"
    task: str | None = None
    class_name: str | None = None


def list_examples(root: Path | None = None) -> list[Example]:
    """Examples from ``<root>/index.json`` (or every image-like file when there is no index).

    ``root`` defaults to ``$BONECLS_EXAMPLES`` or the repository's ``examples/``."""
    if root is None:
        root = Path(os.environ.get("BONECLS_EXAMPLES", "").strip() or EXAMPLES_DIR)
    root = Path(root)
    index = root / "index.json"
    examples: list[Example] = []
    if index.is_file():
        try:
            raw = json.loads(index.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.warning("examples/index.json is not valid JSON; listing files instead")
            raw = None
        entries: list[Any] = []
        if isinstance(raw, dict):
            entries = raw.get("examples") or raw.get("files") or raw.get("images") or []
            if not entries:
                for key, value in raw.items():
                    if isinstance(value, str):
                        entries.append({"file": value, "class": key})
                    elif isinstance(value, dict):
                        entries.append({"class": key, **value})
        elif isinstance(raw, list):
            entries = raw
        for entry in entries:
            ex = _example_from_entry(root, entry)
            if ex is not None:
                examples.append(ex)
        if examples or raw is not None:
            return examples
    if root.is_dir():
        suffixes = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ""}
        for path in sorted(root.iterdir()):
            if path.is_file() and path.suffix.lower() in suffixes and not path.name.startswith("."):
                examples.append(Example(path=path, label=path.stem.replace("_", " ")))
    return examples


def _example_from_entry(root: Path, entry: Any) -> Example | None:
    if isinstance(entry, str):
        entry = {"file": entry}
    if not isinstance(entry, dict):
        return None
    rel = entry.get("file") or entry.get("path") or entry.get("png") or entry.get("dicom")
    if not rel:
        return None
    path = (root / rel).resolve()
    if not path.is_file() or root.resolve() not in path.parents:
        return None
    task = entry.get("task")
    cls = entry.get("class") or entry.get("class_name") or entry.get("label")
    fmt = entry.get("format") or ("DICOM" if path.suffix.lower() in {".dcm", ""} else path.suffix[1:].upper())
    title = entry.get("title") or entry.get("description")
    if not title:
        parts = [
            str(task).replace("-", " ") if task else None,
            str(cls).replace("_", " ") if cls else path.stem,
        ]
        title = ": ".join(p for p in parts if p)
    return Example(path=path, label=f"{title} ({fmt})", task=task, class_name=cls)


def ingest_example(example: Example, store: UploadStore | None = None) -> UploadResult:
    """Load a shipped example like an upload (same path), noting its true class."""
    data = example.path.read_bytes()
    name = f"example {example.path.parent.name}/{example.path.name}"
    result = ingest_uploads([(name, data)])[0]
    if example.class_name:
        result = _renamed(result, name, f"Synthetic phantom example; true class: {example.class_name}.")
    if store is not None:
        store.add(result)
    return result


def examples_by_task(examples: list[Example]) -> dict[str, list[Example]]:
    """One example per (task, class), DICOM preferred (it exercises window/level), grouped by task."""
    chosen: dict[tuple[str, str], Example] = {}
    for ex in examples:
        key = (ex.task or "other", ex.class_name or ex.path.stem)
        current = chosen.get(key)
        if current is None or (ex.path.suffix.lower() == ".dcm" and current.path.suffix.lower() != ".dcm"):
            chosen[key] = ex
    grouped: dict[str, list[Example]] = {}
    for (task, _), ex in chosen.items():
        grouped.setdefault(task, []).append(ex)
    return grouped
