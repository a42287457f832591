"""The DICOM decoder: checks a dataset against its header before decoding, then applies the
modality and VOI transforms (rescale, Modality LUT, VOI LUT or window) to give display values.

Why a module of its own: DICOM is where hostile and damaged inputs do the most harm (codestreams
that declare a larger frame than the header, deflated datasets that inflate without bound, pixel
data shorter than its header says) and where the display depends on header attributes; all of it
is checked here, before pydicom or a compressed-image plugin allocates anything.
"""

from __future__ import annotations

import io
import math
import re
import struct
import zlib

import numpy as np
import pydicom
import pydicom.uid
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder

from bonecls.errors import ImageError
from bonecls.imaging.limits import (
    DECODER_ERRORS,
    MSG_DAMAGED,
    MSG_DICOM_UNDECODABLE,
    MSG_NO_PIXELS,
    MSG_PIXEL_MISMATCH,
    MSG_UNSUPPORTED_LAYOUT,
    WARN_BAD_LUT,
    WARN_BAD_RESCALE,
    WARN_BAD_WINDOW,
    WARN_PADDING,
    WARN_REDUCED,
    WARN_WIDE_WINDOW,
    Limits,
    check_size,
    reduce_factor,
)
from bonecls.imaging.radiograph import (
    Decoded,
    data_window,
    rgb_to_gray,
    shrink_array,
    window_wider_than_data,
)
from bonecls.imaging.spacing import SPACING_TAGS, trusted_spacing

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


def decode_dicom(data: bytes, limits: Limits) -> Decoded:
    """Decode the first frame of a DICOM (with or without preamble), refusing before decoding what
    exceeds ``limits`` or does not match its header; every decoder failure becomes ImageError."""
    has_preamble = data[128:132] == b"DICM"
    payload = data if has_preamble else data[4:] if data[:4] == b"DICM" else data
    if _DEFLATED_UID in payload[:4096]:
        _check_deflated_size(payload, has_preamble, limits)
    try:
        ds = pydicom.dcmread(io.BytesIO(payload), force=not has_preamble)
    except DECODER_ERRORS as exc:
        raise ImageError(MSG_DAMAGED) from exc
    try:
        return _dicom_to_decoded(ds, limits)
    except ImageError:
        raise
    except DECODER_ERRORS as exc:
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


def _dicom_to_decoded(ds: pydicom.Dataset, limits: Limits) -> Decoded:
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
    check_size(columns, rows, limits)
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames < 1:
        raise ImageError(MSG_PIXEL_MISMATCH)
    photometric = str(ds.PhotometricInterpretation).strip().upper()
    warnings: list[str] = []
    if pixel_keyword == "PixelData" and not transfer_syntax.is_compressed:
        padding = _native_padding(ds, rows, columns, frames, photometric)
        if padding:
            ds.PixelData = ds.PixelData[: len(ds.PixelData) - padding]
            warnings.append(WARN_PADDING.format(n=padding))
    elif pixel_keyword == "PixelData":
        _check_codestream_size(ds.PixelData, transfer_syntax, rows, columns)

    try:
        ds.pixel_array_options(index=0)
        arr = ds.pixel_array
    except MemoryError:
        raise
    except DECODER_ERRORS as exc:
        raise ImageError(MSG_DICOM_UNDECODABLE) from exc
    except BaseException as exc:  # a Rust decoder's panic (pyo3 PanicException) is a BaseException
        if type(exc).__name__ != "PanicException":
            raise
        raise ImageError(MSG_DICOM_UNDECODABLE) from exc
    if arr.ndim == 3 and arr.shape[0] == 1 and arr.shape[1:] == (rows, columns):
        arr = arr[0]
    if frames > 1:
        warnings.append(f"Multi-frame DICOM: showing frame 1 of {frames}.")
    if arr.shape[:2] != (rows, columns):
        raise ImageError(MSG_PIXEL_MISMATCH)

    bit_depth = int(ds.get("BitsStored") or ds.BitsAllocated)
    spacing, spacing_tag, spacing_warnings = _pixel_spacing(ds)
    warnings.extend(spacing_warnings)
    meta = {
        "pixel_spacing": spacing,
        "pixel_spacing_source": spacing_tag,
        "view": _code_string(ds, "ViewPosition"),
        "body_part": _code_string(ds, "BodyPartExamined"),
        "modality": _code_string(ds, "Modality"),
        "age_group": age_group(_plain_text(ds, "PatientAge")),
    }
    safe_photometric = photometric if _CS_RE.match(photometric) else "UNKNOWN"
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    factor = reduce_factor(columns, rows, limits)
    if factor > 1:  # block means of stored values: rescale is linear, so this commutes with it
        arr = shrink_array(arr, factor)
        warnings.append(WARN_REDUCED.format(w=columns, h=rows, kw=arr.shape[1], kh=arr.shape[0]))
        if meta["pixel_spacing"] is not None:
            row_mm, col_mm = meta["pixel_spacing"]
            meta["pixel_spacing"] = (row_mm * rows / arr.shape[0], col_mm * columns / arr.shape[1])
    if arr.ndim == 3:
        if arr.shape[2] != 3:
            raise ImageError(MSG_UNSUPPORTED_LAYOUT)
        bits = 8 if arr.dtype.itemsize == 1 else bit_depth
        gray, is_color = rgb_to_gray(arr, float(2**bits - 1))
        return Decoded(
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
    decoded = Decoded(
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


def _native_padding(ds: pydicom.Dataset, rows: int, columns: int, frames: int, photometric: str) -> int:
    """Bytes of trailing padding after native pixel data, after checking its length against the header.

    Fewer bytes than Rows × Columns × frames × samples × bits need means a truncated file or a
    header that overstates the image: refused. One more byte is the standard's pad to an even
    length (PS3.5 8.1.1): 0 is returned. More than that is padding some writers add (pydicom reads
    such files and drops it), accepted only when it is all zero bytes, so nothing that could be image
    is dropped, and shorter than one frame; otherwise the header understates the image (a missing
    Number of Frames, Rows or Columns too small) and the file is refused, as pydicom's own
    ``allow_excess_frames`` treats a whole extra frame as a frame and not as padding.
    """
    samples = int(ds.get("SamplesPerPixel") or 1)
    bits = int(ds.BitsAllocated)
    if bits not in (1, 8, 16, 32, 64) or samples not in (1, 3):
        raise ImageError(MSG_PIXEL_MISMATCH)
    if photometric == "YBR_FULL_422":
        samples = 2  # two chroma values shared by each pair of pixels
    frame_bits = rows * columns * samples * bits
    expected = math.ceil(frame_bits * frames / 8)
    excess = len(ds.PixelData) - expected
    if excess < 0:
        raise ImageError(MSG_PIXEL_MISMATCH)
    if excess <= 1:
        return 0
    if excess * 8 >= frame_bits or ds.PixelData[expected:].count(0) != excess:
        raise ImageError(MSG_PIXEL_MISMATCH)
    return excess


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


def _apply_voi(d: Decoded, ds: pydicom.Dataset) -> None:
    """Set the window (or LUT-rendered pixels) from the VOI LUT Sequence or Window Center/Width."""
    if ds.get("VOILUTSequence"):
        try:
            table, first = _voi_lut_table(ds.VOILUTSequence[0], d.raw)
        except DECODER_ERRORS:
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
            _narrow_wide_window(d)
        else:
            d.warnings.append(WARN_BAD_WINDOW)


def _narrow_wide_window(d: Decoded) -> None:
    """A header window wider than the data (e.g. C 15000 / W 30000 over 874–26479, written for the
    detector's range) opens the film washed out: use the data's own percentile window instead, say so."""
    if d.window is None or d.function != "LINEAR_EXACT" or not np.isfinite(d.raw).all():
        return
    lo, hi = float(d.raw.min()), float(d.raw.max())
    if not window_wider_than_data(d.window, lo, hi):
        return
    center, width = data_window(d.raw)
    d.warnings.append(
        WARN_WIDE_WINDOW.format(c=d.window[0], w=d.window[1], lo=lo, hi=hi, dc=round(center), dw=round(width))
    )
    d.window = (center, width)


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


def _pixel_spacing(ds: pydicom.Dataset) -> tuple[tuple[float, float] | None, str | None, list[str]]:
    """(spacing, tag, warnings): the first trusted of PixelSpacing / ImagerPixelSpacing
    (:mod:`bonecls.imaging.spacing`'s rules), and a sentence for each present value not trusted."""
    candidates = []
    for keyword in SPACING_TAGS:
        try:
            value = ds.get(keyword)
            listed = None if value is None else list(value) if _is_multi(value) else [value]
            candidates.append((keyword, listed))
        except (*DECODER_ERRORS,):
            candidates.append((keyword, ["unreadable"]))
    return trusted_spacing(candidates)


def _is_multi(value: object) -> bool:
    return isinstance(value, pydicom.multival.MultiValue | list | tuple)


#: PatientAge (an AS value): three digits and a unit, days, weeks, months or years ("007Y", "011M").
_AGE_RE = re.compile(r"^(\d{3})([DWMY])$")
#: Below this many years a patient is a child (paediatric), at or above an adult.
ADULT_AGE_YEARS = 18


def age_group(patient_age: str | None) -> str | None:
    """``"paediatric"`` (under 18 years), ``"adult"`` or None (absent or malformed) from a DICOM
    PatientAge such as ``"007Y"`` or ``"011M"``.

    Only this coarse group leaves the decoder (``Radiograph.age_group``, in memory, for the scope gate's
    age rule): the age itself is never kept, logged, stored or exported.
    """
    match = _AGE_RE.match((patient_age or "").strip().upper())
    if match is None:
        return None
    number, unit = int(match.group(1)), match.group(2)
    return "adult" if unit == "Y" and number >= ADULT_AGE_YEARS else "paediatric"


def _plain_text(ds: pydicom.Dataset, keyword: str) -> str | None:
    """A short string attribute as text, or None when absent or unreadable."""
    try:
        value = ds.get(keyword)
    except DECODER_ERRORS:
        return None
    return str(value) if value is not None else None


def _code_string(ds: pydicom.Dataset, keyword: str) -> str | None:
    """A CS attribute (view, body part, modality) if it is a well-formed code, never free text."""
    try:
        value = ds.get(keyword)
    except DECODER_ERRORS:
        return None
    if value is None:
        return None
    if isinstance(value, pydicom.multival.MultiValue):
        value = value[0] if value else None
    text = str(value).strip().upper() if value is not None else ""
    return text if _CS_RE.match(text) else None
