"""The Pillow decoder: PNG (8/16-bit), JPEG, TIFF, BMP, GIF and WebP to full-depth grey values.

Why a module of its own: Pillow formats need their own care (EXIF orientation, 16-bit modes,
transparency, palette and colour sources, bounded counting of pages and frames) that DICOM does not,
and Pillow is the only library it uses.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import (
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
)

from bonecls.errors import ImageError
from bonecls.imaging.limits import (
    DECODER_ERRORS,
    MSG_DAMAGED,
    MSG_UNSUPPORTED_LAYOUT,
    WARN_EXIF,
    WARN_REDUCED,
    WARN_TRANSPARENT,
    Limits,
    check_size,
    decompression_bomb_message,
    reduce_factor,
)
from bonecls.imaging.radiograph import Decoded, rgb_to_gray, shrink_array

try:  # WebP support is optional in Pillow builds.
    from PIL import WebPImagePlugin
except ImportError:  # pragma: no cover - depends on the Pillow build
    WebPImagePlugin = None  # type: ignore[assignment]

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

#: EXIF orientation tag value -> the transpose that shows the image upright (as ImageOps.exif_transpose)
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_MULTI_FRAME_LABEL = {
    "tiff": ("Multi-page TIFF", "page"),
    "gif": ("Animated GIF", "frame"),
    "png": ("Animated PNG", "frame"),
    "webp": ("Animated WebP", "frame"),
    "jpeg": ("Multi-picture JPEG (MPO)", "picture"),
}


def decode_pil(data: bytes, fmt: str, limits: Limits) -> Decoded:
    """Decode a sniffed Pillow format, checking ``limits`` on the header before any pixel is read.

    Only the first page/frame is decoded (others are counted into a warning); every decoder failure
    becomes :class:`ImageError`.
    """
    factory = _PIL_FACTORIES.get(fmt)
    if factory is None:
        raise ImageError(f"{fmt.upper()} images cannot be read by this installation; export as PNG.")
    img: Image.Image | None = None
    try:
        img = factory(io.BytesIO(data))
        width, height = img.size
        check_size(width, height, limits)
        if fmt == "jpeg" and reduce_factor(width, height, limits) > 1:
            # JPEG decodes at 1/2, 1/4 or 1/8 scale from its DCT coefficients: the full image never exists
            factor = reduce_factor(width, height, limits)
            img.draft(img.mode, (-(-width // factor), -(-height // factor)))
        img.load()
    except Image.DecompressionBombError as exc:
        raise ImageError(
            decompression_bomb_message(exc, img.size if img is not None else None, limits)
        ) from exc
    except ImageError:
        raise
    except DECODER_ERRORS as exc:
        raise ImageError(MSG_DAMAGED) from exc
    warnings: list[str] = []
    frames = None
    try:
        kept = _shrink(img, reduce_factor(*img.size, limits))
        orientation = img.getexif().get(0x0112, 1)
    except DECODER_ERRORS as exc:
        raise ImageError(MSG_DAMAGED) from exc
    if kept is not img:  # count frames now and free the full-size pixels before any float copy
        frames = _frame_count(img, fmt, data)
        img.close()
    if kept.size != (width, height):  # reduced here, or already by the JPEG decoder's draft
        warnings.append(WARN_REDUCED.format(w=width, h=height, kw=kept.width, kh=kept.height))
    oriented = kept
    try:
        if orientation in range(2, 9):  # transposing copies: only when needed
            oriented = kept.transpose(_EXIF_TRANSPOSE[orientation])
    except DECODER_ERRORS:
        warnings.append(WARN_EXIF)
    try:
        decoded = _pil_to_gray(oriented, fmt, warnings)
    except ImageError:
        raise
    except DECODER_ERRORS as exc:
        raise ImageError(MSG_DAMAGED) from exc
    decoded.original_size = (height, width)
    frames = frames if frames is not None else _frame_count(img, fmt, data)
    if frames > 1:
        label, unit = _MULTI_FRAME_LABEL.get(fmt, (f"Multi-frame {fmt.upper()}", "frame"))
        total = f"more than {_MAX_FRAMES_COUNTED}" if frames > _MAX_FRAMES_COUNTED else str(frames)
        decoded.warnings.append(f"{label}: showing {unit} 1 of {total}.")
    return decoded


_MAX_FRAMES_COUNTED = 1000
_REDUCIBLE_MODES = frozenset({"L", "LA", "La", "I", "F", "RGB", "RGBA", "RGBa", "CMYK", "YCbCr"})


def _shrink(img: Image.Image, factor: int) -> Image.Image:
    """``img`` reduced by a whole ``factor`` (block means), before any float copy of it is made.

    Why here and not after the conversion to float32: an 8000×8000 grey PNG is 64 MB as Pillow holds
    it but 256 MB per float32 copy, and the decoder makes several. Pillow's ``reduce`` averages
    ``factor × factor`` blocks for most modes; 16-bit grey goes through a box resize (the same block
    mean); palette and 1-bit images are converted first.
    """
    if factor <= 1:
        return img
    if img.mode in _REDUCIBLE_MODES:
        return img.reduce(factor)
    if img.mode in ("I;16", "I;16L"):  # Pillow's box filter averages little-endian 16-bit exactly
        return img.resize((-(-img.width // factor), -(-img.height // factor)), Image.Resampling.BOX)
    if img.mode in ("I;16B", "I;16N"):  # ... but not big-endian: OpenCV's area resize, native order
        return Image.fromarray(shrink_array(np.asarray(img).astype(np.uint16), factor))
    if img.mode == "P":
        has_alpha = "transparency" in img.info
        return img.convert("RGBA" if has_alpha else "RGB").reduce(factor)
    if img.mode == "1":
        return img.convert("L").reduce(factor)
    return img.convert("I").reduce(factor)  # I;16S and other signed 16-bit layouts


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
    except DECODER_ERRORS:
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


def _pil_to_gray(img: Image.Image, fmt: str, warnings: list[str]) -> Decoded:
    """Pillow image (already loaded and oriented) -> float32 grey with full bit depth."""
    mode = img.mode
    source_mode = mode
    size = (img.height, img.width)
    if mode.startswith("I;16"):  # I;16, I;16L, I;16B, I;16N, I;16S
        arr = np.asarray(img if mode in ("I;16", "I;16L", "I;16B", "I;16N") else img.convert("I"))
        return Decoded(arr.astype(np.float32), size, 16, mode, warnings=warnings)
    if mode == "I":
        arr = np.asarray(img)
        bits = 16 if fmt == "png" or (arr.size and int(arr.min()) >= 0 and int(arr.max()) < 65536) else 32
        return Decoded(arr.astype(np.float32), size, bits, mode, warnings=warnings)
    if mode == "F":
        return Decoded(np.asarray(img).astype(np.float32), size, 32, mode, warnings=warnings)
    if mode in ("1", "L"):
        arr = np.asarray(img.convert("L") if mode == "1" else img)
        return Decoded(
            arr.astype(np.float32), size, 1 if mode == "1" else 8, mode, type_range=True, warnings=warnings
        )
    if mode in ("LA", "La"):
        la = np.asarray(img.convert("LA"))
        gray = la[..., 0].astype(np.float32)
        alpha = la[..., 1]
        if int(alpha.min()) < 255:
            gray *= alpha.astype(np.float32) / 255.0
            warnings.append(WARN_TRANSPARENT)
        return Decoded(gray, size, 8, mode, type_range=True, warnings=warnings)
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
    gray, is_color = rgb_to_gray(rgb, 255.0)
    return Decoded(gray, size, 8, source_mode, type_range=True, is_color=is_color, warnings=warnings)
