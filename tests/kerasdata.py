"""Keras test models and cards (not a test module): tests/test_keras.py and tests/test_app_keras.py.

TensorFlow is imported through :func:`bonecls.inference.keras_loader.import_keras` (which loads Triton
first: see its comment), and only when a helper runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

THREECLASS = ["healthy", "fractured", "beyond_repair"]


def keras() -> Any:
    from bonecls.inference.keras_loader import import_keras

    return import_keras()[0]


def save_card(model: Any, out: Path, card_id: str, **fields: Any) -> Any:
    """Save ``model`` as ``out/model.keras`` with a valid card (sha256 filled in); returns the card."""
    from bonecls.weights import ModelCard, sha256_file, write_card

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    values: dict[str, Any] = {
        "id": card_id,
        "task": "threeclass",
        "framework": "keras",
        "architecture": "custom_cnn",
        "head": "dense_bn",
        "class_names": list(THREECLASS),
        "positive_classes": ["fractured", "beyond_repair"],
        "input_size": 64,
        "in_chans": 1,
        "normalization": {"mean": [0.5], "std": [0.5]},
        "thresholds": {"negative_below": 0.3, "positive_at": 0.7},
        "weights_file": "model.keras",
        "sha256": sha256_file(out / "model.keras"),
        "training_data": "Random weights for tests (no training data).",
        "command": "tests/kerasdata.py",
    }
    values.update(fields)
    card = ModelCard(**values)
    write_card(card, out)
    return card


def tiny_threeclass(seed: int = 0, size: int = 64) -> Any:
    """A random small CNN with seed 004's head, ending in a softmax (as seed 004's models did)."""
    k = keras()
    k.utils.set_random_seed(seed)
    L = k.layers
    inputs = k.Input((size, size, 1))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = L.MaxPooling2D(name="pool1")(x)
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(16, name="head_dense")(x)
    x = L.BatchNormalization(name="head_bn")(x)
    x = L.Dense(3, activation="softmax", name="predictions")(x)
    return k.Model(inputs, x)


def localiser() -> Any:
    """A Keras model whose class-1 ("bright") logit grows with bright blobs and class 0's shrinks
    (the Keras twin of tests/test_explain.py's hand-wired localiser): a 3x3 mean filter with bias -0.5
    (fires only where the mean is above 0.5), 2x2 pooling, a 1x1 copy (the CAM layer), global mean and a
    +20 / -20 head."""
    k = keras()
    L = k.layers
    inputs = k.Input((64, 64, 1))
    x = L.Conv2D(1, 3, padding="same", activation="relu", name="bright")(inputs)
    x = L.AveragePooling2D(2)(x)  # a 32 x 32 CAM layer: EigenCAM's SVD stays small
    x = L.Conv2D(1, 1, name="cam")(x)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(2, name="logits")(x)
    model = k.Model(inputs, outputs)
    model.get_layer("bright").set_weights(
        [np.full((3, 3, 1, 1), 1 / 9, np.float32), np.array([-0.5], np.float32)]
    )
    model.get_layer("cam").set_weights([np.ones((1, 1, 1, 1), np.float32), np.zeros(1, np.float32)])
    model.get_layer("logits").set_weights([np.array([[-20.0, 20.0]], np.float32), np.zeros(2, np.float32)])
    return model


def localiser_card(out: Path) -> Any:
    return save_card(
        localiser(),
        out,
        "keras-localiser",
        task="fracture",
        class_names=["clear", "bright"],
        positive_classes=["bright"],
        normalization={"mean": [0.0], "std": [1.0]},
        head="linear",
    )
