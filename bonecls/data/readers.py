"""Readers of the five layouts bonecls always read: class folders (Kaggle, three-class), FracAtlas, RSNA
Pneumonia and YOLO. Each validates as it reads and sets the records' patient group where the layout has
one (RSNA patientId; hashed DICOM PatientID in class folders and YOLO sets of DICOM files)."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from bonecls.data.groups import with_dicom_groups
from bonecls.data.records import (
    _FOLDER_ALIASES,
    SPLIT_ALIASES,
    SPLITS,
    TASK_CLASSES,
    Box,
    Dataset,
    Grouping,
    Record,
    Skipped,
    _children,
    _finish,
    _is_image,
    _read_csv,
    _verify,
    _yolo_boxes,
    image_grouping,
    probe_image,
)
from bonecls.errors import DataError

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------- class folders


def read_class_folders(
    root: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    *,
    splits: Sequence[str] | None = None,
    layout: str = "classfolders",
    verify: bool = True,
) -> Dataset:
    """``<root>/<split>/<class>/*`` (the Kaggle and three-class layouts); a root without split folders
    (``<root>/<class>/*``) is read as one unsplit set.

    ``class_names`` fixes the label order and the folders that are allowed; folder names are matched
    case-insensitively with the usual spellings (``not fractured``/``not_fractured``). An unknown
    folder raises :class:`DataError` listing the expected ones.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"The dataset folder {root} does not exist; check the path given to --data.")
    split_dirs = {
        SPLIT_ALIASES[p.name.lower()]: p
        for p in _children(root)
        if p.is_dir() and p.name.lower() in SPLIT_ALIASES
    }
    wanted = list(splits) if splits is not None else list(SPLITS)
    has_splits = bool(split_dirs)
    if has_splits:
        missing = [s for s in wanted if s not in split_dirs]
        if missing:
            raise DataError(
                f"The dataset folder {root} has no {', '.join(missing)} folder(s); expected "
                f"{', '.join(wanted)} each holding one folder per class."
            )
        groups = [(s, split_dirs[s]) for s in wanted]
    else:
        groups = [(None, root)]

    found: set[str] = set()
    for _, d in groups:
        found.update(p.name for p in _children(d) if p.is_dir())
    canon = {name: _FOLDER_ALIASES.get(name.lower(), name) for name in found}
    if class_names is None:
        class_names = sorted(set(canon.values()))
        for task_classes in TASK_CLASSES.values():
            if set(class_names) == set(task_classes):
                class_names = list(task_classes)
    class_names = list(class_names)
    unknown = sorted(n for n in found if canon[n] not in class_names)
    if unknown:
        raise DataError(
            f"Unexpected class folder(s) {', '.join(repr(u) for u in unknown)} in {root}; expected only "
            f"{', '.join(repr(c) for c in class_names)}."
        )
    if not found:
        raise DataError(f"No class folders were found in {root}; expected {', '.join(class_names)}.")

    records: list[Record] = []
    stray: list[Skipped] = []
    for split, d in groups:
        for cdir in _children(d):
            if not cdir.is_dir():
                continue
            cname = canon[cdir.name]
            label = class_names.index(cname)
            for f in sorted(cdir.rglob("*")):
                if _is_image(f):
                    records.append(Record(f, label, cname, split))
                elif f.is_file() and not f.name.startswith("."):
                    stray.append(Skipped(f, "not an image file name (skipped)"))
    records, skipped = _verify(records, verify)
    labels: list[Path] = []
    if (root / BOXES_CSV).is_file():
        records, unmatched = _attach_box_csv(root, records)
        stray += unmatched
        labels.append(root / BOXES_CSV)
    records, grouping = with_dicom_groups(records)
    return _finish(Dataset(root, layout, class_names, records, stray + skipped, has_splits, labels, grouping))


BOXES_CSV = "boxes.csv"


def _attach_box_csv(root: Path, records: list[Record]) -> tuple[list[Record], list[Skipped]]:
    """Boxes for class-folder sets from ``<root>/boxes.csv`` (``file,x0,y0,x1,y1[,kind]``, pixels, file
    relative to the root). Rows naming no image of the set are listed as skipped, never dropped silently."""
    path = root / BOXES_CSV
    rows = _read_csv(path, ("file", "x0", "y0", "x1", "y1"))
    by_file: dict[str, list[Box]] = {}
    for line, row in enumerate(rows, 2):
        try:
            x0, y0, x1, y1 = (float(row[k]) for k in ("x0", "y0", "x1", "y1"))
        except ValueError:
            raise DataError(f"{path.name} line {line}: the box coordinates are not numbers.") from None
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
            raise DataError(f"{path.name} line {line}: a box needs x0 < x1 and y0 < y1 (pixels).")
        by_file.setdefault(row["file"].replace("\\", "/"), []).append(
            Box(x0, y0, x1, y1, row.get("kind") or "finding")
        )
    out = []
    for rec in records:
        rel = rec.path.relative_to(root).as_posix()
        out.append(replace(rec, boxes=tuple(by_file.pop(rel, ()))) if rel in by_file else rec)
    unmatched = [
        Skipped(root / f, f"has boxes in {BOXES_CSV} but is not an image of this set") for f in by_file
    ]
    for s in unmatched:
        log.warning("%s: %s", s.path, s.reason)
    return out, unmatched


def read_kaggle(root: str | os.PathLike, *, verify: bool = True) -> Dataset:
    """Kaggle multi-region bone fracture set: ``train|val|test/fractured|not fractured/``."""
    return read_class_folders(root, TASK_CLASSES["fracture"], layout="kaggle", verify=verify)


def read_threeclass(root: str | os.PathLike, *, verify: bool = True) -> Dataset:
    """Three-class set: ``train|val|test/healthy|fractured|beyond_repair/``."""
    return read_class_folders(root, TASK_CLASSES["threeclass"], layout="threeclass", verify=verify)


# ------------------------------------------------------------------------------------------- FracAtlas

FRACATLAS_COLUMNS = (
    "image_id",
    "hand",
    "leg",
    "hip",
    "shoulder",
    "mixed",
    "hardware",
    "multiscan",
    "fractured",
    "fracture_count",
    "frontal",
    "lateral",
    "oblique",
)


def read_fracatlas(root: str | os.PathLike, *, verify: bool = True) -> Dataset:
    """FracAtlas: labels from ``dataset.csv`` (cross-checked with the image folder), boxes from the COCO
    JSON when present (pixels) else the YOLO text files. No splits: use :meth:`Dataset.with_splits`."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"The FracAtlas folder {root} does not exist; check the path given to --data.")
    csv_path = root / "dataset.csv"
    img_root = root / "images"
    if not csv_path.is_file():
        raise DataError(f"{root} has no dataset.csv; a FracAtlas folder holds dataset.csv and images/.")
    if not img_root.is_dir():
        raise DataError(f"{root} has no images folder; expected images/Fractured and images/Non_fractured.")
    folders = {p.name.lower(): p for p in _children(img_root) if p.is_dir()}
    unknown = sorted(n for n in folders if n not in ("fractured", "non_fractured"))
    if unknown:
        raise DataError(
            f"Unexpected folder(s) {', '.join(unknown)} in {img_root}; expected Fractured and Non_fractured."
        )
    class_names = list(TASK_CLASSES["fracture"])
    rows = _read_csv(csv_path, ("image_id", "fractured"))

    coco_boxes: dict[str, list[Box]] = {}
    coco = root / "Annotations" / "COCO JSON" / "COCO_fracture_masks.json"
    if coco.is_file():
        try:
            doc = json.loads(coco.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{coco} is not valid JSON ({exc.msg} at line {exc.lineno}).") from None
        cats = {c["id"]: c.get("name", "fracture") for c in doc.get("categories", [])}
        files = {im["id"]: im["file_name"] for im in doc.get("images", [])}
        for ann in doc.get("annotations", []):
            x, y, bw, bh = (float(v) for v in ann["bbox"])
            fname = Path(files.get(ann["image_id"], "")).name
            coco_boxes.setdefault(fname, []).append(
                Box(x, y, x + bw, y + bh, cats.get(ann.get("category_id"), "fracture"))
            )
    yolo_dir = root / "Annotations" / "YOLO"

    records: list[Record] = []
    stray: list[Skipped] = []
    listed: set[Path] = set()
    for row in rows:
        image_id = row["image_id"]
        try:
            positive = int(float(row["fractured"])) == 1
        except ValueError:
            raise DataError(
                f"dataset.csv: 'fractured' of {image_id} is {row['fractured']!r}, not 0 or 1."
            ) from None
        folder = folders.get("fractured" if positive else "non_fractured")
        path = folder / image_id if folder else None
        if path is None or not path.is_file():
            # Look in the other folder to tell a label mismatch from a missing file.
            other = folders.get("non_fractured" if positive else "fractured")
            reason = (
                "listed in dataset.csv but not in the folder of its label"
                if other and (other / image_id).is_file()
                else "listed in dataset.csv but missing"
            )
            stray.append(Skipped(path or img_root / image_id, reason))
            log.warning("FracAtlas: %s %s", image_id, reason)
            continue
        listed.add(path)
        meta = tuple(
            (k, row[k]) for k in FRACATLAS_COLUMNS if k in row and k not in ("image_id", "fractured")
        )
        records.append(Record(path, int(positive), class_names[int(positive)], None, (), None, meta))
    in_csv = {row["image_id"] for row in rows}
    for folder in folders.values():
        for f in sorted(folder.iterdir()):
            if _is_image(f) and f not in listed and f.name not in in_csv:
                stray.append(Skipped(f, "not listed in dataset.csv (no label)"))
    records, skipped = _verify(records, verify)
    with_boxes = []
    for rec in records:
        boxes = tuple(coco_boxes.get(rec.path.name, ()))
        if not boxes:
            size = rec.size or (
                probe_image(rec.path) if (yolo_dir / f"{rec.path.stem}.txt").is_file() else None
            )
            boxes = _yolo_boxes(yolo_dir / f"{rec.path.stem}.txt", size, ["fracture"])
        with_boxes.append(replace(rec, boxes=boxes))
    labels = [p for p in (csv_path, coco) if p.is_file()]
    grouping = image_grouping("FracAtlas")
    return _finish(
        Dataset(root, "fracatlas", class_names, with_boxes, stray + skipped, False, labels, grouping)
    )


# ------------------------------------------------------------------------------------------------ RSNA


def read_rsna(root: str | os.PathLike, *, verify: bool = True) -> Dataset:
    """RSNA Pneumonia Detection: ``stage_2_train_labels.csv`` (patientId,x,y,width,height,Target; one row
    per box, Target 0 rows without a box) + ``stage_2_train_images/<patientId>.dcm``. No splits."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"The RSNA folder {root} does not exist; check the path given to --data.")
    csv_path = root / "stage_2_train_labels.csv"
    img_dir = root / "stage_2_train_images"
    if not csv_path.is_file():
        raise DataError(f"{root} has no stage_2_train_labels.csv; expected the RSNA Pneumonia layout.")
    if not img_dir.is_dir():
        raise DataError(f"{root} has no stage_2_train_images folder; expected <patientId>.dcm files there.")
    rows = _read_csv(csv_path, ("patientId", "x", "y", "width", "height", "Target"))
    class_names = list(TASK_CLASSES["pneumonia"])
    per_patient: dict[str, tuple[int, list[Box]]] = {}
    for i, row in enumerate(rows, 2):
        pid = row["patientId"]
        try:
            target = int(float(row["Target"]))
        except ValueError:
            raise DataError(f"{csv_path.name} line {i}: Target is {row['Target']!r}, not 0 or 1.") from None
        prev_t, boxes = per_patient.get(pid, (0, []))
        if target == 1 and row["x"]:
            x, y, w, h = (float(row[k]) for k in ("x", "y", "width", "height"))
            boxes.append(Box(x, y, x + w, y + h, "opacity"))
        per_patient[pid] = (max(prev_t, target), boxes)
    records: list[Record] = []
    stray: list[Skipped] = []
    for pid, (target, boxes) in per_patient.items():
        path = img_dir / f"{pid}.dcm"
        if not path.is_file():
            stray.append(Skipped(path, "listed in stage_2_train_labels.csv but missing"))
            log.warning("RSNA: %s.dcm listed but missing", pid)
            continue
        records.append(Record(path, target, class_names[target], None, tuple(boxes), group=pid))
    known = {r.path.name for r in records} | {s.path.name for s in stray}
    for f in sorted(img_dir.iterdir()):
        if _is_image(f) and f.name not in known:
            stray.append(Skipped(f, "not listed in stage_2_train_labels.csv (no label)"))
    records, skipped = _verify(records, verify)
    grouping = Grouping(
        "patient",
        "RSNA patientId",
        "Split by patient: RSNA patientId (the published, de-identified id; one radiograph each).",
    )
    return _finish(Dataset(root, "rsna", class_names, records, stray + skipped, False, [csv_path], grouping))


# ------------------------------------------------------------------------------------------------ YOLO


def read_yolo(
    root: str | os.PathLike, *, class_names: Sequence[str] | None = None, verify: bool = True
) -> Dataset:
    """A YOLO detection set (``data.yaml`` with ``names`` and ``train``/``val``/``test`` image folders,
    labels beside them under ``labels/``). Image-level label: 1 when the image has at least one box.
    ``class_names`` names the two image-level classes (default: ``normal``/``pneumonia`` for opacity boxes,
    ``not fractured``/``fractured`` for fracture boxes, else ``negative``/``positive``)."""
    import yaml

    root = Path(root)
    cfg_path = root / "data.yaml"
    if not cfg_path.is_file():
        raise DataError(f"{root} has no data.yaml; expected a YOLO dataset (data.yaml, images/, labels/).")
    try:
        cfg = yaml.safe_load(cfg_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"{cfg_path} is not valid YAML ({exc}).") from None
    names = cfg.get("names")
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if not names:
        raise DataError(f"{cfg_path} has no 'names' list of box classes.")
    base = Path(cfg.get("path") or root)
    if not base.is_absolute():
        base = root / base
    if not base.is_dir():
        base = root
    if class_names is None:  # name the image-level classes after the task the boxes belong to
        kinds = {str(n).lower() for n in names}
        if kinds & {"opacity", "pneumonia", "lung opacity"}:
            class_names = TASK_CLASSES["pneumonia"]
        elif kinds & {"fracture", "fractured"}:
            class_names = TASK_CLASSES["fracture"]
    image_classes = list(class_names or ("negative", "positive"))
    records: list[Record] = []
    stray: list[Skipped] = []
    for split in SPLITS:
        entry = cfg.get(split)
        if entry is None:
            continue
        img_dir = base / entry if not Path(entry).is_absolute() else Path(entry)
        if not img_dir.is_dir() and (root / entry).is_dir():
            img_dir = root / entry
        if not img_dir.is_dir():
            raise DataError(f"The {split} images folder {img_dir} named in data.yaml does not exist.")
        parts = list(img_dir.parts)
        if "images" not in parts:
            raise DataError(
                f"The {split} folder {img_dir} is not under an images/ folder; YOLO keeps labels "
                "in the matching labels/ folder."
            )
        k = len(parts) - 1 - parts[::-1].index("images")
        lbl_dir = Path(*parts[:k], "labels", *parts[k + 1 :])
        for f in sorted(img_dir.rglob("*")):
            if not _is_image(f):
                continue
            txt = lbl_dir / f.relative_to(img_dir).with_suffix(".txt")
            records.append(Record(f, 0, image_classes[0], split, (), None, (("label_file", str(txt)),)))
    if not records:
        raise DataError(f"data.yaml in {root} names no train/val/test folder holding images.")
    records, skipped = _verify(records, verify)
    out = []
    for rec in records:
        txt = Path(rec.meta_dict["label_file"])
        size = rec.size or (probe_image(rec.path) if txt.is_file() else None)
        boxes = _yolo_boxes(txt, size, names)
        label = int(bool(boxes))
        out.append(replace(rec, boxes=boxes, label=label, class_name=image_classes[label]))
    out, grouping = with_dicom_groups(out)
    return _finish(Dataset(root, "yolo", image_classes, out, stray + skipped, True, [cfg_path], grouping))
