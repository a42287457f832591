"""Unit tests of bonecls.imaging on in-memory inputs from tests/factories.py, with exact values."""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import pydicom
import pytest
from factories import (
    JPEG_XL_UID,
    PHI,
    PHI_NEEDLES,
    colour_pattern,
    dicom_bytes,
    make_bmp,
    make_dicom,
    make_dicom_dataset,
    make_gif,
    make_jpeg,
    make_png,
    make_png_bomb,
    make_tiff,
    make_webp,
    pattern,
)
from PIL import Image, PngImagePlugin
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_windowing

from bonecls import imaging
from bonecls.errors import ImageError
from bonecls.imaging import (
    Limits,
    Radiograph,
    apply_window,
    data_window,
    default_window,
    load_radiograph,
    sniff_format,
    to_uint8,
)

# --------------------------------------------------------------------------------------------------
# sniffing
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (make_png(), "png"),
        (make_jpeg(), "jpeg"),
        (make_tiff(), "tiff"),
        (make_bmp(), "bmp"),
        (make_gif(), "gif"),
        (make_webp(), "webp"),
        (make_dicom(), "dicom"),
        (make_dicom(preamble=False), "dicom"),
        (make_dicom(file_meta=False), "dicom"),
        (b"DICM" + make_dicom(preamble=False), "dicom"),
        (b"%PDF-1.4\n...", None),
        (b"<!DOCTYPE html><html></html>", None),
        (b"PK\x03\x04rest of a zip", None),
        (b"BM but not a bitmap header at all", None),
        (b"plain text that is long enough to reach offset one hundred and thirty two " * 3, None),
        (b"\x08\x00\x05\x00plausible group but no VR and a huge length", None),
        (b"", None),
    ],
)
def test_sniff_format_uses_magic_bytes_only(data: bytes, expected: str | None) -> None:
    assert sniff_format(data) == expected


def test_text_with_a_multibyte_character_cut_at_1_kib_is_still_text() -> None:
    text = ("Befund: keine Fraktur. " * 50)[:1023].encode() + "öffentlich.".encode()
    assert text[1023:1025] == "ö".encode()  # the sniffed first KiB ends inside this character
    with pytest.raises(ImageError, match="This file is a text file"):
        load_radiograph(text)


def test_dicom_preamble_wins_over_tiff_magic_in_preamble() -> None:
    data = bytearray(make_dicom())
    data[:4] = b"II*\x00"  # dual-personality DICOM/TIFF files carry a TIFF header in the preamble
    assert sniff_format(bytes(data)) == "dicom"


# --------------------------------------------------------------------------------------------------
# windowing helpers
# --------------------------------------------------------------------------------------------------


def test_apply_window_linear_exact_values() -> None:
    raw = np.array([[1500, 1750, 2000, 2250, 2500, 3000]], dtype=np.float32)
    out = apply_window(raw, 2000, 1000)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0.0, 0.25, 0.5, 0.75, 1.0, 1.0]])
    np.testing.assert_array_equal(
        apply_window(raw, 2000, 1000, invert=True), [[1.0, 0.75, 0.5, 0.25, 0.0, 0.0]]
    )


def test_apply_window_linear_matches_pydicom_standard_formula() -> None:
    raw = np.arange(-50, 60, dtype=np.float64)
    ds = pydicom.Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsStored = 16
    ds.PixelRepresentation = 1
    ds.WindowCenter, ds.WindowWidth = 3, 41
    expected = apply_windowing(raw, ds)  # mapped onto the signed 16-bit output range
    lo, hi = -(2**15), 2**15 - 1
    np.testing.assert_allclose(
        apply_window(raw, 3, 41, function="LINEAR"), (expected - lo) / (hi - lo), atol=1e-6
    )


def test_apply_window_sigmoid_and_errors() -> None:
    out = apply_window(np.array([0.0, 100.0, 1e9, -1e9]), 100, 50, function="SIGMOID")
    assert out[1] == pytest.approx(0.5) and out[2] == 1.0 and out[3] < 1e-30
    assert out[0] == pytest.approx(1 / (1 + math.exp(8)), rel=1e-5)
    with pytest.raises(ImageError, match="positive width"):
        apply_window(np.zeros(3), 0, 0)
    with pytest.raises(ImageError, match="positive width"):
        apply_window(np.zeros(3), float("nan"), 10)
    with pytest.raises(ImageError, match="at least 1"):
        apply_window(np.zeros(3), 0, 0.5, function="LINEAR")


def test_default_window_and_to_uint8() -> None:
    assert default_window(np.array([10.0, 30.0])) == (20.0, 20.0)
    assert default_window(np.array([7.0, 7.0])) == (7.0, 1.0)
    with pytest.raises(ImageError, match="NaN"):
        default_window(np.array([1.0, np.nan]))
    np.testing.assert_array_equal(to_uint8(np.array([-1.0, 0.0, 0.5, 1.0, 2.0])), [0, 0, 128, 255, 255])


# --------------------------------------------------------------------------------------------------
# Pillow formats
# --------------------------------------------------------------------------------------------------


def test_png_8bit_is_identity_rendered_with_exact_raw() -> None:
    arr = pattern()
    rg = load_radiograph(make_png(arr))
    assert rg.source_format == "png" and rg.photometric == "L" and rg.bit_depth == 8
    np.testing.assert_array_equal(rg.raw, arr.astype(np.float32))
    np.testing.assert_array_equal(rg.pixels, arr.astype(np.float32) / np.float32(255))
    assert rg.window == (127.5, 255.0)
    assert rg.original_size == arr.shape and rg.warnings == () and not rg.is_color_source
    assert rg.pixels.dtype == np.float32 and rg.raw.dtype == np.float32


def test_png_16bit_keeps_full_depth() -> None:
    arr = np.full((64, 80), 1000, dtype=np.uint16)
    arr[10, 10] = 1001
    arr[0, 0] = 3000
    rg = load_radiograph(make_png(arr))
    assert rg.bit_depth == 16 and rg.photometric == "I;16"
    assert rg.raw[10, 10] == 1001 and rg.raw[10, 11] == 1000  # one unit apart, still distinct
    assert rg.pixels[10, 10] > rg.pixels[10, 11]
    assert rg.window == (2000.0, 2000.0)  # stored range 1000..3000
    assert rg.pixels[0, 0] == 1.0 and rg.pixels[5, 5] == 0.0
    assert rg.pixels[10, 10] == pytest.approx(1 / 2000)


def test_16bit_tiff_and_float_tiff() -> None:
    arr16 = pattern(bits=16)
    rg = load_radiograph(make_tiff(arr16))
    np.testing.assert_array_equal(rg.raw, arr16.astype(np.float32))
    assert rg.bit_depth == 16
    arr_f = np.linspace(-1.5, 2.5, 64 * 80, dtype=np.float32).reshape(64, 80)
    rg = load_radiograph(make_tiff(arr_f))
    np.testing.assert_array_equal(rg.raw, arr_f)
    assert rg.photometric == "F" and rg.bit_depth == 32 and rg.window == (0.5, 4.0)
    assert rg.pixels[0, 0] == 0.0 and rg.pixels[-1, -1] == 1.0


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_float_tiff_with_invalid_values_is_rejected(bad: float) -> None:
    arr = np.zeros((64, 80), dtype=np.float32)
    arr[3, 3] = bad
    word = "NaN" if np.isnan(bad) else "infinite"
    with pytest.raises(ImageError, match=rf"contains invalid \({word}\) pixel values"):
        load_radiograph(make_tiff(arr))


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_exif_orientation_is_applied(fmt: str) -> None:
    arr = pattern()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buf = io.BytesIO()
    Image.fromarray(arr).save(
        buf, format=fmt.upper(), exif=exif.tobytes(), **({"quality": 100} if fmt == "jpeg" else {})
    )
    rg = load_radiograph(buf.getvalue())
    expected = np.rot90(arr, k=-1).astype(np.float32)
    assert rg.pixels.shape == (80, 64) and rg.original_size == (64, 80)
    tolerance = 0 if fmt == "png" else 6
    assert np.abs(rg.raw - expected).max() <= tolerance
    assert rg.raw[0, -1] >= 250 and rg.raw[-1, 0] <= 5  # stored top-left marker is now top-right


def test_jpeg_exif_factory_matches_transposition() -> None:
    for orientation, transform in [
        (3, lambda a: np.rot90(a, 2)),
        (8, lambda a: np.rot90(a, 1)),
        (2, np.fliplr),
    ]:
        rg = load_radiograph(make_jpeg(pattern(), quality=100, exif_orientation=orientation))
        assert np.abs(rg.raw - transform(pattern()).astype(np.float32)).max() <= 6, orientation


def test_rgb_photo_is_converted_with_bt601_luma_and_flagged() -> None:
    rgb = colour_pattern()
    rg = load_radiograph(make_png(rgb))
    expected = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    np.testing.assert_allclose(rg.raw, expected, atol=1e-3)
    assert rg.is_color_source and any("in colour" in w for w in rg.warnings)


def test_grey_stored_as_rgb_keeps_exact_values_and_is_not_colour() -> None:
    arr = pattern()
    rg = load_radiograph(make_png(np.dstack([arr, arr, arr])))
    np.testing.assert_array_equal(rg.raw, arr.astype(np.float32))
    assert not rg.is_color_source and rg.warnings == ()
    # JPEG of a grey image saved as RGB: chroma noise must not count as colour
    rg = load_radiograph(make_jpeg(np.dstack([arr, arr, arr]), quality=75))
    assert not rg.is_color_source


def test_rgba_is_composited_on_black() -> None:
    arr = pattern()
    alpha = np.full_like(arr, 255)
    alpha[:, :40] = 0
    alpha[:, 40:60] = 102  # 40 %
    rg = load_radiograph(make_png(np.dstack([arr, arr, arr, alpha])))
    assert np.all(rg.raw[:, :40] == 0)
    np.testing.assert_allclose(rg.raw[:, 40:60], arr[:, 40:60] * 0.4, atol=1e-3)
    np.testing.assert_array_equal(rg.raw[:, 60:], arr[:, 60:])
    assert imaging.WARN_TRANSPARENT in rg.warnings


def test_opaque_rgba_has_no_warning() -> None:
    arr = pattern()
    rg = load_radiograph(make_png(np.dstack([arr, arr, arr, np.full_like(arr, 255)])))
    assert rg.warnings == ()
    np.testing.assert_array_equal(rg.raw, arr)


def test_palette_and_cmyk_and_bmp() -> None:
    arr = pattern()
    rg = load_radiograph(make_png(arr, palette=True))
    assert rg.photometric == "P"
    np.testing.assert_array_equal(rg.raw, arr)
    rg = load_radiograph(make_jpeg(arr, cmyk=True, quality=100))
    assert rg.photometric == "CMYK" and np.abs(rg.raw - arr).max() <= 6 and not rg.is_color_source
    np.testing.assert_array_equal(load_radiograph(make_bmp(arr)).raw, arr)


def test_multi_page_and_animated_take_the_first_frame() -> None:
    first, second = pattern(), pattern()[::-1].copy()
    rg = load_radiograph(make_tiff(first, pages=[second, second]))
    np.testing.assert_array_equal(rg.raw, first)
    assert rg.warnings == ("Multi-page TIFF: showing page 1 of 3.",)
    rg = load_radiograph(make_gif([first, second]))
    np.testing.assert_array_equal(rg.raw, first)
    assert rg.warnings == ("Animated GIF: showing frame 1 of 2.",)


def test_frame_counting_is_bounded() -> None:
    frames = [np.full((16, 16), (7 * i) % 256, np.uint8) for i in range(1002)]
    rg = load_radiograph(make_gif(frames))
    assert "Animated GIF: showing frame 1 of more than 1000." in rg.warnings
    np.testing.assert_array_equal(rg.raw, frames[0])
    assert "Animated GIF: showing frame 1 of 1000." in load_radiograph(make_gif(frames[:1000])).warnings


def test_uniform_images_warn_no_contrast() -> None:
    black = load_radiograph(make_png(np.zeros((64, 64), np.uint8)))
    assert black.warnings == ("The image is all black; it carries no contrast to read.",)
    assert float(black.pixels.max()) == 0.0
    white = load_radiograph(make_png(np.full((64, 64), 255, np.uint8)))
    assert white.warnings == ("The image is all white; it carries no contrast to read.",)
    flat16 = load_radiograph(make_png(np.full((64, 64), 700, np.uint16)))
    assert flat16.window == (700.0, 1.0) and "carries no contrast" in flat16.warnings[0]


def test_small_and_odd_shapes_warn() -> None:
    rg = load_radiograph(make_png(np.full((1, 1), 9, np.uint8)))
    assert rg.pixels.shape == (1, 1)
    assert "only 1×1 pixels" in " ".join(rg.warnings)
    rg = load_radiograph(make_png(pattern(64, 1000)))
    assert "unusual shape" in " ".join(rg.warnings)


def test_webp_loads() -> None:
    arr = pattern()
    np.testing.assert_array_equal(load_radiograph(make_webp(arr)).raw, arr)


# --------------------------------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------------------------------


def test_dicom_monochrome2_full_range_without_window() -> None:
    arr = pattern(bits=12)
    rg = load_radiograph(make_dicom(arr, bits_stored=12))
    assert rg.source_format == "dicom" and rg.photometric == "MONOCHROME2" and rg.bit_depth == 12
    np.testing.assert_array_equal(rg.raw, arr.astype(np.float32))
    assert rg.window == (2047.5, 4095.0)
    assert rg.pixels[0, 0] == 1.0 and rg.pixels[-1, -1] == 0.0
    assert (rg.modality, rg.view, rg.body_part, rg.pixel_spacing) == ("DX", "PA", "CHEST", (0.15, 0.15))
    assert rg.warnings == () and not rg.is_color_source


def test_dicom_rescale_and_window_exact_values() -> None:
    arr = np.zeros((64, 80), dtype=np.uint16)
    arr[0, :5] = [500, 750, 1000, 1250, 1500]
    rg = load_radiograph(make_dicom(arr, slope=2.0, intercept=-1000.0, window=(1000.0, 2000.0)))
    np.testing.assert_array_equal(rg.raw[0, :5], [0.0, 500.0, 1000.0, 1500.0, 2000.0])  # 2*x - 1000
    np.testing.assert_array_equal(rg.pixels[0, :5], [0.0, 0.25, 0.5, 0.75, 1.0])
    assert rg.raw[5, 5] == -1000.0 and rg.pixels[5, 5] == 0.0
    assert rg.window == (1000.0, 2000.0)
    np.testing.assert_array_equal(apply_window(rg.raw, *rg.window), rg.pixels)


def test_dicom_header_window_wider_than_the_data_opens_on_a_data_window() -> None:
    """RG1_UNCR's case: header C 15000 / W 30000 over data 874..26479 (skewed low) opened washed out."""
    rng = np.random.default_rng(0)
    arr = np.clip(rng.gamma(2.0, 2500.0, size=(256, 256)) + 874, 874, 26479).astype(np.uint16)
    arr[0, 0], arr[-1, -1] = 874, 26479
    rg = load_radiograph(make_dicom(arr, photometric="MONOCHROME1", bits_stored=15, window=(15000, 30000)))
    lo_pct, hi_pct = np.percentile(arr, [1, 99])
    assert rg.window == pytest.approx(((lo_pct + hi_pct) / 2, hi_pct - lo_pct))
    assert any("wider than the pixel data (874–26479)" in w for w in rg.warnings)
    # the median film pixel is now mid-grey, not near white (the header window put it at 0.86)
    header = apply_window(rg.raw, 15000, 30000, invert=True)
    assert float(np.median(header)) > 0.8 and 0.3 < float(np.median(rg.pixels)) < 0.8
    np.testing.assert_array_equal(apply_window(rg.raw, *rg.window, invert=True), rg.pixels)
    # a header window that clips the data is the author's choice and is kept
    kept = load_radiograph(make_dicom(arr, bits_stored=15, window=(6000, 8000)))
    assert kept.window == (6000.0, 8000.0) and not kept.warnings


def test_data_window_is_robust_and_cheap_on_large_images() -> None:
    arr = np.full((3000, 3000), 100.0, dtype=np.float32)
    arr[:, 1500:] = 200.0
    arr[0, 0] = 1e6  # one marker pixel must not stretch the window
    center, width = data_window(arr)
    assert (center, width) == (150.0, 100.0)
    assert data_window(np.full((8, 8), 7.0)) == (7.0, 1.0)


def test_dicom_first_of_several_windows_is_used() -> None:
    arr = np.arange(64 * 80, dtype=np.uint16).reshape(64, 80)
    rg = load_radiograph(make_dicom(arr, window=([100.0, 3000.0], [200.0, 1000.0])))
    assert rg.window == (100.0, 200.0)
    assert rg.pixels[0, 0] == 0.0 and rg.pixels[0, 50] == 0.25 and rg.pixels[1, 20] == 0.5
    assert rg.pixels[2, 40] == 1.0  # value 200


def test_dicom_invalid_window_falls_back_to_full_range() -> None:
    arr = pattern(bits=12)
    rg = load_radiograph(make_dicom(arr, bits_stored=12, window=(100.0, 0.0)))
    assert rg.window == (2047.5, 4095.0) and imaging.WARN_BAD_WINDOW in rg.warnings


def test_dicom_sigmoid_voi_function() -> None:
    arr = np.full((64, 80), 400, dtype=np.uint16)
    arr[0, 0] = 0
    rg = load_radiograph(make_dicom(arr, window=(400.0, 100.0), voi_function="SIGMOID"))
    assert rg.pixels[1, 1] == pytest.approx(0.5)
    assert rg.pixels[0, 0] == pytest.approx(1 / (1 + math.exp(16)), abs=1e-7)


def test_monochrome1_is_inverted_so_bone_is_bright() -> None:
    arr = pattern(bits=12)
    m1 = load_radiograph(make_dicom(arr, bits_stored=12, photometric="MONOCHROME1"))
    m2 = load_radiograph(make_dicom(arr, bits_stored=12))
    np.testing.assert_array_equal(m1.raw, m2.raw)  # raw keeps modality values
    np.testing.assert_allclose(m1.pixels, 1.0 - m2.pixels, atol=1e-7)
    assert m1.pixels[0, 0] == 0.0 and m1.pixels[-1, -1] == 1.0 and m1.inverted
    np.testing.assert_array_equal(apply_window(m1.raw, *m1.window, invert=True), m1.pixels)


def test_voi_lut_sequence_is_applied() -> None:
    table = [0] * 100 + list(range(0, 4000, 40)) + [3960] * 100  # 300 entries, ramp on 100..199
    arr = np.zeros((64, 80), dtype=np.uint16)
    arr[0, :6] = [0, 50, 100, 150, 199, 250]
    arr += 1000  # first mapped value is 1000
    rg = load_radiograph(make_dicom(arr, voi_lut=(1000, 12, table), window=(5.0, 5.0)))
    np.testing.assert_allclose(rg.pixels[0, :6], [0, 0, 0, 2000 / 3960, 1.0, 1.0], atol=1e-6)
    assert rg.window == (1149.5, 99.0)  # the LUT ramps from input 1100 (0) to 1199 (max): sliders start there
    below = np.full((64, 80), 900, dtype=np.uint16)  # below the first mapped value -> first entry
    assert float(load_radiograph(make_dicom(below, voi_lut=(1000, 12, table))).pixels.max()) == 0.0


def test_bits_stored_masks_garbage_high_bits() -> None:
    arr = pattern(bits=12)
    rg = load_radiograph(make_dicom(arr, bits_stored=12, garbage_high_bits=True))
    np.testing.assert_array_equal(rg.raw, arr.astype(np.float32))
    assert rg.raw.max() == 4095


def test_signed_12_bit_dicom_with_rescale() -> None:
    arr = pattern(bits=12, signed=True)  # -2048..2047
    rg = load_radiograph(make_dicom(arr, bits_stored=12, garbage_high_bits=True, slope=1.0, intercept=-24.0))
    np.testing.assert_array_equal(rg.raw, arr.astype(np.float32) - 24)
    assert rg.raw.min() == -2048 - 24


@pytest.mark.parametrize("method", ["rle", "jpeg-lossless", "jpeg2000-lossless"])
def test_lossless_compressed_dicom_is_exact(method: str) -> None:
    arr = pattern(bits=12)
    rg = load_radiograph(make_dicom(arr, bits_stored=12, compress=method))
    np.testing.assert_array_equal(rg.raw, arr.astype(np.float32))


def test_jpeg_lossless_16_bit_full_range() -> None:
    arr = pattern(bits=16)
    arr[5, 5], arr[5, 6] = 0, 65535  # a difference that needs the modulo-2^16 category
    rg = load_radiograph(make_dicom(arr, bits_stored=16, compress="jpeg-lossless"))
    np.testing.assert_array_equal(rg.raw, arr.astype(np.float32))


@pytest.mark.parametrize(("method", "bits"), [("jpeg-baseline", 8), ("jpeg2000", 12)])
def test_lossy_compressed_dicom_is_close(method: str, bits: int) -> None:
    arr = pattern(bits=bits)
    rg = load_radiograph(make_dicom(arr, bits_stored=bits, compress=method))
    assert np.abs(rg.raw - arr).mean() < 0.01 * 2**bits


def test_rgb_dicom_and_ybr_jpeg() -> None:
    rgb = colour_pattern()
    rg = load_radiograph(make_dicom(rgb, photometric="RGB"))
    expected = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    np.testing.assert_allclose(rg.raw, expected, atol=1e-3)
    assert rg.is_color_source and rg.photometric == "RGB" and rg.window == (127.5, 255.0)
    rg = load_radiograph(make_dicom(rgb, photometric="RGB", compress="jpeg-baseline"))
    assert rg.photometric == "YBR_FULL_422" and rg.is_color_source
    assert np.abs(rg.raw - expected).mean() < 4


def test_multi_frame_dicom_shows_frame_one() -> None:
    frames = np.stack([pattern(bits=12), pattern(bits=12)[::-1], np.zeros((64, 80), np.uint16)])
    for compress in (None, "rle"):
        rg = load_radiograph(make_dicom(frames, bits_stored=12, compress=compress))
        np.testing.assert_array_equal(rg.raw, frames[0])
        assert rg.warnings == ("Multi-frame DICOM: showing frame 1 of 3.",)


@pytest.mark.parametrize("variant", ["no-preamble", "dicm-prefix", "bare-implicit"])
def test_dicom_without_preamble_or_meta(variant: str) -> None:
    arr = pattern(bits=12)
    data = {
        "no-preamble": make_dicom(arr, bits_stored=12, preamble=False),
        "dicm-prefix": b"DICM" + make_dicom(arr, bits_stored=12, preamble=False),
        "bare-implicit": make_dicom(arr, bits_stored=12, file_meta=False),
    }[variant]
    rg = load_radiograph(data)
    np.testing.assert_array_equal(rg.raw, arr)
    assert rg.window == (2047.5, 4095.0)


def test_deflated_dicom_and_deflate_bomb() -> None:
    arr = pattern(bits=12)
    ds = make_dicom_dataset(arr, bits_stored=12)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    np.testing.assert_array_equal(load_radiograph(dicom_bytes(ds)).raw, arr)
    ds.add_new(0x00091010, "OB", bytes(3 * 2**20))  # 3 MB of zeros in a private element
    data = dicom_bytes(ds)
    assert len(data) < 2**20
    with pytest.raises(ImageError, match="expands above the limit"):
        load_radiograph(data, limits=Limits(max_bytes=2**21))


def test_unsupported_transfer_syntax_names_it() -> None:
    with pytest.raises(ImageError) as info:
        load_radiograph(make_dicom(transfer_syntax=JPEG_XL_UID))
    assert str(info.value).startswith(
        f"This DICOM is compressed with JPEG XL ({JPEG_XL_UID}), which no installed decoder can read;"
    )


def test_dicom_without_pixel_data_and_with_wrong_size() -> None:
    with pytest.raises(ImageError, match="has no pixel data"):
        load_radiograph(make_dicom(sop_class="1.2.840.10008.5.1.4.1.1.88.11", modality="SR"))
    with pytest.raises(ImageError, match="does not match its header"):
        load_radiograph(make_dicom(rows=65))
    with pytest.raises(ImageError, match="does not match its header"):
        load_radiograph(make_dicom(pixel_data=b"\x00" * 100))


@pytest.mark.filterwarnings("error")  # the padding is reported on the Radiograph, not by pydicom
def test_dicom_trailing_padding_is_ignored_with_a_warning() -> None:
    """pydicom's MR_small_padded.dcm is MR_small.dcm with 128 zero bytes after the pixel data."""
    padded = load_radiograph(get_testdata_file("MR_small_padded.dcm"))
    plain = load_radiograph(get_testdata_file("MR_small.dcm"))
    np.testing.assert_array_equal(padded.raw, plain.raw)
    np.testing.assert_array_equal(padded.pixels, plain.pixels)
    assert padded.window == plain.window and padded.shape == (64, 64)
    assert padded.warnings == (
        "The DICOM pixel data has 128 bytes of padding after the image; they were ignored.",
    )
    assert plain.warnings == ()


def test_dicom_padding_limits() -> None:
    """Zero padding shorter than a frame is ignored; a whole frame, non-zero bytes or missing bytes
    mean the header does not describe the data, and are refused."""
    arr = pattern(bits=12)  # 64 x 80 x 2 bytes = 10,240 bytes per frame
    image = arr.tobytes()
    rg = load_radiograph(make_dicom(arr, bits_stored=12, pixel_data=image + bytes(10_238)))
    np.testing.assert_array_equal(rg.raw, arr)
    assert rg.warnings == (imaging.WARN_PADDING.format(n=10_238),)
    for pixel_data in (image + bytes(10_240), image + b"\x01" * 128, image[:-2]):
        with pytest.raises(ImageError, match="does not match its header"):
            load_radiograph(make_dicom(arr, bits_stored=12, pixel_data=pixel_data))


def test_enhanced_functional_group_rescale_and_window() -> None:
    arr = np.full((64, 80), 100, dtype=np.uint16)
    arr[0, 0] = 0
    shared = pydicom.Dataset()
    pvt, voi = pydicom.Dataset(), pydicom.Dataset()
    pvt.RescaleSlope, pvt.RescaleIntercept = 3, 10
    voi.WindowCenter, voi.WindowWidth = 160, 300
    shared.PixelValueTransformationSequence = [pvt]
    shared.FrameVOILUTSequence = [voi]
    rg = load_radiograph(make_dicom(arr, extra={"SharedFunctionalGroupsSequence": [shared]}))
    assert rg.raw[1, 1] == 310 and rg.raw[0, 0] == 10
    assert rg.window == (160.0, 300.0) and rg.pixels[1, 1] == 1.0 and rg.pixels[0, 0] == 0.0


@pytest.mark.filterwarnings("ignore:The value length")
def test_code_strings_are_sanitised() -> None:
    rg = load_radiograph(make_dicom(view="left hand of Mr Smith", body_part="HAND", modality="CR"))
    assert rg.view is None and rg.body_part == "HAND" and rg.modality == "CR"
    assert rg.pixel_spacing == (0.15, 0.15)  # PixelSpacing for CR, ImagerPixelSpacing for DX


def test_no_patient_identifier_reaches_the_radiograph() -> None:
    data = make_dicom(phi=True)
    rg = load_radiograph(data)
    text = repr(rg) + "".join(
        str(getattr(rg, f.name)) for f in dataclasses.fields(rg) if f.name not in ("pixels", "raw")
    )
    for needle in PHI_NEEDLES:
        assert needle not in text
    assert PHI["PatientID"].encode() in data  # the input really carried them


# --------------------------------------------------------------------------------------------------
# limits, sources, errors
# --------------------------------------------------------------------------------------------------


def test_decompression_bomb_is_rejected_from_the_header_without_inflating() -> None:
    import tracemalloc

    data = make_png_bomb()
    tracemalloc.start()
    try:
        with pytest.raises(
            ImageError, match=r"^Image is 60000×60000 pixels, above the limit of 100,000,000 pixels\.$"
        ):
            load_radiograph(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20  # the decoded image would be 3.6 GB; only the header was read


def test_limits_are_checked_before_decoding() -> None:
    with pytest.raises(ImageError, match="above the limit of 1,000 pixels"):
        load_radiograph(make_png(pattern()), limits=Limits(max_pixels=1000))
    with pytest.raises(ImageError, match="a side is above the limit of 70 pixels"):
        load_radiograph(make_dicom(), limits=Limits(max_side=70))
    with pytest.raises(ImageError, match=r"above the limit of 0 MB"):
        load_radiograph(make_png(), limits=Limits(max_bytes=100))
    # a DICOM header is checked before its pixel data length
    with pytest.raises(ImageError, match="Image is 60000×60000 pixels"):
        load_radiograph(make_dicom(columns=60000, rows=60000))
    with pytest.raises(ValueError):
        Limits(max_pixels=0)


def test_pillow_bomb_error_is_converted(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: object) -> None:
        raise Image.DecompressionBombError(
            "Image size (5120 pixels) exceeds limit of 4000 pixels, could be ..."
        )

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", boom)
    with pytest.raises(ImageError, match=r"^Image is 80×64 pixels, above the limit of 4,000 pixels\.$"):
        load_radiograph(make_png())


def test_sources_bytes_path_file_object(tmp_path) -> None:
    data = make_png()
    expected = load_radiograph(data)
    path = tmp_path / "scan_without_extension"
    path.write_bytes(data)
    for source in (bytearray(data), memoryview(data), str(path), path):
        rg = load_radiograph(source)
        assert rg.sha256 == expected.sha256
        np.testing.assert_array_equal(rg.pixels, expected.pixels)
    stream = io.BytesIO(data)
    stream.read()  # already consumed (as Streamlit's UploadedFile may be): we rewind
    assert load_radiograph(stream).sha256 == expected.sha256
    with pytest.raises(ImageError, match="not found"):
        load_radiograph(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="folder"):
        load_radiograph(tmp_path)
    big = tmp_path / "big.png"
    big.write_bytes(data)
    with pytest.raises(ImageError, match=r"^The file is 0\.0 MB, above the limit of 0 MB\.$"):
        load_radiograph(big, limits=Limits(max_bytes=100))
    with pytest.raises(ImageError, match="above the limit"):
        load_radiograph(io.BytesIO(data), limits=Limits(max_bytes=100))
    with pytest.raises(ImageError, match="Cannot read an image from a int"):
        load_radiograph(42)  # type: ignore[arg-type]


def test_radiograph_is_frozen_and_read_only() -> None:
    rg = load_radiograph(make_png())
    with pytest.raises(dataclasses.FrozenInstanceError):
        rg.window = None  # type: ignore[misc]
    with pytest.raises(ValueError):
        rg.pixels[0, 0] = 1.0
    with pytest.raises(ValueError):
        rg.raw[0, 0] = 1.0
    assert isinstance(rg, Radiograph)


def test_rewindow_thumbnail_to_uint8() -> None:
    arr = pattern()
    rg = load_radiograph(make_png(arr))
    narrow = rg.rewindow(100, 50)
    assert narrow.window == (100.0, 50.0) and narrow.raw is rg.raw
    np.testing.assert_array_equal(narrow.pixels, apply_window(rg.raw, 100, 50))
    np.testing.assert_array_equal(rg.to_uint8(), arr)
    thumb = rg.thumbnail(40)
    assert thumb.dtype == np.uint8 and thumb.shape == (32, 40)
    assert rg.thumbnail(1000).shape == (64, 80)


def test_sha256_is_of_the_input_bytes() -> None:
    import hashlib

    data = make_dicom()
    assert load_radiograph(data).sha256 == hashlib.sha256(data).hexdigest()


def test_a_1024_square_16_bit_png_keeps_every_value() -> None:
    """The decode timed in bench/bench_inference.py: full size and full 16-bit depth."""
    rng = np.random.default_rng(0)
    ramp = np.add.outer(np.arange(1024), np.arange(1024)) * 30
    arr = (ramp + rng.integers(0, 64, (1024, 1024))).astype(np.uint16)
    rg = load_radiograph(make_png(arr))
    assert rg.raw.shape == (1024, 1024)
    np.testing.assert_array_equal(rg.raw.astype(np.int64), arr.astype(np.int64))


def test_encode_png_is_lossless_for_grey_and_rgb() -> None:
    """The app's panels and ``--cam`` files: every pixel survives, RGB stays in RGB order."""
    grey = (np.add.outer(np.arange(48), np.arange(64)) * 3 % 256).astype(np.uint8)
    with Image.open(io.BytesIO(imaging.encode_png(grey))) as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), grey)
    rgb = colour_pattern(48, 64)
    with Image.open(io.BytesIO(imaging.encode_png(rgb))) as im:
        assert im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), rgb)


@pytest.mark.parametrize("shape", [(8, 8, 4), (8, 8, 1), (8,), (2, 8, 8, 3)])
def test_encode_png_refuses_other_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="grey or RGB"):
        imaging.encode_png(np.zeros(shape, dtype=np.uint8))
