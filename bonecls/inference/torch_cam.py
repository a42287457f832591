"""Class activation maps through pytorch-grad-cam, and heat-map overlays.

The CAM math is pytorch-grad-cam's; this module only picks the class by name, runs it, makes the
result safe to show (finite, in [0, 1], at the radiograph's size) and renders overlays.

One speed-up is applied around the library call (it does not change any CAM value): while a CAM
runs, the parameters do not require gradients and a forward hook on each target layer hands the
rest of the network a copy of the layer's output that starts a fresh autograd graph. The forward
pass up to the target layer therefore builds no graph and the backward pass stops at the target
layer, instead of computing weight gradients through the whole backbone. The gradients that
pytorch-grad-cam reads at the target layer are exactly the same. The logits of that same forward
pass are returned too, so a prediction and its CAM cost one forward and one (short) backward.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch
from pytorch_grad_cam import (
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from bonecls.errors import BoneclsError

if TYPE_CHECKING:
    from bonecls.predict import Prediction

__all__ = [
    "CAM_METHODS",
    "COLORMAPS",
    "CamResult",
    "ExplainError",
    "Explanation",
    "cam_class",
    "explain",
    "explain_with_logits",
    "overlay",
    "resize_heatmap",
]

CAM_METHODS: dict[str, type] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "hirescam": HiResCAM,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "eigencam": EigenCAM,
    "scorecam": ScoreCAM,
}
GRADIENT_FREE = frozenset({"eigencam", "scorecam"})

COLORMAPS: dict[str, int] = {
    "jet": cv2.COLORMAP_JET,
    "turbo": cv2.COLORMAP_TURBO,
    "inferno": cv2.COLORMAP_INFERNO,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "hot": cv2.COLORMAP_HOT,
    "bone": cv2.COLORMAP_BONE,
}

SCORECAM_BATCH_SIZE = 8
# Score-CAM runs one forward pass per channel of the target layer and pytorch-grad-cam keeps every
# masked input and every activation of those passes in memory; refuse above this estimate.
SCORECAM_MAX_BYTES = 2 * 2**30
_EMPTY = 1e-6


class ExplainError(BoneclsError, ValueError):
    """A CAM cannot be computed as asked (unknown method or colour map, bad target, too large)."""


@dataclass(frozen=True)
class Explanation:
    heatmap: np.ndarray  # float32 (H, W) in [0, 1], at the radiograph's size
    overlay: np.ndarray  # uint8 (H, W, 3) RGB
    method: str
    target_class: str
    prediction: Prediction
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class CamResult:
    heatmap: np.ndarray  # float32 (S, S) or out_size, in [0, 1]
    logits: torch.Tensor  # (1, num_classes), from the CAM's own forward pass
    target_index: int  # the class the CAM explains
    warnings: tuple[str, ...] = field(default=())


def cam_class(method: str) -> type:
    """The pytorch-grad-cam class for a method name (``ExplainError`` listing the names if unknown)."""
    try:
        return CAM_METHODS[method]
    except (KeyError, TypeError):
        raise ExplainError(
            f"Unknown explanation method '{method}'. Available methods: {', '.join(CAM_METHODS)}."
        ) from None


def _colormap(name: str) -> int:
    try:
        return COLORMAPS[name]
    except (KeyError, TypeError):
        raise ExplainError(
            f"Unknown colour map '{name}'. Available colour maps: {', '.join(COLORMAPS)}."
        ) from None


class _Target(ClassifierOutputTarget):
    """``ClassifierOutputTarget`` that fails with a clear error instead of an ``IndexError``.

    (pytorch-grad-cam's context manager swallows ``IndexError`` and would return nothing.)
    """

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        n = model_output.shape[-1]
        if not 0 <= self.category < n:
            raise ExplainError(
                f"Target class index {self.category} is out of range for a model with {n} classes."
            )
        return super().__call__(model_output)


def _graph_cut_hook(method: str, input_numel: int, shapes: list[tuple[int, ...]]):
    """Forward hook: record the target layer's output shape, guard Score-CAM's memory, and hand
    the rest of the network a copy of the output that starts a fresh autograd graph."""
    first = [True]

    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        if not isinstance(output, torch.Tensor):
            return None
        if first[0]:
            first[0] = False
            shapes.append(tuple(output.shape))
            k = output.shape[1]
            estimate = 4 * k * (input_numel + output[0].numel())
            if method == "scorecam" and estimate > SCORECAM_MAX_BYTES:
                raise ExplainError(
                    f"Score-CAM on this model needs about {estimate / 2**30:.1f} GiB of memory "
                    f"({k} channels in the target layer); use gradcam or eigencam instead."
                )
        if not torch.is_grad_enabled():
            return None
        return output.detach().requires_grad_(True).clone()

    return hook


def _sanitize(cam: np.ndarray, notes: list[str], layer_shape: tuple[int, ...] | None = None) -> np.ndarray:
    cam = np.asarray(cam, dtype=np.float32)
    finite = bool(np.isfinite(cam).all())
    if not finite:
        notes.append(
            "The heat map had non-finite values (vanishing or exploding gradients); they were set to 0."
        )
        cam = np.nan_to_num(cam, nan=0.0, posinf=0.0, neginf=0.0)
    cam = np.clip(cam, 0.0, None)
    hi = float(cam.max()) if cam.size else 0.0
    if hi <= _EMPTY:
        if not finite:
            pass  # already explained
        elif layer_shape is not None and len(layer_shape) == 4 and layer_shape[2] * layer_shape[3] <= 1:
            notes.append(
                f"The heat map is empty: at this input size the target layer is only "
                f"{layer_shape[2]}x{layer_shape[3]} pixels, so it cannot localise anything; "
                "use a larger input size."
            )
        else:
            notes.append(
                "The heat map is empty: no region of the target layer supports this class (its gradients "
                "or weighted activations are zero or negative everywhere), so nothing is highlighted."
            )
        return np.zeros_like(cam)
    return (cam / hi).astype(np.float32)


def resize_heatmap(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a heat map to ``size`` = (height, width) (cv2, bilinear) and renormalise to [0, 1]."""
    h, w = int(size[0]), int(size[1])
    hm = np.asarray(heatmap, dtype=np.float32)
    if not np.isfinite(hm).all():
        hm = np.nan_to_num(hm, nan=0.0, posinf=0.0, neginf=0.0)
    if hm.shape != (h, w):
        hm = cv2.resize(hm, (w, h), interpolation=cv2.INTER_LINEAR)
    hm = np.clip(hm, 0.0, None)
    hi = float(hm.max()) if hm.size else 0.0
    return (hm / hi).astype(np.float32) if hi > _EMPTY else np.zeros((h, w), np.float32)


def explain_with_logits(
    model: nn.Module,
    input_tensor: torch.Tensor,
    target_layers: Sequence[nn.Module],
    method: str = "gradcam",
    target_index: int | None = None,
    *,
    out_size: tuple[int, int] | None = None,
) -> CamResult:
    """Run a pytorch-grad-cam method on one image; returns the heat map and the logits of its forward.

    ``input_tensor`` is (1, C, S, S) as the model expects it. ``target_index`` None explains the
    predicted (arg-max) class. The heat map is (S, S), or ``out_size`` = (H, W) if given.
    The model's ``requires_grad`` flags and train/eval mode are restored afterwards; hooks are
    added to ``target_layers`` while it runs, so callers sharing the model across threads must
    serialise this call against other uses of the model (``Predictor`` does).
    """
    cam_cls = cam_class(method)
    if input_tensor.ndim != 4 or input_tensor.shape[0] != 1:
        raise ExplainError(
            f"explain takes one image as a (1, C, H, W) tensor; got shape {tuple(input_tensor.shape)}."
        )
    layers = list(target_layers)
    if not layers:
        raise ExplainError("explain needs at least one target layer.")
    targets = None if target_index is None else [_Target(int(target_index))]
    notes: list[str] = []
    shapes: list[tuple[int, ...]] = []
    params = list(model.parameters())
    requires = [p.requires_grad for p in params]
    was_training = model.training
    result = None
    with torch.inference_mode(False), torch.enable_grad():
        x = input_tensor.detach().clone()
        handles = [
            layer.register_forward_hook(_graph_cut_hook(method, x[0].numel(), shapes)) for layer in layers
        ]
        try:
            for p in params:
                p.requires_grad_(False)
            with cam_cls(model=model, target_layers=layers) as cam:
                if method == "scorecam":
                    cam.batch_size = SCORECAM_BATCH_SIZE
                grayscale = cam(input_tensor=x, targets=targets)
                result = (grayscale, cam.outputs.detach().float().cpu())
        finally:
            for h in handles:
                h.remove()
            for p, r in zip(params, requires, strict=True):
                p.requires_grad_(r)
            model.train(was_training)
            model.zero_grad(set_to_none=True)
    if result is None:  # pytorch-grad-cam's __exit__ swallowed an IndexError
        raise ExplainError(f"The {method} explanation failed inside pytorch-grad-cam (index error).")
    grayscale, logits = result
    heat = _sanitize(grayscale[0], notes, shapes[0] if shapes else None)
    if out_size is not None:
        heat = resize_heatmap(heat, out_size)
    index = int(logits[0].argmax()) if target_index is None else int(target_index)
    for note in notes:
        warnings.warn(note, RuntimeWarning, stacklevel=2)
    return CamResult(heat, logits, index, tuple(dict.fromkeys(notes)))


def explain(
    model: nn.Module,
    input_tensor: torch.Tensor,
    target_layers: Sequence[nn.Module],
    method: str = "gradcam",
    target_index: int | None = None,
    *,
    out_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Heat map (float32, [0, 1], finite) of ``method`` for one image: (S, S), or ``out_size`` = (H, W)."""
    return explain_with_logits(
        model, input_tensor, target_layers, method, target_index, out_size=out_size
    ).heatmap


_RGB_LUTS: dict[str, np.ndarray] = {}


def _rgb_lut(name: str) -> np.ndarray:
    """OpenCV colour map as an RGB (not BGR) 256x1x3 lookup table for ``cv2.applyColorMap``."""
    lut = _RGB_LUTS.get(name)
    if lut is None:
        ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
        lut = _RGB_LUTS[name] = np.ascontiguousarray(cv2.applyColorMap(ramp, _colormap(name))[:, :, ::-1])
    return lut


def _unit_to_uint8(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        a = np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=0.0)
    out = np.multiply(a, np.float32(255.0), dtype=np.float32)
    np.clip(out, 0.0, 255.0, out=out)
    np.rint(out, out=out)
    return out.astype(np.uint8)


def overlay(
    pixels: np.ndarray, heatmap: np.ndarray, colormap: str = "jet", opacity: float = 0.45
) -> np.ndarray:
    """Blend a colour-mapped heat map over a radiograph; returns uint8 RGB (H, W, 3).

    ``pixels`` is the display image: float in [0, 1] or uint8, (H, W) grey or (H, W, 3) RGB.
    ``heatmap`` is (H, W) in [0, 1]. ``opacity`` is the heat map's weight in [0, 1].
    """
    lut = _rgb_lut(colormap)
    if not 0.0 <= float(opacity) <= 1.0:
        raise ExplainError(f"Overlay opacity must be between 0 and 1; got {opacity}.")
    pix = np.asarray(pixels)
    if pix.ndim == 3 and pix.shape[2] == 1:
        pix = pix[:, :, 0]
    if pix.ndim not in (2, 3) or (pix.ndim == 3 and pix.shape[2] != 3):
        raise ExplainError(f"Overlay needs an (H, W) or (H, W, 3) image; got shape {pix.shape}.")
    hm = np.asarray(heatmap)
    if hm.shape != pix.shape[:2]:
        raise ExplainError(f"Heat map shape {hm.shape} does not match the image shape {pix.shape[:2]}.")
    if pix.dtype != np.uint8:
        pix = _unit_to_uint8(pix)
    base = cv2.cvtColor(pix, cv2.COLOR_GRAY2RGB) if pix.ndim == 2 else np.ascontiguousarray(pix)
    color = cv2.applyColorMap(_unit_to_uint8(hm), lut)
    return cv2.addWeighted(base, 1.0 - float(opacity), color, float(opacity), 0.0)
