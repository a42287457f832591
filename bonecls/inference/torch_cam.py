"""Class activation maps of PyTorch classifiers through pytorch-grad-cam, CAM methods by name.

The CAM math is pytorch-grad-cam's; this module only picks the class by name, runs it the way its
README does (``cam = GradCAM(model=model, target_layers=target_layers)``, ``targets`` of
``ClassifierOutputTarget``, ``cam(input_tensor=input_tensor, targets=targets)``) and makes the result
safe to show (:mod:`bonecls.inference.heatmap`).

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
from typing import Any

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

from bonecls.errors import ExplainError
from bonecls.inference.heatmap import resize_heatmap, sanitize_heatmap
from bonecls.inference.results import CamResult

__all__ = [
    "CAM_METHODS",
    "GRADIENT_FREE",
    "SCORECAM_BATCH_SIZE",
    "SCORECAM_MAX_BYTES",
    "cam_class",
    "explain",
    "explain_with_logits",
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

SCORECAM_BATCH_SIZE = 8
# Score-CAM runs one forward pass per channel of the target layer and pytorch-grad-cam keeps every
# masked input and every activation of those passes in memory; refuse above this estimate.
SCORECAM_MAX_BYTES = 2 * 2**30


def cam_class(method: str) -> type:
    """The pytorch-grad-cam class for a method name (``ExplainError`` listing the names if unknown)."""
    try:
        return CAM_METHODS[method]
    except (KeyError, TypeError):
        raise ExplainError(
            f"Unknown explanation method '{method}'. Available methods: {', '.join(CAM_METHODS)}."
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
    heat = sanitize_heatmap(grayscale[0], notes, shapes[0] if shapes else None)
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
