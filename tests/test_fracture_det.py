"""The fracture detector (issue 22 item 4): its phantom boxes, FROC on hand-made boxes, a tiny
fracture-det trained by train/detect.py and scored by ``train/evaluate.py --held-out``, and the ONNX
graph's pooled-feature output that lets the scope gate run on ONNX Runtime."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bonecls.detection import metrics as dm

REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------------------
# phantom boxes: fracture (simple) 0, comminuted 1


def test_yolo_threeclass_boxes_are_fracture_or_comminuted(tmp_path):
    from bonecls.detection.evaluate import read_data_yaml
    from bonecls.phantom.cli import main as phantom

    out = tmp_path / "yolo"
    args = ["--no-progress", "--task", "threeclass", "--layout", "yolo", "--n", "9", "--size", "64"]
    args += ["--seed", "5", "--paired", "--split", "1", "0", "0", "--recipe", "varied"]
    args += ["--exclude", "lung1,log,buckle", str(out)]
    assert phantom(args) == 0
    assert read_data_yaml(out / "data.yaml")["names"] == ["fracture", "comminuted"]
    with (out / "variants.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    seen = set()
    for row in rows:
        label = out / row["file"].replace("images/", "labels/", 1).replace(".png", ".txt")
        classes = {line.split()[0] for line in label.read_text().splitlines()}
        expected = {"healthy": set(), "fractured": {"0"}, "beyond_repair": {"1"}}[row["class"]]
        assert classes == expected or (row["class"] != "healthy" and not classes), row  # box may be cut
        assert row["ct"] != "lung1" and row["chain"] != "log" and row["lesion_style"] != "buckle"
        seen |= classes
    assert seen == {"0", "1"}


def test_yolo_fracture_and_pneumonia_keep_one_class(tmp_path):
    from bonecls.phantom.writers import write_dataset

    for task, name in (("fracture", "fracture"), ("pneumonia", "opacity")):
        out = write_dataset(task, "yolo", tmp_path / task, 2, 64, 1, progress=False)
        assert f"names:\n  0: {name}\n" in (Path(out) / "data.yaml").read_text()


# ------------------------------------------------------------------------------------------------------
# FROC


def test_froc_hand_made_boxes():
    # image 0: two lesions; boxes 0.9 hits A, 0.8 misses (FP), 0.6 hits B
    # image 1: one lesion; box 0.7 hits it, 0.8 is a second box on it (FP: the lesion is taken by 0.8
    #          first, so 0.7 is the FP - greedy in confidence), 0.3 elsewhere (FP)
    # image 2: no lesion; box 0.5 (FP)
    a, b, c = [10, 10, 20, 20], [50, 50, 60, 60], [30, 30, 40, 40]
    pred = [
        [[10, 10, 20, 20], [70, 70, 80, 80], [50, 50, 60, 60]],
        [[30, 30, 40, 40], [30, 30, 40, 41], [0, 0, 5, 5]],
        [[5, 5, 9, 9]],
    ]
    scores = [[0.9, 0.8, 0.6], [0.7, 0.8, 0.3], [0.5]]
    gt = [[a, b], [c], np.zeros((0, 4))]
    f = dm.froc(pred, scores, gt, 0.5, fp_rates=(0.0, 1 / 3, 2 / 3, 1.0, 2.0))
    # descending: 0.9 TP(1/3), 0.8 FP img0 & 0.8 TP img1 (tie: enter together -> 2/3 sens, 1/3 FP),
    # 0.7 FP (2/3 FP), 0.6 TP (3/3 sens, 2/3 FP), 0.5 FP (1 FP), 0.3 FP (4/3 FP)
    assert f["n_lesions"] == 3 and f["n_images"] == 3
    assert f["sensitivity"]["0"] == pytest.approx(1 / 3)
    assert f["sensitivity"]["0.333333"] == pytest.approx(2 / 3)
    assert f["sensitivity"]["0.666667"] == pytest.approx(1.0)
    assert f["cut"]["0.666667"] == pytest.approx(0.6)
    assert f["sensitivity"]["2"] == pytest.approx(1.0)
    assert f["cpm"] == pytest.approx(np.mean([1 / 3, 2 / 3, 1, 1, 1]))


def test_froc_iou_threshold_and_no_boxes():
    gt = [[[0, 0, 10, 10]]]
    half = [[[0, 0, 10, 5]]]  # IoU 0.5 exactly: a hit at 0.5, a false positive at 0.6
    assert dm.froc(half, [[0.9]], gt, 0.5)["sensitivity"]["0.5"] == 1.0
    f = dm.froc(half, [[0.9]], gt, 0.6)
    assert f["sensitivity"]["0.5"] == 0.0 and f["sensitivity"]["1"] == 0.0 and f["cut"]["0.5"] is None
    assert dm.froc([np.zeros((0, 4))], [[]], [np.zeros((0, 4))])["sensitivity"]["0.5"] is None


def test_three_class_answer_from_boxes():
    from bonecls.detection.held_out import boxes_to_threeclass

    scores = [np.array([0.2]), np.array([0.9, 0.6]), np.array([0.7, 0.55]), np.zeros(0)]
    labels = [np.array([1]), np.array([0, 1]), np.array([0, 0]), np.zeros(0, dtype=int)]
    assert boxes_to_threeclass(scores, labels, 1, 0.5).tolist() == [0, 2, 1, 0]
    assert boxes_to_threeclass(scores, labels, 1, 0.65).tolist() == [0, 1, 1, 0]


def test_fracture_det_operating_points_use_its_training_recipe():
    from bonecls.operating_points import RECIPES, _phantoms

    recipe = RECIPES["fracture-det"]
    assert "--recipe varied --exclude lung1,log,buckle" in recipe.phantom_args()
    assert recipe.phantom_args().startswith("--task threeclass --layout yolo --size 256")
    flags = [positive for _rg, positive in _phantoms(recipe, 3, 11)]
    assert flags == [False, True, True]  # healthy, fractured, beyond repair


# ------------------------------------------------------------------------------------------------------
# a tiny fracture-det, trained in seconds, through evaluate --held-out


@pytest.fixture(scope="module")
def tiny_fracture_det(tmp_path_factory) -> Path:
    pytest.importorskip("ultralytics")
    base = tmp_path_factory.mktemp("fracdet")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "ULTRALYTICS_"))}
    env.update(PYTHONPATH=str(REPO), BONECLS_CACHE=str(base / "cache"), OMP_NUM_THREADS="1")
    data = base / "yolo"
    phantom = [sys.executable, "-m", "bonecls.phantom", "--no-progress", "--task", "threeclass"]
    phantom += ["--layout", "yolo", "--n", "36", "--size", "64", "--seed", "3", "--paired"]
    phantom += ["--recipe", "varied", "--exclude", "lung1,log,buckle", "--split", "0.5", "0.25", "0.25"]
    subprocess.run([*phantom, str(data)], env=env, check=True, capture_output=True, timeout=300)
    out = base / "weights" / "fracture-det"
    cmd = [
        sys.executable, str(REPO / "train" / "detect.py"), "--data", str(data / "data.yaml"),
        "--output", str(out), "--id", "fracture-det", "--task", "fracture-det", "--epochs", "1",
        "--imgsz", "64", "--batch", "4", "--workers", "0", "--device", "cpu",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=base, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_tiny_fracture_det_card_and_held_out_evaluation(tiny_fracture_det, tmp_path):
    from bonecls.training.evaluation import main as evaluate
    from bonecls.weights import load_card, sha256_file

    card, _ = load_card(tiny_fracture_det)
    assert (card.task, card.id, card.framework) == ("fracture-det", "fracture-det", "ultralytics")
    assert card.class_names == ["fracture", "comminuted"]
    assert (
        "fracture boxes" in card.intended_use
        and (tiny_fracture_det / "model.pt").stat().st_size <= 25 * 2**20
    )
    weights_sha = sha256_file(tiny_fracture_det / "model.pt")

    report = tmp_path / "held.json"
    args = [
        "--held-out",
        "--card",
        str(tiny_fracture_det),
        "--pairs",
        "2",
        "--sets-dir",
        str(tmp_path / "sets"),
    ]
    assert evaluate([*args, "--no-progress", "--write-card", "--json", str(report)]) == 0
    held = json.loads(report.read_text())[0]["held_out_variants"]
    assert set(held["sets"]) == {"ct=lung1", "chain=log", "style=buckle"}
    for figures in held["sets"].values():
        assert figures["n"] == 3 and figures["pairs"] == 2  # one healthy / fractured / beyond-repair group
        assert 0.0 <= figures["froc"]["sensitivity"]["0.5"] <= 1.0
        assert figures["froc_sensitivity_at_0.5_fp"] == figures["froc"]["sensitivity"]["0.5"]
        assert 0.0 <= figures["map50"] <= 1.0
        assert "threeclass_f1_macro_at_positive_at" in figures
        assert figures["scope"] is None  # 18 training images fit no learned gate: nothing to say
    pooled = held["pooled"]
    assert pooled["n"] == 9 and pooled["pairs"] == 6
    assert pooled["froc"]["n_lesions"] == sum(f["n_lesions"] for f in held["sets"].values())
    assert "threeclass_f1_macro_mean_at_positive_at" in pooled
    saved, _ = load_card(tiny_fracture_det)
    assert saved.evaluation["held_out_variants"]["pooled"] == pooled
    assert sha256_file(tiny_fracture_det / "model.pt") == weights_sha == saved.sha256


# ------------------------------------------------------------------------------------------------------
# ONNX: the pooled-feature output equals PyTorch's, so the gate answers on ONNX Runtime


@pytest.mark.slow
def test_onnx_feature_output_equals_pytorch_and_feeds_the_gate(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("ultralytics")
    from bonecls.detection.detector import Detector, OnnxDetector, export_onnx
    from bonecls.detection.scope_features import detector_features
    from bonecls.phantom import generate
    from bonecls.weights import load_card, sha256_file

    card_dir = tmp_path / "pneumonia-det"
    shutil.copytree(REPO / "weights" / "pneumonia-det", card_dir)
    weights_sha = sha256_file(card_dir / "model.pt")
    export_onnx(card_dir)
    card, _ = load_card(card_dir)
    assert card.extra["onnx"]["feature_layers"] == ["model.4", "model.6", "model.9"]
    assert card.extra["onnx"]["sha256"] == sha256_file(card_dir / "model.onnx")
    assert card.sha256 == weights_sha  # the weights are untouched
    torch_det, fast = Detector.from_card(card_dir), OnnxDetector.from_card(card_dir)
    assert fast.scope_ready
    for sample in generate("pneumonia", 3, 256, 7):
        image = sample.to_uint8()
        onnx_features = fast.features(image)
        torch_features = detector_features(torch_det, [image])
        assert onnx_features.shape == torch_features.shape == (1, 448)
        np.testing.assert_allclose(onnx_features, torch_features, atol=1e-4, rtol=1e-4)
        a, b = torch_det.detect_scoped(image, conf=0.05), fast.detect_scoped(image, conf=0.05)
        assert a.verdict.in_scope == b.verdict.in_scope
        assert b.verdict.score == pytest.approx(a.verdict.score, rel=1e-3, abs=1e-3)
        assert [x.label for x in a.boxes] == [x.label for x in b.boxes]


@pytest.mark.slow
def test_held_out_scope_figures_are_what_the_gate_answers():
    """The shipped pneumonia detector on a few held-out pairs: the share its gate answers is the share
    detect_scoped answers, from the score of the same pass as the boxes."""
    pytest.importorskip("ultralytics")
    from bonecls.detection.detector import Detector
    from bonecls.detection.held_out import detector_set_figures
    from bonecls.training.held_out import HeldOut, render_pair_set

    detector = Detector.from_card(REPO / "weights" / "pneumonia-det")
    variants = HeldOut.for_task("pneumonia").variant_sets("pneumonia")["ct=lung1"]
    ps = render_pair_set("pneumonia", "ct=lung1", variants, n_pairs=3, seed=5)
    figures, raw = detector_set_figures(detector, ps)
    scoped = [detector.detect_scoped(image, conf=0.001) for image in ps.images]
    scores = [detector.detect_and_score(image, conf=0.001)[1] for image in ps.images]
    assert scores == pytest.approx([s.verdict.score for s in scoped])
    answered = np.asarray([s.in_scope for s in scoped])
    scope = figures["scope"]
    assert scope["n"] == 6 and scope["n_lesion"] == 3 and scope["n_answered"] == int(answered.sum())
    assert scope["answered"] == pytest.approx(answered.mean())
    assert scope["threshold"] == detector.scope_gate.threshold

    # the pooled figures' intervals draw render groups from the same raw outputs: all groups once
    # reproduce the figures, and every interval is ordered and inside [0, 1]
    from bonecls.detection.held_out import _union_figures, detector_intervals

    again = _union_figures([raw], [np.unique(raw["groups"])])
    for key, value in again.items():
        assert value == pytest.approx(figures[key]), key
    intervals = detector_intervals([raw], resamples=40, seed=1)
    assert intervals["bootstrap"]["resamples"] == 40
    for key, bounds in intervals["ci95"].items():
        assert bounds is None or 0.0 <= bounds[0] <= bounds[1] <= 1.0, key


def test_old_onnx_graph_without_features_keeps_the_gate_on_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx

    from bonecls.detection.detector import OnnxDetector
    from bonecls.errors import WeightsError
    from bonecls.weights import load_card, sha256_file, write_card

    card_dir = tmp_path / "pneumonia-det"
    shutil.copytree(REPO / "weights" / "pneumonia-det", card_dir)
    proto = onnx.load(str(card_dir / "model.onnx"))
    if len(proto.graph.output) > 1:  # a graph with features: take them out again to model an old export
        del proto.graph.output[1:]
        onnx.save(proto, str(card_dir / "model.onnx"))
        card, _ = load_card(card_dir)
        card.extra = {
            **card.extra,
            "onnx": {**card.extra["onnx"], "sha256": sha256_file(card_dir / "model.onnx")},
        }
        write_card(card, card_dir)
    fast = OnnxDetector.from_card(card_dir)
    assert not fast.scope_ready
    with pytest.raises(WeightsError, match="no scope features"):
        fast.detect_scoped(np.zeros((64, 64), dtype=np.uint8))
