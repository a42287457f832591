"""Test data for the app tests: a weights folder of tiny random models, and small radiograph-like images.

Used by tests/test_app.py and tests/test_browser.py (not a test module itself). The models are
``simple_cnn`` classifiers with random weights saved through ``bonecls.weights.save_pytorch`` and,
optionally, a YOLOv8n detector built from its YAML (random weights, no download).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

TASKS = {
    "fracture": (["not_fractured", "fractured"], ["fractured"]),
    "threeclass": (["healthy", "fractured", "beyond_repair"], ["fractured", "beyond_repair"]),
    "pneumonia-cls": (["normal", "pneumonia"], ["pneumonia"]),
}


def build_weights(root: Path, *, detector: bool = False, seed: int = 0) -> Path:
    """Write tiny classifier cards (fracture, threeclass, pneumonia-cls) and optionally pneumonia-det."""
    import torch

    from bonecls.models import create_model
    from bonecls.weights import ModelCard, save_pytorch

    root = Path(root)
    for i, (model_id, (classes, positive)) in enumerate(TASKS.items()):
        torch.manual_seed(seed + i)
        task = "pneumonia" if model_id == "pneumonia-cls" else model_id
        model = create_model("simple_cnn", num_classes=len(classes), in_chans=1)
        card = ModelCard(
            id=model_id,
            task=task,
            framework="pytorch",
            architecture="simple_cnn",
            class_names=classes,
            positive_classes=positive,
            input_size=64,
            in_chans=1,
            normalization={"mean": [0.5], "std": [0.25]},
            thresholds={"negative_below": 0.3, "positive_at": 0.7},
            training_data="Random weights for tests (no training data).",
            test_metrics={
                "accuracy": 0.5,
                "roc_auc": 0.5,
                "confusion_matrix": np.eye(len(classes), dtype=int).tolist(),
                "class_names": classes,
                "reliability": {
                    "ece": 0.05,
                    "n_bins": 3,
                    "bins": [
                        {"lower": 0.0, "upper": 0.33, "count": 3, "confidence": 0.2, "accuracy": 0.25},
                        {"lower": 0.33, "upper": 0.66, "count": 5, "confidence": 0.5, "accuracy": 0.45},
                        {"lower": 0.66, "upper": 1.0, "count": 9, "confidence": 0.8, "accuracy": 0.85},
                    ],
                },
            },
            extra={
                "history": {
                    "train_loss": [0.9, 0.6, 0.4],
                    "val_loss": [1.0, 0.7, 0.6],
                    "val_auc": [0.6, 0.7, 0.8],
                }
            },
            command="python train/classify.py --tiny",
        )
        save_pytorch(model, card, root / model_id)
    if detector:
        build_detector(root / "pneumonia-det")
    return root


def build_detector(
    out: Path,
    *,
    model_id: str = "pneumonia-det",
    task: str = "pneumonia-det",
    class_names: tuple[str, ...] = ("opacity",),
) -> Path:
    """A YOLOv8n with random weights (from the YAML, offline) + its card (an opacity detector unless
    told otherwise, e.g. ``task="fracture-det", class_names=("fracture", "comminuted")``)."""
    from bonecls.detection.offline import configure_offline
    from bonecls.weights import ModelCard, sha256_file, write_card

    configure_offline()
    from ultralytics import YOLO

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from ultralytics.nn.tasks import DetectionModel

    yolo = YOLO("yolov8n.yaml", task="detect")
    yolo.model = DetectionModel("yolov8n.yaml", nc=len(class_names), verbose=False)
    yolo.model.names = dict(enumerate(class_names))
    pt = out / "model.pt"
    yolo.save(str(pt))
    card = ModelCard(
        id=model_id,
        task=task,
        framework="ultralytics",
        architecture="yolov8n",
        class_names=list(class_names),
        positive_classes=list(class_names),
        input_size=128,
        in_chans=3,
        normalization={"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
        thresholds={"negative_below": 0.1, "positive_at": 0.25},
        weights_file="model.pt",
        sha256=sha256_file(pt),
        training_data="Random weights for tests.",
    )
    write_card(card, out)
    return out


def fake_detections(monkeypatch, labels: tuple[str, str, str] = ("opacity",) * 3) -> list[int]:
    """Make every ``Detector.detect`` find three fixed boxes (confidence 0.91, 0.55 and 0.15, labelled
    ``labels``) at or above its confidence floor: random weights find nothing. Returns the call counter
    (a one-item list), so a test can check that the page filters cached boxes instead of detecting again."""
    from bonecls.detection.boxes import DetBox
    from bonecls.detection.detector import Detector

    fake = [
        DetBox(20, 30, 90, 120, 0.91, labels[0]),
        DetBox(140, 40, 220, 130, 0.55, labels[1]),
        DetBox(60, 160, 120, 220, 0.15, labels[2]),
    ]
    calls = [0]

    def detect(self, image, conf=None, iou=0.5, max_det=100):
        calls[0] += 1
        return [b for b in fake if b.confidence >= (conf or 0)]

    monkeypatch.setattr(Detector, "detect", detect)
    return calls


def radiograph_like(size: int = 256, seed: int = 0) -> np.ndarray:
    """A smooth bone-like grey image (uint16): dark air, soft tissue, a bright 'bone' with a crack."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    tissue = np.exp(-(((xx - 0.5) / 0.32) ** 2 + ((yy - 0.5) / 0.45) ** 2))
    bone = np.exp(-(((xx - 0.5 + 0.05 * yy) / 0.06) ** 2)) * (yy > 0.1) * (yy < 0.9)
    crack = np.abs(yy - 0.5 - 0.1 * (xx - 0.5)) < 0.008
    img = 0.05 + 0.45 * tissue + 0.45 * bone * (1 - 0.6 * crack) + rng.normal(0, 0.01, (size, size))
    img += 0.03 * seed / 10.0
    return np.clip(img * 65535, 0, 65535).astype(np.uint16)


def png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def dicom_bytes(arr: np.ndarray, **tags) -> bytes:
    """A minimal DX DICOM (MONOCHROME2, 16-bit) with optional extra tags (keyword=value)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.BodyPartExamined = "HAND"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.WindowCenter = 32768
    ds.WindowWidth = 65535
    ds.PixelData = np.ascontiguousarray(arr.astype(np.uint16)).tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@contextmanager
def app_environment(weights: Path, audit_db: Path, monkeypatch) -> Iterator[Path]:
    """The app on ``weights`` with a fresh audit DB, no background warm-up (deterministic call counts) and
    empty service caches before and after; yields the audit DB path."""
    from bonecls.ui import services

    monkeypatch.setenv("BONECLS_WEIGHTS", str(weights))
    monkeypatch.setenv("BONECLS_AUDIT_DB", str(audit_db))
    monkeypatch.setenv("BONECLS_WARMUP", "0")
    services.clear_caches()
    try:
        yield audit_db
    finally:
        services.clear_caches()
