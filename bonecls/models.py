"""Model registry (timm ``create_model`` style), CAM target layers and input-channel adaptation.

Every architecture is built by name through :func:`create_model`; :func:`model_spec` tells the
rest of bonecls what it needs to know about it (default input size, normalisation, the module
Grad-CAM looks at, where the stem and the head live).

Conventions shared by all architectures:

* **Head.** The classifier head always takes the globally pooled feature vector and replaces the
  architecture's own classifier entirely (for EfficientNet and MobileNetV3 this includes their
  dropout and, for MobileNetV3, the hidden 1024/1280 dense layer). ``head="linear"`` is
  ``Dropout(dropout) -> Linear``; ``head="dense_bn"`` is ``Linear(256) -> BatchNorm1d -> ReLU ->
  Dropout(dropout) -> Linear`` (seed 004's fix for overfitting). The ``Dropout`` module is always
  present (``p`` may be 0) so state-dict keys never depend on ``dropout``. ``freeze_backbone``
  leaves only the head trainable (frozen BatchNorm layers still update their running statistics
  in ``train()`` mode; a training loop that wants them fixed must keep them in ``eval()``).
* **Channels.** ``in_chans=1`` builds a one-channel stem. With ``pretrained=True`` the new kernel
  is the sum of the RGB kernels (timm's ``adapt_input_conv`` semantics), so a grey image
  replicated to RGB and the same grey image fed to the adapted stem give the same activations.
* **In-place activations are switched off** (``inplace=False`` on every activation module, and a
  non-in-place forward for torchvision's DenseNet, whose ``forward`` applies
  ``F.relu(features, inplace=True)`` to the output of ``features``). Grad-CAM hooks keep a
  reference to the target layer's output and register gradient hooks on it; an in-place op after
  the target layer silently rewrites the stored activations (and makes a detached leaf unusable),
  so CAMs would be wrong or fail. The cost is a little more activation memory while training.
* **Inception-v3** needs inputs of at least 75 px. Smaller inputs are upsampled (bilinear) to
  75 px by a forward pre-hook, with a one-time warning; its ``transform_input`` is always off,
  so cards use Inception's own normalisation (mean = std = 0.5), and its auxiliary classifier is
  removed.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bonecls.errors import WeightsError
from bonecls.layers import ImageStandardize, LocalStandardize, LogSumExpPool2d

__all__ = [
    "DENSE_HIDDEN",
    "HEADS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INCEPTION_MEAN",
    "INCEPTION_STD",
    "ModelSpec",
    "adapt_stem_conv",
    "create_model",
    "default_normalization",
    "get_submodule",
    "head_module",
    "list_models",
    "make_head",
    "model_spec",
    "set_submodule",
    "target_layers",
    "weights_compatible",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)
HEADS = ("linear", "dense_bn")
DENSE_HIDDEN = 256


@dataclass(frozen=True)
class ModelSpec:
    """What bonecls needs to know about one registered architecture."""

    name: str
    family: str  # "custom" | "resnet" | "densenet" | "efficientnet" | "mobilenet" | "inception" | "xception"
    default_image_size: int
    target_layer: str  # dotted module path whose output Grad-CAM uses
    stem: str  # dotted path of the first convolution
    classifier: str  # dotted path of the head that create_model installs
    min_image_size: int = 32
    mean: tuple[float, ...] = IMAGENET_MEAN  # RGB normalisation the (pretrained) network expects
    std: tuple[float, ...] = IMAGENET_STD
    pretrained_available: bool = True
    source: str = "torchvision"  # "bonecls" | "torchvision" | "timm"
    source_name: str = ""  # name in the source library when it differs (xception -> legacy_xception)


# --------------------------------------------------------------------------------------------------
# Module helpers


def get_submodule(model: nn.Module, path: str) -> nn.Module:
    """Resolve a dotted path (``"features.0.0"``, ``"layer4"``; ``""`` is the model itself)."""
    if not path:
        return model
    try:
        return model.get_submodule(path)
    except AttributeError as exc:
        raise WeightsError(
            f"The model has no layer '{path}'; the architecture does not match its registry entry."
        ) from exc


def set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = get_submodule(model, parent_path)
    if isinstance(parent, nn.Sequential | nn.ModuleList) and name.isdigit():
        parent[int(name)] = module
    else:
        setattr(parent, name, module)


def _disable_inplace(model: nn.Module) -> None:
    for module in model.modules():
        if hasattr(module, "inplace") and isinstance(module.inplace, bool):
            module.inplace = False


def make_head(
    in_features: int, num_classes: int, head: str = "linear", dropout: float = 0.3
) -> nn.Sequential:
    """The classifier head on a pooled feature vector (see the module docstring)."""
    if head not in HEADS:
        raise ValueError(f"Unknown head '{head}'; choose one of: {', '.join(HEADS)}.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1); got {dropout}.")
    if head == "linear":
        return nn.Sequential(
            OrderedDict([("dropout", nn.Dropout(dropout)), ("fc", nn.Linear(in_features, num_classes))])
        )
    return nn.Sequential(
        OrderedDict(
            [
                ("dense", nn.Linear(in_features, DENSE_HIDDEN)),
                ("bn", nn.BatchNorm1d(DENSE_HIDDEN)),
                ("act", nn.ReLU()),
                ("dropout", nn.Dropout(dropout)),
                ("fc", nn.Linear(DENSE_HIDDEN, num_classes)),
            ]
        )
    )


def adapt_stem_conv(conv: nn.Conv2d, in_chans: int, *, keep_weights: bool = True) -> nn.Conv2d:
    """Return a copy of ``conv`` that takes ``in_chans`` input channels.

    With ``keep_weights`` (pretrained stems) the kernel is adapted with timm's ``adapt_input_conv``:
    for one channel it is the sum of the RGB kernels; for other counts the kernels are repeated and
    rescaled. Without it the new kernel is freshly initialised (Kaiming normal, fan-out, as
    torchvision does for its stems).
    """
    if conv.in_channels == in_chans:
        return conv
    new = nn.Conv2d(
        in_chans,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups if conv.groups == 1 else in_chans,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        if keep_weights:
            from timm.models import adapt_input_conv

            new.weight.copy_(adapt_input_conv(in_chans, conv.weight.detach(), base_chans=conv.in_channels))
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        else:
            nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
            if new.bias is not None:
                nn.init.zeros_(new.bias)
    return new


# --------------------------------------------------------------------------------------------------
# Our own small networks


class SimpleCNN(nn.Module):
    """Seed 003: two conv layers and two FC layers, ReLU and max-pooling.

    Adaptive average pooling to 4x4 before the first FC layer makes it work at any input size.
    The second FC layer is the head (``make_head``).
    """

    def __init__(self, num_classes: int, in_chans: int = 1, head: str = "linear", dropout: float = 0.3):
        super().__init__()
        self.features = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", nn.Conv2d(in_chans, 32, 3, padding=1)),
                    ("relu1", nn.ReLU()),
                    ("pool1", nn.MaxPool2d(2)),
                    ("conv2", nn.Conv2d(32, 64, 3, padding=1)),
                    ("relu2", nn.ReLU()),
                    ("pool2", nn.MaxPool2d(2)),
                ]
            )
        )
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc1 = nn.Linear(64 * 4 * 4, 128)
        self.act = nn.ReLU()
        self.head = make_head(128, num_classes, head, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.head(self.act(self.fc1(x)))


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    ]


class CustomV2(nn.Module):
    """Seed 004 v2: a few large kernels first (7x7, 5x5), then more, smaller 3x3 filters, with BN.

    ``pool="avg"`` is seed 004's global average pooling. ``pool="max"`` (registered as
    ``custom_v2_max``) pools each feature map by its maximum, as weakly supervised lesion detectors do:
    a fracture gap covers a few of the 256 cells of a 256-px image, and averaging dilutes its feature
    by the ~250 cells of intact bone around it, while the maximum keeps it whole. ``pool="lse"``
    (``custom_v2_lse``, with ``standardize="image"``: :class:`ImageStandardize` first) is log-sum-exp pooling,
    which a single spurious cell cannot win. ``stride=8`` (``custom_v2_lse_os8``) drops the last
    max-pool, so the last stage (the Grad-CAM layer) works at an eighth of the input instead of a
    sixteenth: a 32x32 heat map at 256 px, 8-px cells for a 20-40 px fracture box instead of 16-px ones,
    for about twice the compute. ``standardize="local"`` (``custom_v2_lse_lcn``) puts
    :class:`~bonecls.layers.LocalStandardize` first instead, so the network sees local contrast only,
    not the anatomy's and the processing chain's slow grey levels. The pooling, standardisation and
    stride have no weights, so the variants load each other's state dicts. ``widths`` are the channels of
    block1 to block4; ``custom_v2w_lse_lcn`` widens block3 and block4 (other weight shapes, filled from a
    narrower model by :mod:`bonecls.training.widen`).
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 1,
        head: str = "linear",
        dropout: float = 0.3,
        pool: str = "avg",
        standardize: str = "none",
        stride: int = 16,
        widths: tuple[int, int, int, int] = (16, 32, 64, 128),
    ):
        super().__init__()
        if pool not in ("avg", "max", "lse"):
            raise ValueError(f"pool must be 'avg', 'max' or 'lse'; got {pool!r}.")
        if stride not in (8, 16):
            raise ValueError(f"stride must be 8 or 16; got {stride!r}.")
        last_pool = nn.MaxPool2d(2) if stride == 16 else nn.Identity()  # no weights: same state dict
        norms = {"none": nn.Identity, "image": ImageStandardize, "local": LocalStandardize}
        if standardize not in norms:
            raise ValueError(f"standardize must be 'none', 'image' or 'local'; got {standardize!r}.")
        self.standardize = norms[standardize]()
        w1, w2, w3, w4 = widths
        self.features = nn.Sequential(
            OrderedDict(
                [
                    ("block1", nn.Sequential(*_conv_bn(in_chans, w1, 7, stride=2), nn.MaxPool2d(2))),
                    ("block2", nn.Sequential(*_conv_bn(w1, w2, 5), nn.MaxPool2d(2))),
                    ("block3", nn.Sequential(*_conv_bn(w2, w3, 3), *_conv_bn(w3, w3, 3), last_pool)),
                    ("block4", nn.Sequential(*_conv_bn(w3, w4, 3), *_conv_bn(w4, w4, 3))),
                ]
            )
        )
        pools = {"avg": nn.AdaptiveAvgPool2d(1), "max": nn.AdaptiveMaxPool2d(1), "lse": LogSumExpPool2d()}
        self.pool = pools[pool]
        self.head = make_head(w4, num_classes, head, dropout)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(self.standardize(x))).flatten(1))


# --------------------------------------------------------------------------------------------------
# torchvision / timm wrappers


def _tv_densenet_cls():
    from torchvision.models.densenet import DenseNet

    class CamDenseNet(DenseNet):
        """torchvision DenseNet whose final ReLU is part of ``features`` and not in-place.

        torchvision's forward is ``F.relu(self.features(x), inplace=True)``: that in-place ReLU
        rewrites the tensor Grad-CAM hooked on ``features``. Here ``features`` ends with
        ``relu5`` (an ``nn.ReLU()``, no parameters: pretrained state dicts are unchanged) so the
        CAM sees exactly the activations that are pooled into the classifier.
        """

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = F.adaptive_avg_pool2d(self.features(x), (1, 1))
            return self.classifier(torch.flatten(out, 1))

    return CamDenseNet


def _upsample_to_min(min_size: int) -> Callable:
    warned = [False]

    def hook(module: nn.Module, args: tuple) -> tuple | None:
        x = args[0]
        h, w = x.shape[-2:]
        if h >= min_size and w >= min_size:
            return None
        if not warned[0]:
            warned[0] = True
            warnings.warn(
                f"{type(module).__name__} needs inputs of at least {min_size} px; "
                f"upsampling {h}x{w} inputs to fit.",
                RuntimeWarning,
                stacklevel=2,
            )
        size = (max(h, min_size), max(w, min_size))
        return (F.interpolate(x, size=size, mode="bilinear", align_corners=False), *args[1:])

    return hook


def _pretrained_error(name: str, exc: BaseException) -> WeightsError:
    return WeightsError(
        f"Could not get the pretrained ImageNet weights for '{name}' ({type(exc).__name__}: {exc}). "
        "Pretrained weights are downloaded on first use and need internet access; "
        "use pretrained=False to build the model offline with random initialisation."
    )


def _torchvision_model(name: str, pretrained: bool) -> nn.Module:
    import torchvision.models as tvm

    kwargs: dict = {}
    if name == "inception_v3":
        kwargs = {"aux_logits": False, "transform_input": False}
        if not pretrained:
            kwargs["init_weights"] = True
    weights = tvm.get_model_weights(name).DEFAULT if pretrained else None
    try:
        return tvm.get_model(name, weights=weights, **kwargs)
    except Exception as exc:
        if pretrained:
            raise _pretrained_error(name, exc) from exc
        raise


# CustomV2 variants registered at 256 px, each with the CustomV2 arguments that make it. They differ
# from custom_v2 only in parameter-free parts (pooling, standardisation, stride), so they form one weight
# family (WEIGHT_FAMILIES) built from this table rather than listed twice.
CUSTOM_V2_VARIANTS: dict[str, dict[str, str | int]] = {
    "custom_v2_max": {"pool": "max"},
    "custom_v2_lse": {"pool": "lse", "standardize": "image"},
    "custom_v2_lse_os8": {"pool": "lse", "standardize": "image", "stride": 8},
    "custom_v2_lse_lcn": {"pool": "lse", "standardize": "local"},
}
# Wider CustomV2 networks (more channels in block3 and block4): other weight shapes, so not in the family
# above; --init-from a family member widens its weights without changing what they compute
# (bonecls.training.widen).
CUSTOM_V2_WIDE_VARIANTS: dict[str, dict[str, str | int | tuple[int, ...]]] = {
    "custom_v2w_lse_lcn": {"pool": "lse", "standardize": "local", "widths": (16, 32, 96, 256)},
}


def _build_custom(cls: type, **options) -> Callable:
    def build(spec: ModelSpec, num_classes, in_chans, pretrained, head, dropout) -> nn.Module:
        if pretrained:
            raise WeightsError(
                f"There are no pretrained weights for '{spec.name}' (it is trained from scratch); "
                "use pretrained=False."
            )
        return cls(num_classes, in_chans=in_chans, head=head, dropout=dropout, **options)

    return build


def _pooled_features(model: nn.Module, family: str) -> int:
    if family in ("resnet", "inception"):
        return model.fc.in_features
    if family == "densenet":
        return model.classifier.in_features
    if family == "efficientnet":
        return model.classifier[1].in_features
    if family == "mobilenet":
        return model.classifier[0].in_features
    raise AssertionError(family)


def _build_torchvision(spec: ModelSpec, num_classes, in_chans, pretrained, head, dropout) -> nn.Module:
    model = _torchvision_model(spec.name, pretrained)
    if spec.family == "densenet":
        model.__class__ = _tv_densenet_cls()
        model.features.add_module("relu5", nn.ReLU())
    if spec.family == "inception":
        model.dropout = nn.Identity()  # our head has its own dropout
        model.register_forward_pre_hook(_upsample_to_min(spec.min_image_size))
    in_features = _pooled_features(model, spec.family)
    set_submodule(model, spec.classifier, make_head(in_features, num_classes, head, dropout))
    if in_chans != 3:
        stem = get_submodule(model, spec.stem)
        set_submodule(model, spec.stem, adapt_stem_conv(stem, in_chans, keep_weights=pretrained))
    return model


def _build_timm(spec: ModelSpec, num_classes, in_chans, pretrained, head, dropout) -> nn.Module:
    import timm

    try:
        # timm adapts the pretrained stem itself (sum of the RGB kernels for in_chans=1).
        model = timm.create_model(
            spec.source_name or spec.name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans
        )
    except Exception as exc:
        if pretrained:
            raise _pretrained_error(spec.name, exc) from exc
        raise
    in_features = model.get_classifier().in_features
    set_submodule(model, spec.classifier, make_head(in_features, num_classes, head, dropout))
    return model


@dataclass(frozen=True)
class _Entry:
    spec: ModelSpec
    build: Callable


def _register() -> dict[str, _Entry]:
    reg: dict[str, _Entry] = {}

    def add(spec: ModelSpec, build: Callable) -> None:
        reg[spec.name] = _Entry(spec, build)

    add(
        ModelSpec(
            "simple_cnn", "custom", 128, "features.relu2", "features.conv1", "head",
            min_image_size=4, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
            pretrained_available=False, source="bonecls",
        ),
        _build_custom(SimpleCNN),
    )  # fmt: skip
    add(
        ModelSpec(
            "custom_v2", "custom", 224, "features.block4", "features.block1.0", "head",
            min_image_size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
            pretrained_available=False, source="bonecls",
        ),
        _build_custom(CustomV2),
    )  # fmt: skip
    for name, kwargs in {**CUSTOM_V2_VARIANTS, **CUSTOM_V2_WIDE_VARIANTS}.items():
        add(
            ModelSpec(
                name, "custom", 256, "features.block4", "features.block1.0", "head",
                min_image_size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                pretrained_available=False, source="bonecls",
            ),
            _build_custom(CustomV2, **kwargs),
        )  # fmt: skip
    for name in ("resnet18", "resnet50"):
        add(ModelSpec(name, "resnet", 224, "layer4", "conv1", "fc"), _build_torchvision)
    add(
        ModelSpec("densenet121", "densenet", 224, "features", "features.conv0", "classifier"),
        _build_torchvision,
    )
    for i, size in enumerate((224, 240, 288, 300, 380, 456, 528)):
        add(
            ModelSpec(f"efficientnet_b{i}", "efficientnet", size, "features", "features.0.0", "classifier"),
            _build_torchvision,
        )
    for name in ("mobilenet_v3_small", "mobilenet_v3_large"):
        add(ModelSpec(name, "mobilenet", 224, "features", "features.0.0", "classifier"), _build_torchvision)
    add(
        ModelSpec(
            "inception_v3", "inception", 299, "Mixed_7c", "Conv2d_1a_3x3.conv", "fc",
            min_image_size=75, mean=INCEPTION_MEAN, std=INCEPTION_STD,
        ),
        _build_torchvision,
    )  # fmt: skip
    add(
        ModelSpec(
            "xception", "xception", 299, "act4", "conv1", "fc",
            mean=INCEPTION_MEAN, std=INCEPTION_STD, source="timm",
            # the classic Xception (Chollet 2017); timm's xception41/65/71 are the aligned variants
            source_name="legacy_xception",
        ),
        _build_timm,
    )  # fmt: skip
    return reg


_REGISTRY = _register()


# --------------------------------------------------------------------------------------------------
# Public API


def list_models() -> list[str]:
    """Registered architecture names, in registry order."""
    return list(_REGISTRY)


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise WeightsError(
            f"Unknown model architecture '{name}'. Available architectures: {', '.join(_REGISTRY)}."
        ) from None


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a registered architecture (``WeightsError`` if unknown)."""
    return _entry(name).spec


def default_normalization(name: str, in_chans: int) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) to put on a card for this architecture.

    For one channel the RGB values are averaged (the grey image stands for R = G = B).
    """
    spec = model_spec(name)
    if in_chans == 3:
        return list(spec.mean), list(spec.std)
    if in_chans == 1:
        return [sum(spec.mean) / 3], [sum(spec.std) / 3]
    raise ValueError(f"in_chans must be 1 or 3; got {in_chans}.")


def create_model(
    name: str,
    num_classes: int,
    in_chans: int = 1,
    pretrained: bool = False,
    freeze_backbone: bool = False,
    head: str = "linear",
    dropout: float = 0.3,
) -> nn.Module:
    """Build a registered architecture with a fresh head of ``num_classes`` outputs.

    ``pretrained=True`` fetches ImageNet weights through torchvision / timm (internet needed on
    first use; failures raise ``WeightsError``). The model is returned in training mode.
    """
    entry = _entry(name)
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 or 3; got {in_chans}.")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}.")
    if head not in HEADS:
        raise ValueError(f"Unknown head '{head}'; choose one of: {', '.join(HEADS)}.")
    model = entry.build(entry.spec, num_classes, in_chans, pretrained, head, dropout)
    _disable_inplace(model)
    if freeze_backbone:
        head_params = {id(p) for p in head_module(model, name).parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in head_params)
    return model


def head_module(model: nn.Module, name: str) -> nn.Module:
    """The classifier head that :func:`create_model` installed."""
    return get_submodule(model, model_spec(name).classifier)


# Architectures that differ only in parameter-free parts (pooling, standardisation): one's weights load
# into the other, so --init-from may cross between them.
WEIGHT_FAMILIES = (frozenset({"custom_v2", *CUSTOM_V2_VARIANTS}),)


def weights_compatible(a: str, b: str) -> bool:
    """True when a state dict of architecture ``a`` loads into architecture ``b`` unchanged."""
    return a == b or any(a in family and b in family for family in WEIGHT_FAMILIES)


def target_layers(model: nn.Module, name: str) -> list[nn.Module]:
    """The module(s) whose output Grad-CAM uses for architecture ``name``."""
    return [get_submodule(model, model_spec(name).target_layer)]
