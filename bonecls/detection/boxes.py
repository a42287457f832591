"""Detected boxes and the image handling around the network: BGR conversion, letterbox, NMS.

Pure numpy / OpenCV / torchvision (imported inside the functions that need them), no ultralytics:
both :class:`~bonecls.detection.detector.Detector` (PyTorch through Ultralytics) and
:class:`~bonecls.detection.detector.OnnxDetector` (ONNX Runtime) answer in :class:`DetBox`, and the ONNX
path reproduces Ultralytics' letterbox and post-processing here, exactly, so both draw the same boxes.

``image`` is a :class:`bonecls.imaging.Radiograph` (its ``.pixels``, float32 in [0, 1]) or a numpy array:
float in [0, 1], or uint8 / uint16 grey (H, W) or BGR (H, W, 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bonecls.errors import ImageError

__all__ = [
    "INPUT_TRANSFORMS",
    "PAD_VALUE",
    "DetBox",
    "boxes_on_film",
    "film_at_card_scale",
    "letterbox",
    "postprocess",
    "rank_equalise",
    "to_bgr_uint8",
    "to_detboxes",
]

PAD_VALUE = 114  # Ultralytics' letterbox grey
_MAX_NMS = 30000  # Ultralytics' cap on boxes entering NMS
_MAX_WH = 7680  # Ultralytics' per-class coordinate offset for class-aware NMS
# A card's input_transform -> what it does; None is the image as it is (every detector before v4).
INPUT_TRANSFORMS = {
    "rank": "each pixel replaced by its mid-rank among the image's grey levels (rank_equalise): "
    "every monotone grey-level curve (window, LUT, equalisation) gives the same input",
}


@dataclass(frozen=True)
class DetBox:
    """One detected box in original-image pixel coordinates (x to the right, y down; continuous)."""

    x0: float
    y0: float
    x1: float
    y1: float
    confidence: float
    label: str

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)


def to_bgr_uint8(image: Any) -> np.ndarray:
    """A Radiograph or array as the contiguous uint8 (H, W, 3) BGR image Ultralytics expects."""
    arr = np.asarray(getattr(image, "pixels", image))
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)) or min(arr.shape[:2]) < 2:
        raise ImageError(f"The image has an unsupported shape {arr.shape}; expected a 2-D grey image.")
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == np.uint16:
        out = (arr >> 8).astype(np.uint8)  # what cv2.imread(IMREAD_COLOR) does, as in training
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageError("The image contains non-finite values and cannot be analysed.")
        out = np.rint(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        raise ImageError(f"The image has an unsupported pixel type {arr.dtype}.")
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=2)
    return np.ascontiguousarray(out)


def rank_equalise(bgr: np.ndarray) -> np.ndarray:
    """Each pixel replaced by its mid-rank among the image's pixels, as uint8 BGR (grey in 3 channels).

    Why: a processing chain the detector never saw (a logarithmic display curve, another window, an
    equalisation blend) reorders no pixel, so after this transform it gives the very image a trained
    chain gives; only the local steps (edge enhancement, noise, compression) still differ. Ties share
    the middle of their ranks, so a flat collimation border stays flat. The same function writes the
    training images (:func:`bonecls.detection.train.rank_dataset`) and prepares every image the
    detector reads (:func:`film_at_card_scale`), so training and reading cannot drift apart.
    """
    import cv2

    if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ImageError(f"rank_equalise expects a uint8 (H, W, 3) image, got {bgr.dtype} {bgr.shape}.")
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if not _grey_bgr(bgr) else bgr[..., 0]
    hist = np.bincount(grey.ravel(), minlength=256).astype(np.float64)
    below = np.cumsum(hist) - hist
    lut = np.rint(255.0 * (below + 0.5 * hist) / grey.size).astype(np.uint8)
    out = lut[grey]
    return np.ascontiguousarray(np.repeat(out[..., None], 3, axis=2))


def _grey_bgr(bgr: np.ndarray) -> bool:
    """True when the three channels are equal (a grey film as BGR): read channel 0, not a weighted sum."""
    return bool(np.array_equal(bgr[..., 0], bgr[..., 1]) and np.array_equal(bgr[..., 0], bgr[..., 2]))


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
    """Resize keeping aspect and pad to ``size`` x ``size`` with grey 114, centred (Ultralytics' LetterBox
    with ``auto=False``). Returns ``(padded, (gain_y, gain_x), (pad_x, pad_y))``."""
    import cv2

    h, w = image.shape[:2]
    r = min(size / h, size / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    if (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return image, (new_h / h, new_w / w), (left, top)


def postprocess(
    raw: np.ndarray,
    conf: float,
    iou: float,
    max_det: int,
    gain: tuple[float, float],
    pad: tuple[int, int],
    shape: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ultralytics' detect post-processing on one (4 + nc, N) output: filter, class-aware NMS, unletterbox."""
    import torch
    import torchvision

    pred = np.asarray(raw, dtype=np.float32).T  # (N, 4 + nc): cx, cy, w, h, class scores
    scores_all = pred[:, 4:]
    cls = scores_all.argmax(1)
    scores = scores_all[np.arange(len(pred)), cls]
    keep = scores > conf
    pred, scores, cls = pred[keep], scores[keep], cls[keep]
    if len(pred) > _MAX_NMS:
        top = np.argsort(-scores, kind="stable")[:_MAX_NMS]
        pred, scores, cls = pred[top], scores[top], cls[top]
    xy, wh = pred[:, :2], pred[:, 2:4] / 2
    boxes = np.concatenate([xy - wh, xy + wh], axis=1)
    if len(boxes):
        offset = (cls[:, None] * _MAX_WH).astype(np.float32)
        idx = torchvision.ops.nms(torch.from_numpy(boxes + offset), torch.from_numpy(scores), iou)
        idx = idx[:max_det].numpy()
        boxes, scores, cls = boxes[idx], scores[idx], cls[idx]
    boxes[:, [0, 2]] = (boxes[:, [0, 2]] - pad[0]) / gain[1]
    boxes[:, [1, 3]] = (boxes[:, [1, 3]] - pad[1]) / gain[0]
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, shape[1])
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, shape[0])
    return boxes, scores, cls


def to_detboxes(boxes: Any, scores: Any, cls: Any, names: Sequence[str]) -> list[DetBox]:
    """Parallel (N, 4) xyxy / (N,) score / (N,) class arrays as DetBoxes; an unnamed class keeps its index."""
    out = []
    for b, s, c in zip(np.asarray(boxes), np.asarray(scores), np.asarray(cls), strict=True):
        label = names[int(c)] if 0 <= int(c) < len(names) else str(int(c))
        out.append(DetBox(float(b[0]), float(b[1]), float(b[2]), float(b[3]), float(s), label))
    return out


def film_at_card_scale(image: Any, card: Any, input_size: int) -> tuple[np.ndarray, tuple[float, float]]:
    """The film as the detector reads it: BGR uint8, area-resampled to the card's training scale where
    the film is finer (:func:`bonecls.inference.tiling.shrink_shape`), then the card's
    ``input_transform`` (:data:`INPUT_TRANSFORMS`), and the (row, col) factors of that resample (1, 1
    when none) for :func:`boxes_on_film`. The detector, its scope features and its heat map all read
    the film through here."""
    import cv2

    from bonecls.inference.tiling import shrink_shape

    bgr = to_bgr_uint8(image)
    scale = getattr(card, "scale", None)
    shape = shrink_shape(image, input_size, None if scale is None else float(scale.mm_per_pixel))
    factors = (1.0, 1.0)
    if shape is not None:
        h, w = bgr.shape[:2]
        bgr = np.ascontiguousarray(cv2.resize(bgr, (shape[1], shape[0]), interpolation=cv2.INTER_AREA))
        factors = (shape[0] / h, shape[1] / w)
    if getattr(card, "input_transform", None) == "rank":
        bgr = rank_equalise(bgr)
    return bgr, factors


def boxes_on_film(boxes: Sequence[DetBox], factors: tuple[float, float]) -> list[DetBox]:
    """Boxes found on the resampled film mapped back to the film's pixels (divided by the factors)."""
    if factors == (1.0, 1.0):
        return list(boxes)
    from bonecls.inference.tiling import boxes_to_film

    mapped = boxes_to_film([b.xyxy() for b in boxes], factors)
    return [
        DetBox(*xyxy, confidence=b.confidence, label=b.label) for b, xyxy in zip(boxes, mapped, strict=True)
    ]
