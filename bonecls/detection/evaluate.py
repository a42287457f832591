"""Measuring the YOLOv8 opacity detector on a YOLO dataset: data.yaml, labels, metrics, threshold.

Public API::

    read_data_yaml(data) -> dict                     # sanitised data.yaml: absolute root, no 'download'
    split_images(cfg, split) -> list[Path]
    evaluate_detector(detector, data, split="test", conf=...) -> dict
    choose_conf_threshold(detector, cfg, split="val") -> (threshold, rsna_score)

Metrics are ours (:mod:`bonecls.detection.metrics`), computed on images read exactly as Ultralytics
reads them in training, so a card's numbers measure the model and not a difference in decoding.
Nothing here imports ultralytics; only OpenCV and PyYAML, inside the functions that read files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bonecls.detection import metrics as dm
from bonecls.detection.boxes import DetBox
from bonecls.detection.detector import DEFAULT_CONF, Detector, OnnxDetector
from bonecls.errors import DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "choose_conf_threshold",
    "evaluate_detector",
    "label_path",
    "read_data_yaml",
    "read_dataset_image",
    "rounded_for_card",
    "split_images",
]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def read_data_yaml(data: str | os.PathLike) -> dict:
    """A YOLO data.yaml as a dict with an absolute ``path``, ``names`` as a list and ``nc``, and without
    its ``download`` entry (a script or URL that must never run); DataError when it is unusable."""
    import yaml

    path = Path(data)
    if not path.is_file():
        raise DataError(f"The dataset description {path} does not exist.")
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise DataError(f"The dataset description {path.name} is not valid YAML.") from e
    if not isinstance(cfg, dict) or "train" not in cfg or "val" not in cfg or "names" not in cfg:
        raise DataError(f"The dataset description {path.name} needs 'train', 'val' and 'names' entries.")
    root = Path(cfg.get("path") or path.parent)
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    names = cfg["names"]
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    cfg = {k: v for k, v in cfg.items() if k != "download"}  # never run a dataset's download script
    cfg.update(path=str(root), names=list(names), nc=len(names))
    return cfg


def split_images(cfg: dict, split: str) -> list[Path]:
    """The image files of one split of a :func:`read_data_yaml` dict (folders searched recursively, or a
    .txt list of paths); empty when the split is not declared, DataError when it is declared but absent."""
    entry = cfg.get(split)
    if not entry:
        return []
    root = Path(cfg["path"])
    files: list[Path] = []
    for item in entry if isinstance(entry, list) else [entry]:
        p = Path(item)
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.suffix == ".txt" and p.is_file():
            for line in p.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    q = Path(line.strip())
                    files.append(q if q.is_absolute() else root / q)
        else:
            raise DataError(f"The '{split}' images of the dataset ({p}) were not found.")
    return files


def label_path(image: Path) -> Path:
    """The YOLO label file of a dataset image: the last ``images`` folder of its path becomes ``labels``."""
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _read_yolo_labels(image: Path, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """YOLO txt (class cx cy w h, normalised) -> (boxes xyxy pixels, classes)."""
    lp = label_path(image)
    if not lp.is_file():
        return np.zeros((0, 4)), np.zeros(0, dtype=int)
    rows = [r.split() for r in lp.read_text(encoding="utf-8").splitlines() if r.strip()]
    if not rows:
        return np.zeros((0, 4)), np.zeros(0, dtype=int)
    arr = np.array([[float(v) for v in r[:5]] for r in rows], dtype=np.float64)
    cx, cy, bw, bh = arr[:, 1] * w, arr[:, 2] * h, arr[:, 3] * w, arr[:, 4] * h
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    return boxes, arr[:, 0].astype(int)


def read_dataset_image(path: Path) -> np.ndarray:
    """Read a dataset image exactly as Ultralytics does in training (OpenCV, 8-bit BGR), so the card's
    metrics measure the model rather than a difference in image decoding."""
    import cv2

    img = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"The dataset image {path.name} cannot be read.")
    return img


def _collect(
    detect: Callable[[Any], list[DetBox]], images: Sequence[Path], names: Sequence[str]
) -> tuple[list, list, list, list, list]:
    pb, ps, pl, gb, gl = [], [], [], [], []
    index = {n: i for i, n in enumerate(names)}
    for p in images:
        img = read_dataset_image(p)
        h, w = img.shape[:2]
        boxes = detect(img)
        pb.append(np.array([b.xyxy() for b in boxes], dtype=np.float64).reshape(-1, 4))
        ps.append(np.array([b.confidence for b in boxes], dtype=np.float64))
        pl.append(np.array([index.get(b.label, -1) for b in boxes], dtype=int))
        g, c = _read_yolo_labels(p, h, w)
        gb.append(g)
        gl.append(c)
    return pb, ps, pl, gb, gl


def _filter(pb, ps, pl, conf: float):
    keep = [s > conf for s in ps]
    return (
        [b[k] for b, k in zip(pb, keep, strict=True)],
        [s[k] for s, k in zip(ps, keep, strict=True)],
        [c[k] for c, k in zip(pl, keep, strict=True)],
    )


def _metrics_at(pb, ps, pl, gb, gl, conf: float) -> dict[str, float]:
    fb, fs, _ = _filter(pb, ps, pl, conf)
    counts = dm.precision_recall_counts(fb, fs, gb, 0.5)
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    pos = [len(g) > 0 for g in gb]
    flagged = [len(b) > 0 for b in fb]
    n_pos, n_neg = sum(pos), len(pos) - sum(pos)
    sens = sum(p and f for p, f in zip(pos, flagged, strict=True)) / n_pos if n_pos else float("nan")
    spec = (
        sum((not p) and (not f) for p, f in zip(pos, flagged, strict=True)) / n_neg if n_neg else float("nan")
    )
    return {
        "rsna_score": dm.rsna_score(fb, fs, gb),
        "precision50": tp / (tp + fp) if tp + fp else float("nan"),
        "recall50": tp / (tp + fn) if tp + fn else float("nan"),
        "image_sensitivity": sens,
        "image_specificity": spec,
    }


def rounded_for_card(v: Any) -> Any:
    """Round floats for the card; NaN (undefined, e.g. precision with no box) becomes None."""
    if isinstance(v, (float, np.floating)):
        return None if not np.isfinite(v) else round(float(v), 6)
    return v


def evaluate_detector(
    detect: Callable[[Any], list[DetBox]] | Detector | OnnxDetector,
    data: str | os.PathLike | dict,
    split: str = "test",
    conf: float = DEFAULT_CONF,
    *,
    names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Our metrics on one split of a YOLO dataset (:mod:`bonecls.detection.metrics`).

    ``map50`` / ``map50_95``: COCO 101-point AP on all boxes with confidence > 0.001; ``rsna_score``,
    ``precision50``, ``recall50`` (IoU 0.5), ``image_sensitivity`` / ``image_specificity`` (image
    flagged when any box survives) on boxes with confidence > ``conf``.
    """
    cfg = data if isinstance(data, dict) else read_data_yaml(data)
    names = list(names or cfg["names"])
    images = split_images(cfg, split)
    if not images:
        raise DataError(f"The dataset has no '{split}' images to evaluate on.")
    if isinstance(detect, (Detector, OnnxDetector)):
        fn = detect.detect
        detect = lambda rg: fn(rg, conf=0.001, max_det=100)  # noqa: E731
    pb, ps, pl, gb, gl = _collect(detect, images, names)
    out = {
        "map50": dm.mean_average_precision(pb, ps, gb, pred_labels=pl, gt_labels=gl, iou_thresholds=0.5),
        "map50_95": dm.mean_average_precision(
            pb, ps, gb, pred_labels=pl, gt_labels=gl, iou_thresholds=dm.COCO_IOU_THRESHOLDS
        ),
    }
    out.update(_metrics_at(pb, ps, pl, gb, gl, conf))
    out.update(
        conf_threshold=float(conf),
        n_images=len(images),
        n_boxes=int(sum(len(g) for g in gb)),
        n_positive_images=int(sum(len(g) > 0 for g in gb)),
    )
    return {k: rounded_for_card(v) for k, v in out.items()}


def choose_conf_threshold(
    detector: Detector, cfg: dict, split: str = "val", grid: Sequence[float] | None = None
) -> tuple[float, float]:
    """Confidence threshold maximising the RSNA score on ``split``.

    Boxes kept by NMS at a low threshold and then filtered at t are exactly those kept at t (NMS only
    lets higher-scoring boxes suppress lower ones), so one pass at 0.001 serves the whole grid.
    Ties (a plateau) go to the plateau's middle. Returns ``(threshold, rsna_score_at_threshold)``.
    """
    images = split_images(cfg, split)
    if not images:
        return DEFAULT_CONF, float("nan")
    grid = list(grid or np.round(np.arange(0.05, 0.951, 0.05), 2))
    pb, ps, pl, gb, _ = _collect(lambda rg: detector.detect(rg, conf=0.001), images, cfg["names"])
    scores = []
    for t in grid:
        fb, fs, _ = _filter(pb, ps, pl, t)
        s = dm.rsna_score(fb, fs, gb)
        scores.append(-1.0 if np.isnan(s) else s)
    best = max(scores)
    tied = [t for t, s in zip(grid, scores, strict=True) if s == best]
    return float(tied[len(tied) // 2]), best  # middle of the best plateau: least sensitive to drift
