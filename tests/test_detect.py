"""bonecls.detection (Ultralytics YOLOv8, offline) and bonecls.detection.metrics.

One tiny YOLO dataset (bright ellipses on noise, 64-96 px) is written per session; train/detect.py trains
on it for one epoch in a subprocess whose sockets are blocked by a sitecustomize; the resulting card is
then used in-process (also with sockets blocked) for loading, tamper checks, EigenCAM and ONNX.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bonecls.detection import metrics as dm
from bonecls.detection.boxes import film_at_card_scale, rank_equalise
from bonecls.errors import DataError, ImageError, WeightsError

REPO = Path(__file__).resolve().parent.parent

BLOCKER = textwrap.dedent(
    """
    import os, socket

    _LOG = os.environ.get("BONECLS_NETBLOCK_LOG")

    def _refuse(what):
        if _LOG:
            with open(_LOG, "a") as fh:
                fh.write(repr(what) + "\\n")
        raise OSError("network access blocked by the test")

    socket.socket.connect = lambda self, addr, *a, **k: _refuse(("connect", addr))
    socket.socket.connect_ex = lambda self, addr, *a, **k: _refuse(("connect_ex", addr))
    socket.create_connection = lambda addr, *a, **k: _refuse(("create_connection", addr))
    socket.getaddrinfo = lambda host, *a, **k: _refuse(("getaddrinfo", host))
    """
)


# ------------------------------------------------------------------------------------------------------
# fixtures


def _write_yolo_dataset(root: Path, seed: int = 0) -> Path:
    """8 train / 4 val / 4 test grey PNGs with bright ellipses ('opacity'); one negative test image."""
    import cv2

    rng = np.random.default_rng(seed)
    layout = {"train": (8, 64, 64), "val": (4, 64, 64), "test": (4, 80, 96)}
    for split, (n, h, w) in layout.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.normal(40, 8, (h, w)).clip(0, 255)
            lines = []
            n_boxes = 0 if (split == "test" and i == 0) else int(rng.integers(1, 3))
            yy, xx = np.mgrid[:h, :w]
            for _ in range(n_boxes):
                bw, bh = rng.uniform(0.2, 0.35) * w, rng.uniform(0.2, 0.35) * h
                cx, cy = rng.uniform(bw / 2 + 2, w - bw / 2 - 2), rng.uniform(bh / 2 + 2, h - bh / 2 - 2)
                img[((xx - cx) / (bw / 2)) ** 2 + ((yy - cy) / (bh / 2)) ** 2 <= 1] = 210
                lines.append(f"0 {cx / w:.6f} {cy / h:.6f} {bw / w:.6f} {bh / h:.6f}")
            cv2.imwrite(str(root / "images" / split / f"{i:03d}.png"), img.astype(np.uint8))
            (root / "labels" / split / f"{i:03d}.txt").write_text("".join(x + "\n" for x in lines))
    data = root / "data.yaml"
    data.write_text(
        "path: .\ntrain: images/train\nval: images/val\ntest: images/test\nnames:\n  0: opacity\n"
        "download: import os; os.environ['BONECLS_TEST_PWNED'] = '1'\n"  # must never run
    )
    return data


@pytest.fixture(scope="session")
def yolo_data(tmp_path_factory) -> Path:
    pytest.importorskip("cv2")
    return _write_yolo_dataset(tmp_path_factory.mktemp("yolo"))


@pytest.fixture(scope="session")
def offline_env(tmp_path_factory):
    """In-process: Ultralytics' settings/fonts under a temporary BONECLS_CACHE (set before first import)."""
    pytest.importorskip("ultralytics")
    with pytest.MonkeyPatch.context() as mp:
        if "ultralytics" not in sys.modules:
            cache = tmp_path_factory.mktemp("cache")
            mp.setenv("BONECLS_CACHE", str(cache))
            mp.delenv("YOLO_CONFIG_DIR", raising=False)
        from bonecls.detection.offline import configure_offline

        yield configure_offline()


@pytest.fixture
def no_network(monkeypatch):
    """Block and record every socket connection / DNS lookup made in this process during the test."""
    attempts: list = []

    def refuse(what):
        attempts.append(what)
        raise OSError("network access blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", lambda self, addr, *a, **k: refuse(("connect", addr)))
    monkeypatch.setattr(socket.socket, "connect_ex", lambda self, addr, *a, **k: refuse(("connect_ex", addr)))
    monkeypatch.setattr(socket, "create_connection", lambda addr, *a, **k: refuse(("create", addr)))
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: refuse(("getaddrinfo", host)))
    yield attempts
    assert attempts == [], f"network access attempted: {attempts}"


@pytest.fixture(scope="session")
def trained(tmp_path_factory, yolo_data) -> dict:
    """Run train/detect.py for one epoch in a subprocess with every socket blocked."""
    pytest.importorskip("ultralytics")
    base = tmp_path_factory.mktemp("train")
    block = base / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(BLOCKER)
    log = base / "net.log"
    cwd = base / "cwd"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "ULTRALYTICS_"))}
    env.update(
        PYTHONPATH=os.pathsep.join([str(block), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        BONECLS_NETBLOCK_LOG=str(log),
        BONECLS_CACHE=str(base / "cache"),
        BONECLS_WEIGHTS=str(base / "weights"),
    )
    # the blocker itself works (else "no attempt logged" would prove nothing)
    code = "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 9))\nexcept OSError:\n    pass"
    probe = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert probe.returncode == 0, probe.stderr
    assert log.read_text().count("create_connection") == 1
    log.unlink()

    out = base / "weights" / "pneumonia-det-test"
    cmd = [
        sys.executable, str(REPO / "train" / "detect.py"), "--data", str(yolo_data), "--output", str(out),
        "--epochs", "1", "--imgsz", "64", "--batch", "4", "--workers", "0", "--device", "cpu",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"out": out, "log": log, "cwd": cwd, "cache": base / "cache", "proc": proc}


@pytest.fixture
def card_copy(trained, tmp_path) -> Path:
    dst = tmp_path / "weights" / trained["out"].name
    shutil.copytree(trained["out"], dst)
    return dst


def _test_images(yolo_data: Path) -> list[Path]:
    return sorted((yolo_data.parent / "images" / "test").glob("*.png"))


# ------------------------------------------------------------------------------------------------------
# (1) offline training -> card + model.pt -> Detector


@pytest.mark.slow
def test_training_is_offline_and_writes_a_loadable_card(trained, yolo_data, offline_env, no_network):
    import cv2

    from bonecls.detection.boxes import DetBox
    from bonecls.detection.detector import Detector
    from bonecls.weights import load_card, sha256_file

    assert not trained["log"].exists(), f"network attempted: {trained['log'].read_text()}"
    assert list(trained["cwd"].iterdir()) == [], "Ultralytics wrote into the working directory"
    assert "BONECLS_TEST_PWNED" not in os.environ
    ucfg = trained["cache"] / "ultralytics" / "Ultralytics"
    assert (ucfg / "Arial.ttf").is_file() and (ucfg / "Arial.Unicode.ttf").is_file()
    settings = json.loads((ucfg / "settings.json").read_text())
    assert settings["sync"] is False and settings["mlflow"] is False and settings["api_key"] == ""

    out = trained["out"]
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "model.pt"]
    assert (out / "model.pt").stat().st_size <= 25 * 2**20
    card, card_dir = load_card(out)
    assert card_dir == out
    assert (card.framework, card.task, card.architecture) == ("ultralytics", "pneumonia-det", "yolov8n")
    assert card.class_names == ["opacity"] and card.in_chans == 3 and card.input_size == 64
    assert card.normalization.mean == [0, 0, 0] and card.normalization.std == [1, 1, 1]
    assert card.sha256 == sha256_file(out / "model.pt")
    assert card.thresholds.negative_below == card.thresholds.positive_at
    for key in ("map50", "map50_95", "rsna_score", "conf_threshold", "n_images"):
        assert key in card.test_metrics
    assert card.test_metrics["n_images"] == 4 and card.test_metrics["n_boxes"] >= 3
    assert "not for clinical use" in card.limitations.lower()
    assert "train/detect.py" in card.command
    assert card.scope is None  # 8 training images for 448 backbone features: too few to fit the scope

    det = Detector.from_card(out)
    img = cv2.imread(str(_test_images(yolo_data)[1]), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
    boxes = det.detect(img, conf=0.001)
    assert all(isinstance(b, DetBox) and b.label == "opacity" for b in boxes)
    for b in boxes:
        assert 0 <= b.x0 <= b.x1 <= img.shape[1] and 0 <= b.y0 <= b.y1 <= img.shape[0]
        assert 0.001 < b.confidence <= 1
    assert [b.confidence for b in boxes] == sorted((b.confidence for b in boxes), reverse=True)


def test_offline_configuration(offline_env, no_network):
    import ultralytics.utils as uutils

    from bonecls.detection.offline import configure_offline

    assert configure_offline() == offline_env  # idempotent
    assert uutils.ONLINE is False
    assert os.environ["YOLO_OFFLINE"] == "1" and os.environ["ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS"] == "1"
    assert uutils.SETTINGS["sync"] is False
    assert (Path(uutils.USER_CONFIG_DIR) / "Arial.ttf").is_file()
    from ultralytics.utils.checks import check_font

    assert Path(check_font("Arial.ttf")).parent == Path(uutils.USER_CONFIG_DIR)  # found, not downloaded


def test_letterbox_matches_ultralytics(offline_env):
    from ultralytics.data.augment import LetterBox

    from bonecls.detection.boxes import letterbox

    rng = np.random.default_rng(1)
    for h, w in [(80, 96), (97, 61), (512, 512), (300, 1000)]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ours, gain, pad = letterbox(img, 128)
        ref = LetterBox(128, auto=False, stride=32)(image=img.copy())
        np.testing.assert_array_equal(ours, ref)
        assert ours.shape == (128, 128, 3) and 0 < gain[0] <= 2 and pad[0] >= 0 and pad[1] >= 0


def test_data_yaml_is_sanitised(yolo_data):
    from bonecls.detection.evaluate import read_data_yaml

    cfg = read_data_yaml(yolo_data)
    assert "download" not in cfg and Path(cfg["path"]).is_absolute() and cfg["names"] == ["opacity"]
    bad = yolo_data.parent / "bad.yaml"
    bad.write_text("train: x\n")
    with pytest.raises(DataError):
        read_data_yaml(bad)


# ------------------------------------------------------------------------------------------------------
# (2) integrity: a tampered file is refused before anything is unpickled / parsed


@pytest.fixture
def torch_load_spy(monkeypatch):
    import torch

    calls: list = []

    def spy(*a, **k):
        calls.append(a)
        raise AssertionError("torch.load must not be called on unverified weights")

    monkeypatch.setattr(torch, "load", spy)
    return calls


@pytest.mark.slow
def test_tampered_weights_are_refused_before_unpickling(card_copy, offline_env, torch_load_spy, no_network):
    from bonecls.detection.detector import Detector

    pt = card_copy / "model.pt"
    data = bytearray(pt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pt.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="checksum"):
        Detector.from_card(card_copy)
    assert torch_load_spy == []


def test_uncarded_start_weights_need_a_checksum(tmp_path, offline_env, torch_load_spy):
    from bonecls.detection.train import _open_start_weights

    pt = tmp_path / "start.pt"
    pt.write_bytes(b"\x80\x04not really a checkpoint")
    with pytest.raises(WeightsError, match="sha256"):
        _open_start_weights(pt, None)
    with pytest.raises(WeightsError, match="checksum"):
        _open_start_weights(pt, "0" * 64)
    assert torch_load_spy == []


@pytest.mark.slow
def test_card_for_another_framework_is_refused(card_copy, offline_env):
    from bonecls.detection.detector import Detector

    card = json.loads((card_copy / "card.json").read_text())
    card.update(task="pneumonia")
    (card_copy / "card.json").write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="detection"):
        Detector.from_card(card_copy)


# ------------------------------------------------------------------------------------------------------
# (3) EigenCAM


@pytest.mark.slow
def test_eigencam_heatmap(trained, offline_env, no_network):
    from bonecls.detection.detector import Detector

    det = Detector.from_card(trained["out"])
    rng = np.random.default_rng(0)
    img = rng.random((70, 90), dtype=np.float32)
    img[20:40, 30:60] = 1.0
    heat = det.eigencam(img)
    assert heat.shape == img.shape and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() <= 1.0
    assert det._yolo.model.training is False
    # detection still works after the CAM hooks were removed
    assert isinstance(det.detect(img, conf=0.001), list)


def test_eigen_projection_matches_pytorch_grad_cam():
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    from bonecls.detection.detector import eigen_projection

    rng = np.random.default_rng(3)
    acts = rng.normal(size=(2, 6, 5, 7)).astype(np.float32)
    ours = eigen_projection(acts)
    ref = get_2d_projection(acts)
    for o, r in zip(ours, ref, strict=True):  # equal up to the SVD's arbitrary sign
        assert np.allclose(o, r, atol=1e-4) or np.allclose(o, -r, atol=1e-4)
        assert abs(o.max()) >= abs(o.min())


# ------------------------------------------------------------------------------------------------------
# (4) ONNX Runtime path == PyTorch path


@pytest.mark.slow
def test_onnx_boxes_match_pytorch(card_copy, yolo_data, offline_env, no_network):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import cv2

    from bonecls.detection.detector import Detector, OnnxDetector, export_onnx
    from bonecls.weights import load_card, sha256_file

    onnx_path = export_onnx(card_copy)
    card, _ = load_card(card_copy)
    assert onnx_path == card_copy / "model.onnx"
    assert card.extra["onnx"]["sha256"] == sha256_file(onnx_path)
    det, fast = Detector.from_card(card_copy), OnnxDetector.from_card(card_copy)
    total = 0
    for path in _test_images(yolo_data)[:3]:
        img = cv2.imread(str(path))
        for conf in (0.001, 0.01):
            a, b = det.detect(img, conf=conf), fast.detect(img, conf=conf)
            assert len(a) == len(b), (path.name, conf)
            if a:
                iou = dm.box_iou([x.xyxy() for x in a], [x.xyxy() for x in b])
                assert iou.max(axis=1).min() >= 0.99
                ca = np.array([x.confidence for x in a])
                cb = np.array([x.confidence for x in b])
                assert np.allclose(np.sort(ca), np.sort(cb), atol=1e-3)
            total += len(a)
    assert total > 0, "no box at all: the comparison would prove nothing"

    data = bytearray(onnx_path.read_bytes())
    data[-10] ^= 0xFF
    onnx_path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="checksum"):
        OnnxDetector.from_card(card_copy)


def test_shipped_detector_onnx_export_draws_the_pytorch_boxes(offline_env, no_network, monkeypatch):
    """The app's pneumonia boxes come from the shipped ONNX export; they equal the PyTorch boxes."""
    pytest.importorskip("onnxruntime")
    from bonecls.detection.detector import Detector, OnnxDetector
    from bonecls.imaging import load_radiograph
    from bonecls.ui import services

    card_dir = REPO / "weights" / "pneumonia-det"
    det, fast = Detector.from_card(card_dir), OnnxDetector.from_card(card_dir)
    total = 0
    for path in sorted((REPO / "examples" / "pneumonia").glob("*.png")):
        rg = load_radiograph(path.read_bytes())
        a, b = det.detect(rg, conf=0.05), fast.detect(rg, conf=0.05)
        assert [x.label for x in a] == [x.label for x in b], path.name
        if a:
            assert dm.box_iou([x.xyxy() for x in a], [x.xyxy() for x in b]).max(axis=1).min() >= 0.99
            assert np.allclose([x.confidence for x in a], [x.confidence for x in b], atol=1e-3)
        total += len(a)
    assert total > 0, "no box on the pneumonia examples: the comparison would prove nothing"
    services.clear_caches()
    assert isinstance(services.box_detector(str(card_dir), "sha"), OnnxDetector)
    monkeypatch.setenv("BONECLS_ONNX", "0")
    services.clear_caches()
    assert isinstance(services.box_detector(str(card_dir), "sha"), Detector)
    services.clear_caches()


def test_warm_up_preloads_the_onnx_box_detector(offline_env, no_network, monkeypatch, tmp_path, caplog):
    """The app's warm-up loads what draws the boxes (ONNX) and EigenCAM's PyTorch model, so the first
    pneumonia image loads nothing; a broken ONNX file costs the warm-up nothing and falls back."""
    pytest.importorskip("onnxruntime")
    from bonecls.detection.detector import Detector, OnnxDetector
    from bonecls.ui import services

    root = tmp_path / "weights"
    shutil.copytree(REPO / "weights" / "pneumonia-det", root / "pneumonia-det")
    monkeypatch.setenv("BONECLS_WEIGHTS", str(root))
    try:
        for onnx_on, kinds in (("1", {"detector", "onnx_detector"}), ("0", {"detector"})):
            monkeypatch.setenv("BONECLS_ONNX", onnx_on)
            services.clear_caches()
            (entry,) = services.installed_models()
            services._warm()
            assert {k[0] for k in services._PRELOADED} == kinds
            assert services.STATS["load"] == len(kinds)
            boxes = services.box_detector(str(entry.path), entry.sha256)
            assert isinstance(boxes, OnnxDetector if onnx_on == "1" else Detector)
            assert isinstance(services.detector(str(entry.path), entry.sha256), Detector)
            assert services.STATS["load"] == len(kinds), "the first image loaded a model again"
            assert not services._PRELOADED

        monkeypatch.setenv("BONECLS_ONNX", "1")
        onnx_file = root / "pneumonia-det" / "model.onnx"
        onnx_file.write_bytes(onnx_file.read_bytes()[:-10] + b"0123456789")  # checksum no longer matches
        services.clear_caches()
        with caplog.at_level("INFO", logger="bonecls"):
            services._warm()
        assert "no ONNX boxes for pneumonia-det" in caplog.text
        assert {k[0] for k in services._PRELOADED} == {"detector"}
        (entry,) = services.installed_models()
        assert isinstance(services.box_detector(str(entry.path), entry.sha256), Detector)
        assert services.STATS["load"] == 1
    finally:
        services.clear_caches()


# ------------------------------------------------------------------------------------------------------
# (5) detection.metrics, hand-computed


def test_box_iou_hand_values():
    a = [[0, 0, 10, 10]]
    assert dm.box_iou(a, [[5, 0, 15, 10]])[0, 0] == pytest.approx(50 / 150)
    assert dm.box_iou(a, [[0, 0, 10, 10]])[0, 0] == 1.0
    assert dm.box_iou(a, [[10, 10, 20, 20]])[0, 0] == 0.0  # touching corners
    assert dm.box_iou(a, [[2, 2, 4, 4]])[0, 0] == pytest.approx(4 / 100)
    assert dm.box_iou(a, [[3, 3, 3, 8]])[0, 0] == 0.0  # degenerate box
    assert dm.box_iou(np.zeros((0, 4)), a).shape == (0, 1)
    np.testing.assert_allclose(dm.xywh_to_xyxy([[1, 2, 3, 4]]), [[1, 2, 4, 6]])


def test_average_precision_hand_computed():
    gt = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([[0, 0, 10, 10]])]
    pb = [np.array([[0, 0, 10, 10], [50, 50, 60, 60]]), np.array([[0, 0, 10, 11], [40, 40, 45, 45]])]
    ps = [np.array([0.9, 0.8]), np.array([0.7, 0.6])]
    # ranked: TP(.9) FP(.8) TP(.7, IoU 100/110) FP(.6); 3 GT boxes
    # precision 1, 1/2, 2/3, 1/2 at recall 1/3, 1/3, 2/3, 2/3; envelope 1 up to 1/3, 2/3 up to 2/3, 0 after
    assert dm.average_precision(pb, ps, gt, 0.5, "all-point") == pytest.approx(1 / 3 + (1 / 3) * (2 / 3))
    # 101-point: r = 0..0.33 (34 points) -> 1, r = 0.34..0.66 (33 points) -> 2/3, r >= 0.67 (34) -> 0
    assert dm.average_precision(pb, ps, gt, 0.5) == pytest.approx((34 + 33 * 2 / 3) / 101)
    # at IoU 0.95 the second image's box (IoU 0.909) no longer matches
    assert dm.average_precision(pb, ps, gt, 0.95, "all-point") == pytest.approx(1 / 3)
    assert dm.mean_average_precision(pb, ps, gt, iou_thresholds=0.5) == pytest.approx(
        dm.average_precision(pb, ps, gt, 0.5)
    )
    # duplicates: the second box on the same object is a false positive
    dup = dm.average_precision([np.array([[0, 0, 10, 10], [0, 0, 10, 10]])], [np.array([0.9, 0.8])],
                               [np.array([[0, 0, 10, 10]])], 0.5, "all-point")  # fmt: skip
    assert dup == pytest.approx(1.0)
    assert dm.precision_recall_counts(pb, ps, gt) == {"tp": 2, "fp": 2, "fn": 1}
    assert math.isnan(dm.average_precision([np.zeros((0, 4))], [np.zeros(0)], [np.zeros((0, 4))]))
    assert dm.average_precision([np.zeros((0, 4))], [np.zeros(0)], [np.array([[0, 0, 1, 1]])]) == 0.0


def test_average_precision_iou_threshold_is_inclusive_and_matching_is_greedy():
    gt = [np.array([[0, 0, 10, 10]])]
    half = [np.array([[0, 0, 10, 20]])]  # IoU exactly 0.5
    assert dm.average_precision(half, [np.array([0.5])], gt, 0.5, "all-point") == 1.0
    # the lower-scored box overlaps better, but the higher-scored one is matched first
    pb = [np.array([[0, 0, 10, 12], [0, 0, 10, 10]])]
    _, tp = dm.match_predictions(pb[0], [0.9, 0.3], gt[0], 0.5)
    assert tp.tolist() == [True, False]


def test_multiclass_map_averages_classes():
    gt = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]])]
    pb = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]])]
    ps = [np.array([0.9, 0.8])]
    # both predicted as class 0: class 0 gets a TP then an FP (AP 1), class 1 gets nothing (AP 0)
    m = dm.mean_average_precision(pb, ps, gt, pred_labels=[np.array([0, 0])], gt_labels=[np.array([0, 1])],
                                  iou_thresholds=0.5, interpolation="all-point")  # fmt: skip
    assert m == pytest.approx((1.0 + 0.0) / 2)


def test_rsna_score_hand_computed():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]])
    # one exact hit, one box with IoU 0.6 (10x6 inside 10x10), one false positive far away
    pb = np.array([[0, 0, 10, 10], [20, 20, 30, 26], [50, 50, 60, 60]])
    ps = np.array([0.9, 0.8, 0.7])
    # t in .40 .45 .50 .55: TP 2 FP 1 FN 0 -> 2/3 ; t in .60 (strict: 0.6 is not above 0.6) .65 .70 .75:
    # TP 1 FP 2 FN 1 -> 1/4
    assert dm.rsna_image_score(pb, ps, gt) == pytest.approx((4 * 2 / 3 + 4 * 1 / 4) / 8)
    assert dm.rsna_image_score(np.zeros((0, 4)), [], gt) == 0.0  # all missed
    assert dm.rsna_image_score(pb, ps, np.zeros((0, 4))) == 0.0  # predictions on an empty image
    assert dm.rsna_image_score(np.zeros((0, 4)), [], np.zeros((0, 4))) is None  # excluded
    # confidence order decides which box takes the ground truth: the loose box first -> it is the TP
    loose_first = dm.rsna_image_score(
        np.array([[0, 0, 10, 14], [0, 0, 10, 10]]), np.array([0.9, 0.1]), np.array([[0, 0, 10, 10]])
    )  # IoU 100/140 = 0.714: TP for t <= 0.70 (7 thresholds) else the exact box matches: 1/2 each
    assert loose_first == pytest.approx(1 / 2)
    dataset = dm.rsna_score(
        [pb, np.zeros((0, 4)), np.zeros((0, 4)), np.array([[1, 1, 2, 2]])],
        [ps, [], [], [0.5]],
        [gt, np.zeros((0, 4)), np.array([[0, 0, 5, 5]]), np.zeros((0, 4))],
    )  # images: (4*2/3 + 4/4)/8, excluded, 0 (missed), 0 (false positive) -> mean over 3
    assert dataset == pytest.approx(((4 * 2 / 3 + 4 / 4) / 8) / 3)
    assert math.isnan(dm.rsna_score([np.zeros((0, 4))], [[]], [np.zeros((0, 4))]))
    with pytest.raises(ValueError):
        dm.rsna_score([pb], [ps], [])


def test_ultralytics_does_not_hijack_pil_open_for_unreadable_uploads() -> None:
    """Ultralytics patches PIL.Image.open to install pi_heif on unknown files; we undo that."""
    import io

    import PIL.Image

    from bonecls.detection.offline import import_ultralytics
    from bonecls.errors import ImageError
    from bonecls.imaging import load_radiograph

    import_ultralytics()
    with pytest.raises(PIL.UnidentifiedImageError):
        PIL.Image.open(io.BytesIO(b"not an image at all" * 8))
    with pytest.raises(ImageError):
        load_radiograph(b"II*\x00" + b"\xff" * 64)  # a TIFF header with garbage after it


@pytest.mark.slow
def test_fine_tuning_starts_from_the_given_weights(card_copy, yolo_data, tmp_path, offline_env, no_network):
    """--weights must load the checkpoint's weights, not only its architecture: with a learning rate of 0
    the fine-tuned backbone is the starting one. (Until 2026-12-06 pretrained=False made every
    "fine-tune" a scratch run of the same YAML: a random start differs everywhere.)"""
    import torch

    from bonecls.detection.detector import open_yolo
    from bonecls.detection.train import train_detector
    from bonecls.weights import load_card

    start_card, _ = load_card(card_copy)
    card, out = train_detector(
        yolo_data, tmp_path / "ft", weights=card_copy, epochs=1, imgsz=64, batch=4, workers=0,
        train_kwargs={"optimizer": "SGD", "lr0": 0.0, "warmup_epochs": 0, "weight_decay": 0.0},
    )  # fmt: skip
    start = open_yolo(card_copy / "model.pt", start_card.sha256).model.state_dict()
    tuned = open_yolo(out / "model.pt", card.sha256).model.state_dict()
    convs = [
        k for k in start if k.endswith("conv.weight") and k.startswith(("model.0.", "model.4.", "model.9."))
    ]
    assert convs
    for key in convs:
        torch.testing.assert_close(tuned[key].float(), start[key].float(), atol=1e-3, rtol=0, msg=key)
    assert card.extra["start"] == f"fine-tuned from weights sha256 {start_card.sha256}"


# ------------------------------------------------------------------------------------------------------
# (6) a card's input_transform ("rank"): the same grey-level transform in training and reading


def _grey_bgr(img: np.ndarray) -> np.ndarray:
    return np.repeat(img[..., None], 3, axis=2)


def test_rank_equalise_removes_every_monotone_grey_curve() -> None:
    """A logarithmic, gamma or sigmoid display curve (strictly increasing) reorders no pixel, so the
    transform gives one image for all of them; a curve that merges grey levels does change it."""
    rng = np.random.default_rng(3)
    base = (20 + 6 * rng.integers(0, 37, (48, 40))).astype(np.float64)  # 37 levels, 6 apart
    base[:6] = 250.0  # a flat collimation band: ties
    d = base / 255.0
    curves = {
        "identity": d,
        "log": np.log1p(8 * d) / np.log1p(8),
        "gamma": d**0.6,
        "sigmoid": 1 / (1 + np.exp(-6 * (d - 0.5))),
    }
    # each curve must keep the levels distinct after 8-bit rounding (a steep curve merging two would change
    # the ranks: the invariance holds for what the bit depth keeps apart)
    outs = {}
    for name, v in curves.items():
        v = (v - v.min()) / (v.max() - v.min())
        img = np.rint(v * 255).astype(np.uint8)
        assert len(np.unique(img)) == len(np.unique(base)), name
        outs[name] = rank_equalise(_grey_bgr(img))
    for name, out in outs.items():
        np.testing.assert_array_equal(out, outs["identity"], err_msg=name)
    out = outs["identity"]
    assert out.dtype == np.uint8 and out.shape == (48, 40, 3)
    assert np.array_equal(out[..., 0], out[..., 2])
    assert len(np.unique(out[:6, :, 0])) == 1  # the flat band stays flat
    assert abs(float(out.mean()) - 127.5) < 1.5  # mid-ranks: a flat histogram's mean
    merged = np.where(base < 128, 20, base).astype(np.uint8)  # not strictly increasing: levels merge
    assert not np.array_equal(rank_equalise(_grey_bgr(merged)), out)


def test_rank_equalise_flat_colour_and_bad_input() -> None:
    flat = np.full((10, 12, 3), 77, np.uint8)
    assert np.all(rank_equalise(flat) == 128)  # every pixel at the middle rank
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[..., 2] = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3  # red ramp: grey by luminance
    out = rank_equalise(colour)
    assert np.array_equal(out[..., 0], out[..., 1]) and out[0, 0, 0] < out[7, 7, 0]
    with pytest.raises(ImageError, match="uint8"):
        rank_equalise(np.zeros((8, 8), np.uint8))


def test_classifier_card_cannot_carry_a_detector_transform() -> None:
    """Only the detector applies the transform: a classifier card naming it would be read untransformed."""
    from bonecls.weights import ModelCard, load_card

    card, _ = load_card(REPO / "weights" / "fracture")
    assert ModelCard.model_validate(card.model_dump()).input_transform is None
    with pytest.raises(ValueError, match="input_transform"):
        ModelCard.model_validate({**card.model_dump(), "input_transform": "rank"})


def _rank_card(card_dir: Path) -> Path:
    from bonecls.detection.detector import updated_card
    from bonecls.weights import load_card, write_card

    card, _ = load_card(card_dir)
    write_card(updated_card(card, input_transform="rank"), card_dir)
    return card_dir


@pytest.mark.slow
def test_a_rank_card_reads_every_image_rank_equalised(
    card_copy, yolo_data, tmp_path, offline_env, no_network
):
    """Boxes (PyTorch and ONNX), scope features and EigenCAM of a rank card are those of the same network
    on the rank-equalised image: no path reads the image untransformed."""
    import cv2

    from bonecls.detection.detector import Detector, OnnxDetector, export_onnx
    from bonecls.detection.scope_features import detector_features

    plain_dir = tmp_path / "plain"
    shutil.copytree(card_copy, plain_dir)
    rank_dir = _rank_card(card_copy)
    export_onnx(rank_dir)
    plain, ranked, fast = (
        Detector.from_card(plain_dir),
        Detector.from_card(rank_dir),
        OnnxDetector.from_card(rank_dir),
    )
    assert ranked.card.input_transform == "rank" and plain.card.input_transform is None
    images = [cv2.imread(str(p)) for p in _test_images(yolo_data)]
    differs = boxes = 0
    for img in images:
        eq = rank_equalise(img)
        differs += not np.array_equal(eq, img)
        want = [(b.xyxy(), round(b.confidence, 4)) for b in plain.detect(eq, conf=0.001)]
        got = [(b.xyxy(), round(b.confidence, 4)) for b in ranked.detect(img, conf=0.001)]
        assert got == want
        onnx = fast.detect(img, conf=0.001)
        assert len(onnx) == len(want)
        if want:
            assert dm.box_iou([x for x, _ in want], [b.xyxy() for b in onnx]).max(axis=1).min() >= 0.99
            assert np.allclose(sorted(c for _, c in want), sorted(b.confidence for b in onnx), atol=1e-3)
        boxes += len(want)
        np.testing.assert_allclose(ranked.eigencam(img), plain.eigencam(eq), atol=1e-5)
    assert differs == len(images)  # the transform changed every test image: the equalities say something
    assert boxes > 0, "no box at all: the box comparisons would prove nothing"
    np.testing.assert_allclose(
        detector_features(ranked, images),
        detector_features(plain, [rank_equalise(i) for i in images]),
        atol=1e-5,
    )


def test_rank_dataset_copy_is_what_the_detector_reads(yolo_data, tmp_path) -> None:
    """The training copy holds, per image, exactly the array a rank card's detector reads from the original
    file, beside the original's labels."""
    import cv2

    from bonecls.detection.evaluate import read_data_yaml, split_images
    from bonecls.detection.train import rank_dataset
    from bonecls.imaging import load_radiograph

    cfg = read_data_yaml(yolo_data)
    out = rank_dataset(cfg, tmp_path / "rk")

    class Card:
        input_transform = "rank"
        scale = None

    for split in ("train", "val", "test"):
        originals = split_images(cfg, split)
        copies = split_images(out, split)
        assert len(copies) == len(originals) > 0
        for original, copy in zip(originals, copies, strict=True):
            read = film_at_card_scale(load_radiograph(original), Card, 64)[0]
            np.testing.assert_array_equal(cv2.imread(str(copy), cv2.IMREAD_COLOR), read)
            label = original.parent.parent.parent / "labels" / split / f"{original.stem}.txt"
            copied = copy.parent.parent.parent / "labels" / split / f"{copy.stem}.txt"
            assert copied.read_text() == label.read_text()


def test_train_detector_refuses_an_unknown_transform(yolo_data, tmp_path) -> None:
    from bonecls.detection.train import train_detector

    with pytest.raises(DataError, match="input transform"):
        train_detector(yolo_data, tmp_path / "x", epochs=1, imgsz=64, input_transform="sqrt")


@pytest.mark.slow
def test_training_with_rank_trains_on_the_copy_and_says_so(
    yolo_data, tmp_path, offline_env, no_network, monkeypatch
):
    import bonecls.detection.train as train_mod

    made: list[dict] = []
    real = train_mod.rank_dataset

    def spy(cfg, dst):
        out = real(cfg, dst)
        made.append(out)
        return out

    monkeypatch.setattr(train_mod, "rank_dataset", spy)
    card, out = train_mod.train_detector(
        yolo_data, tmp_path / "rk", epochs=1, imgsz=64, batch=4, workers=0, input_transform="rank"
    )
    assert len(made) == 1 and Path(made[0]["train"]).name == "train.txt"
    assert not Path(made[0]["path"]).exists()  # the copy went with the run folder
    assert card.input_transform == "rank"
    from bonecls.weights import load_card

    assert load_card(out)[0].input_transform == "rank"
    # a fine-tune of a rank card stays one unless told otherwise: the weights learnt rank-equalised films
    tuned, _ = train_mod.train_detector(
        yolo_data, tmp_path / "ft", weights=out, epochs=1, imgsz=64, workers=0
    )
    assert tuned.input_transform == "rank" and len(made) == 2
    plain, _ = train_mod.train_detector(
        yolo_data, tmp_path / "ft-none", weights=out, epochs=1, imgsz=64, workers=0, input_transform="none"
    )
    assert plain.input_transform is None and len(made) == 2
