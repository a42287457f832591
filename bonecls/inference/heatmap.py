"""Heat maps after any CAM: make them safe to show, resize them, colour them and blend them on the image.

Shared by the PyTorch and Keras CAMs and by the app (which re-colours a cached map when the colour
map, opacity or window changes). It needs only OpenCV and numpy: no torch, so the app's colour-map
menu and overlays never import a deep-learning framework.
"""

from __future__ import annotations

import cv2
import numpy as np

from bonecls.errors import ExplainError

__all__ = ["COLORMAPS", "EMPTY", "cv2_colormap", "overlay", "resize_heatmap", "sanitize_heatmap"]

COLORMAPS: dict[str, int] = {
    "jet": cv2.COLORMAP_JET,
    "turbo": cv2.COLORMAP_TURBO,
    "inferno": cv2.COLORMAP_INFERNO,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "hot": cv2.COLORMAP_HOT,
    "bone": cv2.COLORMAP_BONE,
}
#: A heat map whose maximum is at or below this is empty (nothing to normalise, nothing to show).
EMPTY = 1e-6


def cv2_colormap(name: str) -> int:
    """The OpenCV colour-map code for a name (``ExplainError`` listing the names if unknown)."""
    try:
        return COLORMAPS[name]
    except (KeyError, TypeError):
        raise ExplainError(
            f"Unknown colour map '{name}'. Available colour maps: {', '.join(COLORMAPS)}."
        ) from None


def sanitize_heatmap(
    cam: np.ndarray, notes: list[str], layer_shape: tuple[int, ...] | None = None
) -> np.ndarray:
    """A raw CAM made safe to show: finite, >= 0 and scaled to a maximum of 1 (all zeros if empty).

    Why a map was repaired or is empty is appended to ``notes`` as a sentence for the reader;
    ``layer_shape`` (N, C, h, w) of the target layer lets it say when the layer is too small to localise.
    """
    cam = np.asarray(cam, dtype=np.float32)
    finite = bool(np.isfinite(cam).all())
    if not finite:
        notes.append(
            "The heat map had non-finite values (vanishing or exploding gradients); they were set to 0."
        )
        cam = np.nan_to_num(cam, nan=0.0, posinf=0.0, neginf=0.0)
    cam = np.clip(cam, 0.0, None)
    hi = float(cam.max()) if cam.size else 0.0
    if hi <= EMPTY:
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
    return (hm / hi).astype(np.float32) if hi > EMPTY else np.zeros((h, w), np.float32)


_RGB_LUTS: dict[str, np.ndarray] = {}


def _rgb_lut(name: str) -> np.ndarray:
    """OpenCV colour map as an RGB (not BGR) 256x1x3 lookup table for ``cv2.applyColorMap``."""
    lut = _RGB_LUTS.get(name)
    if lut is None:
        ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
        lut = _RGB_LUTS[name] = np.ascontiguousarray(cv2.applyColorMap(ramp, cv2_colormap(name))[:, :, ::-1])
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
