"""The entry point: bytes, a path or a file object to a :class:`Radiograph`, by the file's content.

Why a module of its own: every caller (app, CLI, batch worklist, training readers) must get the same
pixels for the same file and the same sentence for the same unreadable file, so reading the source
(with its byte cap), choosing the decoder from the magic bytes and naming what an unrecognised file
is (a PDF, a web page, a ZIP ...) happen here once, whatever the decoder.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import struct
from typing import BinaryIO

from bonecls.errors import ImageError
from bonecls.imaging.dicom import decode_dicom
from bonecls.imaging.limits import MSG_EMPTY, MSG_MEMORY, MSG_UNRECOGNISED, Limits
from bonecls.imaging.pil import decode_pil
from bonecls.imaging.radiograph import Radiograph, finish_radiograph

SUPPORTED_FORMATS: tuple[str, ...] = ("dicom", "png", "jpeg", "tiff", "bmp", "gif", "webp")

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
        decoded = decode_dicom(data, limits) if fmt == "dicom" else decode_pil(data, fmt, limits)
        return finish_radiograph(decoded, fmt, digest)
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
