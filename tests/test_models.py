"""Model registry: every architecture builds and runs; heads, freezing, stems, CAM layers."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from torch import nn

from bonecls.errors import WeightsError
from bonecls.models import (
    DENSE_HIDDEN,
    adapt_stem_conv,
    create_model,
    default_normalization,
    get_submodule,
    head_module,
    list_models,
    model_spec,
    target_layers,
)

EXPECTED = [
    "simple_cnn",
    "custom_v2",
    "custom_v2_max",
    "custom_v2_lse",
    "custom_v2_lse_os8",
    "custom_v2_lse_lcn",
    "custom_v2w_lse_lcn",
    "resnet18",
    "resnet50",
    "densenet121",
    *[f"efficientnet_b{i}" for i in range(7)],
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "inception_v3",
    "xception",
]
HEAVY = {"efficientnet_b6", "inception_v3", "xception"}


def _input_size(name: str) -> int:
    return max(64, model_spec(name).min_image_size)


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """No test here may reach the network: pretrained paths get a fake or a failing download."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    import timm.models._builder
    import torchvision.models._api

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_url", refuse)


def test_registry_has_every_architecture() -> None:
    from bonecls.weights import PYTORCH_ARCHITECTURES

    assert list_models() == EXPECTED == list(PYTORCH_ARCHITECTURES)


def test_unknown_architecture_lists_the_available_ones() -> None:
    with pytest.raises(WeightsError) as info:
        create_model("resnet1000", 2)
    assert "resnet1000" in str(info.value) and "efficientnet_b3" in str(info.value)
    with pytest.raises(WeightsError):
        model_spec("nope")


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in EXPECTED]
)
def test_builds_and_runs_with_cam_safe_target_layer(name: str, in_chans: int) -> None:
    """Forward (N=2) gives (N, classes); the target layer's output is not rewritten in place later."""
    torch.manual_seed(0)
    model = create_model(name, 3, in_chans=in_chans, head="dense_bn" if in_chans == 1 else "linear")
    model.eval()
    assert all(not getattr(m, "inplace", False) for m in model.modules()), "in-place activation left"
    stem = get_submodule(model, model_spec(name).stem)
    assert isinstance(stem, nn.Conv2d) and stem.in_channels == in_chans
    (layer,) = target_layers(model, name)
    seen = {}

    def hook(module, args, output):
        seen["ref"], seen["copy"] = output, output.detach().clone()

    handle = layer.register_forward_hook(hook)
    s = _input_size(name)
    with torch.inference_mode():
        out = model(torch.rand(2, in_chans, s, s))
    handle.remove()
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()
    assert seen["ref"].ndim == 4 and torch.equal(seen["ref"], seen["copy"])


def test_default_image_sizes_and_target_layers() -> None:
    sizes = {n: model_spec(n).default_image_size for n in EXPECTED}
    assert sizes["resnet18"] == 224 and sizes["efficientnet_b6"] == 528 and sizes["inception_v3"] == 299
    layers = {n: model_spec(n).target_layer for n in EXPECTED}
    assert layers["resnet50"] == "layer4" and layers["inception_v3"] == "Mixed_7c"
    assert layers["densenet121"] == "features" and layers["xception"] == "act4"
    assert layers["simple_cnn"] == "features.relu2" and layers["custom_v2"] == "features.block4"


def test_default_normalization() -> None:
    mean, std = default_normalization("resnet18", 1)
    assert mean == pytest.approx([0.449], abs=1e-3) and std == pytest.approx([0.226], abs=1e-3)
    assert default_normalization("inception_v3", 3) == ([0.5] * 3, [0.5] * 3)


@pytest.mark.parametrize("name", ["simple_cnn", "custom_v2", "resnet18", "efficientnet_b0", "xception"])
def test_freeze_backbone_leaves_only_the_head_trainable(name: str) -> None:
    model = create_model(name, 2, freeze_backbone=True, head="dense_bn")
    head_ids = {id(p) for p in head_module(model, name).parameters()}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == head_ids and head_ids
    unfrozen = create_model(name, 2)
    assert all(p.requires_grad for p in unfrozen.parameters())


def test_dense_bn_head_structure() -> None:
    model = create_model("resnet18", 4, head="dense_bn", dropout=0.25)
    head = model.fc
    kinds = [type(m) for m in head]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout, nn.Linear]
    assert head[0].in_features == 512 and head[0].out_features == DENSE_HIDDEN
    assert head[1].num_features == DENSE_HIDDEN and head[3].p == 0.25 and head[4].out_features == 4
    linear = create_model("efficientnet_b0", 4).classifier
    assert [type(m) for m in linear] == [nn.Dropout, nn.Linear] and linear[1].in_features == 1280
    with pytest.raises(ValueError):
        create_model("resnet18", 2, head="mlp")


def test_adapt_stem_conv_sums_rgb_kernels() -> None:
    conv = nn.Conv2d(3, 2, 3, stride=2, padding=1, bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(2 * 3 * 9, dtype=torch.float32).view(2, 3, 3, 3))
        conv.bias.copy_(torch.tensor([0.5, -1.0]))
    grey = adapt_stem_conv(conv, 1)
    assert grey.in_channels == 1 and grey.stride == (2, 2) and grey.padding == (1, 1)
    assert torch.equal(grey.weight, conv.weight.sum(dim=1, keepdim=True))
    assert torch.equal(grey.bias, conv.bias)
    x = torch.rand(1, 1, 9, 9)  # a grey image replicated to RGB gives the same response
    assert torch.allclose(grey(x), conv(x.expand(1, 3, 9, 9)), atol=1e-5)
    fresh = adapt_stem_conv(conv, 1, keep_weights=False)
    assert fresh.weight.shape == (2, 1, 3, 3) and not torch.equal(fresh.weight, grey.weight)
    assert adapt_stem_conv(conv, 3) is conv


def _fake_download(state_dict):
    def fake(*args, **kwargs):
        return {k: v.clone() for k, v in state_dict.items()}

    return fake


def test_pretrained_torchvision_stem_is_adapted(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.models as tvm
    import torchvision.models._api

    torch.manual_seed(1)
    imagenet = tvm.resnet18().state_dict()
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", _fake_download(imagenet))
    model = create_model("resnet18", 2, in_chans=1, pretrained=True, freeze_backbone=True)
    assert torch.equal(model.conv1.weight, imagenet["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(model.layer4[1].conv2.weight, imagenet["layer4.1.conv2.weight"])
    assert model.fc[1].out_features == 2
    rgb = create_model("resnet18", 2, in_chans=3, pretrained=True)
    assert torch.equal(rgb.conv1.weight, imagenet["conv1.weight"])


def test_pretrained_timm_xception_stem_is_adapted(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm
    import timm.models._builder

    torch.manual_seed(2)
    imagenet = timm.create_model("legacy_xception").state_dict()
    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_url", _fake_download(imagenet))
    model = create_model("xception", 2, in_chans=1, pretrained=True)
    assert torch.allclose(model.conv1.weight, imagenet["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(model.conv4.pointwise.weight, imagenet["conv4.pointwise.weight"])


@pytest.mark.parametrize("name", ["resnet18", "xception"])
def test_pretrained_offline_raises_weights_error(name: str) -> None:
    with pytest.raises(WeightsError) as info:
        create_model(name, 2, pretrained=True)
    message = str(info.value)
    assert "internet" in message and "pretrained=False" in message


def test_custom_models_have_no_pretrained_weights() -> None:
    with pytest.raises(WeightsError, match="pretrained=False"):
        create_model("simple_cnn", 2, pretrained=True)


def test_any_input_size_for_small_models() -> None:
    for name in ("simple_cnn", "custom_v2"):
        model = create_model(name, 2).eval()
        with torch.inference_mode():
            for h, w in [(32, 32), (50, 90), (128, 128)]:
                assert model(torch.rand(1, 1, h, w)).shape == (1, 2)


def test_inception_upsamples_small_inputs_with_a_warning() -> None:
    model = create_model("inception_v3", 2).eval()
    with pytest.warns(RuntimeWarning, match="at least 75 px"), torch.inference_mode():
        assert model(torch.rand(1, 1, 40, 40)).shape == (1, 2)


def test_densenet_forward_matches_torchvision_math() -> None:
    """The CAM-safe DenseNet computes exactly what torchvision's forward does."""
    torch.manual_seed(3)
    model = create_model("densenet121", 2, in_chans=3).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        feats = model.features[:-1](x)  # up to norm5, before our relu5
        ref = model.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(torch.relu(feats), 1), 1))
        assert torch.allclose(model(x), ref, atol=1e-6)


def test_meta_device_build_for_shape_checks() -> None:
    with torch.device("meta"):
        model = create_model("efficientnet_b6", 3, head="dense_bn")
    assert next(model.parameters()).device.type == "meta"
