"""Which layout a dataset folder has, and one entry point that reads any of them and splits it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from bonecls.data.readers import (
    read_class_folders,
    read_fracatlas,
    read_kaggle,
    read_rsna,
    read_threeclass,
    read_yolo,
)
from bonecls.data.records import _FOLDER_ALIASES, SPLIT_ALIASES, TASK_CLASSES, Dataset, _children
from bonecls.data.studies import GRAZ_LABELS, MURA_FOLDER, read_grazpedwri, read_mura
from bonecls.errors import DataError

LAYOUTS = ("kaggle", "threeclass", "classfolders", "fracatlas", "rsna", "yolo", "mura", "grazpedwri")


def detect_layout(root: str | os.PathLike) -> str:
    """Guess the layout of a dataset folder from its files."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"The dataset folder {root} does not exist; check the path given to --data.")
    if (root / "data.yaml").is_file():
        return "yolo"
    if (root / "stage_2_train_labels.csv").is_file():
        return "rsna"
    if (root / "train_labeled_studies.csv").is_file() or (root / MURA_FOLDER).is_dir():
        return "mura"
    if (root / "dataset.csv").is_file() and (root / GRAZ_LABELS).is_dir():
        return "grazpedwri"
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
        "(dataset.csv + images/), RSNA (stage_2_train_labels.csv), YOLO (data.yaml), MURA "
        "(train_labeled_studies.csv) or GRAZPEDWRI-DX (dataset.csv + folder_structure/yolov5/labels)."
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
    """Read any supported layout; records without a split are split (by patient where the layout has
    patients, stratified, seeded) when ``split``."""
    layout = detect_layout(root) if layout == "auto" else layout
    readers = {
        "kaggle": read_kaggle,
        "threeclass": read_threeclass,
        "classfolders": read_class_folders,
        "fracatlas": read_fracatlas,
        "rsna": read_rsna,
        "yolo": read_yolo,
        "mura": read_mura,
        "grazpedwri": read_grazpedwri,
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
