"""Batch worklist: many images ranked by suspicion, a status per file, errors kept in their row.

Ranking puts what most needs a look first: readable images by descending suspicion, then images
that do not look like radiographs (their score is not meaningful), then files that could not be
read, each with its own sentence. Exports are CSV and JSON with the same columns; they carry the
name the file was uploaded under (so rows can be matched to files) and never any DICOM field.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bonecls.reading import STATUS_TEXT

__all__ = ["EXPORT_FIELDS", "WorklistRow", "build_worklist", "group_of", "rank", "to_csv", "to_json"]

GROUP_READABLE, GROUP_OOD, GROUP_ERROR = 0, 1, 2
EXPORT_FIELDS = (
    "rank",
    "file",
    "image_sha256",
    "status",
    "label",
    "suspicion",
    "model_id",
    "model_sha256",
    "note",
)


@dataclass(frozen=True)
class WorklistRow:
    rank: int
    file: str
    image_sha256: str
    status: str  # positive | uncertain (doubt) | negative | detected | none | error | out of scope
    label: str | None
    suspicion: float | None
    model_id: str | None
    model_sha256: str | None
    note: str  # the error sentence, the out-of-distribution reasons, or image warnings
    out_of_distribution: bool = False

    @property
    def status_text(self) -> str:
        text = STATUS_TEXT.get(self.status, self.status)
        return f"{text} (not reliable)" if self.out_of_distribution else text

    def export(self) -> dict[str, Any]:
        row = asdict(self)
        row["status"] = self.status_text
        row["suspicion"] = None if self.suspicion is None else round(self.suspicion, 4)
        return {k: row[k] for k in EXPORT_FIELDS}


def group_of(row: WorklistRow) -> int:
    """GROUP_READABLE (ranked by suspicion), GROUP_OOD (not a typical radiograph, or out of the model's
    scope: its score means nothing, so it is never ranked among the others) or GROUP_ERROR."""
    if row.status == "error":
        return GROUP_ERROR
    return GROUP_OOD if row.out_of_distribution or row.status == "out of scope" else GROUP_READABLE


def rank(rows: Iterable[WorklistRow]) -> list[WorklistRow]:
    """Readable by descending suspicion, then out-of-distribution, then errors; upload order breaks ties."""
    indexed = list(enumerate(rows))
    indexed.sort(key=lambda ir: (group_of(ir[1]), -(ir[1].suspicion or 0.0), ir[0]))
    out = []
    for new_rank, (_, row) in enumerate(indexed, start=1):
        out.append(WorklistRow(**{**asdict(row), "rank": new_rank}))
    return out


def build_worklist(
    uploads: Sequence[Any],
    results: Sequence[Any | None],
    *,
    model_id: str | None,
    model_sha256: str | None,
) -> list[WorklistRow]:
    """Rows for ``uploads`` (:class:`bonecls.ui.session.UploadResult`-like: name, sha256, error, ood,
    radiograph) and their ``results`` (a Prediction, a detection summary dict with ``status``,
    ``label`` and ``suspicion``, an error sentence as ``str``, or None for an unreadable file), ranked.
    """
    rows: list[WorklistRow] = []
    for up, res in zip(uploads, results, strict=True):
        error = getattr(up, "error", None)
        if isinstance(res, str) and not error:
            error = res
        if error:
            rows.append(
                WorklistRow(0, up.name, up.sha256, "error", None, None, model_id, model_sha256, error)
            )
            continue
        ood = getattr(up, "ood", None)
        is_ood = bool(ood is not None and ood.is_ood)
        if isinstance(res, dict):
            status, label, suspicion = res["status"], res.get("label"), res.get("suspicion")
            scope_reasons = list(res.get("scope_reasons", ()))
        else:
            status, label, suspicion = res.status, res.label, float(res.suspicion)
            scope_reasons = list(getattr(res, "scope_reasons", ()) or ())
        if status == "out of scope":  # no result: neither the raw label nor its score is shown or ranked
            label, suspicion = None, None
        rg = getattr(up, "radiograph", None)
        notes = [r for r in scope_reasons if status == "out of scope"]
        notes += [r for r in ood.reasons if r not in notes] if is_ood else []
        notes += list(getattr(rg, "warnings", ()) or ())
        rows.append(
            WorklistRow(
                0,
                up.name,
                up.sha256,
                status,
                label,
                None if suspicion is None else float(suspicion),
                model_id,
                model_sha256,
                " ".join(notes),
                is_ood,
            )
        )
    return rank(rows)


def to_csv(rows: Iterable[WorklistRow]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=EXPORT_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row.export())
    return buf.getvalue()


def to_json(rows: Iterable[WorklistRow]) -> str:
    return json.dumps([row.export() for row in rows], indent=2, ensure_ascii=False)
