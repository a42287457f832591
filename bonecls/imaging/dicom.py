"""One entry point that turns uploaded bytes into a display-ready radiograph.

Why this module exists: hospitals produce radiographs as DICOM (compressed or not, MONOCHROME1 or 2,
with or without a preamble), as 16-bit PNG/TIFF exports from viewers, and as JPEG photos or screenshots.
Every caller (app, CLI, batch worklist, training readers) must see the *same* pixels for the same
file, and every unreadable file must fail with one sentence a clinician can act on instead of a stack
trace. So all image I/O goes through :func:`load_radiograph`, which

* picks the decoder from the magic bytes (never the file name or MIME type),
* checks size limits from the header *before* any pixel is decoded (decompression bombs),
* keeps full bit depth in :attr:`Radiograph.raw` and renders :attr:`Radiograph.pixels` in [0, 1] with
  bone bright (rescale, VOI LUT / window, MONOCHROME1 inversion, EXIF orientation),
* copies no patient identifier onto the result and never writes the bytes to disk,
* converts every decoder failure into :class:`~bonecls.errors.ImageError`.

Windowing uses DICOM's ``LINEAR_EXACT`` function (PS3.3 C.11.2.1.3.2), ``y = (x - c) / w + 0.5``
clipped to [0, 1], for every source, so that ``apply_window(rg.raw, *rg.window)`` reproduces
``rg.pixels`` and window/level sliders never jump. It differs from the default DICOM ``LINEAR``
function (whose ramp is ``w - 1`` wide and shifted by half a stored value) by less than one 8-bit
display level for widths above 255; ``apply_window(..., function="LINEAR")`` gives the standard one
and ``SIGMOID`` is honoured when a DICOM asks for it.
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import io
import math
import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Literal

import numpy as np
import pydicom
import pydicom.errors
import pydicom.uid
from PIL import (
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
)
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder

from bonecls.errors import ImageError

try:  # WebP support is optional in Pillow builds.
    from PIL import WebPImagePlugin
except ImportError:  # pragma: no cover - depends on the Pillow build
    WebPImagePlugin = None  # type: ignore[assignment]

__all__ = [
    "SUPPORTED_FORMATS",
    "Limits",
    "Radiograph",
    "apply_window",
    "default_window",
    "encode_png",
    "load_radiograph",
    "sniff_format",
    "to_uint8",
]

SUPPORTED_FORMATS: tuple[str, ...] = ("dicom", "png", "jpeg", "tiff", "bmp", "gif", "webp")

WindowFunction = Literal["LINEAR_EXACT", "LINEAR", "SIGMOID"]

# --- user-facing sentences (tests and other modules match on these) ---------------------------------
MSG_EMPTY = "The file is empty; choose a radiograph image (DICOM, PNG, JPEG, TIFF or BMP)."
MSG_DAMAGED = "The file is truncated or damaged; export it again from the PACS/viewer."
MSG_UNRECOGNISED = (
    "The file is not a recognised image format; upload the radiograph as DICOM, PNG, JPEG, TIFF or BMP."
)
MSG_NO_PIXELS = (
    "This DICOM has no pixel data (it may be a structured report or a presentation state); "
    "upload the image series instead."
)
MSG_PIXEL_MISMATCH = (
    "The DICOM pixel data does not match its header (rows × columns × frames × bits); "
    "the file is damaged or was edited, so export it again from the PACS."
)
MSG_DICOM_UNDECODABLE = (
    "The DICOM pixel data could not be decoded; the file is damaged or uses an unusual variant of its "
    "compression, so export it again (uncompressed if possible)."
)
MSG_NAN = "The image contains invalid (NaN) pixel values; export it again from the viewer."
MSG_INF = "The image contains invalid (infinite) pixel values; export it again from the viewer."
MSG_MEMORY = "The image is too large to decode in the memory available; export a smaller version."
MSG_UNSUPPORTED_LAYOUT = "The image uses a pixel layout that cannot be shown; export it as PNG or DICOM."
WARN_NO_CONTRAST = "The image is {what}; it carries no contrast to read."
WARN_TRANSPARENT = "The image has transparent areas; they are shown as black."
WARN_COLOUR = (
    "The image is in colour (a photograph or screenshot?); the models were trained on grey-scale "
    "radiographs, so results may be unreliable."
)
WARN_SMALL = "The image is only {w}×{h} pixels, too small for a reliable reading."
WARN_ASPECT = "The image is {w}×{h} pixels, an unusual shape for a radiograph (a cropped strip?)."
WARN_EXIF = "The EXIF orientation could not be read; the image is shown as stored."
WARN_BAD_WINDOW = "The DICOM window centre/width is invalid and was ignored; the full range is shown."
WARN_BAD_LUT = "The DICOM VOI LUT is invalid and was ignored; the window or full range is shown."
WARN_BAD_RESCALE = "The DICOM rescale slope/intercept is invalid and was ignored."

_SMALL_SIDE = 64
_MAX_ASPECT = 8.0

# Exceptions that decoders (Pillow, pydicom, pylibjpeg, zlib, struct) raise on hostile or damaged
# input. They are converted into ImageError at the decoding boundary; nothing else is caught.
_DECODER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # includes UnicodeError
    OSError,
    struct.error,
    AttributeError,
    LookupError,  # KeyError, IndexError, unknown codecs
    NotImplementedError,
    RuntimeError,  # includes RecursionError (deeply nested sequences)
    zlib.error,
    EOFError,
    SyntaxError,
    TypeError,
    ArithmeticError,  # OverflowError, ZeroDivisionError
    BufferError,
    AssertionError,
    Image.DecompressionBombError,
    pydicom.errors.InvalidDicomError,
    pydicom.errors.BytesLengthException,
)


@dataclass(frozen=True)
class Limits:
    """Caps checked from the header before any pixel is decoded."""

    max_bytes: int = 256 * 2**20  # upload size cap
    max_pixels: int = 100_000_000  # rows*cols cap (decompression bombs)
    max_side: int = 65_535

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_pixels", "max_side"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive integer, not {value!r}.")


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
class _Decoded:
    """What a format-specific decoder hands to :func:`_finish` (internal)."""

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
    view: str | None = None
    body_part: str | None = None
    modality: str | None = None
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------
# Public helpers
# ---------------------------------------------------------------------------------------------------


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
    return _range_window(lo, hi)


def _range_window(lo: float, hi: float) -> tuple[float, float]:
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


_DICOM_VRS = frozenset(
    (
        b"AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM "
        b"UC UI UL UN UR US UT UV"
    ).split()
)
_BMP_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})


def sniff_format(data: bytes) -> str | None:
    """Image format from the leading bytes (never the name or MIME type), or None if unknown.

    Returns one of ``SUPPORTED_FORMATS``. A DICOM is recognised by "DICM" at offset 128, or, without
    the 128-byte preamble, by "DICM" at offset 0 or a first element in group 0002/0008 whose VR or
    length is plausible, so text, HTML or PDF never pass for DICOM.
    """
    head = bytes(data[:136])
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:2] == b"BM" and len(head) >= 18 and struct.unpack_from("<I", head, 14)[0] in _BMP_HEADER_SIZES:
        return "bmp"
    if _looks_like_bare_dicom(head):
        return "dicom"
    return None


def _looks_like_bare_dicom(head: bytes) -> bool:
    """A DICOM stream without the preamble: starts with a group 0002 or 0008 element."""
    if head[:4] == b"DICM":
        head = head[4:]
    if len(head) < 8:
        return False
    group, _element = struct.unpack_from("<HH", head)
    if group not in (0x0002, 0x0008):
        return False
    if head[4:6] in _DICOM_VRS:  # explicit VR
        return True
    if group == 0x0002:  # file meta information is always explicit VR
        return False
    length = struct.unpack_from("<I", head, 4)[0]  # implicit VR: first elements are short
    return length == 0xFFFFFFFF or (length <= 1024 and length % 2 == 0)


# ---------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------


def load_radiograph(
    source: bytes | str | os.PathLike | BinaryIO, *, limits: Limits | None = None
) -> Radiograph:
    """Decode a radiograph from bytes, a path or a binary file object.

    The format comes from the bytes; sizes are checked against ``limits`` before decoding. Raises
    :class:`ImageError` (a sentence for the user) for anything that cannot be shown as a radiograph.
    Non-fatal issues (multi-frame, colour, no contrast, ...) are listed in ``Radiograph.warnings``.
    """
    limits = limits or Limits()
    data = _read_source(source, limits)
    if not data:
        raise ImageError(MSG_EMPTY)
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageError(_unrecognised_message(data))
    digest = hashlib.sha256(data).hexdigest()
    try:
        decoded = _decode_dicom(data, limits) if fmt == "dicom" else _decode_pil(data, fmt, limits)
        return _finish(decoded, fmt, digest)
    except MemoryError as exc:
        raise ImageError(MSG_MEMORY) from exc


def _read_source(source: bytes | str | os.PathLike | BinaryIO, limits: Limits) -> bytes:
    """The input bytes, refusing more than ``limits.max_bytes`` (path names are never echoed)."""
    if isinstance(source, bytes):
        data = source
    elif isinstance(source, (bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        try:
            with open(os.fspath(source), "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                data = b"" if size > limits.max_bytes else fh.read(limits.max_bytes + 1)
        except FileNotFoundError as exc:
            raise ImageError("The image file was not found; check the path.") from exc
        except IsADirectoryError as exc:
            raise ImageError("The path is a folder, not an image file; choose a file inside it.") from exc
        except PermissionError as exc:
            raise ImageError("The image file cannot be read (permission denied).") from exc
        except (OSError, ValueError) as exc:
            raise ImageError("The image file cannot be read; check the path and the disk.") from exc
        if size > limits.max_bytes:
            raise ImageError(_too_big_message(size, limits))
    elif hasattr(source, "read"):
        try:
            if getattr(source, "seekable", lambda: False)():
                source.seek(0)
            data = source.read(limits.max_bytes + 1)
        except (OSError, ValueError) as exc:
            raise ImageError("The uploaded file could not be read; upload it again.") from exc
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        if not isinstance(data, bytes):
            raise ImageError("The file object returned text, not bytes; open it in binary mode ('rb').")
    else:
        raise ImageError(
            f"Cannot read an image from a {type(source).__name__}; pass bytes, a path or a file."
        )
    if len(data) > limits.max_bytes:
        raise ImageError(_too_big_message(len(data), limits))
    return data


def _too_big_message(size: int, limits: Limits) -> str:
    return f"The file is {size / 2**20:.1f} MB, above the limit of {limits.max_bytes / 2**20:.0f} MB."


def _unrecognised_message(data: bytes) -> str:
    head = bytes(data[:1024])
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    kind = None
    if head.startswith(b"%PDF"):
        kind = "a PDF document"
    elif head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        kind = "a ZIP archive (unzip it and upload the images inside)"
    elif stripped.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        kind = "a web page (HTML)"
    elif head.startswith(b"\x00\x00\x00\x0cjP  ") or head.startswith(b"\xff\x4f\xff\x51"):
        kind = "a JPEG 2000 file (export it as DICOM, PNG or TIFF)"
    elif head and _is_text(head):
        kind = "a text file"
    if kind:
        return f"This file is {kind}, not an image; upload the radiograph as DICOM, PNG, JPEG, TIFF or BMP."
    return MSG_UNRECOGNISED


def _is_text(head: bytes) -> bool:
    try:  # incremental: a multi-byte character cut at the end of ``head`` is not an error
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\t\r\n\f" for ch in text)


def _check_size(width: int, height: int, limits: Limits) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(
            f"The image header declares an empty size ({width}×{height} pixels), so the file is damaged; "
            "export it again from the PACS/viewer."
        )
    if width * height > limits.max_pixels:
        raise ImageError(
            f"Image is {width}×{height} pixels, above the limit of {limits.max_pixels:,} pixels."
        )
    if max(width, height) > limits.max_side:
        raise ImageError(
            f"Image is {width}×{height} pixels; a side is above the limit of {limits.max_side:,} pixels."
        )


def _finish(d: _Decoded, fmt: str, digest: str) -> Radiograph:
    """Validate values, render pixels, add generic warnings, freeze arrays."""
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
            window = (127.5, 255.0) if d.type_range else _range_window(lo, hi)
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
        is_color_source=d.is_color,
        sha256=digest,
        warnings=tuple(dict.fromkeys(warnings)),
    )


# ---------------------------------------------------------------------------------------------------
# Colour handling shared by Pillow and DICOM sources
# ---------------------------------------------------------------------------------------------------

_LUMA_601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _rgb_to_gray(rgb: np.ndarray, full_scale: float) -> tuple[np.ndarray, bool]:
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


# ---------------------------------------------------------------------------------------------------
# Pillow formats
# ---------------------------------------------------------------------------------------------------

# The plugin for the sniffed format is constructed directly (as Image.open does internally), so the
# decoder never guesses another format and Pillow's process-wide MAX_IMAGE_PIXELS check is not our
# guard: Limits are checked on img.size before anything is decoded. DecompressionBombError raised
# later (GIF frames, TIFF tiles) is still caught.
_PIL_FACTORIES = {
    "png": PngImagePlugin.PngImageFile,
    "jpeg": JpegImagePlugin.jpeg_factory,
    "tiff": TiffImagePlugin.TiffImageFile,
    "bmp": BmpImagePlugin.BmpImageFile,
    "gif": GifImagePlugin.GifImageFile,
}
if WebPImagePlugin is not None:
    _PIL_FACTORIES["webp"] = WebPImagePlugin.WebPImageFile

_MULTI_FRAME_LABEL = {
    "tiff": ("Multi-page TIFF", "page"),
    "gif": ("Animated GIF", "frame"),
    "png": ("Animated PNG", "frame"),
    "webp": ("Animated WebP", "frame"),
    "jpeg": ("Multi-picture JPEG (MPO)", "picture"),
}


def _bomb_message(exc: BaseException, size: tuple[int, int] | None, limits: Limits) -> str:
    """Sentence for Pillow's DecompressionBombError ("Image size (N pixels) exceeds limit of M ...")."""
    numbers = [int(n) for n in re.findall(r"\d+", str(exc))]
    if len(numbers) < 2:
        return f"The image is above the limit of {limits.max_pixels:,} pixels."
    pixels, limit = numbers[0], (limits.max_pixels if numbers[0] > limits.max_pixels else numbers[1])
    if size is not None and pixels == size[0] * size[1]:
        return f"Image is {size[0]}×{size[1]} pixels, above the limit of {limit:,} pixels."
    return f"Image is {pixels:,} pixels, above the limit of {limit:,} pixels."


def _decode_pil(data: bytes, fmt: str, limits: Limits) -> _Decoded:
    factory = _PIL_FACTORIES.get(fmt)
    if factory is None:
        raise ImageError(f"{fmt.upper()} images cannot be read by this installation; export as PNG.")
    img: Image.Image | None = None
    try:
        img = factory(io.BytesIO(data))
        width, height = img.size
        _check_size(width, height, limits)
        img.load()
    except Image.DecompressionBombError as exc:
        raise ImageError(_bomb_message(exc, img.size if img is not None else None, limits)) from exc
    except ImageError:
        raise
    except _DECODER_ERRORS as exc:
        raise ImageError(MSG_DAMAGED) from exc
    warnings: list[str] = []
    oriented = img
    try:
        if img.getexif().get(0x0112, 1) in range(2, 9):  # transposing copies: only when needed
            oriented = ImageOps.exif_transpose(img) or img
    except _DECODER_ERRORS:
        warnings.append(WARN_EXIF)
    try:
        decoded = _pil_to_gray(oriented, fmt, warnings)
    except ImageError:
        raise
    except _DECODER_ERRORS as exc:
        raise ImageError(MSG_DAMAGED) from exc
    decoded.original_size = (height, width)
    frames = _frame_count(img, fmt, data)
    if frames > 1:
        label, unit = _MULTI_FRAME_LABEL.get(fmt, (f"Multi-frame {fmt.upper()}", "frame"))
        total = f"more than {_MAX_FRAMES_COUNTED}" if frames > _MAX_FRAMES_COUNTED else str(frames)
        decoded.warnings.append(f"{label}: showing {unit} 1 of {total}.")
    return decoded


_MAX_FRAMES_COUNTED = 1000


def _frame_count(img: Image.Image, fmt: str, data: bytes) -> int:
    """Number of frames/pages (``_MAX_FRAMES_COUNTED + 1`` meaning "more"), 1 if unknown.

    Counting is bounded: Pillow's ``n_frames`` walks every TIFF IFD or GIF block, which a hostile
    file can make take minutes. PNG, WebP and MPO declare their count in a header.
    """
    count = 1
    try:
        if fmt == "gif":
            return _gif_frame_count(data)
        if fmt == "tiff":
            while count <= _MAX_FRAMES_COUNTED:
                img.seek(count)  # reads the next IFD only, no pixel data
                count += 1
            return count
        return max(1, int(getattr(img, "n_frames", 1)))
    except EOFError:
        return count
    except _DECODER_ERRORS:
        return 1


def _gif_frame_count(data: bytes) -> int:
    """Count GIF image descriptors, stopping after ``_MAX_FRAMES_COUNTED + 1`` (no decoding)."""
    pos = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)  # header + global colour table
    count = 0
    while pos < len(data) and count <= _MAX_FRAMES_COUNTED:
        block = data[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            pos += 2
        elif block == 0x2C:  # image descriptor, optional local colour table, LZW code size
            count += 1
            flags = data[pos + 9]
            pos += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1
        else:
            break
        while pos < len(data) and data[pos]:  # skip data sub-blocks
            pos += data[pos] + 1
        pos += 1
    return max(count, 1)


def _pil_to_gray(img: Image.Image, fmt: str, warnings: list[str]) -> _Decoded:
    """Pillow image (already loaded and oriented) -> float32 grey with full bit depth."""
    mode = img.mode
    source_mode = mode
    size = (img.height, img.width)
    if mode.startswith("I;16"):  # I;16, I;16L, I;16B, I;16N, I;16S
        arr = np.asarray(img if mode in ("I;16", "I;16L", "I;16B", "I;16N") else img.convert("I"))
        return _Decoded(arr.astype(np.float32), size, 16, mode, warnings=warnings)
    if mode == "I":
        arr = np.asarray(img)
        bits = 16 if fmt == "png" or (arr.size and int(arr.min()) >= 0 and int(arr.max()) < 65536) else 32
        return _Decoded(arr.astype(np.float32), size, bits, mode, warnings=warnings)
    if mode == "F":
        return _Decoded(np.asarray(img).astype(np.float32), size, 32, mode, warnings=warnings)
    if mode in ("1", "L"):
        arr = np.asarray(img.convert("L") if mode == "1" else img)
        return _Decoded(
            arr.astype(np.float32), size, 1 if mode == "1" else 8, mode, type_range=True, warnings=warnings
        )
    if mode in ("LA", "La"):
        la = np.asarray(img.convert("LA"))
        gray = la[..., 0].astype(np.float32)
        alpha = la[..., 1]
        if int(alpha.min()) < 255:
            gray *= alpha.astype(np.float32) / 255.0
            warnings.append(WARN_TRANSPARENT)
        return _Decoded(gray, size, 8, mode, type_range=True, warnings=warnings)
    has_alpha = mode in ("RGBA", "RGBa", "PA", "LA") or (mode == "P" and "transparency" in img.info)
    try:
        rgb_img = img.convert("RGBA" if has_alpha else "RGB")
    except ValueError as exc:
        raise ImageError(MSG_UNSUPPORTED_LAYOUT) from exc
    arr = np.asarray(rgb_img)
    rgb: np.ndarray = arr[..., :3]
    if has_alpha:
        alpha = arr[..., 3]
        if int(alpha.min()) < 255:
            rgb = rgb.astype(np.float32) * (alpha.astype(np.float32) / 255.0)[..., None]
            warnings.append(WARN_TRANSPARENT)
    gray, is_color = _rgb_to_gray(rgb, 255.0)
    return _Decoded(gray, size, 8, source_mode, type_range=True, is_color=is_color, warnings=warnings)


# ---------------------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------------------

_TS_NAMES = {
    "1.2.840.10008.1.2.4.110": "JPEG XL Lossless",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
    "1.2.840.10008.1.2.8.1": "Deflated Image Frame Compression",
}
_DEFLATED_UID = b"1.2.840.10008.1.2.1.99"
_CS_RE = re.compile(r"^[A-Z0-9 _]{1,16}$")
_UID_RE = re.compile(r"^[0-9.]{1,64}$")
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())


def _decode_dicom(data: bytes, limits: Limits) -> _Decoded:
    has_preamble = data[128:132] == b"DICM"
    payload = data if has_preamble else data[4:] if data[:4] == b"DICM" else data
    if _DEFLATED_UID in payload[:4096]:
        _check_deflated_size(payload, has_preamble, limits)
    try:
        ds = pydicom.dcmread(io.BytesIO(payload), force=not has_preamble)
    except _DECODER_ERRORS as exc:
        raise ImageError(MSG_DAMAGED) from exc
    try:
        return _dicom_to_decoded(ds, limits)
    except ImageError:
        raise
    except _DECODER_ERRORS as exc:
        raise ImageError(MSG_DAMAGED) from exc


def _check_deflated_size(payload: bytes, has_preamble: bool, limits: Limits) -> None:
    """Bound the inflated size of a Deflated Explicit VR dataset before pydicom inflates it whole."""
    pos = 132 if has_preamble else 0
    try:
        while pos + 8 <= len(payload):
            group = struct.unpack_from("<H", payload, pos)[0]
            if group != 0x0002:
                break
            if payload[pos + 4 : pos + 6] in _LONG_VRS:
                length = struct.unpack_from("<I", payload, pos + 8)[0]
                pos += 12 + length
            else:
                length = struct.unpack_from("<H", payload, pos + 6)[0]
                pos += 8 + length
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        total = 0
        chunk = memoryview(payload)[pos:]
        while chunk:
            total += len(inflater.decompress(chunk, 2**24))
            if total > limits.max_bytes:
                raise ImageError(
                    f"The compressed DICOM expands above the limit of {limits.max_bytes / 2**20:.0f} MB."
                )
            chunk = memoryview(inflater.unconsumed_tail)
            if inflater.eof:
                break
    except (struct.error, zlib.error) as exc:
        raise ImageError(MSG_DAMAGED) from exc


def _dicom_to_decoded(ds: pydicom.Dataset, limits: Limits) -> _Decoded:
    pixel_keyword = next(
        (k for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData") if k in ds), None
    )
    if pixel_keyword is None:
        # pydicom drops what it could not finish reading: an image object (or an empty dataset)
        # without pixel data is a truncated file; other objects (SR, PR, KO) simply have none.
        file_meta = getattr(ds, "file_meta", None) or {}
        sop_classes = (ds.get("SOPClassUID"), file_meta.get("MediaStorageSOPClassUID"))
        is_image = any("Image Storage" in pydicom.uid.UID(str(uid or "")).name for uid in sop_classes)
        if len(ds) == 0 or "Rows" in ds or is_image:
            raise ImageError(MSG_DAMAGED)
        raise ImageError(MSG_NO_PIXELS)
    transfer_syntax = _transfer_syntax(ds)
    _require_decoder(transfer_syntax)

    for keyword in ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation"):
        if ds.get(keyword) in (None, ""):
            raise ImageError(
                f"This DICOM lacks its {keyword} attribute, so the file is damaged; "
                "export it again from the PACS."
            )
    rows, columns = int(ds.Rows), int(ds.Columns)
    _check_size(columns, rows, limits)
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames < 1:
        raise ImageError(MSG_PIXEL_MISMATCH)
    photometric = str(ds.PhotometricInterpretation).strip().upper()
    if pixel_keyword == "PixelData" and not transfer_syntax.is_compressed:
        _check_native_length(ds, rows, columns, frames, photometric)
    elif pixel_keyword == "PixelData":
        _check_codestream_size(ds.PixelData, transfer_syntax, rows, columns)

    try:
        ds.pixel_array_options(index=0)
        arr = ds.pixel_array
    except MemoryError:
        raise
    except _DECODER_ERRORS as exc:
        raise ImageError(MSG_DICOM_UNDECODABLE) from exc
    except BaseException as exc:  # a Rust decoder's panic (pyo3 PanicException) is a BaseException
        if type(exc).__name__ != "PanicException":
            raise
        raise ImageError(MSG_DICOM_UNDECODABLE) from exc
    if arr.ndim == 3 and arr.shape[0] == 1 and arr.shape[1:] == (rows, columns):
        arr = arr[0]
    warnings: list[str] = []
    if frames > 1:
        warnings.append(f"Multi-frame DICOM: showing frame 1 of {frames}.")
    if arr.shape[:2] != (rows, columns):
        raise ImageError(MSG_PIXEL_MISMATCH)

    bit_depth = int(ds.get("BitsStored") or ds.BitsAllocated)
    meta = {
        "pixel_spacing": _pixel_spacing(ds),
        "view": _code_string(ds, "ViewPosition"),
        "body_part": _code_string(ds, "BodyPartExamined"),
        "modality": _code_string(ds, "Modality"),
    }
    safe_photometric = photometric if _CS_RE.match(photometric) else "UNKNOWN"
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    if arr.ndim == 3:
        if arr.shape[2] != 3:
            raise ImageError(MSG_UNSUPPORTED_LAYOUT)
        bits = 8 if arr.dtype.itemsize == 1 else bit_depth
        gray, is_color = _rgb_to_gray(arr, float(2**bits - 1))
        return _Decoded(
            gray,
            (rows, columns),
            bit_depth,
            safe_photometric,
            type_range=arr.dtype == np.uint8,
            is_color=is_color,
            warnings=warnings,
            **meta,
        )
    if arr.ndim != 2:
        raise ImageError(MSG_UNSUPPORTED_LAYOUT)

    raw = _modality_values(arr, ds, warnings)
    decoded = _Decoded(
        raw,
        (rows, columns),
        bit_depth,
        safe_photometric,
        invert=photometric == "MONOCHROME1",
        warnings=warnings,
        **meta,
    )
    _apply_voi(decoded, ds)
    return decoded


def _transfer_syntax(ds: pydicom.Dataset) -> pydicom.uid.UID:
    """The dataset's transfer syntax; inferred from the encoding for bare datasets without meta."""
    file_meta = getattr(ds, "file_meta", None)
    uid = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if uid:
        return pydicom.uid.UID(str(uid).strip("\x00 "))
    implicit, little = ds.original_encoding[:2]
    if "PixelData" in ds and ds["PixelData"].is_undefined_length:
        raise ImageError(
            "This DICOM has compressed pixel data but no transfer syntax, so its compression is unknown; "
            "export it again from the PACS."
        )
    if little is False:
        uid = pydicom.uid.ExplicitVRBigEndian
    else:
        uid = pydicom.uid.ImplicitVRLittleEndian if implicit else pydicom.uid.ExplicitVRLittleEndian
    if file_meta is None:
        ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid
    return uid


def _require_decoder(uid: pydicom.uid.UID) -> None:
    """Raise ImageError naming the compression when no installed plugin can decode ``uid``."""
    try:
        decoder = get_decoder(uid)
        missing = None if decoder.is_available else decoder.missing_dependencies
    except NotImplementedError:
        missing = []
    if missing is None:
        return
    shown_uid = str(uid) if _UID_RE.match(str(uid)) else "?"
    name = _TS_NAMES.get(str(uid)) or (uid.name if uid.is_transfer_syntax else "")
    if not name or name == str(uid):
        name = "an unrecognised or private transfer syntax"
    advice = (
        f"install a decoder for it ({'; '.join(missing)}) or ask for an uncompressed export"
        if missing
        else "this format is not supported, so ask the PACS for an uncompressed or JPEG 2000 export"
    )
    raise ImageError(
        f"This DICOM is compressed with {name} ({shown_uid}), which no installed decoder can read; {advice}."
    )


def _check_native_length(ds: pydicom.Dataset, rows: int, columns: int, frames: int, photometric: str) -> None:
    samples = int(ds.get("SamplesPerPixel") or 1)
    bits = int(ds.BitsAllocated)
    if bits not in (1, 8, 16, 32, 64) or samples not in (1, 3):
        raise ImageError(MSG_PIXEL_MISMATCH)
    if photometric == "YBR_FULL_422":
        samples = 2  # two chroma values shared by each pair of pixels
    expected = math.ceil(rows * columns * samples * frames * bits / 8)
    actual = len(ds.PixelData)
    if not expected <= actual <= expected + 1:  # one byte of padding to an even length
        raise ImageError(MSG_PIXEL_MISMATCH)


_JPEG_SYNTAXES = frozenset(
    {
        pydicom.uid.JPEGBaseline8Bit,
        pydicom.uid.JPEGExtended12Bit,
        pydicom.uid.JPEGLossless,
        pydicom.uid.JPEGLosslessSV1,
        pydicom.uid.JPEGLSLossless,
        pydicom.uid.JPEGLSNearLossless,
    }
)
_J2K_SYNTAXES = frozenset(
    {
        pydicom.uid.JPEG2000Lossless,
        pydicom.uid.JPEG2000,
        pydicom.uid.HTJ2KLossless,
        pydicom.uid.HTJ2KLosslessRPCL,
        pydicom.uid.HTJ2K,
    }
)
# SOF0-3, 5-7, 9-11, 13-15 and JPEG-LS SOF55: marker, length, precision, height, width
_JPEG_SOF = frozenset({*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC}) | {0xF7}


def _check_codestream_size(pixel_data: bytes, uid: pydicom.uid.UID, rows: int, columns: int) -> None:
    """Compare the size declared inside the first JPEG/JPEG 2000 frame with Rows/Columns *before*
    decoding: a frame declaring 65535×65535 inside a 32×40 DICOM makes libjpeg/openjpeg decode
    billions of pixels (minutes, tens of GB) before pydicom notices the mismatch."""
    if uid not in _JPEG_SYNTAXES and uid not in _J2K_SYNTAXES:
        return  # RLE and others allocate from Rows/Columns, which were checked against the limits
    fragment = _first_fragment(pixel_data)
    size = None
    if fragment is not None:
        size = _jpeg_frame_size(fragment) if uid in _JPEG_SYNTAXES else _j2k_frame_size(fragment)
    if size is None:
        raise ImageError(MSG_DICOM_UNDECODABLE)
    # Height 0 (lines defined later by a DNL marker) is refused too: libjpeg then grows its buffers
    # without bound (found by fuzzing; DICOM encoders do not use DNL).
    if size != (rows, columns):
        raise ImageError(MSG_PIXEL_MISMATCH)


def _first_fragment(pixel_data: bytes) -> bytes | None:
    """The first fragment after the Basic Offset Table of encapsulated pixel data."""
    pos = 0
    for _ in range(2):  # the Basic Offset Table item, then the first fragment
        if len(pixel_data) < pos + 8 or pixel_data[pos : pos + 4] != b"\xfe\xff\x00\xe0":
            return None
        length = int.from_bytes(pixel_data[pos + 4 : pos + 8], "little")
        pos += 8
        if _ == 1:
            return pixel_data[pos : pos + length]
        pos += length
    return None  # pragma: no cover


def _jpeg_frame_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG/JPEG-LS stream's SOF segment, or None if there is none before SOS."""
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if marker in _JPEG_SOF:
            if pos + 9 > len(data):
                return None
            return struct.unpack_from(">HH", data, pos + 5)
        if marker in (0xDA, 0xD9):  # start of scan / end of image before any frame header
            return None
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


def _j2k_frame_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG 2000 codestream's SIZ segment (also inside a JP2 wrapper)."""
    pos = data.find(b"\xff\x4f\xff\x51", 0, 4096)
    if pos < 0 or pos + 24 > len(data):
        return None
    x_size, y_size, x_origin, y_origin = struct.unpack_from(">IIII", data, pos + 8)
    if x_origin >= x_size or y_origin >= y_size:
        return None
    return (y_size - y_origin, x_size - x_origin)


def _first_number(ds: pydicom.Dataset, keyword: str) -> float | None:
    """First value of a numeric (DS/IS) attribute, also looked up in functional groups; None if absent."""
    value = ds.get(keyword)
    if value in (None, ""):
        value = _functional_group_value(ds, keyword)
    if value in (None, ""):
        return None
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        if not value:
            return None
        value = value[0]
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{keyword} is not finite")
    return result


_FUNCTIONAL_GROUPS = {
    "RescaleSlope": "PixelValueTransformationSequence",
    "RescaleIntercept": "PixelValueTransformationSequence",
    "WindowCenter": "FrameVOILUTSequence",
    "WindowWidth": "FrameVOILUTSequence",
}


def _functional_group_value(ds: pydicom.Dataset, keyword: str) -> object:
    """Value from enhanced multi-frame functional groups (frame 1 first, then shared)."""
    macro = _FUNCTIONAL_GROUPS.get(keyword)
    if macro is None:
        return None
    for groups in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        seq = ds.get(groups)
        if seq and macro in seq[0] and seq[0][macro].value:
            value = seq[0][macro].value[0].get(keyword)
            if value not in (None, ""):
                return value
    return None


def _modality_values(arr: np.ndarray, ds: pydicom.Dataset, warnings: list[str]) -> np.ndarray:
    """Stored values -> modality values (Modality LUT or rescale slope/intercept) as float32."""
    if "ModalityLUTSequence" in ds:
        return np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    try:
        slope = _first_number(ds, "RescaleSlope")
        intercept = _first_number(ds, "RescaleIntercept")
    except (ValueError, TypeError):
        warnings.append(WARN_BAD_RESCALE)
        slope = intercept = None
    if slope == 0:
        warnings.append(WARN_BAD_RESCALE)
        slope = None
    raw = arr.astype(np.float32)
    if slope is not None and slope != 1:
        raw *= np.float32(slope)
    if intercept:
        raw += np.float32(intercept)
    return raw


def _apply_voi(d: _Decoded, ds: pydicom.Dataset) -> None:
    """Set the window (or LUT-rendered pixels) from the VOI LUT Sequence or Window Center/Width."""
    if ds.get("VOILUTSequence"):
        try:
            table, first = _voi_lut_table(ds.VOILUTSequence[0], d.raw)
        except _DECODER_ERRORS:
            table = None
        if table is None:
            d.warnings.append(WARN_BAD_LUT)
        else:
            lo, hi = float(table.min()), float(table.max())
            idx = np.rint(d.raw)
            idx -= first
            np.clip(idx, 0, table.size - 1, out=idx)
            pixels = (table.astype(np.float32)[idx.astype(np.intp)] - lo) / np.float32(hi - lo)
            if d.invert:
                np.subtract(np.float32(1.0), pixels, out=pixels)
            d.pixels = pixels.astype(np.float32, copy=False)
            # Linear approximation for window/level sliders: the LUT's unsaturated input span.
            start = int(np.argmax(table > lo))
            stop = table.size - int(np.argmax(table[::-1] < hi))
            lower, upper = first + max(start - 1, 0), first + min(stop, table.size - 1)
            d.window = ((lower + upper) / 2.0, float(max(upper - lower, 1)))
            return
    try:
        center = _first_number(ds, "WindowCenter")
        width = _first_number(ds, "WindowWidth")
    except (ValueError, TypeError):
        center = width = None
        d.warnings.append(WARN_BAD_WINDOW)
    if center is not None and width is not None:
        if width > 0:
            d.window = (center, width)
            if str(ds.get("VOILUTFunction", "")).strip().upper() == "SIGMOID":
                d.function = "SIGMOID"
        else:
            d.warnings.append(WARN_BAD_WINDOW)


def _voi_lut_table(item: pydicom.Dataset, raw: np.ndarray) -> tuple[np.ndarray | None, int]:
    """(table, first input value) of a VOI LUT item, or (None, 0) if it is unusable."""
    descriptor = item.get("LUTDescriptor")
    lut_data = item.get("LUTData")
    if descriptor is None or lut_data is None or len(descriptor) != 3:
        return None, 0
    entries, first, bits = (int(v) for v in descriptor)
    entries = entries or 65536
    if first >= 2**15 and float(raw.min()) < 0:  # first value stored as US for signed data
        first -= 2**16
    if isinstance(lut_data, (bytes, bytearray)):
        table = np.frombuffer(lut_data, dtype="<u2" if bits > 8 or len(lut_data) >= 2 * entries else "u1")
    else:
        table = np.asarray(
            lut_data if isinstance(lut_data, (list, tuple, pydicom.multival.MultiValue)) else [lut_data]
        )
    table = np.asarray(table[:entries], dtype=np.float64)
    if table.size < entries or table.size < 2 or float(table.min()) == float(table.max()):
        return None, 0
    return table, first


def _pixel_spacing(ds: pydicom.Dataset) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            value = ds.get(keyword)
            if value is not None and len(value) == 2:
                row, col = float(value[0]), float(value[1])
                if all(math.isfinite(v) and v > 0 for v in (row, col)):
                    return (row, col)
        except (*_DECODER_ERRORS,):
            continue
    return None


def _code_string(ds: pydicom.Dataset, keyword: str) -> str | None:
    """A CS attribute (view, body part, modality) if it is a well-formed code, never free text."""
    try:
        value = ds.get(keyword)
    except _DECODER_ERRORS:
        return None
    if value is None:
        return None
    if isinstance(value, pydicom.multival.MultiValue):
        value = value[0] if value else None
    text = str(value).strip().upper() if value is not None else ""
    return text if _CS_RE.match(text) else None
