"""Class activation maps for Keras models: the pytorch-grad-cam methods, fed by a ``tf.GradientTape``.

Every method the PyTorch path offers (:data:`bonecls.inference.torch_cam.CAM_METHODS`) works here too, so the
app's method menu needs no per-framework case. Only the inputs differ:

* activations and gradients of the CAM layer come from one eager forward pass under a
  ``tf.GradientTape``. While it runs, the layer's ``call`` is wrapped to hand its output to the tape
  (like a PyTorch forward hook), which works for layers inside nested models (a transfer-learning base)
  too. The tape watches nothing else, so it records only the ops after that layer: the backward pass
  stops there, as the PyTorch path's graph cut does.
* the per-method weighting is pytorch-grad-cam's own code (``get_cam_image`` / ``get_cam_weights`` of
  its classes, on NCHW numpy arrays), followed by its ``scale_cam_image`` -- the same numbers as the
  PyTorch path for the same activations and gradients. Score-CAM's forward passes over masked inputs
  go through the Keras model in batches; its memory guard and message are the PyTorch path's.

The result is made safe (finite, [0, 1], the image's size) by the same helpers as the PyTorch path
(:mod:`bonecls.inference.heatmap`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import numpy as np
import torch
from pytorch_grad_cam.utils.image import scale_cam_image

import bonecls.inference.torch_cam as torch_cam
from bonecls.errors import ExplainError
from bonecls.inference.heatmap import resize_heatmap, sanitize_heatmap
from bonecls.inference.results import CamResult
from bonecls.inference.torch_cam import GRADIENT_FREE, cam_class

__all__ = ["keras_cam"]


@cache
def _math(method: str) -> Any:
    """pytorch-grad-cam's CAM class for ``method`` as a plain calculator: its weighting code without
    the torch hooks that its constructor (and destructor) manage."""
    cls = cam_class(method)
    shim = type(f"Keras{cls.__name__}", (cls,), {"__init__": lambda self: None, "__del__": lambda self: None})
    return shim()


@contextlib.contextmanager
def _capture(layer: Any, tape: Any | None) -> Iterator[list[Any]]:
    """While active, each output of ``layer`` is appended to the yielded list (and watched by ``tape``)."""
    outputs: list[Any] = []
    own = layer.__dict__.get("call")
    original = layer.call

    def call(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        if tape is not None:
            tape.watch(out)
        outputs.append(out)
        return out

    object.__setattr__(layer, "call", call)
    try:
        yield outputs
    finally:
        if own is None:
            object.__delattr__(layer, "call")
        else:
            object.__setattr__(layer, "call", own)


def _nchw(t: Any, layer: Any) -> np.ndarray:
    a = np.asarray(t.numpy() if hasattr(t, "numpy") else t, dtype=np.float32)
    if a.ndim != 4:
        raise ExplainError(
            f"The CAM layer '{layer.name}' outputs a {a.ndim}-D tensor; a CAM needs a convolutional feature "
            "map (batch, height, width, channels). Name another layer in the card's extra.cam_layer."
        )
    channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
    return a if channels_first else a.transpose(0, 3, 1, 2)


def _scorecam_weights(
    acts: np.ndarray, x: np.ndarray, forward: Callable[[np.ndarray], np.ndarray], index: int
) -> np.ndarray:
    """Score-CAM channel weights: softmax over channels of the class logit for the input masked by each
    channel's min-max-normalised, upsampled map (bilinear, corners aligned, as pytorch-grad-cam)."""
    from scipy.ndimage import zoom

    k, h, w = acts.shape[1:]
    size_h, size_w = x.shape[1:3]
    estimate = 4 * k * (x[0].size + acts[0].size)
    if estimate > torch_cam.SCORECAM_MAX_BYTES:
        raise ExplainError(
            f"Score-CAM on this model needs about {estimate / 2**30:.1f} GiB of memory "
            f"({k} channels in the target layer); use gradcam or eigencam instead."
        )
    scores: list[float] = []
    for start in range(0, k, torch_cam.SCORECAM_BATCH_SIZE):
        maps = acts[0, start : start + torch_cam.SCORECAM_BATCH_SIZE]
        up = np.stack([zoom(m, (size_h / h, size_w / w), order=1, grid_mode=False) for m in maps])
        lo = up.min(axis=(1, 2), keepdims=True)
        hi = up.max(axis=(1, 2), keepdims=True)
        masks = ((up - lo) / (hi - lo + 1e-8)).astype(np.float32)
        scores.extend(np.asarray(forward(x * masks[..., None]), dtype=np.float64)[:, index].tolist())
    s = np.asarray(scores)
    e = np.exp(s - s.max())
    return (e / e.sum())[None, :].astype(np.float32)


def keras_cam(
    model: Any,
    x: np.ndarray,
    layer: Any,
    method: str = "gradcam",
    target_index: int | None = None,
    *,
    forward: Callable[[np.ndarray], np.ndarray] | None = None,
    out_size: tuple[int, int] | None = None,
) -> CamResult:
    """``method``'s heat map of ``model`` at ``layer`` for one NHWC image ``x`` (1, S, S, C), plus the
    logits of the same forward pass.

    ``model`` must return logits (see :func:`bonecls.inference.keras_loader.expose_logits`).
    ``target_index`` None explains the arg-max class. ``forward`` maps a batch to logits (Score-CAM's
    extra passes; default: the model in inference mode). The heat map is (S, S), or ``out_size`` =
    (H, W). The layer's ``call`` is wrapped while this runs: callers sharing the model across threads
    serialise it against other eager uses of the model (``KerasPredictor`` does).
    """
    import tensorflow as tf

    cam_class(method)
    if x.ndim != 4 or x.shape[0] != 1:
        raise ExplainError(f"explain takes one image as a (1, H, W, C) array; got shape {tuple(x.shape)}.")
    gradients = method not in GRADIENT_FREE
    xt = tf.convert_to_tensor(x, dtype=tf.float32)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        with _capture(layer, tape if gradients else None) as captured:
            logits = model(xt, training=False)
        n = int(logits.shape[-1])
        index = int(tf.argmax(logits[0])) if target_index is None else int(target_index)
        if not 0 <= index < n:
            raise ExplainError(f"Target class index {index} is out of range for a model with {n} classes.")
        score = logits[0, index]
    if not captured:
        raise ExplainError(
            f"The CAM layer '{layer.name}' did not run in the model's forward pass; name another layer in "
            "the card's extra.cam_layer."
        )
    acts = _nchw(captured[0], layer)
    grads = None
    if gradients:
        g = tape.gradient(score, captured[0])
        if g is None:
            raise ExplainError(
                f"The class scores do not depend on the CAM layer '{layer.name}'; name a layer on the path "
                "to the output in the card's extra.cam_layer."
            )
        grads = _nchw(g, layer)
    logits_np = np.array(logits.numpy(), dtype=np.float32)
    if method == "scorecam":
        fwd = forward or (lambda batch: model(tf.convert_to_tensor(batch), training=False).numpy())
        weights = _scorecam_weights(acts, x, fwd, index)
        cam = (weights[:, :, None, None] * acts).sum(axis=1)
    else:
        cam = _math(method).get_cam_image(None, None, None, acts, grads, False)
    size = (int(x.shape[2]), int(x.shape[1]))  # (width, height), as pytorch-grad-cam
    cam = scale_cam_image(np.maximum(cam, 0), size)  # compute_cam_per_layer
    cam = scale_cam_image(np.maximum(cam, 0))  # aggregate_multi_layers (one layer)
    notes: list[str] = []
    heat = sanitize_heatmap(cam[0], notes, (1, *acts.shape[1:]))
    if out_size is not None:
        heat = resize_heatmap(heat, out_size)
    for note in notes:
        warnings.warn(note, RuntimeWarning, stacklevel=2)
    return CamResult(heat, torch.from_numpy(logits_np), index, tuple(dict.fromkeys(notes)))
