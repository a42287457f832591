"""What the loader refuses and how it says so: size limits, the user-facing sentences, decoder errors.

Why a module of its own: every decoder (Pillow, DICOM) and the entry point check the same caps and
speak the same sentences, and tests and the app match on those sentences, so they are defined once.
Limits are checked from the header *before* any pixel is decoded, so a decompression bomb (a small
file declaring billions of pixels) is refused in microseconds instead of exhausting memory.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass

import pydicom.errors
from PIL import Image

from bonecls.errors import ImageError

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
WARN_WIDE_WINDOW = (
    "The DICOM header's window (C {c:g} / W {w:g}) is wider than the pixel data ({lo:g}–{hi:g}) and would "
    "show the film washed out; a window from the data's own 1st–99th percentiles is used "
    "(C {dc:g} / W {dw:g})."
)
WARN_BAD_LUT = "The DICOM VOI LUT is invalid and was ignored; the window or full range is shown."
WARN_BAD_RESCALE = "The DICOM rescale slope/intercept is invalid and was ignored."
WARN_PADDING = "The DICOM pixel data has {n} bytes of padding after the image; they were ignored."

# Exceptions that decoders (Pillow, pydicom, pylibjpeg, zlib, struct) raise on hostile or damaged
# input. They are converted into ImageError at the decoding boundary; nothing else is caught.
DECODER_ERRORS: tuple[type[BaseException], ...] = (
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


def check_size(width: int, height: int, limits: Limits) -> None:
    """Refuse a declared size that is empty or above ``limits``; called before any pixel is decoded."""
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


def decompression_bomb_message(exc: BaseException, size: tuple[int, int] | None, limits: Limits) -> str:
    """Sentence for Pillow's DecompressionBombError ("Image size (N pixels) exceeds limit of M ...")."""
    numbers = [int(n) for n in re.findall(r"\d+", str(exc))]
    if len(numbers) < 2:
        return f"The image is above the limit of {limits.max_pixels:,} pixels."
    pixels, limit = numbers[0], (limits.max_pixels if numbers[0] > limits.max_pixels else numbers[1])
    if size is not None and pixels == size[0] * size[1]:
        return f"Image is {size[0]}×{size[1]} pixels, above the limit of {limit:,} pixels."
    return f"Image is {pixels:,} pixels, above the limit of {limit:,} pixels."
