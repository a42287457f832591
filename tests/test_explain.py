"""CAMs through pytorch-grad-cam: safe values, the original image size, alignment, overlays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import bonecls.inference.torch_cam as torch_cam
from bonecls.errors import BoneclsError, ExplainError
from bonecls.inference.heatmap import COLORMAPS, overlay
from bonecls.inference.predictor import Predictor
from bonecls.inference.scoping import ScopeGuard
from bonecls.inference.torch_cam import CAM_METHODS, cam_class, explain, explain_with_logits
from bonecls.models import create_model, target_layers
from bonecls.weights import ModelCard

GRADIENT_METHODS = ["gradcam", "gradcam++", "hirescam", "xgradcam", "layercam"]


def test_method_and_colormap_names() -> None:
    assert set(CAM_METHODS) == {
        "gradcam",
        "gradcam++",
        "hirescam",
        "xgradcam",
        "layercam",
        "eigencam",
        "scorecam",
    }
    assert set(COLORMAPS) == {"jet", "turbo", "inferno", "viridis", "hot", "bone"}
    with pytest.raises(ExplainError) as info:
        cam_class("gradcam+++")
    assert isinstance(info.value, ValueError) and isinstance(info.value, BoneclsError)
    assert "layercam" in str(info.value)


# -- a model whose response is localised by construction ------------------------------------------


def localiser() -> torch.nn.Module:
    """simple_cnn wired by hand: class 1's logit grows with bright blobs, class 0's shrinks.

    conv1 channel 0 is a 3x3 mean filter with bias -0.5 (fires only on bright regions); conv2
    channel 0 copies it; fc1 unit 0 sums its pooled map; the head maps that unit to +1 / -1.
    """
    model = create_model("simple_cnn", 2, in_chans=1)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.features.conv1.weight[0, 0] = 1.0 / 9.0
        model.features.conv1.bias[0] = -0.5
        model.features.conv2.weight[0, 0, 1, 1] = 1.0
        model.fc1.weight[0, :16] = 1.0
        model.head.fc.weight[1, 0] = 1.0
        model.head.fc.weight[0, 0] = -1.0
    return model.eval()


def localiser_predictor() -> Predictor:
    card = ModelCard(
        id="localiser", task="fracture", architecture="simple_cnn", class_names=["clear", "bright"],
        positive_classes=["bright"], input_size=64, in_chans=1, normalization={"mean": [0.0], "std": [1.0]},
    )  # fmt: skip
    return Predictor(localiser(), card, scope=ScopeGuard(card, enabled=False))  # raw CAMs of tiny images


def square_image(quadrant: int, h: int = 80, w: int = 120, side: int = 16) -> tuple[np.ndarray, tuple]:
    img = np.full((h, w), 0.1, np.float32)
    r0 = 10 if quadrant in (0, 1) else h - 10 - side
    c0 = 14 if quadrant in (0, 2) else w - 14 - side
    img[r0 : r0 + side, c0 : c0 + side] = 1.0
    return img, (r0, c0, side)


@pytest.mark.parametrize("quadrant", [0, 1, 2, 3])
@pytest.mark.parametrize("method", list(CAM_METHODS))
def test_heat_map_peaks_on_the_bright_square(method: str, quadrant: int, make_radiograph) -> None:
    predictor = localiser_predictor()
    img, (r0, c0, side) = square_image(quadrant)
    exp = predictor.explain(make_radiograph(img), method=method)
    hm = exp.heatmap
    assert hm.shape == img.shape and exp.target_class == "bright" and exp.prediction.label == "bright"
    r, c = np.unravel_index(int(np.argmax(hm)), hm.shape)
    assert (r < 40, c < 60) == (r0 < 40, c0 < 60), f"peak at {(r, c)} not in the square's quadrant"
    margin = 6
    assert r0 - margin <= r < r0 + side + margin and c0 - margin <= c < c0 + side + margin
    mask = np.zeros(hm.shape, bool)
    mask[r0 - margin : r0 + side + margin, c0 - margin : c0 + side + margin] = True
    assert hm[~mask].max() < 0.25, "heat away from the square"


def test_heat_map_for_the_other_class_is_empty_with_a_warning() -> None:
    predictor = localiser_predictor()
    img, _ = square_image(0)
    with pytest.warns(RuntimeWarning, match="empty"):
        exp = predictor.explain(img, method="gradcam", target_class="clear")
    assert exp.target_class == "clear" and not exp.heatmap.any()
    assert exp.warnings and "empty" in exp.warnings[0]
    assert exp.overlay.dtype == np.uint8


# -- every method: finite, [0, 1], original size ------------------------------------------------


@pytest.mark.parametrize("method", list(CAM_METHODS))
def test_every_method_is_finite_normalised_and_sized(method: str, make_radiograph, tiny_card_dir) -> None:
    predictor = Predictor.from_card(tiny_card_dir, scope=False)  # a tiny image the gate would refuse
    rng = np.random.default_rng(0)
    img = rng.random((80, 120), dtype=np.float32)
    img[50:70, 20:40] = 1.0
    exp = predictor.explain(make_radiograph(img), method=method, colormap="turbo", opacity=0.6)
    hm = exp.heatmap
    assert hm.shape == (80, 120) and hm.dtype == np.float32
    assert np.isfinite(hm).all() and hm.min() >= 0.0 and hm.max() <= 1.0
    assert hm.max() == pytest.approx(1.0) or not hm.any()
    assert exp.overlay.shape == (80, 120, 3) and exp.overlay.dtype == np.uint8
    assert exp.method == method


def test_explain_function_sizes(tiny_card_dir) -> None:
    predictor = Predictor.from_card(tiny_card_dir)
    x = predictor.preprocess(np.random.default_rng(1).random((80, 120), dtype=np.float32))
    layers = target_layers(predictor.model, "simple_cnn")
    assert explain(predictor.model, x, layers, "gradcam", 0).shape == (64, 64)
    assert explain(predictor.model, x, layers, "gradcam", 0, out_size=(80, 120)).shape == (80, 120)
    with pytest.raises(ExplainError, match="out of range"):
        explain(predictor.model, x, layers, "gradcam", 5)
    with pytest.raises(ExplainError, match="one image"):
        explain(predictor.model, torch.cat([x, x]), layers, "gradcam", 0)


# -- the graph cut is invisible -----------------------------------------------------------------


VANILLA = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "hirescam": HiResCAM, "xgradcam": XGradCAM,
           "layercam": LayerCAM}  # fmt: skip


@pytest.mark.parametrize(("name", "size"), [("resnet18", 96), ("custom_v2", 64)])
def test_same_cam_as_plain_pytorch_grad_cam(name: str, size: int) -> None:
    torch.manual_seed(4)
    model = create_model(name, 3, in_chans=1).eval()
    layers = target_layers(model, name)
    x = torch.rand(1, 1, size, size)
    for method, cls in VANILLA.items():
        ours = explain_with_logits(model, x, layers, method, 1)
        with cls(model=model, target_layers=layers) as cam:
            ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(1)])[0]
            ref_logits = cam.outputs.detach()
        assert np.allclose(ours.heatmap, ref / ref.max() if ref.max() > 0 else ref, atol=1e-5), method
        assert torch.allclose(ours.logits, ref_logits, atol=1e-5)
        assert all(p.requires_grad for p in model.parameters())  # restored
        assert not model.training


def test_densenet_cam_is_not_degenerate() -> None:
    torch.manual_seed(0)
    model = create_model("densenet121", 2, in_chans=1).eval()
    img = torch.full((1, 1, 128, 128), -1.0)
    img[..., 16:48, 80:112] = 2.0
    for method in ("gradcam", "eigencam"):
        hm = explain(model, img, target_layers(model, "densenet121"), method)
        assert np.isfinite(hm).all() and hm.max() == pytest.approx(1.0)
        assert hm.std() > 0.05, f"{method} map is flat"


# -- robustness ---------------------------------------------------------------------------------


def test_nan_gradients_give_a_zero_map_and_a_warning() -> None:
    model = localiser()
    with torch.no_grad():
        model.head.fc.weight[1, 0] = float("nan")
    x = torch.rand(1, 1, 64, 64)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        result = explain_with_logits(model, x, target_layers(model, "simple_cnn"), "gradcam", 1)
    assert np.isfinite(result.heatmap).all() and not result.heatmap.any()


def test_scorecam_memory_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    model = localiser()
    monkeypatch.setattr(torch_cam, "SCORECAM_MAX_BYTES", 1000)
    with pytest.raises(ExplainError, match="Score-CAM"):
        explain(model, torch.rand(1, 1, 64, 64), target_layers(model, "simple_cnn"), "scorecam", 1)


def test_works_inside_inference_mode_and_restores_state() -> None:
    model = localiser().train()
    with torch.inference_mode():
        x = torch.rand(1, 1, 64, 64)
        hm = explain(model, x, target_layers(model, "simple_cnn"), "gradcam", 1)
    assert hm.shape == (64, 64)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())


# -- overlay ------------------------------------------------------------------------------------


def test_overlay_blends_and_checks_arguments() -> None:
    pixels = np.linspace(0, 1, 80 * 120, dtype=np.float32).reshape(80, 120)
    heat = np.zeros((80, 120), np.float32)
    heat[:40] = 1.0
    for name in COLORMAPS:
        out = overlay(pixels, heat, colormap=name)
        assert out.shape == (80, 120, 3) and out.dtype == np.uint8
    grey = overlay(pixels, heat, opacity=0.0)
    assert np.array_equal(grey[..., 0], np.round(pixels * 255).astype(np.uint8))
    assert np.array_equal(grey[..., 0], grey[..., 2])
    full = overlay(pixels, heat, colormap="jet", opacity=1.0)
    assert tuple(full[0, 0]) == (128, 0, 0)  # jet at 1.0 is dark red, in RGB order
    assert tuple(full[-1, -1]) == (0, 0, 128)  # jet at 0.0 is dark blue
    assert np.array_equal(overlay((pixels * 255).round().astype(np.uint8), heat), overlay(pixels, heat))
    with pytest.raises(ExplainError, match="colour map"):
        overlay(pixels, heat, colormap="rainbow")
    with pytest.raises(ExplainError, match="opacity"):
        overlay(pixels, heat, opacity=1.5)
    with pytest.raises(ExplainError, match="does not match"):
        overlay(pixels, heat[:10])
