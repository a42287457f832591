"""Build test images in memory: PNG/JPEG/TIFF/BMP/GIF/WebP and DICOMs in the layouts hospitals produce.

Every function returns the file's bytes (nothing touches the disk) and is deterministic: the same
arguments give the same bytes, so sha256-based caching and audit tests are stable. Other test
modules (app, CLI, reports, reliability) import these, e.g.::

    from factories import PHI, make_dicom, make_png, pattern

``PHI`` holds distinctive patient-identifying strings that ``make_dicom(phi=True)`` writes into the
dataset; ``PHI_NEEDLES`` lists the substrings to grep for in any output (reports, logs, audit rows,
JSON) to prove that none of them leaks.

DICOM compression (``make_dicom(compress=...)``): ``"rle"`` (pydicom's RLE encoder), ``"jpeg2000"``
and ``"jpeg2000-lossless"`` (pylibjpeg-openjpeg), ``"jpeg-baseline"`` (Pillow JPEG wrapped with
:func:`pydicom.encaps.encapsulate`) and ``"jpeg-lossless"`` (process 14, selection value 1, encoded by
:func:`encode_jpeg_lossless` below because no installed plugin encodes it). JPEG-LS cannot be encoded
with the installed plugins (it needs ``pyjpegls``), so it is not offered.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import zipfile
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    RLELossless,
)

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
_UID_ROOT = "1.2.826.0.1.3680043.8.498.4242"

#: Patient/study identifying attributes written by ``make_dicom(phi=True)``; each value is unique
#: and distinctive, so finding any of them in an output means patient data leaked.
PHI: dict[str, str] = {
    "PatientName": "Zyxwvutson^Qwertina^Plughette",
    "PatientID": "PID7719304ZQX",
    "PatientBirthDate": "19310417",
    "PatientBirthTime": "031415",
    "PatientAddress": "17 Frobozz Lane, Grue Hollow",
    "PatientTelephoneNumbers": "+44 7700 900461",
    "OtherPatientIDs": "OPID44021XQV",
    "OtherPatientNames": "Wuggleworth^Ermintrude",
    "PatientMotherBirthName": "Snorkelmaid^Hepzibah",
    "AccessionNumber": "ACC88123455K",
    "InstitutionName": "Grimsby Quaternary Infirmary",
    "InstitutionAddress": "1 Quaternary Way, Grimsby Q9",
    "InstitutionalDepartmentName": "Radiology Xylophone Wing",
    "ReferringPhysicianName": "Plughson^Referra",
    "PerformingPhysicianName": "Performova^Imelda",
    "OperatorsName": "Operatova^Ines",
    "StudyDate": "20190623",
    "SeriesDate": "20190624",
    "AcquisitionDate": "20190625",
    "ContentDate": "20190626",
    "StudyTime": "143015.123",
    "StudyID": "STUDY5517QZ",
    "StudyDescription": "Wrist of Zyxwvutson",
    "DeviceSerialNumber": "SNQX00427731",
    "StationName": "XRAYROOM-QZ9",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.77119304.1",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.77119304.2",
    "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.77119304.3",
}

#: Substrings to search for in outputs (names split into parts, dates also in ISO form).
PHI_NEEDLES: tuple[str, ...] = (
    "Zyxwvutson",
    "Qwertina",
    "Plughette",
    "PID7719304ZQX",
    "19310417",
    "1931-04-17",
    "Frobozz",
    "7700 900461",
    "OPID44021XQV",
    "Wuggleworth",
    "Snorkelmaid",
    "ACC88123455K",
    "Grimsby",
    "Quaternary",
    "Xylophone",
    "Plughson",
    "Performova",
    "Operatova",
    "20190623",
    "2019-06-23",
    "20190624",
    "20190625",
    "20190626",
    "STUDY5517QZ",
    "SNQX00427731",
    "XRAYROOM-QZ9",
    "77119304",
)

JPEG_XL_UID = "1.2.840.10008.1.2.4.112"
PRIVATE_TS_UID = "1.2.826.0.1.3680043.8.498.4242.99"
_COLOR_PHOTOMETRICS = {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"}


# --------------------------------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------------------------------


def pattern(height: int = 64, width: int = 80, *, bits: int = 8, signed: bool = False) -> np.ndarray:
    """A deterministic, asymmetric grey test image with a full-range ramp and a bright corner marker.

    Values increase left to right; the top-left 4×6 block is at the maximum (``2**bits - 1``) so that
    orientation (rotation/flip) is visible; the bottom-right pixel is 0. ``bits`` <= 8 -> uint8,
    <= 16 -> uint16 (int16 if ``signed``: values shifted down by ``2**(bits-1)``).
    """
    top = 2**bits - 1
    ramp = np.linspace(0, top, width)
    arr = np.rint(np.tile(ramp, (height, 1)) * (0.5 + 0.5 * np.linspace(1, 0, height))[:, None])
    arr[: min(4, height), : min(6, width)] = top
    arr[-1, -1] = 0
    dtype = np.uint8 if bits <= 8 else np.uint16
    arr = arr.astype(dtype)
    if signed:
        return (arr.astype(np.int32) - 2 ** (bits - 1)).astype(np.int8 if bits <= 8 else np.int16)
    return arr


def colour_pattern(height: int = 64, width: int = 80) -> np.ndarray:
    """A colourful uint8 (H, W, 3) image (red-green-blue ramps): a colour photo stand-in."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    return np.rint(np.stack([x, y, 255 - x], axis=-1)).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# Pillow formats
# --------------------------------------------------------------------------------------------------


def _pil_image(array: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(array))


def _save(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def make_png(array: np.ndarray | None = None, *, bits: int = 8, palette: bool = False) -> bytes:
    """PNG bytes. Grey uint8 -> 8-bit, uint16 (or ``bits=16``) -> 16-bit grey, (H, W, 3|4) -> RGB(A).

    ``palette=True`` stores a uint8 grey image as an 8-bit palette PNG whose palette is the grey ramp.
    """
    if array is None:
        array = pattern(bits=bits)
    if bits == 16 and array.dtype != np.uint16:
        array = array.astype(np.uint16)
    if palette:
        if array.ndim != 2 or array.dtype != np.uint8:
            raise ValueError("palette PNGs are built from grey uint8 arrays")
        img = Image.frombytes("P", (array.shape[1], array.shape[0]), array.tobytes())
        img.putpalette(bytes(np.repeat(np.arange(256, dtype=np.uint8), 3)))
        return _save(img, "PNG")
    return _save(_pil_image(array), "PNG")


def make_jpeg(
    array: np.ndarray | None = None,
    *,
    quality: int = 95,
    exif_orientation: int | None = None,
    cmyk: bool = False,
) -> bytes:
    """JPEG bytes (grey or RGB). ``exif_orientation`` (1-8) writes the EXIF Orientation tag;
    ``cmyk=True`` stores the image in CMYK (as print workflows and some scanners do)."""
    img = _pil_image(pattern() if array is None else array)
    params: dict[str, object] = {"quality": quality}
    if cmyk:
        img = img.convert("CMYK")
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        params["exif"] = exif.tobytes()
    return _save(img, "JPEG", **params)


def make_tiff(
    array: np.ndarray | None = None,
    *,
    pages: Sequence[np.ndarray] | None = None,
    compression: str | None = None,
) -> bytes:
    """TIFF bytes: uint8/uint16 grey, float32 (mode F), RGB. ``pages`` appends more pages."""
    first = pattern() if array is None else array
    img = Image.fromarray(first)
    params: dict[str, object] = {}
    if compression:
        params["compression"] = compression
    if pages:
        params["save_all"] = True
        params["append_images"] = [Image.fromarray(p) for p in pages]
    return _save(img, "TIFF", **params)


def make_bmp(array: np.ndarray | None = None) -> bytes:
    """BMP bytes (8-bit grey via a palette, or 24-bit RGB)."""
    return _save(_pil_image(pattern() if array is None else array), "BMP")


def make_gif(frames: Sequence[np.ndarray] | None = None) -> bytes:
    """GIF bytes; more than one frame makes an animated GIF (frames are uint8 grey)."""
    frames = list(frames) if frames is not None else [pattern()]
    imgs = [Image.fromarray(f) for f in frames]
    params: dict[str, object] = {}
    if len(imgs) > 1:
        params = {"save_all": True, "append_images": imgs[1:], "duration": 100, "loop": 0}
    return _save(imgs[0], "GIF", **params)


def make_webp(array: np.ndarray | None = None) -> bytes:
    """Lossless WebP bytes."""
    return _save(_pil_image(pattern() if array is None else array), "WEBP", lossless=True)


def make_png_bomb(width: int = 60_000, height: int = 60_000) -> bytes:
    """A valid 1-bit grey PNG of ``width``×``height`` black pixels that is only a few hundred KB.

    The IDAT stream is built from identical full-flush deflate blocks, so it is created in well
    under a second; decoding it would need ``width*height`` bytes (3.6 GB by default).
    """
    return _png_bomb(width, height)


@functools.cache
def _png_bomb(width: int, height: int) -> bytes:
    row = (width + 7) // 8 + 1  # filter byte + packed 1-bit samples, all zero
    rows_per_block = max(1, min(height, 2**23 // row))
    blocks, rest = divmod(height, rows_per_block)
    chunk = bytes(row * rows_per_block)
    comp = zlib.compressobj(9)
    first = comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH)
    same = comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH)
    parts = [first] + [same] * (blocks - 1)
    if rest:
        parts.append(comp.compress(bytes(row * rest)) + comp.flush(zlib.Z_FULL_FLUSH))
    tail = comp.flush(zlib.Z_FINISH)
    total = row * height
    adler = ((total % 65521) << 16) | 1  # adler32 of all-zero data
    idat = b"".join(parts) + tail[:-4] + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


# --------------------------------------------------------------------------------------------------
# Non-image files
# --------------------------------------------------------------------------------------------------


def make_pdf() -> bytes:
    """A minimal one-page PDF."""
    return (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
        b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
    )


def make_html() -> bytes:
    """A small HTML page (what a browser saves when a viewer link is downloaded)."""
    return (
        b"<!DOCTYPE html>\n<html><head><title>PACS viewer</title></head>"
        b"<body><img src='x.png'></body></html>\n"
    )


def make_zip(members: dict[str, bytes] | None = None) -> bytes:
    """A ZIP archive (default: one PNG inside)."""
    members = members if members is not None else {"image.png": make_png()}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, payload in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), payload)
    return buf.getvalue()


def make_text() -> bytes:
    """A plain-text file (a report pasted into a file renamed .png)."""
    return b"Findings: no acute fracture. Impression: normal wrist radiograph.\n"


# --------------------------------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------------------------------


def make_dicom(
    pixels: np.ndarray | None = None,
    *,
    preamble: bool = True,
    file_meta: bool = True,
    **options: Any,
) -> bytes:
    """DICOM Part 10 bytes for a radiograph.

    ``pixels``: (H, W) grey, (F, H, W) multi-frame grey, (H, W, 3) or (F, H, W, 3) colour (with an
    RGB/YBR ``photometric``); uint8/uint16/int16 (default :func:`pattern` with 12 bits stored).
    ``bits_stored`` < bits allocated sets HighBit accordingly; ``garbage_high_bits`` fills the unused
    high bits with a fixed pattern (the decoder must mask them). ``window`` may hold several values
    (multi-valued centre/width). ``voi_lut=(first_mapped, bits, table)`` adds a VOI LUT Sequence.
    ``compress``: None, "rle", "jpeg-baseline", "jpeg-lossless", "jpeg2000", "jpeg2000-lossless".
    ``transfer_syntax`` overrides the meta's UID (e.g. an unsupported one) and encapsulates the
    pixel data as is. ``preamble=False`` drops the 128-byte preamble and "DICM"; ``file_meta=False``
    writes a bare implicit-VR dataset (no meta group, as old archives do). ``rows``/``columns``
    override the header after the pixel data is built; ``pixel_data`` replaces it verbatim.
    ``phi=True`` adds the :data:`PHI` identifiers. Every option but ``preamble`` and ``file_meta`` is
    :func:`make_dicom_dataset`'s (its signature lists them, with their defaults).
    """
    ds = make_dicom_dataset(pixels, **options)
    return dicom_bytes(ds, preamble=preamble, file_meta=file_meta)


def dicom_bytes(ds: Dataset, *, preamble: bool = True, file_meta: bool = True) -> bytes:
    """Serialise a dataset: Part 10 with preamble, without preamble, or a bare implicit-VR dataset."""
    buf = io.BytesIO()
    if not file_meta:
        bare = Dataset()
        bare.update(ds)
        pydicom.dcmwrite(buf, bare, implicit_vr=True, little_endian=True, enforce_file_format=False)
        return buf.getvalue()
    if ds.file_meta.TransferSyntaxUID.is_transfer_syntax:
        ds.save_as(buf, enforce_file_format=True)
        data = buf.getvalue()
    else:  # pydicom refuses to write a syntax it does not know: write meta + explicit VR LE by hand
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        fp.write(bytes(128) + b"DICM")
        write_file_meta_info(fp, ds.file_meta, enforce_standard=True)
        write_dataset(fp, ds)
        data = fp.getvalue()
    return data if preamble else data[132:]


def make_dicom_dataset(
    pixels: np.ndarray | None = None,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    signed: bool | None = None,
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float | Sequence[float], float | Sequence[float]] | None = None,
    voi_function: str | None = None,
    voi_lut: tuple[int, int, Sequence[int]] | None = None,
    compress: str | None = None,
    transfer_syntax: str | None = None,
    phi: bool = False,
    garbage_high_bits: bool = False,
    rows: int | None = None,
    columns: int | None = None,
    pixel_data: bytes | None = None,
    include_pixels: bool = True,
    sop_class: str = DX_FOR_PRESENTATION,
    modality: str = "DX",
    view: str | None = "PA",
    body_part: str | None = "CHEST",
    pixel_spacing: tuple[float, float] | None = (0.15, 0.15),
    extra: dict[str, object] | None = None,
) -> Dataset:
    """The dataset behind :func:`make_dicom` (same arguments except the serialisation ones)."""
    colour = photometric in _COLOR_PHOTOMETRICS
    if pixels is None:
        pixels = colour_pattern() if colour else pattern(bits=12)
        if bits_stored is None and not colour:
            bits_stored = 12
    arr = np.asarray(pixels)
    frames = arr.shape[0] if arr.ndim == (4 if colour else 3) else 1
    frame_shape = arr.shape[1:] if frames > 1 or arr.ndim == (4 if colour else 3) else arr.shape
    height, width = frame_shape[:2]
    bits_allocated = arr.dtype.itemsize * 8
    bits_stored = bits_stored or bits_allocated
    signed = arr.dtype.kind == "i" if signed is None else signed

    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(PHI["SOPInstanceUID"] if phi else f"{_UID_ROOT}.3")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(f"{_UID_ROOT}.0")
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = PHI["StudyInstanceUID"] if phi else f"{_UID_ROOT}.1"
    ds.SeriesInstanceUID = PHI["SeriesInstanceUID"] if phi else f"{_UID_ROOT}.2"
    ds.Modality = modality
    if view is not None:
        ds.ViewPosition = view
    if body_part is not None:
        ds.BodyPartExamined = body_part
    if pixel_spacing is not None:
        if modality == "DX":
            ds.ImagerPixelSpacing = list(pixel_spacing)
        else:
            ds.PixelSpacing = list(pixel_spacing)
    if phi:
        for keyword, value in PHI.items():
            if keyword not in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
                setattr(ds, keyword, value)
    if sop_class == BASIC_TEXT_SR or not include_pixels:
        _apply_extra(ds, extra)
        return ds

    ds.Rows, ds.Columns = height, width
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = photometric
    if colour:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if slope is not None or intercept is not None:
        ds.RescaleSlope = 1.0 if slope is None else slope
        ds.RescaleIntercept = 0.0 if intercept is None else intercept
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_function is not None:
        ds.VOILUTFunction = voi_function
    if voi_lut is not None:
        first, lut_bits, table = voi_lut
        item = Dataset()
        item.add_new(0x00283002, "US", [len(table) % 65536, first, lut_bits])
        item.add_new(0x00283006, "US", [int(v) for v in table])
        ds.VOILUTSequence = DicomSequence([item])

    native = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<")))
    raw = native.tobytes()
    if garbage_high_bits and bits_stored < bits_allocated:
        words = native.view(np.uint16 if bits_allocated == 16 else np.uint8).copy()
        mask = ~np.array((1 << bits_stored) - 1, dtype=words.dtype)
        words |= mask & np.array(0xA5A5 if bits_allocated == 16 else 0xA5, dtype=words.dtype)
        raw = words.tobytes()
    ds.PixelData = raw
    ds["PixelData"].VR = "OW" if bits_allocated > 8 else "OB"

    if compress is not None:
        _compress(ds, native, compress, frames)
    if transfer_syntax is not None:
        ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
        if UID(transfer_syntax) != ExplicitVRLittleEndian:
            size = len(raw) // frames
            ds.PixelData = encapsulate([raw[i * size : (i + 1) * size] for i in range(frames)])
            ds["PixelData"].VR = "OB"
    if pixel_data is not None:
        ds.PixelData = pixel_data
    if rows is not None:
        ds.Rows = rows
    if columns is not None:
        ds.Columns = columns
    _apply_extra(ds, extra)
    return ds


def _apply_extra(ds: Dataset, extra: dict[str, object] | None) -> None:
    for keyword, value in (extra or {}).items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)


def _compress(ds: Dataset, native: np.ndarray, method: str, frames: int) -> None:
    frame_list = [native] if frames == 1 else list(native)
    if method == "rle":
        ds.compress(RLELossless, native, generate_instance_uid=False)
    elif method == "jpeg2000-lossless":
        ds.compress(JPEG2000Lossless, native, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    elif method == "jpeg2000":
        ds.compress(JPEG2000, native, encoding_plugin="pylibjpeg", j2k_cr=[5], generate_instance_uid=False)
    elif method == "jpeg-baseline":
        if native.dtype != np.uint8:
            raise ValueError("JPEG baseline needs uint8 pixels")
        colour = ds.SamplesPerPixel == 3
        encoded = [
            _save(Image.fromarray(f), "JPEG", quality=95, subsampling=1 if colour else 0) for f in frame_list
        ]
        ds.PixelData = encapsulate(encoded)
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        if colour:
            ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.LossyImageCompression = "01"
    elif method == "jpeg-lossless":
        if ds.SamplesPerPixel != 1 or native.dtype.kind != "u":
            raise ValueError("the JPEG lossless factory encodes unsigned grey pixels only")
        ds.PixelData = encapsulate([encode_jpeg_lossless(f, int(ds.BitsStored)) for f in frame_list])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    else:
        raise ValueError(f"unknown compression {method!r}")


# Huffman table for lossless-JPEG difference categories 0..16 (canonical; lengths 2, 3×5, 4..14).
_LL_BITS = (0, 1, 5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0)
_LL_VALS = tuple(range(17))


def _huffman_codes(bits: Sequence[int], vals: Sequence[int]) -> dict[int, tuple[int, int]]:
    codes: dict[int, tuple[int, int]] = {}
    code, k = 0, 0
    for length, count in enumerate(bits, start=1):
        for _ in range(count):
            codes[vals[k]] = (code, length)
            code += 1
            k += 1
        code <<= 1
    return codes


def encode_jpeg_lossless(frame: np.ndarray, precision: int) -> bytes:
    """Encode a grey (H, W) unsigned frame as lossless JPEG (ITU T.81 process 14, predictor 1).

    A small pure-Python encoder (for test-sized images) so that the JPEG Lossless transfer syntax
    (1.2.840.10008.1.2.4.70), common in CR/DX archives, can be tested without an external encoder.
    """
    if frame.ndim != 2 or not 2 <= precision <= 16:
        raise ValueError("need a 2-D frame and a precision of 2..16 bits")
    h, w = frame.shape
    x = frame.astype(np.int64)
    pred = np.empty_like(x)
    pred[0, 0] = 1 << (precision - 1)
    pred[0, 1:] = x[0, :-1]
    pred[1:, 0] = x[:-1, 0]
    pred[1:, 1:] = x[1:, :-1]
    diff = (x - pred) & 0xFFFF
    diff = np.where(diff >= 0x8000, diff - 0x10000, diff)
    codes = _huffman_codes(_LL_BITS, _LL_VALS)

    out = bytearray()
    acc, nbits = 0, 0

    def put(value: int, length: int) -> None:
        nonlocal acc, nbits
        acc = (acc << length) | (value & ((1 << length) - 1))
        nbits += length
        while nbits >= 8:
            nbits -= 8
            byte = (acc >> nbits) & 0xFF
            out.append(byte)
            if byte == 0xFF:
                out.append(0x00)  # byte stuffing
        acc &= (1 << nbits) - 1

    for d in diff.ravel().tolist():
        if d == -32768:  # category 16 (difference 32768), no extra bits
            put(*codes[16])
            continue
        category = abs(d).bit_length()
        put(*codes[category])
        if category:
            put(d if d > 0 else d - 1, category)
    if nbits:
        put(0x7F, 8 - nbits)  # pad with 1-bits

    sof = struct.pack(">BHHB", precision, h, w, 1) + bytes([1, 0x11, 0])
    dht = bytes([0x00, *_LL_BITS, *_LL_VALS])
    sos = bytes([1, 1, 0x00, 1, 0, 0])  # Ns=1, Cs=1, Td/Ta=0, Ss=1 (predictor), Se=0, Ah/Al=0
    return (
        b"\xff\xd8" + _marker(0xC3, sof) + _marker(0xC4, dht) + _marker(0xDA, sos) + bytes(out) + b"\xff\xd9"
    )


def _marker(code: int, payload: bytes) -> bytes:
    return bytes([0xFF, code]) + struct.pack(">H", len(payload) + 2) + payload


def make_dicom_sr() -> bytes:
    """A Basic Text SR (no pixel data), as a PACS export of a report would be."""
    return make_dicom(sop_class=BASIC_TEXT_SR, modality="SR", view=None, body_part=None, pixel_spacing=None)


# --------------------------------------------------------------------------------------------------
# Fuzzing seeds and mutations
# --------------------------------------------------------------------------------------------------


@functools.cache
def fuzz_seeds() -> dict[str, bytes]:
    """Small valid files of every supported layout (32×40), the starting points for mutation fuzzing."""
    grey, grey12 = pattern(32, 40), pattern(32, 40, bits=12)
    return {
        "png8": make_png(grey),
        "png16": make_png(pattern(32, 40, bits=16)),
        "png-rgba": make_png(np.dstack([grey, grey, grey, grey])),
        "png-palette": make_png(grey, palette=True),
        "jpeg": make_jpeg(grey),
        "jpeg-exif": make_jpeg(colour_pattern(32, 40), exif_orientation=6),
        "tiff": make_tiff(grey, pages=[grey]),
        "tiff-float": make_tiff(grey.astype(np.float32)),
        "bmp": make_bmp(grey),
        "gif": make_gif([grey, grey[::-1]]),
        "webp": make_webp(grey),
        "dicom": make_dicom(grey12, bits_stored=12, window=(2000.0, 3000.0), slope=1.0, intercept=-1024.0),
        "dicom-no-preamble": make_dicom(grey12, bits_stored=12, preamble=False),
        "dicom-bare": make_dicom(grey12, bits_stored=12, file_meta=False),
        "dicom-m1-multiframe": make_dicom(
            np.stack([grey12, grey12]), bits_stored=12, photometric="MONOCHROME1"
        ),
        "dicom-rgb": make_dicom(colour_pattern(32, 40), photometric="RGB"),
        "dicom-voi-lut": make_dicom(grey12, bits_stored=12, voi_lut=(0, 12, list(range(0, 4096, 16)))),
        "dicom-rle": make_dicom(grey12, bits_stored=12, compress="rle"),
        "dicom-jpeg-lossless": make_dicom(grey12, bits_stored=12, compress="jpeg-lossless"),
        "dicom-jpeg-baseline": make_dicom(grey, compress="jpeg-baseline"),
        "dicom-jpeg2000": make_dicom(grey12, bits_stored=12, compress="jpeg2000-lossless"),
    }


_INTERESTING = (
    b"\x00",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"\x00\x00",
    b"\xff\xff",
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\x7f\xff\xff\xff",
    b"\x00\x00\x00\x80",
    b"\x01\x00",
    b"\x00\x01",
)


def mutate(data: bytes, rng: random.Random, *, rounds: int | None = None) -> bytes:
    """Apply a few random byte-level mutations (flip, overwrite with boundary values, insert, delete,
    duplicate a slice, truncate). Positions favour the first 1 KiB, where headers live."""
    buf = bytearray(data)
    for _ in range(rounds or rng.randint(1, 4)):
        if not buf:
            buf.extend(rng.randbytes(rng.randint(1, 16)))
            continue
        head = min(len(buf), 1024)
        pos = rng.randrange(head) if rng.random() < 0.7 else rng.randrange(len(buf))
        op = rng.randrange(6)
        if op == 0:
            buf[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            value = rng.choice(_INTERESTING)
            buf[pos : pos + len(value)] = value
        elif op == 2:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 3:
            del buf[pos : pos + rng.randint(1, 64)]
        elif op == 4:
            start = rng.randrange(len(buf))
            buf[pos:pos] = buf[start : start + rng.randint(1, 256)]
        else:
            del buf[rng.randrange(len(buf)) :]
    return bytes(buf)
