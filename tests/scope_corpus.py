"""Real films and an out-of-scope corpus for the scope gate (tests/test_scope.py, bench/bench_scope.py).

Real radiographs come from two dev packages (requirements-dev.txt), never from ../shared:
``pydicom-data`` (RG1: adult chest PA, CR; RG3: lower leg AP, CR) and ``deid-data`` (a cat's thorax,
DX). Each is offered in three forms, so that the learned part of the gate is tested and not only its
DICOM rules: the DICOM itself, a header-less 8-bit PNG of its display pixels, and a square crop of
that PNG's centre.

The out-of-scope corpus: every case of tests/bad_inputs.py (the loader rejects most; the rest are
patterns and noise), pydicom's CT / MR / US / secondary-capture test files both as DICOM and as
header-less PNGs, and generated photos, screenshots and documents.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from bonecls.errors import ImageError
from bonecls.imaging import Radiograph, load_radiograph

FORMS = ("dicom", "png", "crop")
#: What a right answer is for each real film (None: every answer is wrong, only a refusal is right).
REAL_FILMS = {
    "RG1 adult chest PA": ("data_store", "data/RG1_UNCR.dcm"),
    "RG3 lower leg AP": ("data_store", "data/RG3_UNCR.dcm"),
    "cat thorax": ("deid_data", "data/animals/cat.dcm"),
}
# pydicom-data files that are not projection radiographs (CT, MR, US, photos, secondary captures)
OOD_DICOM_FILES = (
    "MR2_UNCR.dcm",
    "US1_UNCR.dcm",
    "emri_small.dcm",
    "liver.dcm",
    "OT-PAL-8-face.dcm",
    "SC_rgb.dcm",
    "693_UNCR.dcm",
    "color-px.dcm",
    "gdcm-US-ALOKA-16.dcm",
    "vlut_04.dcm",
    "mlut_18.dcm",
)
# The shipped models (weights/<id>): each must refuse every real film, and its card must record that it did
# (tests/test_scope.py, tests/test_card_limitations.py).
SHIPPED = ("fracture", "threeclass", "pneumonia-cls", "pneumonia-det")
OOD_PYDICOM_TEST_FILES = ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "rtdose.dcm")


def _package_file(package: str, relative: str) -> Path | None:
    try:
        module = __import__(package)
    except ImportError:
        return None
    path = Path(module.__file__).parent / relative
    return path if path.is_file() else None


def real_film_paths() -> dict[str, Path]:
    """The real films that are installed (name -> DICOM path)."""
    out = {}
    for name, (package, relative) in REAL_FILMS.items():
        path = _package_file(package, relative)
        if path is not None:
            out[name] = path
    return out


def png_bytes(pixels8: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels8)).save(buf, format="PNG")
    return buf.getvalue()


def centre_crop(pixels8: np.ndarray) -> np.ndarray:
    """The largest centred square of an image."""
    h, w = pixels8.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return pixels8[top : top + side, left : left + side]


def three_forms(path: Path) -> dict[str, Radiograph]:
    """A DICOM as the loader reads it, as a header-less PNG of its display pixels, and as a centre crop."""
    dicom = load_radiograph(path)
    pixels8 = dicom.to_uint8()
    return {
        "dicom": dicom,
        "png": load_radiograph(png_bytes(pixels8)),
        "crop": load_radiograph(png_bytes(centre_crop(pixels8))),
    }


def _photo(seed: int, colour: bool) -> bytes:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:360, 0:480].astype(np.float32)
    sky = np.stack([80 + 0.2 * yy, 140 + 0.1 * yy, 230 - 0.1 * yy], axis=-1)
    ground = np.stack([60 + 0.3 * xx % 40, 120 + rng.normal(0, 12, xx.shape), 50 + 0.05 * xx], axis=-1)
    img = np.where((yy > 200 + 30 * np.sin(xx / 50))[..., None], ground, sky)
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    pil = Image.fromarray(img)
    ImageDraw.Draw(pil).ellipse((300, 40, 360, 100), fill=(250, 230, 90))
    if not colour:
        pil = pil.convert("L")
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _screenshot(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pil = Image.new("L", (800, 500), 235)
    draw = ImageDraw.Draw(pil)
    draw.rectangle((0, 0, 800, 40), fill=60)
    for i in range(12):
        y = 60 + 35 * i
        draw.rectangle((20, y, 20 + int(rng.integers(200, 700)), y + 18), fill=int(rng.integers(90, 200)))
    draw.text((30, 10), "PACS viewer - worklist", fill=255)
    return png_bytes(np.asarray(pil))


def _document(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pil = Image.new("L", (620, 877), 255)
    draw = ImageDraw.Draw(pil)
    for i in range(40):
        draw.text(
            (40, 30 + 20 * i),
            "Report: " + "".join(rng.choice(list("abcdefgh ijk")) for _ in range(60)),
            fill=0,
        )
    return png_bytes(np.asarray(pil))


def _dicom_as_png(path: Path) -> bytes | None:
    try:
        return png_bytes(load_radiograph(path).to_uint8())
    except ImageError:
        return None


def ood_corpus() -> Iterator[tuple[str, bytes]]:
    """``(name, bytes)`` of every out-of-scope case (see the module docstring)."""
    import pydicom.data
    from bad_inputs import CASES, data

    for case in CASES:
        yield f"bad-input:{case.name}", data(case.name)
    paths = [p for p in (_package_file("data_store", f"data/{n}") for n in OOD_DICOM_FILES) if p]
    for name in OOD_PYDICOM_TEST_FILES:
        try:
            paths.append(Path(pydicom.data.get_testdata_file(name)))
        except (ValueError, TypeError):
            continue
    for path in paths:
        yield f"dicom:{path.name}", path.read_bytes()
        as_png = _dicom_as_png(path)
        if as_png is not None:
            yield f"png:{path.name}", as_png
    for seed in range(3):
        yield f"photo-colour:{seed}", _photo(seed, True)
        yield f"photo-grey:{seed}", _photo(seed, False)
        yield f"screenshot:{seed}", _screenshot(seed)
        yield f"document:{seed}", _document(seed)
