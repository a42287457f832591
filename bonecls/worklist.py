"""Batch worklist: many images ranked by suspicion, a status per file, errors kept in their row.

Ranking puts what most needs a look first: readable images by descending suspicion, then images
that do not look like radiographs (their score is not meaningful), then files that could not be
read, each with its own sentence. Exports are CSV and JSON with the same columns; they carry the
name the file was uploaded under (so rows can be matched to files) and never any DICOM field.

Clinics read studies of several views. When files carry a study key -- a DICOM StudyInstanceUID
(hashed at once; the export names the study "DICOM study N", never its UID) or a MURA-like path
``.../patient<id>/study<n>[_label]/<image>`` -- every row also carries its study's answer: the images'
suspicions aggregated by the cards' study rule (:data:`STUDY_RULE`, the highest suspicion: one
suspicious view flags the study), with the status of that most suspicious view.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from bonecls.reading import STATUS_TEXT

__all__ = [
    "EXPORT_FIELDS",
    "STUDY_RULE",
    "WorklistRow",
    "build_worklist",
    "group_of",
    "rank",
    "study_key",
    "to_csv",
    "to_json",
    "with_study_answers",
]

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
    "study",
    "study_status",
    "study_suspicion",
)
#: How image suspicions become a study's, as on the cards (bonecls.training.headline.STUDY_RULE).
STUDY_RULE = "max"
_MURA_LIKE = re.compile(r"(?:^|[/\\])(patient[^/\\]+)[/\\](study\d+)[^/\\]*[/\\][^/\\]+$", re.IGNORECASE)


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
    study: str | None = None  # "patient00011/study1" or "DICOM study 2"; None without a study key
    study_status: str | None = None  # the study's answer (its most suspicious readable view's status)
    study_suspicion: float | None = None  # the highest suspicion among the study's readable views
    study_images: int = 0  # readable views the study's answer is drawn from

    @property
    def status_text(self) -> str:
        text = STATUS_TEXT.get(self.status, self.status)
        return f"{text} (not reliable)" if self.out_of_distribution else text

    def export(self) -> dict[str, Any]:
        row = asdict(self)
        row["status"] = self.status_text
        row["suspicion"] = None if self.suspicion is None else round(self.suspicion, 4)
        row["study_status"] = self.study_text
        row["study_suspicion"] = None if self.study_suspicion is None else round(self.study_suspicion, 4)
        return {k: row[k] for k in EXPORT_FIELDS}

    @property
    def study_text(self) -> str | None:
        """The study's answer in words, or None when the file has no study (or none of its views read)."""
        return None if self.study_status is None else STATUS_TEXT.get(self.study_status, self.study_status)


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


def study_key(name: str, data: bytes | None = None) -> tuple[str, str | None] | None:
    """``(grouping key, label)`` of a file's study, or None. A MURA-like path names its study in clear
    (``patient00011/study1``, the label); a DICOM file's StudyInstanceUID is hashed at once and gets no
    label here (:func:`with_study_answers` numbers DICOM studies in upload order)."""
    m = _MURA_LIKE.search(name)
    if m:
        key = f"{m.group(1)}/{m.group(2)}"
        return key, key
    if data is None or data[128:132] != b"DICM":
        return None
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
        uid = str(ds.get("StudyInstanceUID", "") or "").strip()
    except Exception:  # pydicom raises many types; a file without a readable study is a single image
        return None
    return ("dicom:" + hashlib.sha256(uid.encode()).hexdigest()[:16], None) if uid else None


def with_study_answers(
    rows: Sequence[WorklistRow], keys: Sequence[tuple[str, str | None] | None]
) -> list[WorklistRow]:
    """``rows`` with their study and its answer by :data:`STUDY_RULE`: the study's suspicion is the
    highest of its readable, in-scope views and its status that view's (the card's thresholds already
    decided it). Views that are unreadable or not typical radiographs carry the study but add nothing."""
    labels: dict[str, str] = {}
    for key in keys:
        if key is not None and key[0] not in labels:
            labels[key[0]] = key[1] or f"DICOM study {sum(k.startswith('dicom:') for k in labels) + 1}"
    best: dict[str, WorklistRow] = {}
    counts: dict[str, int] = {}
    for row, key in zip(rows, keys, strict=True):
        if key is None or group_of(row) != GROUP_READABLE or row.suspicion is None:
            continue
        counts[key[0]] = counts.get(key[0], 0) + 1
        if key[0] not in best or row.suspicion > (best[key[0]].suspicion or 0.0):
            best[key[0]] = row
    out = []
    for row, key in zip(rows, keys, strict=True):
        if key is None:
            out.append(row)
            continue
        top = best.get(key[0])
        out.append(
            replace(
                row,
                study=labels[key[0]],
                study_status=top.status if top else None,
                study_suspicion=top.suspicion if top else None,
                study_images=counts.get(key[0], 0),
            )
        )
    return out


def build_worklist(
    uploads: Sequence[Any],
    results: Sequence[Any | None],
    *,
    model_id: str | None,
    model_sha256: str | None,
) -> list[WorklistRow]:
    """Rows for ``uploads`` (:class:`bonecls.ui.session.UploadResult`-like: name, sha256, error, ood,
    radiograph, data) and their ``results`` (a Prediction, a detection summary dict with ``status``,
    ``label`` and ``suspicion``, an error sentence as ``str``, or None for an unreadable file), ranked,
    with study answers where files carry a study key (:func:`study_key`).
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
    keys = [study_key(up.name, getattr(up, "data", None)) for up in uploads]
    return rank(with_study_answers(rows, keys))


def to_csv(rows: Iterable[WorklistRow]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=EXPORT_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row.export())
    return buf.getvalue()


def to_json(rows: Iterable[WorklistRow]) -> str:
    return json.dumps([row.export() for row in rows], indent=2, ensure_ascii=False)
