"""Out-of-distribution checks: radiographs pass; photos, screenshots, documents, thumbnails are flagged."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from appdata import dicom_bytes, png_bytes, radiograph_like
from factories import make_dicom
from PIL import Image, ImageDraw

from bonecls import ood
from bonecls.imaging import load_radiograph

ROOT = Path(__file__).resolve().parents[1]


def _encode(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def test_radiograph_like_images_pass() -> None:
    for seed in range(3):
        assert ood.check(load_radiograph(png_bytes(radiograph_like(256, seed)))).reasons == ()
    assert ood.check(load_radiograph(dicom_bytes(radiograph_like(384, 1)))).reasons == ()
    assert ood.check(load_radiograph(make_dicom(radiograph_like(300, 2)))).reasons == ()


def test_radiograph_with_collimation_and_black_air_passes() -> None:
    img = radiograph_like(512, 0).astype(np.float32)
    img[:, :120] = 0  # collimated border, perfectly flat black
    img[:80, :] = 0
    assert not ood.check(load_radiograph(png_bytes(img.astype(np.uint16)))).is_ood


@pytest.mark.skipif(not (ROOT / "examples" / "index.json").is_file(), reason="examples/ not generated yet")
def test_shipped_examples_pass() -> None:
    from bonecls.ui.session import list_examples

    examples = list_examples(ROOT / "examples")
    assert examples
    for ex in examples:
        result = ood.check(load_radiograph(ex.path.read_bytes()))
        assert not result.is_ood, (ex.path.name, result.reasons)
    json.loads((ROOT / "examples" / "index.json").read_text())


def test_colour_photo_is_flagged() -> None:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:300, 0:400]
    photo = np.stack([xx % 256, (yy * 2) % 256, rng.integers(0, 256, (300, 400))], axis=-1).astype(np.uint8)
    rg = load_radiograph(_encode(photo, "JPEG"))
    result = ood.check(rg)
    assert result.is_ood and "colour" in result.summary
    assert ood.chroma(photo) > 0.1
    assert ood.chroma(np.stack([photo[..., 0]] * 3, axis=-1)) == 0.0
    assert ood.check_pixels(rg.pixels, rgb=photo).is_ood  # chroma alone is enough


def test_screenshot_is_flagged() -> None:
    shot = np.full((600, 800), 236, np.uint8)  # flat UI background
    shot[:60] = 40  # title bar
    shot[100:500, 50:300] = 255  # a white panel
    shot[120:140, 60:280] = 90  # a 'button'
    result = ood.check(load_radiograph(_encode(shot)))
    assert result.is_ood
    assert "flat grey level" in result.summary or "grey levels" in result.summary


def test_document_is_flagged_as_text() -> None:
    page = Image.new("L", (620, 877), 255)
    draw = ImageDraw.Draw(page)
    for line in range(40):
        draw.text(
            (40, 30 + line * 20), "Discharge letter: the patient was seen on ward 7 and ..." * 2, fill=0
        )
    result = ood.check(load_radiograph(_encode(np.asarray(page))))
    assert result.is_ood
    assert "text" in result.summary or "flat grey level" in result.summary


def test_tiny_image_is_flagged() -> None:
    result = ood.check(load_radiograph(png_bytes(radiograph_like(48, 0))))
    assert result.is_ood and "tiny" in result.summary and "48 × 48" in result.summary


def test_non_radiograph_modality_is_flagged(make_radiograph) -> None:
    pixels = radiograph_like(256, 0).astype(np.float32) / 65535
    assert "modality is MR" in ood.check(make_radiograph(pixels, modality="MR")).summary
    assert not ood.check(make_radiograph(pixels, modality="DX")).is_ood


def test_measures_are_reported() -> None:
    result = ood.check(load_radiograph(png_bytes(radiograph_like(256, 0))))
    assert {"chroma", "short_side", "grey_levels", "mode_fraction"} <= set(result.measures)
