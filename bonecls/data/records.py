"""What every reader returns (:class:`Dataset` of :class:`Record`), the task vocabulary, header probing
and the small file helpers the readers share."""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from bonecls.data.splits import SPLITS, stratified_split
from bonecls.errors import DataError

log = logging.getLogger(__name__)

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
    "abnormality": ("normal", "abnormal"),  # MURA: any abnormality a radiologist reported, not only fractures
}
#: Classes that count as a finding (the card's ``positive_classes``).
POSITIVE_CLASSES: dict[str, tuple[str, ...]] = {
    "fracture": ("fractured",),
    "threeclass": ("fractured", "beyond_repair"),
    "pneumonia": ("pneumonia",),
    "abnormality": ("abnormal",),
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

Layout = Literal[
    "auto", "kaggle", "threeclass", "classfolders", "fracatlas", "rsna", "yolo", "mura", "grazpedwri"
]


@dataclass(frozen=True)
class Grouping:
    """What a dataset's group key is, so splits keep a patient's images together and the card says how.

    ``by`` is ``"patient"`` when every record carries a patient key, else ``"image"`` (each image its own
    group: the layout publishes no patient identifier). ``source`` names where the key came from and
    ``note`` is the sentence the model card shows a reader.
    """

    by: Literal["patient", "image"]
    source: str
    note: str

    def to_dict(self) -> dict[str, str]:
        return {"by": self.by, "source": self.source, "note": self.note}


def image_grouping(layout_name: str) -> Grouping:
    """The grouping of a layout without patient identifiers (FracAtlas, plain image class folders)."""
    return Grouping(
        "image",
        "none",
        f"{layout_name} publishes no patient identifiers: the split is by image, so views of one patient "
        "may sit in both training and test and the test figures may be optimistic.",
    )


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
    group: str | None = None  # patient key (never a clear DICOM PatientID: see bonecls.data.groups)
    study: str | None = None  # study key where the layout has studies (MURA, GRAZPEDWRI-DX, DICOM)

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
    grouping: Grouping | None = None  # None: the layout's image grouping (no patient key)

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

    @property
    def group_info(self) -> Grouping:
        return self.grouping or image_grouping(self.layout)

    def with_splits(self, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> Dataset:
        """Assign train/val/test to records without a split: by patient group, stratified, seeded.

        Records of one group (patient) all land in one split. Splits some records already have (MURA's
        official ``valid``, read as test) are not refilled: the unsplit records are divided among the
        missing splits by their fractions, renormalised (0.8/0.1/0.1 with test given -> 8:1 train/val).
        """
        todo = [i for i, r in enumerate(self.records) if r.split is None]
        if not todo:
            return self
        taken = {r.split for r in self.records if r.split is not None}
        if len(fractions) != len(SPLITS):
            raise DataError(f"Split fractions must be 3 numbers (train, val, test); got {list(fractions)}.")
        names = [s for s in SPLITS if s not in taken]
        share = [float(f) for s, f in zip(SPLITS, fractions, strict=True) if s not in taken]
        if not names or sum(share) <= 0:
            raise DataError(
                f"{len(todo)} image(s) have no split, but the fractions give none to the missing split(s)."
            )
        if taken:
            share = [f / sum(share) for f in share]
        groups = [self.records[i].group or f"image:{i}" for i in todo]
        assigned = stratified_split([self.records[i].label for i in todo], share, seed, names, groups=groups)
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
