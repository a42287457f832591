"""Named recipes: the seeds' settings and our defaults per task.

A preset sets argument *defaults*; anything given on the command line wins
(``train/classify.py --preset seed002 --epochs 5`` runs seed 002 for 5 epochs). Learning rates are
given at the preset's own batch size (``lr_base_batch``), so the linear scaling rule reproduces the
seed exactly when run serially with its batch size and scales it for larger global batches.
"""

from __future__ import annotations

from typing import Any

from bonecls.training import TrainingError

PRESETS: dict[str, dict[str, Any]] = {
    # Seed 002: FracAtlas, EfficientNet-B6 at 224, ImageNet normalization on 3 channels, frozen
    # backbone + new linear head, Adam 1e-3, batch 16, 20 epochs, best on validation (accuracy).
    "seed002": {
        "task": "fracture",
        "model": "efficientnet_b6",
        "head": "linear",
        "image_size": 224,
        "in_chans": 3,
        "normalization": "imagenet",
        "pretrained": True,
        "freeze_backbone": True,
        "optimizer": "adam",
        "lr": 1e-3,
        "lr_base_batch": 16,
        "batch_size": 16,
        "weight_decay": 0.0,
        "scheduler": "none",
        "warmup_epochs": 0,
        "epochs": 20,
        "monitor": "accuracy",
        "patience": 0,
    },
    # Seed 003: RSNA pneumonia, a simple CNN (2 conv + 2 FC) at 128 px on one channel.
    "seed003": {
        "task": "pneumonia",
        "model": "simple_cnn",
        "head": "linear",
        "image_size": 128,
        "in_chans": 1,
        "normalization": "model",
        "pretrained": False,
        "freeze_backbone": False,
        "optimizer": "adam",
        "lr": 1e-3,
        "lr_base_batch": 32,
        "batch_size": 32,
        "weight_decay": 0.0,
        "scheduler": "none",
        "warmup_epochs": 0,
        "epochs": 10,
        "monitor": "accuracy",
        "patience": 0,
    },
    # Seed 004: three-class (healthy / fractured / beyond repair), Inception-v3 with L2 (weight decay)
    # and a Dense+BN+Dropout head; no shear (it confuses fractured with beyond repair).
    "seed004": {
        "task": "threeclass",
        "model": "inception_v3",
        "head": "dense_bn",
        "image_size": 299,
        "in_chans": 3,
        "normalization": "model",
        "pretrained": True,
        "freeze_backbone": False,
        "optimizer": "adam",
        "lr": 1e-4,
        "lr_base_batch": 32,
        "batch_size": 32,
        "weight_decay": 1e-4,
        "scheduler": "cosine",
        "epochs": 30,
        "monitor": "f1_macro",
        "patience": 6,
        "shear": 0.0,
    },
}

# Our defaults per task: trained from scratch on one channel (phantoms need no ImageNet colour),
# AdamW + cosine with warmup, inverse-frequency class weights, early stopping on validation. The
# tasks differ only in their head (seed 004's Dense+BN for three classes) and in shear (off for three
# classes: it confuses fractured with beyond repair).
_OUR_RECIPE: dict[str, Any] = {
    "model": "resnet18",
    "head": "linear",
    "image_size": 224,
    "in_chans": 1,
    "normalization": "model",
    "optimizer": "adamw",
    "lr": 2e-3,
    "lr_base_batch": 256,
    "batch_size": 32,
    "weight_decay": 0.05,
    "scheduler": "cosine",
    "warmup_epochs": 1,
    "epochs": 30,
    "monitor": "f1_macro",
    "patience": 8,
    "shear": 5.0,
}
PRESETS["fracture"] = {"task": "fracture", **_OUR_RECIPE}
PRESETS["threeclass"] = {"task": "threeclass", **_OUR_RECIPE, "head": "dense_bn", "shear": 0.0}
PRESETS["pneumonia"] = {"task": "pneumonia", **_OUR_RECIPE}
# Seed 004's second transfer model: the same recipe on Xception.
PRESETS["seed004-xception"] = {**PRESETS["seed004"], "model": "xception"}


def get_preset(name: str) -> dict[str, Any]:
    try:
        return dict(PRESETS[name])
    except KeyError:
        raise TrainingError(f"Unknown preset {name!r}; available: {', '.join(PRESETS)}.") from None


def list_presets() -> list[str]:
    return list(PRESETS)
