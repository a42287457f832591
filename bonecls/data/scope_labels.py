"""What each training image is, in DICOM's words: body part, view, modality and age group from its labels.

A model's declared scope (the body parts, views, modalities and age group it may be shown; see
:mod:`bonecls.scope.declared`) should say what its training set held, not what a task usually holds.
The labels are already in the data, in each layout's own words:

* DICOM sources: BodyPartExamined, ViewPosition, Modality, and PatientAge turned at once into
  ``adult`` / ``paediatric`` (:func:`bonecls.imaging.dicom.age_group`; the age itself is never kept);
* phantoms (``bonecls.phantom``): the field of view of each sample in ``manifest.json`` (``chest_pa``,
  ``hemithorax_*``, ``shoulder_*``), frontal DRRs of adult CTs;
* MURA: the ``XR_<REGION>`` folder of each study (``meta["region"]``);
* FracAtlas: its body-part columns (hand, leg, hip, shoulder) and view columns (frontal, lateral,
  oblique);
* GRAZPEDWRI-DX: paediatric wrist radiographs, by the data set's definition.

:func:`scope_labels_by_split` folds them per split into sorted code lists; ``train/prepare.py`` writes
that summary in ``index.json`` (``scope_labels``: no per-image label, no age), and the trainers derive
the card's declared scope from its ``train`` entry (:func:`bonecls.scope.declared.declared_from_labels`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bonecls.data.records import Record

__all__ = ["LABEL_KINDS", "record_scope_labels", "scope_labels_by_split"]

log = logging.getLogger(__name__)

#: The kinds of label a summary holds, each a sorted list of codes.
LABEL_KINDS = ("body_parts", "views", "modalities", "age_groups")

#: Projection radiography (what the published radiograph collections and the phantoms are).
PROJECTION = ("CR", "DX")
FRONTAL = ("AP", "PA")

#: MURA's XR_<REGION> folders -> DICOM BodyPartExamined terms.
MURA_BODY_PARTS = {
    "elbow": "ELBOW",
    "finger": "FINGER",
    "forearm": "FOREARM",
    "hand": "HAND",
    "humerus": "HUMERUS",
    "shoulder": "SHOULDER",
    "wrist": "WRIST",
}
#: FracAtlas's 0/1 body-part columns -> BodyPartExamined ("mixed" names no one part).
FRACATLAS_BODY_PARTS = {"hand": "HAND", "leg": "LEG", "hip": "HIP", "shoulder": "SHOULDER"}
#: FracAtlas's 0/1 view columns -> ViewPosition codes.
FRACATLAS_VIEWS = {"frontal": FRONTAL, "lateral": ("LL", "RL"), "oblique": ("LLO", "RLO")}
#: The phantoms' fields of view (bonecls.phantom.render.VIEWS) -> the body parts they show.
PHANTOM_BODY_PARTS = {
    "chest": ("CHEST",),
    "hemithorax": ("CHEST", "RIB"),
    "shoulder": ("SHOULDER", "CLAVICLE", "SCAPULA"),
}
_DICOM_TAGS = ["BodyPartExamined", "ViewPosition", "Modality", "PatientAge"]


def _labels(
    body_parts: Iterable[str] = (),
    views: Iterable[str] = (),
    modalities: Iterable[str] = (),
    age_group: str | None = None,
) -> dict[str, set[str]]:
    return {
        "body_parts": {b for b in body_parts if b},
        "views": {v for v in views if v},
        "modalities": {m for m in modalities if m},
        "age_groups": {age_group} if age_group else set(),
    }


def _dicom_labels(path: Path) -> dict[str, set[str]] | None:
    """The header's labels of a DICOM file (None: not DICOM or unreadable)."""
    import pydicom

    from bonecls.imaging.dicom import age_group

    try:
        with open(path, "rb") as fh:
            if fh.read(132)[128:132] != b"DICM" and path.suffix.lower() not in (".dcm", ".dicom"):
                return None
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_DICOM_TAGS)
    except Exception as exc:  # pydicom raises many types; an unreadable file is skipped elsewhere
        log.debug("No DICOM labels for %s: %s", path, exc)
        return None

    def code(keyword: str) -> str:
        return str(ds.get(keyword, "") or "").strip().upper()

    age = age_group(str(ds.get("PatientAge") or ""))  # only the group is kept, never the age
    return _labels([code("BodyPartExamined")], [code("ViewPosition")], [code("Modality")], age)


def _flag(meta: dict[str, Any], key: str) -> bool:
    return str(meta.get(key, "")).strip() in ("1", "1.0", "True", "true")


def _layout_labels(record: Record, layout: str) -> dict[str, set[str]]:
    """What the layout's own columns and folders say about one record."""
    meta = record.meta_dict
    if layout == "mura":
        part = MURA_BODY_PARTS.get(str(meta.get("region", "")).lower())
        return _labels([part] if part else [], modalities=PROJECTION)
    if layout == "fracatlas":
        parts = [code for col, code in FRACATLAS_BODY_PARTS.items() if _flag(meta, col)]
        views = [v for col, codes in FRACATLAS_VIEWS.items() if _flag(meta, col) for v in codes]
        return _labels(parts, views, PROJECTION)
    if layout == "grazpedwri":  # the data set is paediatric wrist trauma radiographs
        return _labels(["WRIST"], modalities=PROJECTION, age_group="paediatric")
    return _labels()


def _phantom_views(source: Path) -> dict[str, str]:
    """``relative file -> field of view`` from a phantom data set's ``manifest.json`` (empty if none)."""
    try:
        samples = json.loads((source / "manifest.json").read_text(encoding="utf-8"))["samples"]
        return {str(s["file"]): str(s["view"]) for s in samples if s.get("file") and s.get("view")}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _phantom_labels(view: str) -> dict[str, set[str]]:
    """A phantom's labels: the body parts of its field of view, frontal DRRs of an adult CT."""
    parts = PHANTOM_BODY_PARTS.get(view.split("_")[0], ())
    return _labels(parts, FRONTAL, PROJECTION, "adult")


def record_scope_labels(record: Record, layout: str, phantom_view: str | None = None) -> dict[str, set[str]]:
    """The labels of one record: its DICOM header first, else the phantom's field of view
    (``phantom_view``), else the layout's columns and folders; each kind a set of codes (maybe empty)."""
    found = _dicom_labels(record.path)
    if found is not None and any(found.values()):
        return found
    if phantom_view:
        return _phantom_labels(phantom_view)
    return _layout_labels(record, layout)


def scope_labels_by_split(
    records: Sequence[Record], layout: str, source: str | os.PathLike
) -> dict[str, dict[str, Any]]:
    """Per split: every code seen (sorted lists by kind), the images that had any label and all images.

    The summary holds codes and counts only: no image is named and no age is kept (age groups only).
    """
    source = Path(source)
    phantom = _phantom_views(source)
    out: dict[str, dict[str, Any]] = {}
    for record in records:
        try:
            relative = record.path.relative_to(source).as_posix()
        except ValueError:
            relative = record.path.name
        labels = record_scope_labels(record, layout, phantom.get(relative))
        split = out.setdefault(
            record.split or "train", {**{kind: set() for kind in LABEL_KINDS}, "labelled": 0, "n": 0}
        )
        for kind in LABEL_KINDS:
            split[kind] |= labels[kind]
        split["labelled"] += int(any(labels.values()))
        split["n"] += 1
    for split in out.values():
        for kind in LABEL_KINDS:
            split[kind] = sorted(split[kind])
    return out
