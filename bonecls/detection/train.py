"""Training the YOLOv8 opacity detector offline and writing its model card.

Public API::

    train_detector(data, output, ...) -> (ModelCard, Path)   # used by train/detect.py
    describe_card(card) -> str                       # what train/detect.py prints

Ultralytics trains (:class:`DetectionTrainer`, with an AMP check that downloads nothing); the card's
threshold and test metrics are ours (:mod:`bonecls.detection.evaluate`).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bonecls.detection.boxes import INPUT_TRANSFORMS
from bonecls.detection.detector import (
    DEFAULT_CONF,
    DETECTOR_TASKS,
    FRAMEWORK,
    TASK,
    WEIGHTS_FILE,
    Detector,
    load_detection_card,
    open_yolo,
    updated_card,
)
from bonecls.detection.evaluate import (
    choose_conf_threshold,
    evaluate_detector,
    read_data_yaml,
    rounded_for_card,
    split_images,
)
from bonecls.detection.offline import configure_offline, fonts_available, import_ultralytics
from bonecls.errors import DataError, WeightsError

if TYPE_CHECKING:  # pragma: no cover
    from bonecls.weights import ModelCard

__all__ = ["DEFAULT_IMAGE_SIZE", "describe_card", "rank_dataset", "train_detector"]

DEFAULT_IMAGE_SIZE = 512
MAX_WEIGHTS_BYTES = 25 * 2**20

# What each detector task's card says it is for and where it stops (the card's own words)
INTENDED_USE = {
    "pneumonia-det": "Reading aid that draws candidate lung-opacity boxes on a frontal chest radiograph "
    "for a clinician to review. It does not diagnose pneumonia and must not be used to rule it out.",
    "fracture-det": "Reading aid that draws candidate fracture boxes (simple fracture or comminuted) on a "
    "frontal radiograph of the hemithorax or shoulder for a clinician to review. It does not diagnose a "
    "fracture and must not be used to rule one out.",
}
# GPUs on which Ultralytics' own check_amp turns AMP off (the pattern is copied from it)
_BAD_AMP_GPU = r"(nvidia|geforce|quadro|tesla).*?(1660|1650|1630|t400|t550|t600|t1000|t1200|t2000|k40m)"


log = logging.getLogger(__name__)


def _offline_check_amp(model) -> bool:
    """Ultralytics' check_amp without its yolo26n.pt download: AMP on CUDA except on GPUs known to fail."""
    import re

    import torch

    device = next(model.parameters()).device
    if device.type != "cuda":
        return False
    return not re.search(_BAD_AMP_GPU, torch.cuda.get_device_name(device), re.IGNORECASE)


def _trainer_class():
    """A DetectionTrainer whose AMP check never downloads. Defined in a function (ultralytics is imported
    lazily); DDP pickles it by value with cloudpickle, so it also applies in the worker processes."""
    import_ultralytics()
    import ultralytics.engine.trainer as trainer_mod
    from ultralytics.models.yolo.detect import DetectionTrainer

    class OfflineDetectionTrainer(DetectionTrainer):
        def _setup_train(self, *args, **kwargs):
            original = trainer_mod.check_amp
            trainer_mod.check_amp = _offline_check_amp
            try:
                return super()._setup_train(*args, **kwargs)
            finally:
                trainer_mod.check_amp = original

    return OfflineDetectionTrainer


def _open_start_weights(weights: str | os.PathLike, weights_sha256: str | None):
    """A card (id, folder or card.json) or a bare .pt with its expected sha256 -> (verified YOLO, sha)."""
    p = Path(weights)
    if p.suffix == ".pt":
        if not weights_sha256:
            raise WeightsError(
                f"The starting weights {p.name} have no model card; give their sha256 (--weights-sha256) "
                f"so they can be verified before they are opened."
            )
        sha = weights_sha256.strip().lower()
        return open_yolo(p, sha, "starting weights"), sha
    card, card_dir = load_detection_card(weights)
    return open_yolo(card_dir / card.weights_file, card.sha256, "starting weights"), card.sha256


def _resolved_transform(asked: str, weights: str | os.PathLike | None) -> str | None:
    """The card's ``input_transform`` for a run: ``"inherit"`` -> the starting card's (None from scratch or
    from a bare .pt), ``"none"`` -> None, else a name of :data:`INPUT_TRANSFORMS`."""
    if asked == "inherit":
        if weights is None or Path(weights).suffix == ".pt":
            return None
        return load_detection_card(weights)[0].input_transform
    if asked == "none":
        return None
    if asked not in INPUT_TRANSFORMS:
        raise DataError(
            f"Unknown input transform {asked!r}; expected inherit, none or "
            f"one of {', '.join(INPUT_TRANSFORMS)}."
        )
    return asked


@dataclass(frozen=True)
class _Checkpoint:
    """The trained ``model.pt`` copied into the output folder, and how it came to be."""

    path: Path
    sha256: str
    size: int
    seconds: float
    epochs_run: int  # epochs trained (fewer than asked under a time budget or early stopping)
    start: str  # "trained from scratch" or "fine-tuned from weights sha256 ..."


def train_detector(
    data: str | os.PathLike,
    output: str | os.PathLike,
    *,
    weights: str | os.PathLike | None = None,
    weights_sha256: str | None = None,
    arch: str = "yolov8n",
    epochs: int = 50,
    imgsz: int = DEFAULT_IMAGE_SIZE,
    batch: int = 16,
    device: str = "cpu",
    workers: int = 2,
    seed: int = 0,
    patience: int = 50,
    model_id: str | None = None,
    task: str = TASK,
    command: str = "",
    training_data: str | None = None,
    keep_run: bool = False,
    plots: bool = False,
    train_kwargs: dict | None = None,
    input_transform: str = "inherit",
) -> tuple[ModelCard, Path]:
    """Train YOLOv8 on a YOLO dataset, evaluate on its test split, write ``model.pt`` + ``card.json``.

    From ``{arch}.yaml`` (scratch, no download) unless ``weights`` (a card, or a .pt with its sha256) is
    given; ``task`` is the card's task (``pneumonia-det`` or ``fracture-det``). Ultralytics' run
    directory is a temporary directory (``output/run`` with ``keep_run``). The
    confidence threshold is chosen on the validation split (best RSNA score) and stored as both
    ``thresholds.negative_below`` and ``thresholds.positive_at``; test metrics use it.

    ``input_transform`` (``"rank"``, :data:`bonecls.detection.boxes.INPUT_TRANSFORMS`) is written on the
    card: Ultralytics trains on a transformed copy of the dataset (:func:`rank_dataset`, deleted with the
    run folder), while the threshold, the test metrics and the scope gate read the original images
    through the card's detector, which applies the same transform. ``"inherit"`` (the default) takes the
    starting card's transform, so a fine-tune of a rank model stays one; ``"none"`` drops it.
    """
    from bonecls.weights import write_card

    if task not in DETECTOR_TASKS:
        raise DataError(f"Unknown detector task {task!r}; expected one of {', '.join(DETECTOR_TASKS)}.")
    input_transform = _resolved_transform(input_transform, weights)
    configure_offline()
    out = Path(output)
    cfg = read_data_yaml(data)
    counts = {s: len(split_images(cfg, s)) for s in ("train", "val", "test")}
    if counts["test"] == 0:
        raise DataError("The dataset has no 'test' split; it is needed for the model card's metrics.")
    out.mkdir(parents=True, exist_ok=True)
    if plots and not fonts_available():
        plots = False

    ultralytics_args = dict(
        epochs=int(epochs),
        imgsz=int(imgsz),
        batch=int(batch),
        device=device,
        workers=int(workers),
        seed=int(seed),
        deterministic=True,
        patience=int(patience),
        plots=bool(plots),
        verbose=False,
        # Ultralytics loads the starting checkpoint's weights into the new model only when pretrained is
        # true; with False a "fine-tune" silently trains the checkpoint's architecture from scratch. From a
        # YAML there is nothing to load (and nothing is fetched either way: the YOLO object is built here).
        pretrained=weights is not None,
    )
    ultralytics_args.update(train_kwargs or {})
    checkpoint = _train_checkpoint(
        cfg,
        out,
        arch,
        weights,
        weights_sha256,
        ultralytics_args,
        keep_run=keep_run,
        input_transform=input_transform,
    )
    draft = _draft_card(
        cfg,
        counts,
        model_id=model_id or out.name,
        task=task,
        arch=arch,
        imgsz=imgsz,
        sha256=checkpoint.sha256,
        training_data=training_data,
        command=command,
        input_transform=input_transform,
    )
    card = _calibrated_card(
        draft,
        out,
        cfg,
        checkpoint,
        device=device,
        run_record={"epochs": int(epochs), "batch": int(batch), "seed": int(seed), "device": str(device)},
    )
    write_card(card, out)
    return _with_scope(card, out, cfg), out


def _with_scope(card: ModelCard, out: Path, cfg: dict, limit: int = 4000) -> ModelCard:
    """Fit the detector's scope gate on its backbone features of the training images (threshold on
    the validation images at 97.5%, held-out rate on the test images); the card as it stands, and a
    logged sentence, when there are too few training images for the statistics."""
    from bonecls.errors import BoneclsError
    from bonecls.scope.extract import load_images
    from bonecls.scope.fit import fit_scope_on

    train, val, test = (split_images(cfg, s)[:limit] for s in ("train", "val", "test"))
    try:
        return fit_scope_on(
            out,
            load_images(train),
            load_images(val),
            load_images(test),
            fitted_on=f"{len(train)} training images; threshold on {len(val)} validation images; "
            f"held-out rate on {len(test)} test images",
        )
    except BoneclsError as exc:
        log.warning("Scope not fitted: %s", exc)
        return card


def rank_dataset(cfg: dict, dst: str | os.PathLike) -> dict:
    """A copy of a YOLO dataset with every image rank-equalised (:func:`~.boxes.rank_equalise`), for
    Ultralytics to train on: the returned :func:`read_data_yaml`-style dict lists each split's copied
    images (``<dst>/<split>.txt``), each beside its copied label file. Images are read as Ultralytics
    reads them (8-bit BGR) and written as lossless grey PNG."""
    import cv2

    from bonecls.detection.boxes import rank_equalise
    from bonecls.detection.evaluate import label_path, read_dataset_image

    dst = Path(dst)
    root = Path(cfg["path"])
    out = {k: v for k, v in cfg.items() if k not in ("train", "val", "test")}
    out["path"] = str(dst)
    for split in ("train", "val", "test"):
        images = split_images(cfg, split)
        if not images and not cfg.get(split):
            continue
        (dst / "images" / split).mkdir(parents=True, exist_ok=True)
        (dst / "labels" / split).mkdir(parents=True, exist_ok=True)
        listed = []
        for image in images:
            rel = image.relative_to(root) if image.is_relative_to(root) else Path(image.name)
            stem = "__".join(rel.with_suffix("").parts)
            target = dst / "images" / split / f"{stem}.png"
            if not cv2.imwrite(str(target), rank_equalise(read_dataset_image(image))[..., 0]):
                raise DataError(f"The rank-equalised copy of {image.name} could not be written to {target}.")
            label = label_path(image)
            if label.is_file():
                shutil.copyfile(label, dst / "labels" / split / f"{stem}.txt")
            listed.append(str(target))
        (dst / f"{split}.txt").write_text("\n".join(listed) + "\n", encoding="utf-8")
        out[split] = str(dst / f"{split}.txt")
    return out


def _train_checkpoint(
    cfg: dict,
    out: Path,
    arch: str,
    weights: str | os.PathLike | None,
    weights_sha256: str | None,
    ultralytics_args: dict[str, Any],
    *,
    keep_run: bool,
    input_transform: str | None = None,
) -> _Checkpoint:
    """Run Ultralytics' training in a run folder and copy its best (else last) checkpoint to
    ``out/model.pt``; the run folder (with the transformed dataset copy, if any) is deleted afterwards
    unless ``keep_run`` (then ``out/run``)."""
    from bonecls.weights import sha256_file

    run_parent = out / "run" if keep_run else Path(tempfile.mkdtemp(prefix="bonecls-yolo-"))
    t0 = time.time()
    try:
        run_parent.mkdir(parents=True, exist_ok=True)
        # Sanitised copy: absolute dataset root, no 'download' entry (it would run code or fetch data).
        import yaml

        if input_transform == "rank":
            cfg = rank_dataset(cfg, run_parent / "dataset-rank")
        data_yaml = run_parent / "data.yaml"
        data_yaml.write_text(yaml.safe_dump({**cfg, "path": cfg["path"]}), encoding="utf-8")

        ul = import_ultralytics()
        if weights is not None:
            yolo, start_sha = _open_start_weights(weights, weights_sha256)
            start_desc = f"fine-tuned from weights sha256 {start_sha}"
        else:
            yolo = ul.YOLO(f"{arch}.yaml", task="detect")  # built from the packaged YAML; nothing fetched
            start_desc = "trained from scratch"
        kwargs = dict(data=str(data_yaml), project=str(run_parent), name="train", exist_ok=True)
        kwargs.update(ultralytics_args)
        yolo.train(trainer=_trainer_class(), **kwargs)
        trainer = yolo.trainer
        wdir = Path(trainer.save_dir) / "weights"
        best = wdir / "best.pt" if (wdir / "best.pt").is_file() else wdir / "last.pt"
        if not best.is_file():
            raise DataError("Training finished without writing a checkpoint.")
        dst = out / WEIGHTS_FILE
        shutil.copyfile(best, dst)
        size = dst.stat().st_size
        if size > MAX_WEIGHTS_BYTES:
            raise WeightsError(f"The trained weights are {size / 2**20:.1f} MB, over the 25 MB limit.")
        sha = sha256_file(dst)
        train_seconds = time.time() - t0
        epochs_run = int(getattr(trainer, "epoch", -1)) + 1
    finally:
        if not keep_run:
            shutil.rmtree(run_parent, ignore_errors=True)
    return _Checkpoint(
        path=dst, sha256=sha, size=size, seconds=train_seconds, epochs_run=epochs_run, start=start_desc
    )


def _draft_card(
    cfg: dict,
    counts: dict[str, int],
    *,
    model_id: str,
    task: str,
    arch: str,
    imgsz: int,
    sha256: str,
    training_data: str | None,
    command: str,
    input_transform: str | None = None,
) -> ModelCard:
    """The card before calibration: identity, input, provenance; threshold and metrics are placeholders."""
    from bonecls.card_limitations import refresh_limitations
    from bonecls.weights import ModelCard

    card = ModelCard(
        id=model_id,
        task=task,
        framework=FRAMEWORK,
        architecture=arch,
        class_names=list(cfg["names"]),
        positive_classes=list(cfg["names"]),
        input_size=int(imgsz),
        in_chans=3,
        input_transform=input_transform,
        normalization={"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
        temperature=1.0,
        thresholds={"negative_below": DEFAULT_CONF, "positive_at": DEFAULT_CONF},  # replaced later
        weights_file=WEIGHTS_FILE,
        sha256=sha256,
        training_data=training_data
        or (
            f"YOLO dataset '{Path(cfg['path']).name}': {counts['train']} train / {counts['val']} val / "
            f"{counts['test']} test images, classes {list(cfg['names'])}"
        ),
        test_metrics={},
        command=command,
        intended_use=INTENDED_USE[task],
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        extra={},
    )
    return refresh_limitations(card)  # rewritten as the evidence grows (bonecls.card_limitations)


def _calibrated_card(
    draft: ModelCard,
    out: Path,
    cfg: dict,
    checkpoint: _Checkpoint,
    *,
    device: str,
    run_record: dict[str, Any],
) -> ModelCard:
    """The final card: threshold chosen on the validation split, test metrics at it, training record.

    The checkpoint is reopened through its sha256 (as any user would open it), on the first GPU of a
    multi-GPU ``device``."""
    det = Detector(
        open_yolo(checkpoint.path, checkpoint.sha256),
        draft,
        out,
        device=device if device == "cpu" else str(device).split(",")[0],
    )
    conf, val_rsna = choose_conf_threshold(det, cfg, "val")
    metrics = evaluate_detector(det, cfg, "test", conf=conf)
    metrics["val_rsna_score"] = rounded_for_card(val_rsna) if val_rsna >= 0 else None
    metrics["map_interpolation"] = "coco101"
    return updated_card(
        draft,
        thresholds={"negative_below": conf, "positive_at": conf},
        test_metrics=metrics,
        extra={
            "start": checkpoint.start,
            **run_record,
            "epochs_run": checkpoint.epochs_run,
            "train_seconds": round(checkpoint.seconds, 1),
            "ultralytics_version": import_ultralytics().__version__,
            "weights_bytes": checkpoint.size,
            "license_note": "Weights produced with Ultralytics (AGPL-3.0).",
        },
    )


def describe_card(card: ModelCard) -> str:
    """The card's id, operating threshold and test metrics as indented JSON (CLI output)."""
    summary = {"id": card.id, "thresholds": card.thresholds.model_dump(), "test_metrics": card.test_metrics}
    return json.dumps(summary, indent=2, default=str)
