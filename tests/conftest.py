"""Shared fixtures.

* ``isolated_weights``: ``$BONECLS_WEIGHTS`` points at an empty temporary folder (returned).
* ``isolated_cache``: ``$BONECLS_CACHE`` points at an empty temporary folder (returned).
* ``tiny_card_dir``: a saved, random-weight (seeded) ``simple_cnn`` fracture model in
  ``<isolated weights root>/fracture-tiny`` (card id ``fracture-tiny``), usable by folder or id.
* ``make_radiograph``: a factory ``make_radiograph(pixels, **fields) -> Radiograph``.
* ``tiny_card_factory``: ``build_tiny_card(out_dir, card_id=..., seed=..., **card_fields)``.

Tests run on CPU with two intra-op threads.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(2)

TINY_CARD_ID = "fracture-tiny"
TINY_CLASSES = ["fractured", "not fractured"]


def radiograph(pixels: np.ndarray, **fields):
    """A Radiograph (bonecls.imaging's dataclass) around float32 [0, 1] ``pixels``."""
    from bonecls.imaging import Radiograph

    pixels = np.asarray(pixels, dtype=np.float32)
    values = {
        "pixels": pixels,
        "raw": pixels * 255.0,
        "source_format": "png",
        "original_size": (int(pixels.shape[0]), int(pixels.shape[1])),
        "bit_depth": 8,
        "photometric": "MONOCHROME2",
        "window": None,
        "pixel_spacing": None,
        "view": None,
        "body_part": None,
        "modality": None,
        "is_color_source": False,
        "sha256": hashlib.sha256(pixels.tobytes()).hexdigest(),
        "warnings": (),
    }
    values.update(fields)
    return Radiograph(**values)


@pytest.fixture
def make_radiograph():
    return radiograph


@pytest.fixture
def isolated_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "weights"
    root.mkdir()
    monkeypatch.setenv("BONECLS_WEIGHTS", str(root))
    return root


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("BONECLS_CACHE", str(cache))
    return cache


def build_tiny_card(out_dir: Path, card_id: str = TINY_CARD_ID, seed: int = 0, **card_fields):
    """Save a seeded random ``simple_cnn`` (1 channel, 64 px) fracture model; returns the card."""
    from bonecls.models import create_model
    from bonecls.weights import ModelCard, save_pytorch

    torch.manual_seed(seed)
    fields = {
        "id": card_id,
        "task": "fracture",
        "framework": "pytorch",
        "architecture": "simple_cnn",
        "head": "linear",
        "class_names": list(TINY_CLASSES),
        "positive_classes": ["fractured"],
        "input_size": 64,
        "in_chans": 1,
        "normalization": {"mean": [0.5], "std": [0.25]},
        "temperature": 1.0,
        "thresholds": {"negative_below": 0.3, "positive_at": 0.7},
        "training_data": "none (random weights, test fixture)",
        "command": "tests/conftest.py::build_tiny_card",
        "limitations": "Random weights; for tests only.",
    }
    fields.update(card_fields)
    card = ModelCard(**fields)
    model = create_model(card.architecture, len(card.class_names), card.in_chans, head=card.head)
    model.eval()
    return save_pytorch(model, card, out_dir)


@pytest.fixture
def tiny_card_dir(isolated_weights: Path) -> Path:
    """Folder of a tiny saved model under the (isolated) weights root; its id is ``fracture-tiny``."""
    out = isolated_weights / TINY_CARD_ID
    build_tiny_card(out)
    return out


@pytest.fixture
def tiny_card_factory():
    """``build_tiny_card(out_dir, card_id=..., seed=..., **card_fields) -> ModelCard``."""
    return build_tiny_card


# Hypothesis profiles: bounded in CI ("ci", the default), a long campaign on demand
# (`pytest tests/test_fuzz_imaging.py --hypothesis-profile=long`).
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", max_examples=150, deadline=None)
_hypothesis_settings.register_profile("long", max_examples=5000, deadline=None)


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory):
    """A real Orthanc with DICOMweb on loopback for the whole session (bonecls.pacs.orthanc_server).

    Fails (never skips) when Orthanc is not installed: the PACS tests are part of CI.
    """
    from bonecls.pacs.errors import OrthancNotAvailable
    from bonecls.pacs.orthanc_server import OrthancServer

    try:
        server = OrthancServer(tmp_path_factory.mktemp("orthanc")).start()
    except OrthancNotAvailable as exc:
        pytest.fail(f"The PACS tests need a running Orthanc: {exc}")
    yield server
    server.stop()
