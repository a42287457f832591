"""The decoded radiograph and how raw values become display pixels (windowing, uint8, PNG).

Why a module of its own: the decoders produce a :class:`Decoded` (raw values plus what the source
says about displaying them) and :func:`finish_radiograph` turns it into the same frozen
:class:`Radiograph` for every format, so windowing, the generic warnings and the read-only arrays
are decided in one place. Windowing uses DICOM's ``LINEAR_EXACT`` function for every source, so
``apply_window(rg.raw, *rg.window)`` reproduces ``rg.pixels`` and window/level sliders never jump.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from PIL import Image

from bonecls.errors import ImageError
from bonecls.imaging.limits import (
    MSG_INF,
    MSG_NAN,
    MSG_UNSUPPORTED_LAYOUT,
    WARN_ASPECT,
    WARN_COLOUR,
    WARN_NO_CONTRAST,
    WARN_SMALL,
)

WindowFunction = Literal["LINEAR_EXACT", "LINEAR", "SIGMOID"]

WIDE_MARGIN = 1.1  # a header window this much wider than the data's range is replaced (RG1_UNCR: 1.17)
_SMALL_SIDE = 64  # pixels; a shorter side gets WARN_SMALL
_MAX_ASPECT = 8.0  # long side / short side; above it WARN_ASPECT (a cropped strip?)


@dataclass(frozen=True, eq=False)
class Radiograph:
    """A decoded radiograph: display-ready ``pixels`` plus full-depth ``raw`` and safe metadata.

    The arrays are read-only (a Radiograph may be cached and shared between sessions); copy them
    before modifying. ``original_size`` is the stored (height, width); ``pixels``/``raw`` are after
    EXIF orientation, so they may be transposed relative to it.
    """

    pixels: np.ndarray
    raw: np.ndarray
    source_format: str
    original_size: tuple[int, int]
    bit_depth: int
    photometric: str
    window: tuple[float, float] | None
    pixel_spacing: tuple[float, float] | None
    view: str | None
    body_part: str | None
    modality: str | None
    is_color_source: bool
    sha256: str
    warnings: tuple[str, ...]
    #: "adult" / "paediatric" from the DICOM PatientAge, for the scope gate's age rule; the age itself
    #: is never kept (bonecls.imaging.dicom.age_group), and this group is never logged or exported.
    age_group: str | None = None
    #: the DICOM tag ``pixel_spacing`` came from (PixelSpacing | ImagerPixelSpacing); None without one
    pixel_spacing_source: str | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of ``pixels``."""
        return (int(self.pixels.shape[0]), int(self.pixels.shape[1]))

    @property
    def inverted(self) -> bool:
        """True when raw values are displayed inverted (MONOCHROME1: low values are bone)."""
        return self.photometric == "MONOCHROME1"

    def rewindow(self, center: float, width: float) -> Radiograph:
        """Return a copy rendered with another window (raw units), e.g. from window/level sliders."""
        pixels = apply_window(self.raw, center, width, invert=self.inverted)
        pixels.flags.writeable = False
        return dataclasses.replace(self, pixels=pixels, window=(float(center), float(width)))

    def to_uint8(self) -> np.ndarray:
        """``pixels`` as uint8 (H, W) for display or PNG export."""
        return to_uint8(self.pixels)

    def thumbnail(self, max_side: int = 256) -> np.ndarray:
        """uint8 (h, w) preview whose longer side is at most ``max_side`` (aspect kept, area-averaged)."""
        if max_side < 1:
            raise ValueError("max_side must be at least 1.")
        h, w = self.shape
        img8 = to_uint8(self.pixels)
        scale = max_side / max(h, w)
        if scale >= 1:
            return img8
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        return np.asarray(Image.fromarray(img8).resize(size, Image.Resampling.BOX))


@dataclass
class Decoded:
    """What a format-specific decoder hands to :func:`finish_radiograph` (internal to the package).

    Mutable on purpose: a decoder fills it in steps (the DICOM VOI stage sets ``window`` or
    ``pixels``; every stage appends to ``warnings``).
    """

    raw: np.ndarray  # float32 (H, W)
    original_size: tuple[int, int]
    bit_depth: int
    photometric: str
    type_range: bool = False  # 8-bit display-referred source: window is the type range 0..255
    window: tuple[float, float] | None = None
    function: WindowFunction = "LINEAR_EXACT"
    pixels: np.ndarray | None = None  # set when a VOI LUT already rendered the image
    invert: bool = False
    is_color: bool = False
    pixel_spacing: tuple[float, float] | None = None
    pixel_spacing_source: str | None = None  # the header tag the spacing came from
    view: str | None = None
    body_part: str | None = None
    modality: str | None = None
    age_group: str | None = None
    warnings: list[str] = field(default_factory=list)


def apply_window(
    raw: np.ndarray,
    center: float,
    width: float,
    *,
    invert: bool = False,
    function: WindowFunction = "LINEAR_EXACT",
) -> np.ndarray:
    """Map raw values to float32 [0, 1] with a window (DICOM VOI LUT functions, PS3.3 C.11.2.1.3).

    ``LINEAR_EXACT`` (default): ``(x - c) / w + 0.5``; values at ``c - w/2`` map to 0 and ``c + w/2``
    to 1. ``LINEAR``: the standard's default, a ramp ``w - 1`` wide starting at ``c - 0.5 - (w-1)/2``
    (needs ``w >= 1``). ``SIGMOID``: ``1 / (1 + exp(-4 (x - c) / w))``. ``invert`` flips the result
    (MONOCHROME1). Raises :class:`ImageError` for a non-finite centre or a width that is not positive.
    """
    c, w = float(center), float(width)
    if not (math.isfinite(c) and math.isfinite(w)) or w <= 0:
        raise ImageError(f"The window must have a finite centre and a positive width (got {c:g}, {w:g}).")
    x = np.asarray(raw, dtype=np.float32)
    if function == "LINEAR_EXACT":
        out = np.subtract(x, np.float32(c - w / 2), dtype=np.float32)
        out /= np.float32(w)
    elif function == "LINEAR":
        if w < 1:
            raise ImageError(f"The DICOM LINEAR window needs a width of at least 1 (got {w:g}).")
        if w == 1:
            out = (x > np.float32(c - 0.5)).astype(np.float32)
        else:
            out = np.subtract(x, np.float32(c - 0.5 - (w - 1) / 2), dtype=np.float32)
            out /= np.float32(w - 1)
    elif function == "SIGMOID":
        out = np.subtract(x, np.float32(c), dtype=np.float32)
        out *= np.float32(-4.0 / w)
        np.clip(out, -80.0, 80.0, out=out)  # exp overflow guard
        np.exp(out, out=out)
        out += 1.0
        np.reciprocal(out, out=out)
    else:
        raise ValueError(f"Unknown window function {function!r}.")
    np.clip(out, 0.0, 1.0, out=out)
    if invert:
        np.subtract(np.float32(1.0), out, out=out)
    return out


def default_window(raw: np.ndarray) -> tuple[float, float]:
    """(center, width) spanning the data's min..max, so that min maps to 0 and max to 1.

    A constant image gets width 1 centred on its value. Raises :class:`ImageError` for NaN/inf.
    """
    lo, hi = float(np.min(raw)), float(np.max(raw))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ImageError(MSG_NAN if (math.isnan(lo) or math.isnan(hi)) else MSG_INF)
    return range_window(lo, hi)


def data_window(raw: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.0) -> tuple[float, float]:
    """(center, width) spanning the data's ``low_pct``..``high_pct`` percentiles (a robust auto window).

    Why percentiles and not min..max: a few collimator-edge or marker pixels stretch min..max so far
    that the anatomy sits in a narrow band of grey. Large images are subsampled (at most ~1 M values),
    so this costs milliseconds whatever the size. Falls back to :func:`default_window` when the
    percentiles coincide (a flat or two-valued image).
    """
    arr = np.asarray(raw)
    step = max(1, int(math.sqrt(arr.size / 1_000_000)))
    sample = arr[::step, ::step] if arr.ndim == 2 else arr.ravel()[::step]
    lo, hi = (float(v) for v in np.percentile(sample, [low_pct, high_pct]))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ImageError(MSG_NAN if (math.isnan(lo) or math.isnan(hi)) else MSG_INF)
    if hi <= lo:
        return default_window(arr)
    return range_window(lo, hi)


def window_wider_than_data(window: tuple[float, float], lo: float, hi: float) -> bool:
    """True when a window covers the whole data range with room to spare (at least ``WIDE_MARGIN`` wider):
    no value saturates and part of the grey scale is never used, so the film looks washed out (a header
    written for the detector's full range, not this film). A window that merely equals the data's
    range (C 2048 / W 4096 over 0..4095) is the author's choice and is kept."""
    center, width = float(window[0]), float(window[1])
    return (
        hi > lo and width >= WIDE_MARGIN * (hi - lo) and center - width / 2 <= lo and center + width / 2 >= hi
    )


def range_window(lo: float, hi: float) -> tuple[float, float]:
    """(center, width) mapping ``lo`` to 0 and ``hi`` to 1; width 1 centred on ``lo`` when they are equal."""
    return ((lo + hi) / 2.0, hi - lo) if hi > lo else (lo, 1.0)


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """[0, 1] float pixels to uint8 (rounded, clipped); shape kept."""
    out = np.clip(np.asarray(pixels, dtype=np.float32), 0.0, 1.0)
    out *= 255.0
    out += 0.5
    return out.astype(np.uint8)


def encode_png(image: np.ndarray) -> bytes:
    """A grey (H, W) or RGB (H, W, 3) uint8 array as PNG bytes, encoded for speed, not size.

    OpenCV's encoder at zlib level 1 writes a 1024-px overlay in about half Pillow's time at the same
    level (BENCHMARKS.md, time to answer); the viewer, the report and ``bonecls --cam`` all show or
    save such panels, so their encoding is on the radiologist's wait. One fixed row filter (Up)
    instead of libpng's per-row trial of all five: the trial cost more than the compression itself
    (57 against 33 ms for a 1024-px fracture overlay, BENCHMARKS.md section 1) and its files came out
    larger (778 against 745 KiB), since radiographs and heat maps change smoothly from row to row.
    """
    import cv2

    arr = np.ascontiguousarray(image, dtype=np.uint8)
    if arr.ndim == 3:
        if arr.shape[2] != 3:
            raise ValueError(f"encode_png takes grey or RGB images; got shape {arr.shape}")
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    elif arr.ndim != 2:
        raise ValueError(f"encode_png takes grey or RGB images; got shape {arr.shape}")
    ok, buf = cv2.imencode(
        ".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
    )
    if not ok:  # pragma: no cover - OpenCV fails only on unsupported shapes, checked above
        raise ValueError("OpenCV could not encode the image as PNG")
    return buf.tobytes()


def shrink_array(arr: np.ndarray, factor: int) -> np.ndarray:
    """(H, W) or (H, W, 3) ``arr`` reduced by a whole ``factor``: the mean of each ``factor × factor``
    block (OpenCV's area resize), in the array's own type where OpenCV keeps it (8/16-bit, float),
    so no full-size float copy is made of a large integer image."""
    import cv2

    if factor <= 1:
        return arr
    h, w = arr.shape[:2]
    size = (-(-w // factor), -(-h // factor))
    src = np.ascontiguousarray(arr)
    if src.dtype not in (np.uint8, np.uint16, np.int16, np.float32, np.float64) or not src.dtype.isnative:
        src = src.astype(np.float32)
    return np.asarray(cv2.resize(src, size, interpolation=cv2.INTER_AREA))


def finish_radiograph(d: Decoded, fmt: str, digest: str) -> Radiograph:
    """The frozen Radiograph for a decoder's output: validate values, render pixels, add the warnings
    every format shares (no contrast, small, odd shape, colour), make the arrays read-only."""
    raw = d.raw
    if raw.ndim != 2 or raw.size == 0:
        raise ImageError(MSG_UNSUPPORTED_LAYOUT)
    if raw.dtype != np.float32 or not raw.flags.c_contiguous:
        raw = np.ascontiguousarray(raw, dtype=np.float32)
    lo, hi = float(raw.min()), float(raw.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ImageError(MSG_NAN if bool(np.isnan(raw).any()) else MSG_INF)
    warnings = list(d.warnings)
    window, pixels = d.window, d.pixels
    if pixels is None:
        if window is None:
            window = (127.5, 255.0) if d.type_range else range_window(lo, hi)
        pixels = apply_window(raw, *window, invert=d.invert, function=d.function)
    if hi == lo:
        level = float(pixels.flat[0])
        what = "all black" if level <= 0.02 else "all white" if level >= 0.98 else "one uniform grey level"
        warnings.append(WARN_NO_CONTRAST.format(what=what))
    h, w = raw.shape
    if min(h, w) < _SMALL_SIDE:
        warnings.append(WARN_SMALL.format(w=w, h=h))
    if max(h, w) / min(h, w) > _MAX_ASPECT:
        warnings.append(WARN_ASPECT.format(w=w, h=h))
    if d.is_color:
        warnings.append(WARN_COLOUR)
    raw.flags.writeable = False
    pixels.flags.writeable = False
    return Radiograph(
        pixels=pixels,
        raw=raw,
        source_format=fmt,
        original_size=d.original_size,
        bit_depth=d.bit_depth,
        photometric=d.photometric,
        window=(float(window[0]), float(window[1])) if window is not None else None,
        pixel_spacing=d.pixel_spacing,
        view=d.view,
        body_part=d.body_part,
        modality=d.modality,
        age_group=d.age_group,
        is_color_source=d.is_color,
        sha256=digest,
        warnings=tuple(dict.fromkeys(warnings)),
        pixel_spacing_source=d.pixel_spacing_source if d.pixel_spacing is not None else None,
    )


_LUMA_601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def rgb_to_gray(rgb: np.ndarray, full_scale: float) -> tuple[np.ndarray, bool]:
    """(H, W, 3) -> float32 ITU-R 601 luma and whether the source had real colour.

    Grey stored as RGB (equal channels) keeps its exact values and is not flagged as colour; JPEG
    chroma noise on grey images (a few levels) is not colour either.
    """
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    if np.array_equal(r, g) and np.array_equal(g, b):
        return r.astype(np.float32), False
    gray = np.ascontiguousarray(rgb, dtype=np.float32) @ _LUMA_601
    step = max(1, int(math.sqrt(r.size / 65536)))
    sub = rgb[::step, ::step]
    chroma = sub.max(axis=2).astype(np.float32) - sub.min(axis=2)
    colourful = float(np.mean(chroma > 0.1 * full_scale))
    return gray, colourful > 0.02
