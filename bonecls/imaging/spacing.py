"""Pixel spacing a reader may trust: the sanity rules for PixelSpacing / ImagerPixelSpacing.

Headers lie (RG1_UNCR's PixelSpacing is ``0.0\\0.0``), and a wrong spacing would resample a film to a
scale the model never saw, so a spacing is used only when both values are finite and between
:data:`MIN_SPACING_MM` and :data:`MAX_SPACING_MM` (projection radiographs lie between about 0.05 and
1 mm per pixel; a whole chest at 43 cm over 200 pixels is 2 mm). PixelSpacing (the spacing in the
patient, calibrated or not) is preferred; ImagerPixelSpacing (at the detector face) is the fallback.
A value that is present but not trusted is reported with one warning sentence, never silently dropped.
Imports no model code: the DICOM decoder and the predictor's scale step both call it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "MAX_SPACING_MM",
    "MIN_SPACING_MM",
    "SPACING_TAGS",
    "WARN_SPACING_UNTRUSTED",
    "spacing_problem",
    "trusted_spacing",
]

MIN_SPACING_MM = 0.02
MAX_SPACING_MM = 2.0
#: The header attributes read for a spacing, in order of preference.
SPACING_TAGS = ("PixelSpacing", "ImagerPixelSpacing")

WARN_SPACING_UNTRUSTED = (
    "The DICOM header's {tag} ({value}) is not a plausible pixel spacing ({why}), so it was not used "
    "to set the film's scale."
)


def spacing_problem(value: Sequence[float] | None) -> str | None:
    """Why ``value`` (row, col mm) is not a usable spacing, as a short phrase; None when it is usable."""
    if value is None:
        return "absent"
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        return "not a number"
    if len(numbers) != 2:
        return f"{len(numbers)} values where 2 are expected"
    if not all(math.isfinite(v) for v in numbers):
        return "not a finite number"
    if any(v <= 0 for v in numbers):
        return "zero or negative"
    if any(v < MIN_SPACING_MM for v in numbers):
        return f"below {MIN_SPACING_MM} mm"
    if any(v > MAX_SPACING_MM for v in numbers):
        return f"above {MAX_SPACING_MM:g} mm"
    return None


def trusted_spacing(
    candidates: Sequence[tuple[str, Sequence[float] | None]],
) -> tuple[tuple[float, float] | None, str | None, list[str]]:
    """The first trusted spacing among ``(tag, value)`` pairs (in preference order).

    Returns ``(spacing, tag, warnings)``: ``spacing`` (row, col mm) and the tag it came from, or
    ``(None, None, ...)``; a warning sentence for each present value that was not trusted.
    """
    warnings: list[str] = []
    for tag, value in candidates:
        if value is None:
            continue
        why = spacing_problem(value)
        if why is None:
            row, col = (float(v) for v in value)
            return (row, col), tag, warnings
        shown = "\\".join(str(v) for v in value) if isinstance(value, Sequence) else str(value)
        warnings.append(WARN_SPACING_UNTRUSTED.format(tag=tag, value=shown[:40], why=why))
    return None, None, warnings
