"""A generated corpus of awkward and hostile inputs, each with the exact outcome load_radiograph must give.

Nothing here is a binary fixture: every case is built in memory by tests/factories.py, so the corpus
is reviewable and reproducible. Each :class:`BadInput` has

* ``outcome = ("ok", None)``: loads with no warning at all;
* ``outcome = ("ok", "substring")``: loads, and one warning contains the substring;
* ``outcome = ("error", "substring")``: raises :class:`bonecls.errors.ImageError` whose message
  contains the substring (and nothing but ImageError may escape);
* an optional ``check`` run on the loaded Radiograph (orientation, inversion, exact values ...).

Used by tests/test_bad_inputs.py; the app/CLI/reliability tests may reuse :data:`CASES` and
:func:`data` (e.g. to check that the app shows each error sentence in place).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from factories import (
    JPEG_XL_UID,
    PRIVATE_TS_UID,
    colour_pattern,
    make_dicom,
    make_dicom_sr,
    make_gif,
    make_html,
    make_jpeg,
    make_pdf,
    make_png,
    make_png_bomb,
    make_text,
    make_tiff,
    make_zip,
    pattern,
)
from pydicom.encaps import encapsulate

from bonecls.imaging import Radiograph

Outcome = tuple[Literal["ok", "error"], str | None]

DAMAGED = "The file is truncated or damaged; export it again from the PACS/viewer."
NO_PIXELS = (
    "This DICOM has no pixel data (it may be a structured report or a presentation state); "
    "upload the image series instead."
)
PIXEL_MISMATCH = "The DICOM pixel data does not match its header"
NO_CONTRAST = "carries no contrast"


@dataclass(frozen=True)
class BadInput:
    """One corpus case: how to build it and what loading it must do."""

    name: str
    build: Callable[[], bytes]
    outcome: Outcome
    check: Callable[[Radiograph], None] | None = None
    why: str = ""


def _noise(height: int, width: int, high: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, high, (height, width)).astype(np.uint8 if high <= 256 else np.uint16)


def _truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: int(len(data) * keep)]


def _nan_tiff() -> bytes:
    arr = pattern().astype(np.float32)
    arr[10, 10] = np.nan
    return make_tiff(arr)


def _garbage_high_bits() -> bytes:
    return make_dicom(pattern(bits=12), bits_stored=12, garbage_high_bits=True)


def _corrupt_png_crc() -> bytes:
    data = bytearray(make_png())
    data[20] ^= 0x01  # inside IHDR's width field: the chunk CRC no longer matches
    return bytes(data)


def _broken_jpeg_lossless_frame() -> bytes:
    """Encapsulated JPEG Lossless whose single fragment is not a JPEG stream."""
    return make_dicom(pattern(bits=12), bits_stored=12, transfer_syntax="1.2.840.10008.1.2.4.70")


def _rle_segment_overrun() -> bytes:
    """RLE frame whose last segment decodes to 17 bytes where 16 fit: pylibjpeg-rle panics (Rust)."""
    first, second = b"\x0f" + bytes(16), b"\xf0\x16"  # 16 literal zeros; then 17 copies of 0x16
    header = struct.pack("<16I", 2, 64, 64 + len(first), *([0] * 13))
    return make_dicom(
        np.zeros((4, 4), np.uint16),
        transfer_syntax="1.2.840.10008.1.2.5",
        pixel_data=encapsulate([header + first + second]),
    )


def _jpeg_frame_declaring(height: int, width: int) -> bytes:
    """JPEG Lossless DICOM (64×80) whose JPEG frame header (SOF3) declares another size."""
    data = bytearray(make_dicom(pattern(bits=12), bits_stored=12, compress="jpeg-lossless"))
    sof = data.index(b"\xff\xc3")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def _j2k_frame_declaring(height: int, width: int) -> bytes:
    """JPEG 2000 DICOM (64×80) whose codestream SIZ segment declares another size."""
    data = bytearray(make_dicom(pattern(bits=12), bits_stored=12, compress="jpeg2000-lossless"))
    siz = data.index(b"\xff\x4f\xff\x51")
    struct.pack_into(">II", data, siz + 8, width, height)
    return bytes(data)


# --- checks on loaded radiographs ----------------------------------------------------------------


def _check_exif_rotated(rg: Radiograph) -> None:
    assert rg.pixels.shape == (80, 64) and rg.original_size == (64, 80)
    assert rg.raw[0, -1] > 240  # stored top-left marker now top-right (rotated 90° clockwise)


def _check_monochrome1(rg: Radiograph) -> None:
    assert rg.photometric == "MONOCHROME1"
    assert rg.pixels[0, 0] == 0.0 and rg.pixels[-1, -1] == 1.0  # max stored value shows black


def _check_garbage_masked(rg: Radiograph) -> None:
    np.testing.assert_array_equal(rg.raw, pattern(bits=12).astype(np.float32))


def _check_first_frame(rg: Radiograph) -> None:
    np.testing.assert_array_equal(rg.raw, pattern(bits=12).astype(np.float32))


def _check_colour(rg: Radiograph) -> None:
    assert rg.is_color_source


def _check_not_colour(rg: Radiograph) -> None:
    assert not rg.is_color_source


def _check_16bit(rg: Radiograph) -> None:
    assert rg.bit_depth == 16 and rg.raw.max() == 65535 and len(np.unique(rg.raw)) > 256


def _check_float(rg: Radiograph) -> None:
    assert rg.photometric == "F" and rg.raw.min() == -1.0 and rg.raw.max() == 1.0


def _multi_frame_dicom() -> bytes:
    first = pattern(bits=12)
    return make_dicom(np.stack([first, first[::-1], first[:, ::-1], np.zeros_like(first)]), bits_stored=12)


CASES: tuple[BadInput, ...] = (
    # --- not images at all -----------------------------------------------------------------------
    BadInput("empty-file", lambda: b"", ("error", "The file is empty")),
    BadInput("text-renamed-png", make_text, ("error", "This file is a text file, not an image")),
    BadInput("pdf-renamed-dcm", make_pdf, ("error", "This file is a PDF document, not an image")),
    BadInput("html-page", make_html, ("error", "This file is a web page (HTML), not an image")),
    BadInput("zip-archive", make_zip, ("error", "This file is a ZIP archive")),
    BadInput(
        "random-bytes",
        lambda: bytes(np.random.default_rng(3).integers(1, 256, 4096, dtype=np.uint8)),
        ("error", "The file is not a recognised image format"),
    ),
    BadInput(
        "jpeg2000-codestream",
        lambda: b"\xff\x4f\xff\x51" + bytes(60),
        ("error", "This file is a JPEG 2000 file"),
    ),
    # --- damaged image files ---------------------------------------------------------------------
    BadInput("truncated-png", lambda: _truncated(make_png(_noise(256, 256, 256))), ("error", DAMAGED)),
    BadInput("truncated-jpeg", lambda: _truncated(make_jpeg(_noise(256, 256, 256))), ("error", DAMAGED)),
    BadInput("truncated-tiff", lambda: _truncated(make_tiff(_noise(128, 128, 256))), ("error", DAMAGED)),
    BadInput("png-bad-crc", _corrupt_png_crc, ("error", DAMAGED)),
    BadInput("png-header-only", lambda: make_png()[:33], ("error", DAMAGED)),
    # --- size limits -----------------------------------------------------------------------------
    BadInput(
        "png-decompression-bomb",
        make_png_bomb,
        ("error", "Image is 60000×60000 pixels, above the limit of 100,000,000 pixels."),
        why="3.6 G pixels in ~440 kB; must be refused from the header, before decoding",
    ),
    BadInput(
        "png-100000x10",
        lambda: make_png(np.zeros((10, 100_000), np.uint8)),
        ("error", "Image is 100000×10 pixels; a side is above the limit of 65,535 pixels."),
    ),
    BadInput("png-1x1", lambda: make_png(np.full((1, 1), 128, np.uint8)), ("ok", "only 1×1 pixels")),
    BadInput("png-64x1000-strip", lambda: make_png(pattern(64, 1000)), ("ok", "unusual shape")),
    # --- unusual but valid Pillow images ---------------------------------------------------------
    BadInput(
        "png-16bit",
        lambda: make_png(np.linspace(0, 65535, 64 * 80).astype(np.uint16).reshape(64, 80)),
        ("ok", None),
        _check_16bit,
    ),
    BadInput(
        "png-rgba-transparent",
        lambda: make_png(np.dstack([pattern()] * 3 + [np.tile(np.arange(80, dtype=np.uint8) * 3, (64, 1))])),
        ("ok", "transparent areas"),
    ),
    BadInput("png-palette", lambda: make_png(pattern(), palette=True), ("ok", None), _check_not_colour),
    BadInput("jpeg-cmyk", lambda: make_jpeg(pattern(), cmyk=True), ("ok", None), _check_not_colour),
    BadInput(
        "gif-animated",
        lambda: make_gif([pattern(), pattern()[::-1], pattern()[:, ::-1]]),
        ("ok", "Animated GIF: showing frame 1 of 3."),
    ),
    BadInput(
        "tiff-multipage",
        lambda: make_tiff(pattern(), pages=[pattern()[::-1]]),
        ("ok", "Multi-page TIFF: showing page 1 of 2."),
    ),
    BadInput(
        "jpeg-exif-rotated",
        lambda: make_jpeg(pattern(), quality=100, exif_orientation=6),
        ("ok", None),
        _check_exif_rotated,
    ),
    BadInput(
        "tiff-float32",
        lambda: make_tiff(np.linspace(-1, 1, 64 * 80, dtype=np.float32).reshape(64, 80)),
        ("ok", None),
        _check_float,
    ),
    BadInput("tiff-float-nan", _nan_tiff, ("error", "contains invalid (NaN) pixel values")),
    BadInput("png-all-black", lambda: make_png(np.zeros((64, 80), np.uint8)), ("ok", NO_CONTRAST)),
    BadInput("png-all-white", lambda: make_png(np.full((64, 80), 255, np.uint8)), ("ok", NO_CONTRAST)),
    BadInput("jpeg-colour-photo", lambda: make_jpeg(colour_pattern()), ("ok", "in colour"), _check_colour),
    BadInput(
        "jpeg-grey-saved-as-rgb",
        lambda: make_jpeg(np.dstack([pattern()] * 3), quality=70),
        ("ok", None),
        _check_not_colour,
    ),
    # --- DICOM -----------------------------------------------------------------------------------
    BadInput("dicom-no-pixel-data", make_dicom_sr, ("error", NO_PIXELS)),
    BadInput(
        "dicom-image-without-pixel-data",
        lambda: make_dicom(include_pixels=False),
        ("error", DAMAGED),
        why="an image object whose pixel data is missing was cut off",
    ),
    BadInput(
        "dicom-jpeg-xl",
        lambda: make_dicom(transfer_syntax=JPEG_XL_UID),
        (
            "error",
            f"This DICOM is compressed with JPEG XL ({JPEG_XL_UID}), which no installed decoder can read;",
        ),
    ),
    BadInput(
        "dicom-private-transfer-syntax",
        lambda: make_dicom(transfer_syntax=PRIVATE_TS_UID),
        ("error", f"compressed with an unrecognised or private transfer syntax ({PRIVATE_TS_UID})"),
    ),
    BadInput(
        "dicom-mpeg2",
        lambda: make_dicom(transfer_syntax="1.2.840.10008.1.2.4.100"),
        ("error", "compressed with MPEG2 Main Profile / Main Level (1.2.840.10008.1.2.4.100)"),
    ),
    BadInput(
        "dicom-broken-jpeg-lossless-frame",
        _broken_jpeg_lossless_frame,
        ("error", "The DICOM pixel data could not be decoded"),
    ),
    BadInput(
        "dicom-rle-segment-overrun",
        _rle_segment_overrun,
        ("error", "The DICOM pixel data could not be decoded"),
        why="found by fuzzing: the Rust RLE decoder panics (a BaseException), which must become ImageError",
    ),
    BadInput(
        "dicom-jpeg-frame-declares-65535x65535",
        lambda: _jpeg_frame_declaring(65535, 65535),
        ("error", PIXEL_MISMATCH),
        why="found by fuzzing: libjpeg would decode 4 G pixels (minutes, tens of GB) before pydicom checks",
    ),
    BadInput(
        "dicom-jpeg-frame-height-zero",
        lambda: _jpeg_frame_declaring(0, 80),
        ("error", PIXEL_MISMATCH),
        why="found by fuzzing: height 0 (DNL) makes libjpeg allocate gigabytes",
    ),
    BadInput(
        "dicom-j2k-frame-declares-60000x60000",
        lambda: _j2k_frame_declaring(60000, 60000),
        ("error", PIXEL_MISMATCH),
    ),
    BadInput(
        "dicom-monochrome1",
        lambda: make_dicom(pattern(bits=12), bits_stored=12, photometric="MONOCHROME1"),
        ("ok", None),
        _check_monochrome1,
    ),
    BadInput("dicom-rgb", lambda: make_dicom(photometric="RGB"), ("ok", "in colour"), _check_colour),
    BadInput(
        "dicom-multiframe",
        _multi_frame_dicom,
        ("ok", "Multi-frame DICOM: showing frame 1 of 4."),
        _check_first_frame,
    ),
    BadInput("dicom-bits-stored-garbage-high-bits", _garbage_high_bits, ("ok", None), _check_garbage_masked),
    BadInput("dicom-rows-too-many", lambda: make_dicom(rows=65), ("error", PIXEL_MISMATCH)),
    BadInput("dicom-columns-too-few", lambda: make_dicom(columns=40), ("error", PIXEL_MISMATCH)),
    BadInput("dicom-truncated-pixel-data", lambda: make_dicom()[:-2000], ("error", PIXEL_MISMATCH)),
    BadInput("dicom-truncated-header", lambda: make_dicom()[:400], ("error", DAMAGED)),
    BadInput(
        "dicom-truncated-compressed",
        lambda: make_dicom(_noise(128, 128, 4096), bits_stored=12, compress="rle")[:-3000],
        ("error", DAMAGED),
    ),
    BadInput(
        "dicom-no-preamble",
        lambda: make_dicom(pattern(bits=12), bits_stored=12, preamble=False),
        ("ok", None),
        _check_first_frame,
    ),
    BadInput(
        "dicom-bare-implicit-dataset",
        lambda: make_dicom(pattern(bits=12), bits_stored=12, file_meta=False),
        ("ok", None),
        _check_first_frame,
    ),
    BadInput(
        "dicom-zero-window-width",
        lambda: make_dicom(window=(100.0, 0.0)),
        ("ok", "window centre/width is invalid"),
    ),
    BadInput(
        "dicom-all-zero",
        lambda: make_dicom(np.zeros((64, 80), np.uint16)),
        ("ok", NO_CONTRAST),
    ),
)

BY_NAME: dict[str, BadInput] = {case.name: case for case in CASES}
assert len(BY_NAME) == len(CASES), "corpus case names must be unique"


@functools.cache
def data(name: str) -> bytes:
    """The bytes of a corpus case (built once per process)."""
    return BY_NAME[name].build()
