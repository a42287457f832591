"""Loading Keras classifiers without running anyone's code, and reading them as logits + feature maps.

A Keras model file is a program as much as a set of weights: a ``Lambda`` layer carries marshalled
Python bytecode, and a config can name classes from any importable module. So a ``.keras`` (or
legacy ``.h5``) file is loaded in this order, each step refusing with a :class:`WeightsError`:

1. the file is read once and its sha256 checked against the card (:func:`bonecls.weights.read_weights`);
2. its JSON config is read from those bytes *without deserialising anything* and refused if it holds
   a ``Lambda``-like layer or an object from outside Keras (custom code);
3. only then are TensorFlow and Keras imported and the bytes loaded with ``safe_mode=True`` and
   ``compile=False`` (no optimizer, loss or metric objects are rebuilt).

TensorFlow is imported inside the functions, never at module import: importing bonecls, the app or a
PyTorch card must not pay TensorFlow's start-up time and memory.

Served models may end in a softmax (seed 004's did): :func:`expose_logits` turns that last activation
into the identity on the loaded copy, so the card's temperature applies to logits exactly as for
PyTorch models and Grad-CAM differentiates a class score, not a saturated probability.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import zipfile
from collections.abc import Sequence
from typing import Any

from bonecls.errors import WeightsError
from bonecls.weights import ModelCard, load_card, read_weights

__all__ = [
    "KERAS_INSTALL",
    "check_config",
    "expose_logits",
    "features_model",
    "find_cam_layer",
    "import_keras",
    "load_keras",
    "read_config",
]

KERAS_INSTALL = "pip install -r requirements-keras.txt"
#: Layers whose config holds executable Python (marshalled bytecode or a function reference).
CODE_LAYERS = frozenset({"Lambda", "TFOpLambda", "SlicingOpLambda"})
_MAX_CONFIG_BYTES = 64 * 2**20
_SAFE_PACKAGES = frozenset({"keras", "builtins"})
_NOT_CAM_PREFIXES = ("MaxPooling", "AveragePooling", "MaxPool", "AvgPool", "Dropout", "SpatialDropout")


def import_keras(model_id: str = "") -> tuple[Any, Any]:
    """``(keras, tensorflow)``, importing them on first use; ``WeightsError`` saying how to install them."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up banner is noise here
    what = f"Model '{model_id}' is a Keras model" if model_id else "Keras models need TensorFlow"
    if "tensorflow" not in sys.modules:
        # Triton (torch's kernel compiler, imported with torchvision) and TensorFlow both bundle LLVM;
        # importing Triton after TensorFlow crashes the process (segfault). Load it first.
        with contextlib.suppress(ImportError):
            import triton  # noqa: F401
    try:
        import keras
        import tensorflow as tf
    except ImportError:
        raise WeightsError(
            f"{what}, and TensorFlow is not installed on this server; install it with `{KERAS_INSTALL}` "
            "and restart the app, or choose a PyTorch model."
        ) from None
    if keras.backend.backend() != "tensorflow":
        raise WeightsError(
            f"{what}; bonecls runs them on Keras's TensorFlow backend, but this process uses "
            f"'{keras.backend.backend()}' (KERAS_BACKEND). Unset KERAS_BACKEND and restart."
        )
    return keras, tf


# --------------------------------------------------------------------------------------------------
# Inspecting the file before loading it


def read_config(data: bytes, card: ModelCard) -> Any:
    """The model's JSON config, read from the file's bytes without deserialising any object."""
    name = card.weights_file.lower()
    try:
        if name.endswith(".keras"):
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                info = zf.getinfo("config.json")
                if info.file_size > _MAX_CONFIG_BYTES:
                    raise WeightsError(
                        f"The model file of '{card.id}' declares a {info.file_size / 2**20:.0f} MiB config; "
                        "that is not a Keras classifier. Reinstall the model."
                    )
                text = zf.read(info).decode("utf-8")
        else:
            import h5py

            with h5py.File(io.BytesIO(data), "r") as f:
                raw = f.attrs.get("model_config")
                if raw is None:
                    raise KeyError("model_config")
                text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        return json.loads(text)
    except WeightsError:
        raise
    except Exception as exc:  # zip, HDF5, UTF-8 and JSON errors all mean the same to the reader
        raise WeightsError(
            f"The weight file '{card.weights_file}' of model '{card.id}' is not a readable Keras model "
            f"({type(exc).__name__}: {str(exc)[:200]}); re-save it with model.save('model.keras') and "
            "reinstall the model."
        ) from None


def check_config(config: Any, card: ModelCard) -> None:
    """Refuse configs that would run code when loaded: Lambda layers and non-Keras objects."""
    for node in _walk(config):
        cls = node.get("class_name")
        if not isinstance(cls, str):
            continue
        config = node.get("config")
        name = config.get("name") if isinstance(config, dict) else None
        where = f" ('{name}')" if name else ""
        if cls in CODE_LAYERS:
            raise WeightsError(
                f"Model '{card.id}' contains a {cls} layer{where}, which stores Python code that would run "
                "when the model is loaded; bonecls never loads such models. Ask the model's author to "
                "replace it with built-in Keras layers (move input scaling into the card's normalization), "
                "re-save the model as .keras and update the card's sha256."
            )
        module = node.get("module")
        if isinstance(module, str) and module and module.split(".")[0] not in _SAFE_PACKAGES:
            raise WeightsError(
                f"Model '{card.id}' uses {cls}{where} from the Python module '{module}', i.e. custom code "
                "outside Keras; bonecls loads only models built from Keras's own layers. Rebuild the model "
                "with built-in layers and re-save it."
            )


def _walk(node: Any):
    stack = [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            yield cur
            stack.extend(cur.values())
        elif isinstance(cur, list):
            stack.extend(cur)


# --------------------------------------------------------------------------------------------------
# Loading


def load_keras(path_or_id: str | os.PathLike) -> tuple[Any, ModelCard]:
    """Load a Keras classifier from its folder, card or id; returns ``(model, card)``.

    Checksum, config inspection, then ``safe_mode=True`` deserialisation (see the module docstring).
    The model's input must fit the card (``input_size``, ``in_chans``) and its output must have one
    unit per class; its last softmax is turned into logits (:func:`expose_logits`).
    """
    card, card_dir = load_card(path_or_id, verify=False)
    if card.framework != "keras":
        raise WeightsError(f"Model '{card.id}' is a {card.framework} model, not a Keras model.")
    data = read_weights(card, card_dir)
    check_config(read_config(data, card), card)
    keras, _ = import_keras(card.id)
    try:
        model = _deserialise(keras, data, card)
    except WeightsError:
        raise
    except Exception as exc:
        raise WeightsError(
            f"Keras {keras.__version__} cannot load the weight file of model '{card.id}' "
            f"({type(exc).__name__}: {str(exc)[:300]}); re-save it with Keras 3 as .keras and reinstall it."
        ) from None
    if not isinstance(model, keras.Model):
        raise WeightsError(f"The weight file of model '{card.id}' does not hold a Keras model.")
    _check_io(model, card)
    expose_logits(model, card)
    return model, card


def _deserialise(keras: Any, data: bytes, card: ModelCard) -> Any:
    """Keras's loaders on the verified bytes (its public ``load_model`` takes a path only, which
    would let the file change between the checksum and the load)."""
    if card.weights_file.lower().endswith(".keras"):
        from keras.src.saving import saving_lib

        return saving_lib.load_model(io.BytesIO(data), compile=False, safe_mode=True)
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(io.BytesIO(data), "r") as f:
        return legacy_h5_format.load_model_from_hdf5(f, compile=False, safe_mode=True)


def _check_io(model: Any, card: ModelCard) -> None:
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise WeightsError(
            f"Model '{card.id}' has {len(model.inputs)} input(s) and {len(model.outputs)} output(s); bonecls "
            "serves classifiers with one image input and one class-score output."
        )
    shape = tuple(model.inputs[0].shape)
    want = (card.input_size, card.input_size, card.in_chans)
    if len(shape) != 4 or any(got not in (None, w) for got, w in zip(shape[1:], want, strict=True)):
        raise WeightsError(
            f"Model '{card.id}' takes inputs of shape {shape[1:]} (height, width, channels) but its card "
            f"says {want}; fix the card's input_size / in_chans."
        )
    units = model.outputs[0].shape[-1]
    if units != len(card.class_names):
        raise WeightsError(
            f"Model '{card.id}' outputs {units} scores but its card names {len(card.class_names)} classes "
            f"({', '.join(card.class_names)}); the card and the model disagree."
        )


def _output_op(model: Any) -> Any:
    """The layer (or op) that produces the model's output, looking inside nested models."""
    keras, _ = import_keras()
    op = model
    while isinstance(op, keras.Model):
        op = op.outputs[0]._keras_history[0]
    return op


def expose_logits(model: Any, card: ModelCard) -> None:
    """Make the loaded ``model`` return logits: its final softmax (if any) becomes the identity.

    ``softmax(logits / T)`` with the card's temperature then gives the calibrated probabilities, and
    CAM gradients are taken on an unsaturated class score (as Keras's own Grad-CAM example does).
    """
    op = _output_op(model)
    activation = getattr(op, "activation", None)
    act_name = getattr(activation, "__name__", None) if activation is not None else None
    if type(op).__name__ == "Softmax":  # keras.layers.Softmax or keras.ops.softmax in a functional graph
        object.__setattr__(op, "call", lambda inputs, *args, **kwargs: inputs)
    elif act_name == "softmax":
        import keras

        op.activation = keras.activations.linear
    elif act_name not in (None, "linear"):
        raise WeightsError(
            f"Model '{card.id}' ends in a '{act_name}' activation; bonecls needs class scores from a softmax "
            "(or linear logits) over the card's classes. Re-export the model with a softmax output."
        )


def _head_dense(model: Any) -> Any:
    """The Dense layer that produces the class scores: the output op itself, or the layer under a final
    ``Activation`` / ``Softmax``."""
    keras, _ = import_keras()
    op = _output_op(model)
    while not isinstance(op, keras.layers.Dense):
        inbound = getattr(op, "input", None)
        history = getattr(inbound, "_keras_history", None)
        if history is None or type(op).__name__ not in ("Activation", "Softmax"):
            raise WeightsError(
                "The model's class scores do not come from a Dense layer, so its learned scope has no "
                "pooled features to read; fit the scope with --layers naming a convolutional layer."
            )
        op = history[0]
    return op


def features_model(model: Any, layers: Sequence[str]) -> Any:
    """A Keras model over the same layers (and weights) as ``model`` returning ``[logits, features]``:
    the scope gate's pooled features from the very pass that computes the logits.

    ``layers`` as in :class:`bonecls.scope.features.FeatureTap`: ``"penultimate"`` is the input of the
    Dense layer that gives the class scores (what the head reads, as on PyTorch); any other name is a
    layer whose 4-D output is averaged over its spatial positions (the CAM layer, for example). The
    features are joined in the order given. ``model`` must already return logits (:func:`expose_logits`).
    """
    from bonecls.scope.features import PENULTIMATE

    keras, _ = import_keras()
    if not layers:
        raise ValueError("features_model needs at least one layer.")
    by_name = {layer.name: layer for layer in _flat_layers(model)}
    parts = []
    for name in layers:
        if name == PENULTIMATE:
            tensor = _head_dense(model).input
        elif name in by_name:
            tensor = by_name[name].output
        else:
            raise WeightsError(f"The scope layer '{name}' is not a layer of the Keras model.")
        if len(tensor.shape) > 2:
            tensor = keras.ops.mean(tensor, axis=tuple(range(1, len(tensor.shape) - 1)))
        parts.append(tensor)
    features = parts[0] if len(parts) == 1 else keras.ops.concatenate(parts, axis=-1)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, [model.outputs[0], features], name=f"{model.name}_scope")


def find_cam_layer(model: Any, name: str | None = None) -> Any:
    """The layer whose feature map the CAM weighs: ``name`` if given (searched in nested models too),
    else the last layer with a 4-D (batch, height, width, channels) output that is not a pooling or
    dropout layer -- the last convolutional block (``mixed10`` in InceptionV3, ``block14_sepconv2_act``
    in Xception, the last conv/activation of a custom CNN)."""
    layers = list(_flat_layers(model))
    if name:
        for layer in layers:
            if layer.name == name:
                return layer
        raise WeightsError(
            f"The card's cam_layer '{name}' is not a layer of the model; remove extra.cam_layer to pick the "
            "last convolutional layer automatically, or name one of its layers."
        )
    for layer in reversed(layers):
        if type(layer).__name__.startswith(_NOT_CAM_PREFIXES) or type(layer).__name__ == "InputLayer":
            continue
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):  # a shared layer has no single output
            continue
        if len(shape) == 4 and all(d is None or d > 1 for d in shape[1:3]):
            return layer
    for layer in reversed(layers):  # a tiny input may leave only 1x1 maps: still a conv map
        try:
            if len(layer.output.shape) == 4 and type(layer).__name__ != "InputLayer":
                return layer
        except (AttributeError, ValueError):
            continue
    raise WeightsError(
        "The model has no convolutional feature map to explain; name one in the card's extra.cam_layer."
    )


def _flat_layers(model: Any):
    """Every layer in order, nested models expanded in place (depth first)."""
    keras, _ = import_keras()
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _flat_layers(layer)
        else:
            yield layer
