"""Window/level presets for the viewer, per modality and body part.

Why percentiles for CR, DX and plain images: their raw values have no fixed unit (detector counts,
after whatever processing the modality applied; 0..255 for an 8-bit PNG), so a fixed "lung window"
in raw units would fit one machine and wash out the next. The presets here are defined on the
*displayed* brightness of this image's own histogram (after MONOCHROME1 inversion): the lung preset
spreads the dark end (air-filled lung), bone the bright end, soft tissue the middle. CT has
Hounsfield units, so its presets are the usual fixed HU windows.

Values are rounded to whole raw units when the data spans more than :data:`INTEGER_SPAN` (every DICOM
and 8-bit image), so the viewer never shows "15000.00".
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bonecls.imaging.radiograph import data_window, default_window

__all__ = ["AUTO", "FULL", "IMAGE", "INTEGER_SPAN", "as_display_number", "window_presets"]

AUTO = "Auto"
FULL = "Full range"
IMAGE = "As opened"
INTEGER_SPAN = 50.0

#: preset -> (low, high) percentiles of displayed brightness (0 = black on screen)
_BRIGHTNESS_PRESETS: dict[str, tuple[float, float]] = {
    "Lung": (1.0, 60.0),
    "Soft tissue": (15.0, 92.0),
    "Bone": (45.0, 99.7),
}
#: CT presets in Hounsfield units: (center, width)
_CT_PRESETS: dict[str, tuple[float, float]] = {
    "Lung": (-600.0, 1500.0),
    "Soft tissue": (40.0, 400.0),
    "Bone": (400.0, 1800.0),
}
_CHEST_PARTS = {"CHEST", "THORAX", "LUNG", "RIBS", "RIB", "PORT CHEST"}


def as_display_number(value: float, span: float) -> float | int:
    """A whole number when the data's range is wide enough for raw units to be integers."""
    return round(value) if span > INTEGER_SPAN else float(f"{value:.4g}")


def _sample(raw: np.ndarray) -> np.ndarray:
    step = max(1, int(math.sqrt(raw.size / 1_000_000)))
    return np.asarray(raw)[::step, ::step]


def _body_part_presets(body_part: str | None) -> list[str]:
    """Lung only where lungs can be in the film: chest, or an image that does not say (PNG, JPEG)."""
    part = (body_part or "").strip().upper()
    names = ["Soft tissue", "Bone"]
    return (["Lung", *names]) if not part or part in _CHEST_PARTS else names


def window_presets(rg: Any) -> dict[str, tuple[float | int, float | int]]:
    """Preset name -> (center, width) in raw units for this radiograph, in the order to show them.

    Always: "As opened" (the window the model read), "Auto" (1st–99th percentile) and "Full range";
    then lung / soft tissue / bone as the modality and body part allow.
    """
    raw = np.asarray(rg.raw, dtype=np.float32)
    lo, hi = float(raw.min()), float(raw.max())
    span = hi - lo

    def fmt(window: tuple[float, float]) -> tuple[float | int, float | int]:
        c, w = as_display_number(window[0], span), as_display_number(window[1], span)
        return c, (w if w > 0 else as_display_number(max(span, 1.0), span))

    presets: dict[str, tuple[float | int, float | int]] = {}
    if rg.window is not None:
        presets[IMAGE] = fmt(rg.window)
    presets[AUTO] = fmt(data_window(raw))
    presets[FULL] = fmt(default_window(raw))
    if (rg.modality or "").upper() == "CT":
        for name, window in _CT_PRESETS.items():
            presets[name] = fmt(window)
        return presets
    if span <= 0:
        return presets
    sample = _sample(raw)
    for name in _body_part_presets(rg.body_part):
        b_lo, b_hi = _BRIGHTNESS_PRESETS[name]
        # displayed brightness rises with raw value, except for MONOCHROME1 (inverted)
        p_lo, p_hi = (100.0 - b_hi, 100.0 - b_lo) if rg.photometric == "MONOCHROME1" else (b_lo, b_hi)
        v_lo, v_hi = (float(v) for v in np.percentile(sample, [p_lo, p_hi]))
        if v_hi > v_lo:
            presets[name] = fmt(((v_lo + v_hi) / 2.0, v_hi - v_lo))
    return presets
