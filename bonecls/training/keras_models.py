"""Seed 004's Keras models and where their base weights come from (for :mod:`.keras_transfer`).

``build_model`` assembles the recipe: an ``inception_v3`` / ``xception`` base from ``keras.applications``
with L2 on its kernels (or the small ``custom_cnn``), then a Dense + BatchNorm + ReLU + Dropout head,
``logits`` and a softmax. ``base_weights`` decides the base's starting weights: ImageNet (probing the
download host first, so an offline cluster trains from scratch with a warning instead of hanging), a
local ``--pretrained PATH`` file (its sha256 checked and recorded for the card), or none. Kept apart
from the trainer so the model can be built and inspected without a training run.
"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path
from typing import Any

from bonecls.training import TrainingError

__all__ = ["ARCHITECTURES", "BN_MOMENTUM", "CAM_LAYERS", "base_weights", "build_model"]

#: Architecture -> smallest input side it accepts.
ARCHITECTURES = {"custom_cnn": 16, "inception_v3": 75, "xception": 71}
#: The feature map Grad-CAM weighs (written to the card's ``extra.cam_layer``).
CAM_LAYERS = {"custom_cnn": "relu3", "inception_v3": "mixed10", "xception": "block14_sepconv2_act"}
# Keras's default 0.99 leaves the running statistics near their initial values for the first few
# hundred steps, so a short run would validate (and ship) a head that sees the wrong statistics.
BN_MOMENTUM = 0.9
_IMAGENET_HOST = ("storage.googleapis.com", 443)


def base_weights(args: argparse.Namespace) -> str | None:
    """'imagenet', a weights file (``--pretrained PATH``) or None; ``auto`` probes the download host (a
    few seconds at most) instead of hanging."""
    if args.weights not in ("auto", "imagenet", "none"):
        return _weights_file(args)
    if args.model == "custom_cnn" or args.weights == "none":
        return None
    if args.in_chans != 3:
        if args.weights == "imagenet":
            raise TrainingError(
                "ImageNet weights take 3-channel inputs; pass --in-chans 3 or --weights none."
            )
        return None
    if args.weights == "imagenet":
        return "imagenet"
    try:
        socket.create_connection(_IMAGENET_HOST, timeout=5).close()
        return "imagenet"
    except OSError:
        print(
            f"warning: {_IMAGENET_HOST[0]} is unreachable, so {args.model} trains from scratch (no ImageNet "
            "weights); expect a much weaker model. Pass --weights imagenet where the internet is reachable."
        )
        return None


def _weights_file(args: argparse.Namespace) -> str:
    """A base-weights file on disk (``--pretrained PATH``): it must exist, match ``--pretrained-sha256``
    when given; its sha256 goes on the card (``args.weights_record``)."""
    from bonecls.training.pretrained import file_sha256

    path = Path(args.weights)
    if args.model == "custom_cnn":
        raise TrainingError("custom_cnn has no pretrained base; drop --pretrained PATH.")
    if not path.is_file() or not path.name.endswith((".h5", ".keras")):
        raise TrainingError(
            f"--pretrained {path}: expected a Keras weights file (.h5 / .weights.h5) of the {args.model} "
            "base without its top, e.g. keras.applications' '..._notop.h5'."
        )
    sha = file_sha256(path)
    if args.weights_sha256 and sha != args.weights_sha256.strip().lower():
        raise TrainingError(f"--pretrained {path} has sha256 {sha}, not the expected {args.weights_sha256}.")
    args.weights_record = {"source": "file", "file": path.name, "sha256": sha}
    return str(path)


def _add_l2(base: Any, reg: Any) -> None:
    """L2 on every kernel of an already-built base (``keras.applications`` take no regularizer)."""
    for layer in base.layers:
        for attr in ("kernel", "depthwise_kernel", "pointwise_kernel"):
            variable = getattr(layer, attr, None)
            if variable is not None and hasattr(variable, "regularizer"):
                variable.regularizer = reg
                setattr(layer, f"{attr}_regularizer", reg)  # so the saved config says so


def build_model(
    keras: Any,
    arch: str,
    num_classes: int,
    image_size: int,
    in_chans: int,
    *,
    weights: str | None = None,
    l2: float = 1e-4,
    dense: int = 256,
    dropout: float = 0.3,
    freeze_base: bool = False,
) -> Any:
    """Seed 004's model: base (L2 on its kernels) -> GAP -> Dense + BatchNorm + ReLU + Dropout ->
    ``logits`` -> ``probabilities`` (softmax). The CAM layer is ``CAM_LAYERS[arch]``."""
    L = keras.layers
    reg = keras.regularizers.L2(l2) if l2 > 0 else None
    inputs = keras.Input((image_size, image_size, in_chans), name="image")
    if arch == "custom_cnn":
        x, conv = inputs, {"padding": "same", "use_bias": False, "kernel_regularizer": reg}
        for i, filters in enumerate((16, 32, 64), start=1):
            x = L.Conv2D(filters, 3, name=f"conv{i}", **conv)(x)
            x = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"bn{i}")(x)
            x = L.Activation("relu", name=f"relu{i}")(x)
            if i < 3:
                x = L.MaxPooling2D(name=f"pool{i}")(x)
    elif arch in ("inception_v3", "xception"):
        app = keras.applications.InceptionV3 if arch == "inception_v3" else keras.applications.Xception
        base = app(include_top=False, weights=weights, input_tensor=inputs)
        if reg is not None:
            _add_l2(base, reg)
        base.trainable = not freeze_base
        x = base.output
    else:
        raise TrainingError(f"Unknown Keras architecture '{arch}'; choose one of {', '.join(ARCHITECTURES)}.")
    x = L.GlobalAveragePooling2D(name="head_pool")(x)
    x = L.Dense(dense, use_bias=False, name="head_dense")(x)
    x = L.BatchNormalization(momentum=BN_MOMENTUM, name="head_bn")(x)
    x = L.Activation("relu", name="head_relu")(x)
    x = L.Dropout(dropout, name="head_dropout")(x)
    x = L.Dense(num_classes, name="logits")(x)
    outputs = L.Activation("softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"bonecls_{arch}")
