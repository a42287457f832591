"""Property tests: no input, however hostile, makes load_radiograph raise anything but ImageError, or hang.

Random bytes, random bytes behind each format's magic number, byte-level mutations of valid files of
every layout (tests/factories.fuzz_seeds), and DICOMs with random header values. Every result is
either a sane Radiograph or an ImageError whose message is a sentence, within a few seconds.

Budget: ``BONECLS_FUZZ_EXAMPLES`` (env) sets the examples per test; otherwise a non-default hypothesis
profile (``--hypothesis-profile=long``, registered here or in conftest) gives its ``max_examples``;
otherwise 150 (CI). ``bench/fuzz_imaging.py`` runs a longer, coverage-guided campaign.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pydicom
import pytest
from factories import dicom_bytes, fuzz_seeds, make_dicom_dataset, pattern
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from bonecls.errors import ImageError
from bonecls.imaging import Limits, Radiograph, load_radiograph

pytestmark = pytest.mark.filterwarnings("ignore")  # decoders warn freely about damaged input

for _name, _examples in (("ci", 150), ("long", 5000)):
    try:
        settings.get_profile(_name)
    except InvalidArgument:
        settings.register_profile(_name, max_examples=_examples, deadline=None)


def _max_examples() -> int:
    if os.environ.get("BONECLS_FUZZ_EXAMPLES"):
        return int(os.environ["BONECLS_FUZZ_EXAMPLES"])
    if settings.get_current_profile_name() not in ("default", "ci"):
        return settings.default.max_examples
    return 150


FUZZ = settings(
    max_examples=_max_examples(),
    deadline=None,  # timing is asserted per input below, with a bound that tolerates a loaded runner
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MAX_SECONDS = 5.0
# A small pixel cap keeps mutated headers from asking for hundreds of MB on a 2-core CI runner; the
# code paths are the same as with the default limits.
LIMITS = Limits(max_pixels=4_000_000)

MAGICS = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff\xe0",
    b"II*\x00",
    b"MM\x00*",
    b"GIF89a",
    b"BM\x00\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00\x00\x00",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    bytes(128) + b"DICM",
    b"\x02\x00\x00\x00UL\x04\x00",
    b"\x08\x00\x05\x00CS\x0a\x00",
    b"\x08\x00\x16\x00\x1a\x00\x00\x00",
)


def assert_loads_or_image_error(data: bytes) -> Radiograph | None:
    """The property: a sane Radiograph or an ImageError sentence, quickly; nothing else escapes."""
    start = time.perf_counter()
    try:
        rg = load_radiograph(data, limits=LIMITS)
    except ImageError as exc:
        message = str(exc)
        assert message and message[0].isupper() and message.endswith("."), message
        rg = None
    elapsed = time.perf_counter() - start
    assert elapsed < MAX_SECONDS, f"took {elapsed:.1f} s"
    if rg is not None:
        assert rg.pixels.ndim == 2 and rg.pixels.shape == rg.raw.shape
        assert rg.pixels.dtype == np.float32 and rg.raw.dtype == np.float32
        assert bool(np.isfinite(rg.raw).all())
        assert float(rg.pixels.min()) >= 0.0 and float(rg.pixels.max()) <= 1.0
        if rg.window is not None:
            assert all(math.isfinite(v) for v in rg.window) and rg.window[1] > 0
    return rg


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    assert_loads_or_image_error(data)


@FUZZ
@given(st.sampled_from(MAGICS), st.binary(max_size=2048))
def test_random_bytes_behind_magic_numbers(magic: bytes, tail: bytes) -> None:
    assert_loads_or_image_error(magic + tail)


# (operation, position, bytes) triples, applied in order; shrinks to the smallest breaking edit.
MUTATIONS = st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, 2**16), st.binary(min_size=1, max_size=8)),
    min_size=1,
    max_size=6,
)


def apply_mutations(data: bytes, ops: list[tuple[int, int, bytes]]) -> bytes:
    buf = bytearray(data)
    for op, where, payload in ops:
        if not buf:
            buf.extend(payload)
            continue
        # favour the first KiB (headers): positions beyond it wrap into it half of the time
        pos = where % len(buf) if where % 2 else where % min(len(buf), 1024)
        if op == 0:
            buf[pos] ^= payload[0] or 1
        elif op == 1:
            buf[pos : pos + len(payload)] = payload
        elif op == 2:
            buf[pos:pos] = payload
        elif op == 3:
            del buf[pos : pos + payload[0] + 1]
        elif op == 4:
            buf[pos:pos] = buf[payload[0] : payload[0] + 4 * len(payload)]
        else:
            del buf[pos:]
    return bytes(buf)


SEED_NAMES = sorted(fuzz_seeds())


@FUZZ
@given(st.sampled_from(SEED_NAMES), MUTATIONS)
def test_mutated_valid_files(seed: str, ops: list[tuple[int, int, bytes]]) -> None:
    assert_loads_or_image_error(apply_mutations(fuzz_seeds()[seed], ops))


def test_every_seed_loads_unmutated() -> None:
    for name, data in fuzz_seeds().items():
        assert assert_loads_or_image_error(data) is not None, name


TRANSFER_SYNTAXES = (
    pydicom.uid.ExplicitVRLittleEndian,
    pydicom.uid.ImplicitVRLittleEndian,
    pydicom.uid.ExplicitVRBigEndian,
    pydicom.uid.RLELossless,
    pydicom.uid.JPEGBaseline8Bit,
    pydicom.uid.JPEGLosslessSV1,
    pydicom.uid.JPEGLSLossless,
    pydicom.uid.JPEG2000Lossless,
    pydicom.uid.HTJ2KLossless,
)
NUMBER_TEXT = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda v: f"{v:.6g}"),
    st.sampled_from(["", "NaN", "inf", "-inf", "1e999", "abc", "0", "-0", "1\\2", "\\"]),
)


@FUZZ
@given(
    rows=st.integers(0, 65535),
    columns=st.integers(0, 65535),
    bits_allocated=st.sampled_from([0, 1, 7, 8, 12, 16, 24, 32, 64]),
    bits_stored=st.integers(0, 40),
    high_bit=st.integers(0, 40),
    pixel_representation=st.integers(0, 2),
    samples=st.integers(0, 4),
    photometric=st.sampled_from(
        ["MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR", "HSV", "", "X"]
    ),
    frames=st.sampled_from(["", "0", "1", "2", "-3", "1000000000", "abc", "2.5"]),
    transfer_syntax=st.sampled_from(TRANSFER_SYNTAXES),
    center=NUMBER_TEXT,
    width=NUMBER_TEXT,
    slope=NUMBER_TEXT,
)
def test_dicom_header_values(
    rows: int,
    columns: int,
    bits_allocated: int,
    bits_stored: int,
    high_bit: int,
    pixel_representation: int,
    samples: int,
    photometric: str,
    frames: str,
    transfer_syntax: str,
    center: str,
    width: str,
    slope: str,
) -> None:
    # keep most examples near the real size so that decoding is reached, not just the size checks
    if rows > 4096:
        rows = rows % 80
    if columns > 4096:
        columns = columns % 96
    ds = make_dicom_dataset(pattern(64, 80, bits=12), bits_stored=12)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.UID(transfer_syntax)
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits_allocated, bits_stored, high_bit
    ds.PixelRepresentation, ds.SamplesPerPixel = pixel_representation, samples
    ds.PhotometricInterpretation = photometric
    for keyword, value in (
        ("NumberOfFrames", frames),
        ("WindowCenter", center),
        ("WindowWidth", width),
        ("RescaleSlope", slope),
    ):
        if value:
            _set_text(ds, keyword, value)
    if transfer_syntax in (pydicom.uid.ImplicitVRLittleEndian, pydicom.uid.ExplicitVRBigEndian):
        try:
            data = _write_native(ds, transfer_syntax)
        except (ValueError, OSError, TypeError, AttributeError):
            return  # pydicom cannot write this combination; nothing to fuzz
    else:
        try:
            data = dicom_bytes(ds)
        except (ValueError, OSError, TypeError, AttributeError):
            return
    assert_loads_or_image_error(data)


def _set_text(ds: pydicom.Dataset, keyword: str, value: str) -> None:
    """Set a numeric-string attribute, falling back to VR LO so that invalid text reaches the file."""
    vr = "IS" if keyword == "NumberOfFrames" else "DS"
    try:
        ds[keyword] = pydicom.DataElement(keyword, vr, value)
    except (ValueError, OverflowError):
        ds[keyword] = pydicom.DataElement(keyword, "LO", value)


def _write_native(ds: pydicom.Dataset, transfer_syntax: str) -> bytes:
    import io

    buf = io.BytesIO()
    ds.save_as(
        buf,
        implicit_vr=transfer_syntax == pydicom.uid.ImplicitVRLittleEndian,
        little_endian=transfer_syntax != pydicom.uid.ExplicitVRBigEndian,
        enforce_file_format=True,
    )
    return buf.getvalue()
