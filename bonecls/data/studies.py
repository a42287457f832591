"""Readers of sets with patients and studies: MURA and GRAZPEDWRI-DX.

* MURA v1.1 (Stanford) -- ``MURA-v1.1/{train,valid}/XR_<REGION>/patient<id>/study<n>_{positive,negative}/
  image<k>.png`` with ``{train,valid}_image_paths.csv`` (one image path a row, no header) and
  ``{train,valid}_labeled_studies.csv`` (``study folder/,label``, no header). Labels are per study
  (normal/abnormal as the radiologist reported it, any abnormality, not only fractures): every image of a
  study gets the study's label. The public ``valid`` set becomes the test split (Stanford keeps the real
  test set); ``train`` is split by patient into train and validation.
* GRAZPEDWRI-DX (Graz pediatric wrist trauma, figshare) -- ``dataset.csv`` (``filestem``,
  ``patient_id``, ``study_number``, ``projection``, ``laterality``, ``fracture_visible``, ...), the
  images ``<filestem>.png`` under ``images/`` or ``images_part1..4/`` and YOLO labels
  ``folder_structure/yolov5/labels/<filestem>.txt`` whose class names are in ``meta.yaml`` beside them
  (published order: boneanomaly, bonelesion, foreignbody, fracture, metal, periostealreaction,
  pronatorsign, softtissue, text). An image is "fractured" when it has a fracture box; only fracture
  boxes are kept as boxes. No splits: split by patient.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import replace
from pathlib import Path

from bonecls.data.records import (
    TASK_CLASSES,
    Box,
    Dataset,
    Grouping,
    Record,
    Skipped,
    _finish,
    _is_image,
    _read_csv,
    _verify,
    _yolo_boxes,
    probe_image,
)
from bonecls.errors import DataError

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------- MURA

MURA_FOLDER = "MURA-v1.1"
_MURA_STUDY = re.compile(r"^(XR_[A-Z]+)/(patient\d+)/(study\d+)_(positive|negative)$")
MURA_SPLITS = {"train": None, "valid": "test"}  # our split per MURA folder (None: split by patient)


def mura_root(root: str | os.PathLike) -> Path:
    """The ``MURA-v1.1`` folder itself, given it or the folder holding it."""
    root = Path(root)
    if (root / MURA_FOLDER).is_dir() and not (root / "train_labeled_studies.csv").is_file():
        return root / MURA_FOLDER
    return root


def _mura_rows(path: Path) -> list[list[str]]:
    """Rows of a header-less MURA CSV; paths are relative to the folder holding ``MURA-v1.1``."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return [[c.strip() for c in row] for row in csv.reader(fh) if row and row[0].strip()]
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a UTF-8 CSV file.") from None


def _mura_relative(entry: str, root: Path) -> str:
    """``MURA-v1.1/train/XR_WRIST/...`` -> ``train/XR_WRIST/...`` (the CSVs name the top folder)."""
    parts = Path(entry.replace("\\", "/").rstrip("/")).parts
    if parts and parts[0] in (MURA_FOLDER, root.name):
        parts = parts[1:]
    return "/".join(parts)


def _mura_split(root: Path, folder: str) -> tuple[list[Record], list[Skipped], list[Path]]:
    """Records of one MURA folder (``train`` or ``valid``) from its two CSVs, cross-checked with the disk."""
    studies_csv = root / f"{folder}_labeled_studies.csv"
    images_csv = root / f"{folder}_image_paths.csv"
    for need in (studies_csv, images_csv):
        if not need.is_file():
            raise DataError(
                f"{root} has a {folder} folder but no {need.name}; MURA keeps its labels in "
                f"{folder}_labeled_studies.csv and its image list in {folder}_image_paths.csv."
            )
    labels: dict[str, int] = {}
    for line, row in enumerate(_mura_rows(studies_csv), 1):
        if len(row) < 2 or row[1] not in ("0", "1"):
            raise DataError(f"{studies_csv.name} line {line}: expected 'study folder/,0 or 1'.")
        labels[_mura_relative(row[0], root)] = int(row[1])
    names = TASK_CLASSES["abnormality"]
    records: list[Record] = []
    stray: list[Skipped] = []
    listed: set[str] = set()
    for row in _mura_rows(images_csv):
        rel = _mura_relative(row[0], root)
        listed.add(rel)
        path = root / rel
        study_rel = rel.rsplit("/", 1)[0]
        match = _MURA_STUDY.match(study_rel.split("/", 1)[-1])
        if match is None:
            stray.append(Skipped(path, "not in a XR_<REGION>/patient<id>/study<n>_<label> folder"))
            continue
        region, patient, study, suffix = match.groups()
        if study_rel not in labels:
            stray.append(Skipped(path, f"its study is not in {studies_csv.name} (no label)"))
            continue
        label = labels[study_rel]
        if label != (suffix == "positive"):
            stray.append(Skipped(path, f"{studies_csv.name} says {label}, the folder says {suffix}"))
            continue
        if not path.is_file():
            stray.append(Skipped(path, f"listed in {images_csv.name} but missing"))
            continue
        meta = (("region", region[3:].lower()), ("study_label", names[label]))
        study_key = f"{region}/{patient}/{study}"
        records.append(
            Record(path, label, names[label], MURA_SPLITS[folder], (), None, meta, patient, study_key)
        )
    for f in sorted((root / folder).rglob("*")):
        if _is_image(f) and f.relative_to(root).as_posix() not in listed:
            stray.append(Skipped(f, f"not listed in {images_csv.name} (no label)"))
    return records, stray, [studies_csv, images_csv]


def read_mura(root: str | os.PathLike, *, verify: bool = True) -> Dataset:
    """MURA v1.1 (see the module docstring): study labels on every image, patient and study keys from the
    folders; ``valid`` is read as the test split and ``train`` is left for a split by patient."""
    root = mura_root(root)
    if not root.is_dir():
        raise DataError(f"The MURA folder {root} does not exist; check the path given to --data.")
    folders = [f for f in MURA_SPLITS if (root / f).is_dir()]
    if "train" not in folders:
        raise DataError(f"{root} has no train folder; expected MURA-v1.1/train and MURA-v1.1/valid.")
    records: list[Record] = []
    stray: list[Skipped] = []
    label_files: list[Path] = []
    for folder in folders:
        recs, skipped, files = _mura_split(root, folder)
        records += recs
        stray += skipped
        label_files += files
    for s in stray:
        log.warning("MURA: %s %s", s.path, s.reason)
    records, unreadable = _verify(records, verify)
    grouping = Grouping(
        "patient",
        "MURA patient folder",
        "Split by patient (MURA's patient<id> folders); MURA's valid set is the test split; labels are "
        "per study (any abnormality, not only fractures) and every image carries its study's label.",
    )
    names = list(TASK_CLASSES["abnormality"])
    return _finish(Dataset(root, "mura", names, records, stray + unreadable, False, label_files, grouping))


# ------------------------------------------------------------------------------------------ GRAZPEDWRI-DX

GRAZ_CLASSES = (
    "boneanomaly",
    "bonelesion",
    "foreignbody",
    "fracture",
    "metal",
    "periostealreaction",
    "pronatorsign",
    "softtissue",
    "text",
)
GRAZ_LABELS = Path("folder_structure") / "yolov5" / "labels"
GRAZ_META = ("projection", "laterality", "fracture_visible", "ao_classification")


def _graz_class_names(root: Path) -> list[str]:
    """Box class names from ``folder_structure/yolov5/meta.yaml`` (``names``), else the published list."""
    import yaml

    meta = root / GRAZ_LABELS.parent / "meta.yaml"
    if not meta.is_file():
        return list(GRAZ_CLASSES)
    try:
        doc = yaml.safe_load(meta.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"{meta} is not valid YAML ({exc}).") from None
    names = doc.get("names") if isinstance(doc, dict) else None
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if not names or "fracture" not in names:
        raise DataError(f"{meta} names no 'fracture' box class; expected {', '.join(GRAZ_CLASSES)}.")
    return [str(n) for n in names]


def _graz_images(root: Path) -> dict[str, Path]:
    """``filestem -> path`` of the PNGs under ``images/`` or ``images_part*/`` (as unzipped)."""
    found: dict[str, Path] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("images")):
        for f in sorted(folder.rglob("*.png")):
            if _is_image(f):
                found.setdefault(f.stem, f)
    return found


def read_grazpedwri(root: str | os.PathLike, *, verify: bool = True) -> Dataset:
    """GRAZPEDWRI-DX (see the module docstring): fracture / not fractured per image from its YOLO boxes,
    patient and study keys from ``dataset.csv``. No splits: split by patient."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"The GRAZPEDWRI-DX folder {root} does not exist; check the path given to --data.")
    csv_path = root / "dataset.csv"
    label_dir = root / GRAZ_LABELS
    if not csv_path.is_file() or not label_dir.is_dir():
        raise DataError(
            f"{root} is not a GRAZPEDWRI-DX folder: expected dataset.csv and {GRAZ_LABELS.as_posix()}/."
        )
    rows = _read_csv(csv_path, ("filestem", "patient_id", "study_number"))
    box_names = _graz_class_names(root)
    images = _graz_images(root)
    names = list(TASK_CLASSES["fracture"])
    records: list[Record] = []
    stray: list[Skipped] = []
    for row in rows:
        stem = row["filestem"]
        path = images.pop(stem, None)
        txt = label_dir / f"{stem}.txt"
        if path is None:
            stray.append(Skipped(root / "images" / f"{stem}.png", "listed in dataset.csv but missing"))
            continue
        if not txt.is_file():
            stray.append(Skipped(path, f"has no YOLO label file {txt.name} (its findings are unknown)"))
            continue
        meta = tuple((k, row[k]) for k in GRAZ_META if row.get(k))
        patient = f"patient{row['patient_id']}"
        study = f"{patient}/study{row['study_number']}"
        meta += (("label_file", str(txt)),)
        records.append(Record(path, 0, names[0], None, (), None, meta, patient, study))
    stray += [Skipped(p, "not listed in dataset.csv (no patient)") for p in images.values()]
    for s in stray:
        log.warning("GRAZPEDWRI-DX: %s %s", s.path, s.reason)
    records, unreadable = _verify(records, verify)
    labelled = []
    for rec in records:
        txt = Path(rec.meta_dict["label_file"])
        try:
            size = rec.size or probe_image(rec.path)
        except (OSError, ValueError) as exc:
            unreadable.append(Skipped(rec.path, str(exc)))
            continue
        boxes: tuple[Box, ...] = _yolo_boxes(txt, size, box_names)
        fractures = tuple(b for b in boxes if b.kind == "fracture")
        label = int(bool(fractures))
        meta = tuple(kv for kv in rec.meta if kv[0] != "label_file")
        meta += (("findings", ";".join(sorted({b.kind for b in boxes if b.kind != "fracture"}))),)
        labelled.append(replace(rec, label=label, class_name=names[label], boxes=fractures, meta=meta))
    grouping = Grouping(
        "patient",
        "GRAZPEDWRI-DX patient_id",
        "Split by patient (GRAZPEDWRI-DX dataset.csv patient_id); label: at least one fracture box.",
    )
    files = [csv_path, *(p for p in [root / GRAZ_LABELS.parent / "meta.yaml"] if p.is_file())]
    return _finish(Dataset(root, "grazpedwri", names, labelled, stray + unreadable, False, files, grouping))
