"""Keras models beside the PyTorch ones: training (seed 004's recipe), serving through load_classifier,
CAMs (the PyTorch path's numbers, aligned on the image), safe loading, and no TensorFlow for PyTorch use.

One module-scoped run trains a small Keras CNN for one epoch on 64-px three-class phantoms; the other
models are tiny hand-built Keras networks saved with a card (tests/kerasdata.py).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from factories import make_png, pattern
from kerasdata import THREECLASS, keras, localiser_card, save_card, tiny_threeclass
from PIL import Image
from scope_corpus import png_bytes, real_film_paths

from bonecls.errors import ExplainError, WeightsError
from bonecls.imaging import load_radiograph
from bonecls.inference.keras_cam import keras_cam
from bonecls.inference.load import load_classifier
from bonecls.inference.torch_cam import CAM_METHODS, cam_class, explain_with_logits
from bonecls.weights import load_card, sha256_file, write_card

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One epoch of train/keras_transfer.py's logic (custom_cnn, from scratch, a 16-unit head so that the
    48 training images fit its learned scope) on 60 phantoms at 64 px."""
    from bonecls.phantom import write_dataset
    from bonecls.prepare import prepare
    from bonecls.training.keras_transfer import parse_args, run

    base = tmp_path_factory.mktemp("keras-train")
    src = write_dataset("threeclass", "threeclass", base / "src", n=60, size=64, seed=4, progress=False)
    prepare(src, base / "prep", size=64, scheduler="sync", progress=False, echo=lambda s: None)
    argv = ["--data", str(base / "prep"), "--output", str(base / "model"), "--run-dir", str(base / "run")]
    argv += [
        "--model",
        "custom_cnn",
        "--weights",
        "none",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--dense",
        "16",
    ]
    argv += ["--no-progress", "--seed", "1"]
    summary = run(parse_args(argv))
    return base / "model", summary


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    save_card(tiny_threeclass(), tmp_path / "tiny", "keras-tiny")
    return tmp_path / "tiny"


def training_image(model_dir: Path, k: int, split: str = "train") -> np.ndarray:
    """The ``k``-th PNG of ``split`` of the trained fixture's phantom dataset, as float pixels in [0, 1]."""
    path = sorted((model_dir.parent / "src" / split).rglob("*.png"))[k]
    return np.asarray(Image.open(path), dtype=np.float32) / 255.0


def phantom_image(seed: int = 3) -> np.ndarray:
    from bonecls.phantom import generate

    sample = next(generate("threeclass", 1, 64, seed, classes=["fractured"]))
    return sample.to_uint8().astype(np.float32) / 255.0  # as the dataset writers store it


# -------------------------------------------------------------------------------------------- training


def test_training_writes_a_card_like_the_pytorch_trainer(trained: tuple[Path, dict]) -> None:
    out, summary = trained
    card, _ = load_card(out)  # schema-valid, weights present, sha256 verified
    assert card.framework == "keras" and card.weights_file == "model.keras" and card.task == "threeclass"
    assert card.sha256 == sha256_file(out / "model.keras") == summary["sha256"]
    assert card.class_names == THREECLASS and card.positive_classes == ["fractured", "beyond_repair"]
    assert card.architecture == "custom_cnn" and card.head == "dense_bn"
    assert card.input_size == 64 and card.in_chans == 1 and card.normalization.mean == [0.5]
    assert card.temperature > 0 and 0 <= card.thresholds.negative_below <= card.thresholds.positive_at <= 1
    tm = card.test_metrics
    assert {"accuracy", "f1_macro", "ece", "per_class", "confusion_matrix", "calibration", "curves"} <= set(
        tm
    )
    assert "roc_auc" in tm or tm.get("roc_auc_per_class")  # None (absent) only when a class is missing
    assert np.array(tm["confusion_matrix"]).shape == (3, 3) and np.sum(tm["confusion_matrix"]) == tm["n"]
    assert all({"precision", "recall", "f1"} <= set(v) for v in tm["per_class"].values())
    assert len(tm["curves"]) == 1 and tm["curves"][0]["val_loss"] > 0
    assert card.extra["cam_layer"] == "relu3" and card.extra["shear"] == 0.0
    assert card.extra["base_weights"] == "none" and card.extra["replicas"] == 1
    assert card.command.startswith("python train/keras_transfer.py ") and "--model custom_cnn" in card.command
    assert card.training_data.startswith("Synthetic phantom radiographs")
    for name in ("metrics.json", "confusion.png", "curves.png", "reliability.png"):
        assert (out / name).is_file()
    assert json.loads((out.parent / "run" / "summary.json").read_text())["epochs"] == [1]
    # L2 on the base's kernels is in the saved config; no optimizer state in the served file
    with zipfile.ZipFile(out / "model.keras") as zf:
        config = zf.read("config.json").decode()
        assert not any(name.startswith("optimizer") for name in zf.namelist())
    assert config.count('"L2"') >= 3 and '"Lambda"' not in config


def test_train_script_help_lists_the_recipe() -> None:
    p = subprocess.run(
        [sys.executable, "train/keras_transfer.py", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr
    assert "inception_v3" in p.stdout and "xception" in p.stdout and "--weights" in p.stdout


# ---------------------------------------------------------------------------------------------- serving


def test_predictor_serves_the_trained_model_with_calibrated_probabilities(trained) -> None:
    from bonecls.inference.keras_predictor import KerasPredictor

    out, _ = trained
    predictor = load_classifier(out)
    assert isinstance(predictor, KerasPredictor) and predictor.cam_layer.name == "relu3"
    img = training_image(out, 0)  # one the scope was fitted on: in scope
    pred = predictor.predict(img)
    assert set(pred.probabilities) == set(THREECLASS) and abs(sum(pred.probabilities.values()) - 1) < 1e-6
    assert pred.status in {"positive", "uncertain", "negative"} and pred.model_sha256 == predictor.card.sha256
    # the learned scope was asked, on the features of the very pass that gave the logits
    assert pred.in_scope and pred.scope_score is not None and pred.scope_reasons == ()
    assert pred.scope_score <= pred.scope_threshold == predictor.card.scope.threshold
    # the same numbers as Keras itself: its softmax output, temperature-scaled on the card
    raw = (
        keras()
        .models.load_model(out / "model.keras", compile=False)
        .predict(predictor.preprocess(img), verbose=0)
    )
    scaled = np.exp(np.log(raw[0].astype(np.float64)) / predictor.card.temperature)
    expected = scaled / scaled.sum()
    assert np.allclose([pred.probabilities[c] for c in THREECLASS], expected, atol=1e-4)
    batch = predictor.predict_batch([img, np.fliplr(img).copy(), img])
    assert batch[0] == batch[2] and abs(batch[0].suspicion - pred.suspicion) < 1e-6


def test_the_trainer_fits_a_learned_scope_that_refuses_what_it_never_saw(
    trained: tuple[Path, dict], tmp_path: Path, capsys
) -> None:
    """Issue 21 for Keras: the card gets a scope fitted on the model's own pooled features (train split
    fit, val threshold, test rate). Header-less pixels (no header rule, and the image heuristics never see
    a bare array) of the real films and of a checkerboard are refused by the learned part alone; fresh
    in-distribution phantoms are kept. The CLI and explain answer with the same gate."""
    from bonecls.cli import main

    out, summary = trained
    card, _ = load_card(out)
    scope = card.scope
    assert scope is not None and (out / scope.stats_file).is_file()
    assert (
        scope.metrics["n_fit"] == 48 and scope.metrics["feature_dim"] == 16 and scope.metrics["n_eval"] == 6
    )
    assert scope.declared.derived_from.startswith("declared from the training set's labels")
    assert summary["scope"] == scope.metrics and 0.5 <= scope.metrics["heldout_in_scope_rate"] <= 1.0
    predictor = load_classifier(out)
    held_out = [training_image(out, k, "test") for k in range(6)]  # neither fit nor threshold saw them
    assert sum(p.in_scope for p in predictor.predict_batch(held_out)) >= 4
    yy, xx = np.mgrid[:256, :256]
    unfamiliar = {"checkerboard": (((yy // 32) + (xx // 32)) % 2).astype(np.float32)}
    unfamiliar.update({name: load_radiograph(path).pixels for name, path in real_film_paths().items()})
    for name, pixels in unfamiliar.items():
        pred = predictor.predict(pixels)
        assert not pred.in_scope and pred.status == "out of scope", name
        assert pred.scope_score > scope.threshold and "does not resemble" in pred.scope_reasons[0], name
    board = predictor.predict(unfamiliar["checkerboard"])
    explained = predictor.explain(unfamiliar["checkerboard"]).prediction  # CAM pass: the same gate
    assert not explained.in_scope and explained.scope_score == pytest.approx(board.scope_score, rel=1e-4)
    cat = real_film_paths().get("cat thorax")
    if cat is not None:  # the CLI on a header-less PNG of the cat: the learned part refuses it
        (tmp_path / "cat.png").write_bytes(png_bytes(load_radiograph(cat).to_uint8()))
        assert main(["predict", str(tmp_path / "cat.png"), "--model", str(out), "--json"]) == 0
        row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert row["in_scope"] is False and row["status"] == "out of scope"
        assert row["scope_score"] > scope.threshold and row["label"] is None


def test_scope_fit_refits_a_keras_card_from_image_folders(trained: tuple[Path, dict], tmp_path: Path) -> None:
    from bonecls.scope.fit import main

    out, _ = trained
    src = out.parent / "src"
    shutil.copytree(out, tmp_path / "model")
    argv = ["--card", str(tmp_path / "model"), "--fit-images", str(src / "train")]
    argv += ["--threshold-images", str(src / "val"), "--eval-images", str(src / "test")]
    assert main(argv) == 0
    card, card_dir = load_card(tmp_path / "model")
    assert (
        card.scope is not None
        and card.scope.metrics["n_fit"] == 48
        and str(src / "train") in card.scope.fitted_on
    )
    assert card.sha256 == load_card(out)[0].sha256  # the weights are untouched
    assert card.scope.declared == load_card(out)[0].scope.declared  # a refit keeps the declared scope
    assert load_classifier(card_dir).predict(np.zeros((64, 64), np.float32)).scope_score is not None


def test_keras_cards_load_through_load_classifier_only(tiny_dir: Path) -> None:
    from bonecls.inference.predictor import Predictor

    with pytest.raises(WeightsError, match="'keras-tiny' is a keras model, not a PyTorch classifier"):
        Predictor.from_card(tiny_dir)
    with pytest.raises(WeightsError, match=r"engine does not run it \(engines for it: auto, native, keras\)"):
        load_classifier(tiny_dir, engine="onnx")
    assert load_classifier(tiny_dir, engine="keras").card.id == "keras-tiny"


def test_explain_every_method_sized_finite_and_consistent(trained, make_radiograph) -> None:
    predictor = load_classifier(trained[0], scope=False)  # CAM maths on a thumbnail the gate would refuse
    assert not predictor.predict(make_radiograph(np.zeros((80, 120), np.float32) + 0.5)).scope_checked
    rng = np.random.default_rng(0)
    img = cv2.resize(phantom_image(), (120, 80)) * 0.8 + rng.random((80, 120), dtype=np.float32) * 0.2
    rg = make_radiograph(img)
    pred = predictor.predict(rg)
    for method in CAM_METHODS:
        exp = predictor.explain(rg, method=method, colormap="turbo", opacity=0.6)
        hm = exp.heatmap
        assert hm.shape == (80, 120) and hm.dtype == np.float32 and np.isfinite(hm).all(), method
        assert hm.min() >= 0.0 and hm.max() <= 1.0 and (hm.max() == pytest.approx(1.0) or not hm.any())
        assert exp.overlay.shape == (80, 120, 3) and exp.overlay.dtype == np.uint8
        assert exp.method == method and exp.target_class == pred.label
        assert exp.prediction.probabilities == pytest.approx(pred.probabilities, abs=1e-5)
    assert predictor.explain(rg, target_class="healthy").target_class == "healthy"
    assert predictor.predict_and_explain(rg, target_class=2).target_class == "beyond_repair"
    with pytest.raises(ExplainError) as keras_err:
        predictor.explain(rg, method="gradcam+++")
    with pytest.raises(ExplainError) as torch_err:
        cam_class("gradcam+++")
    assert str(keras_err.value) == str(torch_err.value)  # the PyTorch path's sentence
    with pytest.raises(ExplainError, match="this model's classes are: healthy, fractured, beyond_repair"):
        predictor.explain(rg, target_class="broken")


@pytest.mark.parametrize("method", list(CAM_METHODS))
def test_heat_map_peaks_on_the_phantom_lesion_box(method: str, tmp_path: Path) -> None:
    """A model that answers to bright blobs, on phantoms whose lesion box holds the only bright blob:
    the peak lies in the box (chance: the box's share of the image) and nothing is hot away from it.
    The phantoms are rendered at 96 px and squashed to 80 x 120 (the model sees 64 x 64), so the box
    has to survive both resizes."""
    from bonecls.phantom import generate

    localiser_card(tmp_path / "loc")
    predictor = load_classifier(tmp_path / "loc")
    samples = [s for s in generate("fracture", 6, 96, 5) if s.boxes]
    assert len(samples) >= 2
    hits, chance = 0, []
    for s in samples:
        img = cv2.resize(s.image.astype(np.float32) / float(s.image.max()), (120, 80)) * 0.4
        b = s.boxes[0]
        r0, r1 = int(b.y0 * 80 / 96), int(np.ceil(b.y1 * 80 / 96))
        c0, c1 = int(b.x0 * 120 / 96), int(np.ceil(b.x1 * 120 / 96))
        img[r0:r1, c0:c1] = 1.0
        exp = predictor.explain(img, method=method)
        assert exp.target_class == "bright"
        near = np.zeros(img.shape, bool)
        near[max(0, r0 - 4) : r1 + 4, max(0, c0 - 4) : c1 + 4] = True
        r, c = np.unravel_index(int(np.argmax(exp.heatmap)), exp.heatmap.shape)
        hits += int(near[r, c])
        chance.append(near.mean())
        assert exp.heatmap[~near].max() < 0.25, "heat away from the lesion box"
    assert hits == len(samples) and np.mean(chance) < 0.2


def test_same_cam_numbers_as_the_pytorch_path() -> None:
    """The same small CNN in PyTorch and Keras (weights copied): every method gives the same heat map."""
    torch.manual_seed(3)
    tm = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 6, 3, padding=1),
        torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(6, 3),
    ).eval()  # fmt: skip
    k = keras()
    inputs = k.Input((32, 32, 1))
    x = k.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    cam_layer = k.layers.Conv2D(6, 3, padding="same", activation="relu")
    x = k.layers.Dense(3)(k.layers.GlobalAveragePooling2D()(cam_layer(x)))
    km = k.Model(inputs, x)
    convs = [m for m in tm if isinstance(m, torch.nn.Conv2d)]
    for keras_layer, conv in zip([km.layers[1], cam_layer], convs, strict=True):
        keras_layer.set_weights(
            [conv.weight.detach().permute(2, 3, 1, 0).numpy(), conv.bias.detach().numpy()]
        )
    km.layers[-1].set_weights([tm[-1].weight.detach().T.numpy(), tm[-1].bias.detach().numpy()])
    img = np.random.default_rng(1).random((1, 32, 32, 1), dtype=np.float32)
    for method in CAM_METHODS:
        for target in (None, 2):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # "empty" notes: compared below
                ours = keras_cam(km, img, cam_layer, method, target)
                ref = explain_with_logits(
                    tm, torch.from_numpy(img).permute(0, 3, 1, 2), [tm[3]], method, target
                )
            assert ours.target_index == ref.target_index
            assert torch.allclose(ours.logits, ref.logits, atol=1e-5), method
            assert np.allclose(ours.heatmap, ref.heatmap, atol=2e-4), (method, target)
            assert ours.warnings == ref.warnings  # class 2's gradient maps are empty in both
            assert target is not None or ours.heatmap.std() > 0.05, f"{method}: a flat map proves nothing"


def test_cam_layer_from_the_card_and_bad_names(tmp_path: Path) -> None:
    save_card(tiny_threeclass(), tmp_path / "auto", "auto")
    assert load_classifier(tmp_path / "auto").cam_layer.name == "conv2"  # last conv, not the pooling
    save_card(tiny_threeclass(), tmp_path / "named", "named", extra={"cam_layer": "conv1"})
    assert load_classifier(tmp_path / "named").cam_layer.name == "conv1"
    save_card(tiny_threeclass(), tmp_path / "bad", "bad", extra={"cam_layer": "conv9"})
    with pytest.raises(WeightsError, match="cam_layer 'conv9' is not a layer of the model"):
        load_classifier(tmp_path / "bad")


def test_nested_base_model_is_explained_inside(tmp_path: Path) -> None:
    """Transfer-learning models often nest the base (``Sequential([base, pooling, head])``): the CAM
    layer inside the base is found and its gradients flow."""
    k = keras()
    base = tiny_threeclass()
    inner = k.Model(base.inputs, base.get_layer("conv2").output, name="base")
    model = k.Sequential([k.Input((64, 64, 1)), inner, k.layers.GlobalAveragePooling2D(), k.layers.Dense(3)])
    save_card(model, tmp_path / "nested", "nested")
    predictor = load_classifier(tmp_path / "nested")
    assert predictor.cam_layer.name == "conv2"
    exp = predictor.explain(phantom_image(), method="gradcam++")
    assert exp.heatmap.shape == (64, 64) and np.isfinite(exp.heatmap).all()


def test_card_and_model_must_agree(tmp_path: Path) -> None:
    save_card(tiny_threeclass(), tmp_path / "size", "size", input_size=96)
    with pytest.raises(WeightsError, match=r"takes inputs of shape \(64, 64, 1\).*fix the card"):
        load_classifier(tmp_path / "size")
    save_card(
        tiny_threeclass(), tmp_path / "classes", "classes", task="fracture",
        class_names=["no", "yes"], positive_classes=["yes"],
    )  # fmt: skip
    with pytest.raises(WeightsError, match="outputs 3 scores but its card names 2 classes"):
        load_classifier(tmp_path / "classes")


def test_softmax_layers_are_read_as_logits_and_other_outputs_refused(tmp_path: Path) -> None:
    k = keras()
    inputs = k.Input((64, 64, 1))
    z = k.layers.Dense(3, name="z")(k.layers.GlobalAveragePooling2D()(k.layers.Conv2D(4, 3)(inputs)))
    save_card(k.Model(inputs, k.layers.Softmax()(z)), tmp_path / "softmax", "softmax")
    predictor = load_classifier(tmp_path / "softmax")
    x = predictor.preprocess(phantom_image())
    expected = k.Model(inputs, z).predict(x, verbose=0)  # the saved weights, before the softmax
    assert np.allclose(predictor.logits(x), expected, atol=1e-5)
    save_card(k.Model(inputs, k.layers.Activation("sigmoid")(z)), tmp_path / "sigmoid", "sigmoid")
    with pytest.raises(WeightsError, match="ends in a 'sigmoid' activation"):
        load_classifier(tmp_path / "sigmoid")


# ------------------------------------------------------------------------------------------ safe loading


def _no_deserialising(monkeypatch: pytest.MonkeyPatch) -> None:
    import bonecls.inference.keras_loader as km

    def refuse(*args, **kwargs):
        raise AssertionError("the file was deserialised")

    monkeypatch.setattr(km, "_deserialise", refuse)


def test_tampered_weight_file_is_refused_before_loading(tiny_dir: Path, monkeypatch) -> None:
    path = tiny_dir / "model.keras"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    _no_deserialising(monkeypatch)
    with pytest.raises(WeightsError, match="does not match the checksum on its card"):
        load_classifier(tiny_dir)


def test_lambda_layer_is_refused_with_a_sentence(tmp_path: Path, monkeypatch) -> None:
    k = keras()
    inputs = k.Input((64, 64, 1))
    x = k.layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    x = k.layers.Dense(3)(k.layers.GlobalAveragePooling2D()(k.layers.Conv2D(4, 3)(x)))
    save_card(k.Model(inputs, x), tmp_path / "lam", "lam")
    _no_deserialising(monkeypatch)
    with pytest.raises(WeightsError) as info:
        load_classifier(tmp_path / "lam")
    text = str(info.value)
    assert "contains a Lambda layer ('double')" in text and "never loads such models" in text
    assert text.endswith("update the card's sha256.")


def test_objects_from_outside_keras_are_refused(tiny_dir: Path, monkeypatch) -> None:
    path = tiny_dir / "model.keras"
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    config = json.loads(members["config.json"])
    config["config"]["layers"][1]["module"] = "os"  # conv1, pretending to come from another package
    members["config.json"] = json.dumps(config).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    path.write_bytes(buf.getvalue())
    card, _ = load_card(tiny_dir, verify=False)
    write_card(card.model_copy(update={"sha256": sha256_file(path)}), tiny_dir)  # a consistent card
    _no_deserialising(monkeypatch)
    with pytest.raises(WeightsError, match=r"from the Python module 'os', i\.e\. custom code outside Keras"):
        load_classifier(tiny_dir)


def test_a_legacy_h5_model_loads_too(tmp_path: Path) -> None:
    model = tiny_threeclass()
    out = tmp_path / "h5"
    out.mkdir()
    model.save(out / "model.h5")
    card = save_card(model, tmp_path / "tmp", "h5")
    write_card(
        card.model_copy(update={"weights_file": "model.h5", "sha256": sha256_file(out / "model.h5")}), out
    )
    predictor = load_classifier(out)
    img = phantom_image()
    assert predictor.predict(img).probabilities == pytest.approx(
        load_classifier(tmp_path / "tmp").predict(img).probabilities, abs=1e-6
    )


# ------------------------------------------------------------------------------------ CLI and imports


def test_cli_predict_with_a_keras_card(tiny_dir: Path, tmp_path: Path, capsys) -> None:
    from bonecls.cli import main

    (tmp_path / "a.png").write_bytes(make_png(pattern(64, 80, bits=16)))
    args = ["predict", str(tmp_path / "a.png"), "--model", str(tiny_dir), "--json", "--cam", str(tmp_path)]
    assert main(args) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # a thumbnail: refused, no heat map
    assert row["in_scope"] is False and row["status"] == "out of scope" and "cam" not in row
    assert main([*args, "--no-scope"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(row["probabilities"]) == set(THREECLASS) and row["model"] == "keras-tiny"
    assert Path(row["cam"]).is_file() and row["status"] in {"positive", "uncertain", "negative"}


def test_a_server_without_tensorflow_says_how_to_install_it(tiny_dir: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "keras", None)  # import keras -> ImportError
    with pytest.raises(WeightsError) as info:
        load_classifier(tiny_dir)
    assert "'keras-tiny' is a Keras model, and TensorFlow is not installed" in str(info.value)
    assert "`pip install -r requirements-keras.txt`" in str(info.value)


def test_pytorch_use_never_imports_tensorflow(tiny_card_dir: Path, tiny_dir: Path) -> None:
    """In a fresh process: import bonecls, the app's modules and the CLI, list a Keras card, run the
    app's warm-up, and predict + explain with a PyTorch card: TensorFlow and Keras stay unimported."""
    shutil.copytree(tiny_dir, tiny_card_dir.parent / "keras-tiny")
    code = f"""
import sys, numpy as np
import bonecls, bonecls.inference.predictor, bonecls.inference.torch_cam, bonecls.cli, bonecls.worklist
import bonecls.weights, bonecls.ui.services as services, bonecls.ui.widgets
import bonecls.ui.pages.home, bonecls.ui.pages.classifier, bonecls.ui.pages.pneumonia
import bonecls.ui.pages.model_cards, bonecls.ui.pages.worklist
from bonecls.inference import load_classifier
assert bonecls.cli.main(["models"]) == 0
services._warm()
p = load_classifier({str(tiny_card_dir)!r}, engine="native")
img = np.random.default_rng(0).random((64, 64), dtype=np.float32)
p.predict(img); p.explain(img)
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
print("IMPORTED", bad)
"""
    env = {"BONECLS_WEIGHTS": str(tiny_card_dir.parent), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "IMPORTED []" in p.stdout and "keras-tiny" in p.stdout
