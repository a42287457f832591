"""One entry point that turns uploaded bytes into a display-ready radiograph.

Why this package exists: hospitals produce radiographs as DICOM (compressed or not, MONOCHROME1 or 2,
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

The modules, by job (each imports only those above it; none imports model code):

* ``limits``: :class:`Limits`, the user-facing sentences, header size and decompression-bomb checks.
* ``radiograph``: :class:`Radiograph`, windowing, ``to_uint8``, ``encode_png``, colour to grey.
* ``pil``: the Pillow decoder (PNG, JPEG, TIFF, BMP, GIF, WebP).
* ``dicom``: the DICOM decoder (transfer syntaxes, codestream checks, rescale, VOI LUT, spacing).
* ``load``: :func:`sniff_format` and :func:`load_radiograph`, the entry point.
"""

from __future__ import annotations

from bonecls.imaging.limits import (
    MSG_DAMAGED,
    MSG_DICOM_UNDECODABLE,
    MSG_EMPTY,
    MSG_INF,
    MSG_MEMORY,
    MSG_NAN,
    MSG_NO_PIXELS,
    MSG_PIXEL_MISMATCH,
    MSG_UNRECOGNISED,
    MSG_UNSUPPORTED_LAYOUT,
    WARN_ASPECT,
    WARN_BAD_LUT,
    WARN_BAD_RESCALE,
    WARN_BAD_WINDOW,
    WARN_COLOUR,
    WARN_EXIF,
    WARN_NO_CONTRAST,
    WARN_PADDING,
    WARN_SMALL,
    WARN_TRANSPARENT,
    Limits,
)
from bonecls.imaging.load import SUPPORTED_FORMATS, load_radiograph, sniff_format
from bonecls.imaging.radiograph import (
    Radiograph,
    WindowFunction,
    apply_window,
    data_window,
    default_window,
    encode_png,
    to_uint8,
)

__all__ = [
    "MSG_DAMAGED",
    "MSG_DICOM_UNDECODABLE",
    "MSG_EMPTY",
    "MSG_INF",
    "MSG_MEMORY",
    "MSG_NAN",
    "MSG_NO_PIXELS",
    "MSG_PIXEL_MISMATCH",
    "MSG_UNRECOGNISED",
    "MSG_UNSUPPORTED_LAYOUT",
    "SUPPORTED_FORMATS",
    "WARN_ASPECT",
    "WARN_BAD_LUT",
    "WARN_BAD_RESCALE",
    "WARN_BAD_WINDOW",
    "WARN_COLOUR",
    "WARN_EXIF",
    "WARN_NO_CONTRAST",
    "WARN_PADDING",
    "WARN_SMALL",
    "WARN_TRANSPARENT",
    "Limits",
    "Radiograph",
    "WindowFunction",
    "apply_window",
    "data_window",
    "default_window",
    "encode_png",
    "load_radiograph",
    "sniff_format",
    "to_uint8",
]
