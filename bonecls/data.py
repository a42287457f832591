"""Dataset readers that validate as they read, and stratified seeded splits.

Layouts (see docs/ARCHITECTURE.md):

* class folders -- the Kaggle multi-region fracture set ``train|val|test/fractured|not fractured/``
  and the three-class set ``train|val|test/healthy|fractured|beyond_repair/``;
* FracAtlas -- ``images/Fractured|Non_fractured/*.jpg`` + ``dataset.csv`` + ``Annotations/YOLO/*.txt``
  and ``Annotations/COCO JSON/COCO_fracture_masks.json``;
* RSNA Pneumonia -- ``stage_2_train_labels.csv`` (one row per box) + ``stage_2_train_images/<id>.dcm``;
* YOLO -- ``data.yaml`` + ``images/<split>/`` + ``labels/<split>/``.

Every reader returns a :class:`Dataset`: a list of :class:`Record` (path, label index, class name,
split, boxes), the class names, the images that could not be read (``skipped``: each with the reason,
also logged -- never dropped silently) and the class balance. A missing folder or an unexpected class
folder raises :class:`~bonecls.errors.DataError` with a sentence saying what was expected.

Datasets shipped without splits (FracAtlas, RSNA) get :func:`stratified_split` -- 80/10/10 as seed 002
did, stratified per class and reproducible from the seed.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bonecls.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom", ".gif", ".webp")

#: Canonical class names per task; index order is the label order (negative class first).
TASK_CLASSES: dict[str, tuple[str, ...]] = {
    "fracture": ("not fractured", "fractured"),
    "threeclass": ("healthy", "fractured", "beyond_repair"),
    "pneumonia": ("normal", "pneumonia"),
}
#: Classes that count as a finding (the card's ``positive_classes``).
POSITIVE_CLASSES: dict[str, tuple[str, ...]] = {
    "fracture": ("fractured",),
    "threeclass": ("fractured", "beyond_repair"),
    "pneumonia": ("pneumonia",),
}
# Folder spellings seen in the wild, mapped to the canonical class name.
_FOLDER_ALIASES = {
    "not fractured": "not fractured",
    "not_fractured": "not fractured",
    "non_fractured": "not fractured",
    "nonfractured": "not fractured",
    "normal": "normal",
    "fractured": "fractured",
    "healthy": "healthy",
    "beyond_repair": "beyond_repair",
    "beyond repair": "beyond_repair",
    "pneumonia": "pneumonia",
}

Layout = Literal["auto", "kaggle", "threeclass", "classfolders", "fracatlas", "rsna", "yolo"]


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels of the original image (x right, y down)."""

    x0: float
    y0: float
    x1: float
    y1: float
    kind: str = "finding"

    def to_dict(self) -> dict[str, Any]:
        return {"x0": self.x0, "y0": self.y0, "x1": self.x1, "y1": self.y1, "kind": self.kind}


@dataclass(frozen=True)
class Record:
    """One image of a dataset."""

    path: Path
    label: int
    class_name: str
    split: str | None = None  # "train" | "val" | "test" | None (not split yet)
    boxes: tuple[Box, ...] = ()
    size: tuple[int, int] | None = None  # (height, width) from the header, when verified
    meta: tuple[tuple[str, Any], ...] = ()  # extra columns (FracAtlas body region, view ...)

    @property
    def meta_dict(self) -> dict[str, Any]:
        return dict(self.meta)


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


@dataclass
class Dataset:
    """What a reader found: records, class names, what it skipped and why."""

    root: Path
    layout: str
    class_names: list[str]
    records: list[Record]
    skipped: list[Skipped] = field(default_factory=list)
    has_splits: bool = True
    label_files: list[Path] = field(default_factory=list)  # csv/json/yaml the labels came from

    def __len__(self) -> int:
        return len(self.records)

    def balance(self) -> dict[str, dict[str, int]]:
        """Counts per split (``"all"`` when not split) and class, every class listed (zeros included)."""
        out: dict[str, dict[str, int]] = {}
        for rec in self.records:
            split = rec.split or "all"
            row = out.setdefault(split, dict.fromkeys(self.class_names, 0))
            row[rec.class_name] += 1
        return {s: out[s] for s in sorted(out, key=lambda s: (*SPLITS, "all").index(s))}

    def summary(self) -> str:
        lines = [
            f"{self.layout} dataset at {self.root}: {len(self.records)} images, "
            f"classes {', '.join(self.class_names)}."
        ]
        for split, row in self.balance().items():
            total = sum(row.values()) or 1
            parts = ", ".join(f"{c} {n} ({100 * n / total:.1f}%)" for c, n in row.items())
            lines.append(f"  {split}: {parts}")
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} unreadable image(s):")
            lines.extend(f"    {s.path}: {s.reason}" for s in self.skipped[:20])
            if len(self.skipped) > 20:
                lines.append(f"    ... and {len(self.skipped) - 20} more")
        return "\n".join(lines)

    def split(self, name: str) -> list[Record]:
        return [r for r in self.records if r.split == name]

    def with_splits(self, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> Dataset:
        """Assign train/val/test to records without a split (stratified by label, seeded)."""
        todo = [i for i, r in enumerate(self.records) if r.split is None]
        if not todo:
            return self
        assigned = stratified_split([self.records[i].label for i in todo], fractions, seed)
        records = list(self.records)
        for i, s in zip(todo, assigned, strict=True):
            records[i] = replace(records[i], split=s)
        return replace(self, records=records)


# --------------------------------------------------------------------------------------------- probing


def probe_image(path: Path) -> tuple[int, int]:
    """(height, width) from the file's header; raises ``ValueError`` with the reason if unreadable.

    Cheap: DICOM is parsed without pixel data (but the pixel data element must be there), other
    formats are opened and verified by Pillow without a full decode.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise ValueError("the file is empty")
    with open(path, "rb") as fh:
        head = fh.read(132)
    if head[128:132] == b"DICM" or path.suffix.lower() in (".dcm", ".dicom"):
        import pydicom

        try:
            ds = pydicom.dcmread(path, stop_before_pixels=False, defer_size=1024)
        except Exception as exc:  # pydicom raises many types
            raise ValueError(f"not a readable DICOM file ({exc})") from None
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            raise ValueError("the DICOM file holds no pixel data")
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        if rows <= 0 or cols <= 0:
            raise ValueError("the DICOM file has no image size (Rows/Columns)")
        return rows, cols
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"not a readable image ({exc})") from None
    if w <= 0 or h <= 0:
        raise ValueError("the image has no pixels")
    return h, w


def _verify(records: list[Record], verify: bool) -> tuple[list[Record], list[Skipped]]:
    if not verify:
        return records, []
    good: list[Record] = []
    skipped: list[Skipped] = []
    for rec in records:
        try:
            h, w = probe_image(rec.path)
        except (OSError, ValueError) as exc:
            skipped.append(Skipped(rec.path, str(exc)))
            log.warning("Skipping unreadable image %s: %s", rec.path, exc)
            continue
        good.append(replace(rec, size=(h, w)))
    return good, skipped


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def _children(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if not p.name.startswith("."))


def _finish(ds: Dataset) -> Dataset:
    if not ds.records:
        raise DataError(f"No readable images were found in {ds.root} ({ds.layout} layout).")
    for line in ds.summary().splitlines():
        log.info(line)
    return ds


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
    return _finish(Dataset(root, layout, class_names, records, stray + skipped, has_splits, labels))


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


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in required if c not in header]
            if missing:
                raise DataError(
                    f"{path.name} lacks the column(s) {', '.join(missing)}; expected {', '.join(required)}."
                )
            return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a UTF-8 CSV file.") from None


def _yolo_boxes(txt: Path, size: tuple[int, int] | None, names: Sequence[str] | None) -> tuple[Box, ...]:
    """YOLO ``cls cx cy w h`` (normalized) -> pixel boxes; needs the image size."""
    if not txt.is_file():
        return ()
    boxes = []
    h, w = size if size else (1, 1)
    for i, line in enumerate(txt.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 5:
            raise DataError(f"{txt} line {i} is not a YOLO box (class cx cy w h).")
        c, cx, cy, bw, bh = int(float(parts[0])), *map(float, parts[1:5])
        kind = names[c] if names and 0 <= c < len(names) else str(c)
        boxes.append(Box((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h, kind))
    return tuple(boxes)


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
    return _finish(Dataset(root, "fracatlas", class_names, with_boxes, stray + skipped, False, labels))


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
        records.append(Record(path, target, class_names[target], None, tuple(boxes)))
    known = {r.path.name for r in records} | {s.path.name for s in stray}
    for f in sorted(img_dir.iterdir()):
        if _is_image(f) and f.name not in known:
            stray.append(Skipped(f, "not listed in stage_2_train_labels.csv (no label)"))
    records, skipped = _verify(records, verify)
    return _finish(Dataset(root, "rsna", class_names, records, stray + skipped, False, [csv_path]))


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
    return _finish(Dataset(root, "yolo", image_classes, out, stray + skipped, True, [cfg_path]))


# --------------------------------------------------------------------------------------------- dispatch


def detect_layout(root: str | os.PathLike) -> str:
    """Guess the layout of a dataset folder from its files."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"The dataset folder {root} does not exist; check the path given to --data.")
    if (root / "data.yaml").is_file():
        return "yolo"
    if (root / "stage_2_train_labels.csv").is_file():
        return "rsna"
    if (root / "dataset.csv").is_file() and (root / "images").is_dir():
        return "fracatlas"
    names: set[str] = set()
    for d in _children(root):
        if d.is_dir():
            inner = [p.name.lower() for p in _children(d) if p.is_dir()]
            names.update(inner if d.name.lower() in SPLIT_ALIASES else [d.name.lower()])
    canon = {_FOLDER_ALIASES.get(n, n) for n in names}
    if canon and canon <= set(TASK_CLASSES["threeclass"]) and "healthy" in canon:
        return "threeclass"
    if canon and canon <= set(TASK_CLASSES["fracture"]):
        return "kaggle"
    if canon:
        return "classfolders"
    raise DataError(
        f"Cannot tell the layout of {root}: expected class folders (train/val/test/<class>/), FracAtlas "
        "(dataset.csv + images/), RSNA (stage_2_train_labels.csv) or YOLO (data.yaml)."
    )


def read_dataset(
    root: str | os.PathLike,
    layout: str = "auto",
    *,
    verify: bool = True,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    split: bool = True,
) -> Dataset:
    """Read any supported layout; datasets without splits are split (stratified, seeded) when ``split``."""
    layout = detect_layout(root) if layout == "auto" else layout
    readers = {
        "kaggle": read_kaggle,
        "threeclass": read_threeclass,
        "classfolders": read_class_folders,
        "fracatlas": read_fracatlas,
        "rsna": read_rsna,
        "yolo": read_yolo,
    }
    if layout not in readers:
        raise DataError(f"Unknown dataset layout {layout!r}; expected one of {', '.join(readers)} or auto.")
    ds = readers[layout](root, verify=verify)
    return ds.with_splits(fractions, seed) if split else ds


def task_for(ds: Dataset) -> str | None:
    """The task whose class names the dataset has, if any."""
    for task, names in TASK_CLASSES.items():
        if list(names) == list(ds.class_names):
            return task
    return None


# ----------------------------------------------------------------------------------------------- splits


def stratified_split(
    labels: Sequence[int] | np.ndarray,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    names: Sequence[str] = SPLITS,
) -> list[str]:
    """Split names (``train``/``val``/``test``) for each item, stratified by label and reproducible.

    Within each class the items are shuffled with ``seed`` and cut by ``fractions``; rounding uses
    largest remainders so every class's counts add up and no split gets more than its share. Classes
    with at least ``len(fractions)`` items put at least one item in every split with a non-zero fraction.
    """
    fr = np.asarray(fractions, dtype=float)
    if (
        fr.ndim != 1
        or len(fr) != len(names)
        or (fr < 0).any()
        or not math.isclose(fr.sum(), 1.0, abs_tol=1e-6)
    ):
        raise DataError(
            f"Split fractions must be {len(names)} non-negative numbers that add up to 1; got "
            f"{list(fractions)}."
        )
    y = np.asarray(labels)
    out = np.empty(len(y), dtype=object)
    rng = np.random.default_rng(seed)
    for cls in sorted(set(y.tolist())):
        idx = np.flatnonzero(y == cls)
        idx = idx[rng.permutation(len(idx))]
        n = len(idx)
        exact = fr * n
        counts = np.floor(exact).astype(int)
        for j in np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]:
            counts[j] += 1
        if n >= int((fr > 0).sum()):  # give small non-zero splits at least one example
            for j in np.flatnonzero((fr > 0) & (counts == 0)):
                donor = int(np.argmax(counts))
                counts[donor] -= 1
                counts[j] += 1
        start = 0
        for name, c in zip(names, counts, strict=True):
            out[idx[start : start + c]] = name
            start += c
    return out.tolist()


def class_counts(labels: Iterable[int], num_classes: int) -> list[int]:
    c = Counter(int(v) for v in labels)
    return [c.get(i, 0) for i in range(num_classes)]
