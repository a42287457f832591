"""What a reading says: operating points, box tiers, the study sentence, boxes burned into the exports."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from bonecls import report
from bonecls.operating_points import card_with_points, choose_operating_points
from bonecls.reading import status_text, study_sentence, tier_boxes
from bonecls.weights import ModelCard, load_card, weights_root


def _box(x0, y0, x1, y1, conf):
    return {"x0": x0, "y0": y0, "x1": x1, "y1": y1, "confidence": conf, "label": "opacity"}


def test_operating_points_meet_their_targets_and_keep_a_doubt_band() -> None:
    rng = np.random.default_rng(0)
    positive = np.r_[np.ones(500, bool), np.zeros(500, bool)]
    score = np.where(positive, rng.beta(5, 2, 1000), rng.beta(2, 5, 1000))
    op = choose_operating_points(score, positive)
    assert op["doubt"]["sensitivity"] >= 0.95 and op["positive"]["specificity"] >= 0.95
    assert op["doubt"]["threshold"] < op["positive"]["threshold"]
    # separable classes: one cut meets both targets, yet the doubt cut stays below the positive one
    sep = choose_operating_points(np.where(positive, 0.9, 0.1) + rng.normal(0, 0.01, 1000), positive)
    assert sep["separated"] and sep["doubt"]["threshold"] <= sep["positive"]["threshold"]
    with pytest.raises(ValueError):
        choose_operating_points(score, np.ones(1000, bool))


def test_card_with_points_keeps_the_weights_sha_and_refuses_mismatched_figures() -> None:
    card, _ = load_card(weights_root() / "fracture", verify=False)
    points = {
        "doubt": {"threshold": 0.1, "sensitivity": 0.97, "specificity": 0.8},
        "positive": {"threshold": 0.4, "sensitivity": 0.9, "specificity": 0.96},
        "n_positive": 10,
        "n_negative": 10,
        "target_sensitivity": 0.95,
        "target_specificity": 0.95,
    }
    updated = card_with_points(card, points, "test phantoms", "cmd")
    assert updated.sha256 == card.sha256
    assert (updated.thresholds.negative_below, updated.thresholds.positive_at) == (0.1, 0.4)
    data = updated.model_dump()
    data["thresholds"]["positive_at"] = 0.5
    with pytest.raises(ValueError, match="operating_points"):
        ModelCard.model_validate(data)


# pneumonia-cls is re-measured (scripts/train_shipped.sh); add the other cards once their lines have run
@pytest.mark.parametrize("model", ["pneumonia-cls"])
def test_shipped_cards_carry_a_doubt_band_and_their_measured_figures(model: str) -> None:
    card, _ = load_card(weights_root() / model, verify=False)
    op = card.operating_points
    assert op is not None, f"{model}: run python -m bonecls.operating_points (scripts/train_shipped.sh)"
    assert card.thresholds.negative_below < card.thresholds.positive_at  # a real doubt band
    assert op.doubt.sensitivity >= op.target_sensitivity and op.n_positive >= 500 and op.n_negative >= 500
    assert "4242" in op.measured_on


def test_status_words_and_box_tiers() -> None:
    assert status_text("uncertain") == "doubt — review" and status_text("positive") == "positive"
    tiers = tier_boxes([_box(0, 0, 5, 5, 0.9), _box(0, 0, 5, 5, 0.15), _box(0, 0, 5, 5, 0.02)], 0.1, 0.25)
    assert [b["confidence"] for b in tiers.definite] == [0.9] and [b["confidence"] for b in tiers.doubt] == [
        0.15
    ]


@pytest.mark.parametrize(
    ("status", "confs", "has_det", "needle"),
    [
        ("positive", [], True, "Classifier positive, no box found — review the whole film."),
        ("positive", [0.9], True, "the two agree"),
        ("negative", [0.9], True, "the two disagree"),
        ("negative", [], True, "no box found — the two agree"),
        ("uncertain", [0.15], True, "Classifier in doubt and only doubtful boxes"),
        ("positive", [], False, "no detector for this task"),
        (None, [0.5], True, "no classifier installed"),
    ],
)
def test_study_sentence_reconciles_classifier_and_detector(status, confs, has_det, needle) -> None:
    tiers = tier_boxes([_box(0, 0, 5, 5, c) for c in confs], 0.1, 0.25) if has_det else None
    assert needle in study_sentence(status, tiers, has_detector=has_det)


def test_boxes_and_legend_are_burned_into_png_and_pdf() -> None:
    rg = SimpleNamespace(
        sha256="ab" * 32,
        source_format="png",
        original_size=(400, 400),
        bit_depth=8,
        photometric="MONOCHROME2",
        modality=None,
        body_part=None,
        view=None,
        pixel_spacing=None,
        warnings=(),
    )
    card = SimpleNamespace(
        id="det",
        task="pneumonia-det",
        architecture="yolov8n",
        framework="ultralytics",
        sha256="cd" * 32,
        class_names=["opacity"],
        thresholds={"negative_below": 0.1, "positive_at": 0.25},
        positive_classes=["opacity"],
    )
    boxes = [_box(40, 40, 200, 200, 0.9), _box(240, 240, 360, 360, 0.15)]
    data = report.build_report(rg, card=card, boxes=boxes, box_cuts=(0.1, 0.25), cam_method="EigenCAM")
    image = np.zeros((400, 400), np.float32)
    png = np.asarray(Image.open(io.BytesIO(report.to_png(data, image, max_side=400))).convert("RGB"))
    solid_edge = png[120, 38:43]  # left edge of the definite box, mid-height
    assert (solid_edge[:, 2] > 200).any() and (solid_edge[:, 0] < 50).any()  # cyan
    dashed_edge = png[240:360, 240]  # left edge of the doubt box: yellow dashes with gaps
    yellow = (dashed_edge[:, 0] > 200) & (dashed_edge[:, 2] < 150)
    assert 0.3 < yellow.mean() < 0.9
    assert report.legend_lines(data)[0].startswith("Solid box: definite (confidence ≥ 0.25)")
    assert "where the model looked" in report.legend_lines(data)[1]
    pdf = report.to_pdf(data, image, compress=False)
    assert b"Legend: Solid box: definite" in pdf and b"Dashed box: doubt" in pdf


def test_operating_points_draw_the_varied_recipe_without_the_excluded_variants() -> None:
    """--exclude measures a varied-recipe model on its own recipe: the phantoms drawn are the varied
    recipe's (not the classic images of the same seed), both classes balanced."""
    import dataclasses

    from bonecls.operating_points import RECIPES, _phantoms

    varied = dataclasses.replace(RECIPES["pneumonia"], varied_exclude=("lung1", "log"))
    drawn = list(_phantoms(varied, 4, 4242))
    assert len(drawn) == 4 and {positive for _, positive in drawn} == {True, False}
    classic = [rg.pixels for rg, _ in _phantoms(RECIPES["pneumonia"], 4, 4242)]
    assert any(not np.array_equal(a, b) for a, b in zip(classic, [rg.pixels for rg, _ in drawn], strict=True))
