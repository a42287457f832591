"""Box supervision: teach the classifier *where* a lesion is when the training set has boxes.

A fracture gap of a few pixels in one of twenty ribs is a weak, local signal; a network trained from
image labels alone on a few thousand images may never find it (ours stayed at chance). When the data
has lesion boxes (FracAtlas, RSNA, YOLO sets, class folders with ``boxes.csv``) this module adds a
training-only 1x1-conv *lesion head* on the CAM target layer (the last convolutional stage the app's
Grad-CAM explains). Every feature-map cell is classified: cells covered by a box as the image's class,
all cells of a negative image as the negative class (weakly supervised localization, as in Li et al.,
"Thoracic Disease Identification and Localization with Limited Supervision", CVPR 2018). The loss is
added to the image cross-entropy with weight ``--box-loss``; positive images without boxes only get
the image loss.

The head is dropped when the model is saved for inference (:func:`strip_lesion_head`): the shipped
architecture and its card are unchanged, only the backbone's features were shaped by the boxes.

**Box crops** (``--box-crop N``): train on N-px windows of the (augmented) full-resolution images
instead of whole images, as patch-then-whole-image mammography classifiers do (Shen et al., Sci Rep
2019). A positive image gives, three times in four, a window around its lesion (the lesion's centre in
the window's middle half) and otherwise a window that misses the lesion, labelled with the negative
class (a hard negative on the same anatomy); negative images give random windows. Nothing is resized,
so a 3-mm fracture gap keeps its pixels, while each step costs (N / S)^2 of a full image. With a
max-pooled network (``custom_v2_max``) the same weights read the whole image at inference: validation,
test metrics and temperature scaling all run on whole images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bonecls.models import target_layers

HEAD_NAME = "lesion_head"
COVER = 0.2  # a cell counts as lesion when a box covers at least this fraction of it
LESION_CELL_WEIGHT = 8.0  # lesion cells are few (a box covers ~4 of 64 cells): weigh them up


def attach_lesion_head(model: nn.Module, architecture: str, num_classes: int, image_size: int) -> nn.Module:
    """Register ``model.lesion_head`` (1x1 conv, one output per class) fed by the CAM target layer.

    Its cell logits of the latest forward pass are kept in ``model.lesion_head.cells``. Returns the model.
    """
    layer = target_layers(model, architecture)[-1]
    probe: dict[str, int] = {}

    def channels(_m: nn.Module, _a: tuple, out: torch.Tensor) -> None:  # returns None: output unchanged
        probe["c"] = int(out.shape[1])

    handle = layer.register_forward_hook(channels)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        in_chans = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
        model(torch.zeros(1, in_chans, image_size, image_size))
    model.train(was_training)
    handle.remove()
    head = nn.Conv2d(probe["c"], num_classes, kernel_size=1)
    head.cells = None  # type: ignore[assignment]
    model.add_module(HEAD_NAME, head)

    def keep_cells(_m: nn.Module, _a: tuple, out: torch.Tensor) -> None:
        head.cells = head(out)  # type: ignore[assignment]

    layer.register_forward_hook(keep_cells)
    return model


def lesion_head_of(model: nn.Module) -> nn.Conv2d | None:
    core = getattr(model, "module", model)  # DDP keeps the model in .module; FSDP2 shards in place
    return getattr(core, HEAD_NAME, None)


def strip_lesion_head(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inference model's state: the training-only lesion head removed."""
    return {k: v for k, v in state.items() if not k.startswith(HEAD_NAME + ".")}


def negative_class(class_names: Sequence[str], positive: Sequence[str]) -> int:
    """Index of the one class that means "no lesion" (cells outside boxes); box loss needs exactly one."""
    negatives = [i for i, n in enumerate(class_names) if n not in positive]
    if len(negatives) != 1:
        raise ValueError(
            f"box supervision needs exactly one negative class; {list(class_names)} with positive "
            f"{list(positive)} has {len(negatives)}"
        )
    return negatives[0]


def cell_targets(
    masks: torch.Tensor, labels: torch.Tensor, has_boxes: torch.Tensor, grid: tuple[int, int], negative: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cell class targets ``(B, h, w)`` and weights ``(B, h, w)`` from box masks ``(B, 1, H, W)``.

    Negative images: every cell is the negative class. Positive images with boxes: covered cells are the
    image's class (weight :data:`LESION_CELL_WEIGHT`), the rest negative. Positive images without boxes:
    weight 0 (the image loss alone teaches them).
    """
    cover = F.adaptive_avg_pool2d(masks.float(), grid)[:, 0]  # (B, h, w) fraction of each cell in a box
    lesion = cover >= COVER
    target = torch.where(lesion, labels[:, None, None], torch.full_like(labels, negative)[:, None, None])
    weight = torch.where(lesion, LESION_CELL_WEIGHT, 1.0)
    usable = (labels == negative) | has_boxes
    return target, weight * usable[:, None, None].to(weight.dtype)


def lesion_loss(
    model: nn.Module, masks: torch.Tensor, labels: torch.Tensor, has_boxes: torch.Tensor, negative: int
) -> torch.Tensor:
    """Weighted per-cell cross-entropy of the lesion head's latest cells against the boxes."""
    head = lesion_head_of(model)
    if head is None or head.cells is None:
        raise RuntimeError("the model has no lesion head output; call attach_lesion_head before training")
    cells = head.cells.float()
    target, weight = cell_targets(masks, labels, has_boxes.to(masks.device), cells.shape[-2:], negative)
    ce = F.cross_entropy(cells, target, reduction="none")
    return (ce * weight).sum() / weight.sum().clamp_min(1.0)


LESION_CROP_P = 0.75  # share of a positive image's windows that hold its lesion
_CROP_TRIES = 8  # random windows tried to miss a lesion before falling back to the lesion window
KEEP_LESION = 0.5  # share of the lesion (or of the window, for big lesions) that keeps the label


def _window_around(mask: torch.Tensor, size: int, fr: float = 0.5, fc: float = 0.5) -> tuple[int, int]:
    """Top-left of the ``size`` window placing the centre of ``mask``'s lesion at (fr, fc) of its side,
    clamped to the image."""
    h, w = mask.shape
    rows, cols = torch.nonzero(mask > 0, as_tuple=True)
    r0 = round(float(rows.float().mean()) - size * fr)
    c0 = round(float(cols.float().mean()) - size * fc)
    return min(max(r0, 0), h - size), min(max(c0, 0), w - size)


def box_crops(
    x: torch.Tensor,
    masks: torch.Tensor,
    labels: torch.Tensor,
    has_boxes: torch.Tensor,
    size: int,
    negative: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``size``-px training windows of a batch ``x`` (B, C, S, S) with their masks and labels.

    See the module docstring. Positive images without boxes cannot be cropped safely (the window might
    miss the lesion): they are shrunk whole to ``size`` instead, keeping their label.
    """
    b, _c, h, w = x.shape
    if size >= min(h, w):
        return x, masks, labels
    rand = lambda: float(torch.rand((), generator=generator))  # noqa: E731 - one draw, CPU generator
    xs, ms, ys = [], [], []
    for i in range(b):
        label = int(labels[i])
        m = masks[i, 0]
        area = float(m.sum())
        if label != negative and not (bool(has_boxes[i]) and area > 0):
            xs.append(F.interpolate(x[i : i + 1], size=(size, size), mode="area")[0])
            ms.append(torch.zeros_like(masks[i, :, :size, :size]))
            ys.append(label)
            continue
        window = None
        if label != negative and rand() < LESION_CROP_P:
            window = _window_around(m, size, 0.25 + 0.5 * rand(), 0.25 + 0.5 * rand())
        else:
            for _ in range(_CROP_TRIES):
                r0 = int(rand() * (h - size + 1))
                c0 = int(rand() * (w - size + 1))
                if area == 0 or float(m[r0 : r0 + size, c0 : c0 + size].sum()) == 0:
                    window = (r0, c0)
                    break
            if window is None:  # the lesion fills the image: take the window around it
                window = _window_around(m, size)
        r0, c0 = window
        crop_m = masks[i, :, r0 : r0 + size, c0 : c0 + size]
        kept = float(crop_m.sum()) / area if area > 0 else 0.0
        # a window keeps the image's label when it holds half the lesion, or when the lesion fills half
        # the window (a lesion larger than the window never fits half into it)
        if label != negative and kept < KEEP_LESION and float(crop_m.mean()) < KEEP_LESION:
            label, crop_m = negative, torch.zeros_like(crop_m)
        xs.append(x[i, :, r0 : r0 + size, c0 : c0 + size])
        ms.append(crop_m)
        ys.append(label)
    return torch.stack(xs), torch.stack(ms), torch.tensor(ys, dtype=labels.dtype, device=labels.device)


@dataclass
class BoxSupervision:
    """What the training loop needs for the lesion loss: the dataset's boxes, the loss weight and,
    for ``--box-crop``, the training window size."""

    dataset: Any  # bonecls.training.shards.ShardDataset (box_masks, boxed)
    negative: int
    weight: float = 1.0
    crop_size: int | None = None

    def __post_init__(self) -> None:
        self._boxed = torch.from_numpy(np.asarray(self.dataset.boxed))

    def masks(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Box masks at the shards' size and the has-boxes flags of a batch's dataset indices."""
        return self.dataset.box_masks(idx), self._boxed[idx.long()]

    def loss(self, model: nn.Module, masks: torch.Tensor, labels: torch.Tensor, has: torch.Tensor):
        return self.weight * lesion_loss(model, masks, labels, has, self.negative)

    def crop(
        self, x: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, has: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch as ``crop_size`` training windows (:func:`box_crops`); unchanged without one."""
        if not self.crop_size:
            return x, masks, labels
        return box_crops(x, masks, labels, has, self.crop_size, self.negative)
