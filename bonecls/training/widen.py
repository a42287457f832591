"""Net2WiderNet for CustomV2: a wider network that computes what a narrower one computes, to go on training.

Why: the shipped fracture model (``custom_v2_lse_lcn``, 292 k weights) reads its own training images at
ROC-AUC 0.92 only, so it may lack capacity; a wider network trained from scratch would throw away the
many epochs behind the shipped weights. Net2WiderNet (Chen, Goodfellow and Shlens, "Net2Net", ICLR 2016)
fills every new channel with a copy of an old one and divides the copies' outgoing weights among them,
so the wider network gives the same outputs; a little noise on the copies lets them drift apart in
training (without it, copies that feed the next convolution get equal gradients and stay equal).

``train/classify.py --model custom_v2w_lse_lcn --init-from weights/fracture`` calls :func:`widen_into`.
Tried in session 19: widened fracture v6, trained as v8 was, read the held-out variants as v8 did
(BENCHMARKS.md, "Tried and not shipped"), so no shipped model is wide; the path stays for longer runs.
"""

from __future__ import annotations

import torch
from torch import nn

#: Gaussian noise on the copied channels, as a share of each layer's weight spread (init_from_card's default)
COPY_NOISE = 0.01


def _conv_bn_pairs(model: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    convs = [m for m in model.features.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.features.modules() if isinstance(m, nn.BatchNorm2d)]
    if len(convs) != len(bns):
        raise ValueError("every convolution of a CustomV2 network is followed by a batch norm")
    return list(zip(convs, bns, strict=True))


def _first_linear(head: nn.Module) -> nn.Linear:
    return next(m for m in head.modules() if isinstance(m, nn.Linear))


def widenable(source: nn.Module, target: nn.Module) -> bool:
    """True when ``target`` has ``source``'s layers, kernels, head, pooling and input standardisation, each
    layer at least as wide: only then does the widened copy compute what the source computes."""
    try:
        src, tgt = _conv_bn_pairs(source), _conv_bn_pairs(target)
        layout = [type(m) for m in (source.standardize, *source.features.modules(), source.pool)]
        if layout != [type(m) for m in (target.standardize, *target.features.modules(), target.pool)]:
            return False
    except (AttributeError, ValueError):
        return False
    if type(source.head) is not type(target.head):
        return False
    for (sc, _), (tc, _) in zip(src, tgt, strict=True):
        if sc.kernel_size != tc.kernel_size or sc.stride != tc.stride or tc.out_channels < sc.out_channels:
            return False
    return src[0][0].in_channels == tgt[0][0].in_channels and (
        _first_linear(source.head).out_features == _first_linear(target.head).out_features
    )


@torch.no_grad()
def widen_into(source: nn.Module, target: nn.Module, *, noise: float = COPY_NOISE, seed: int = 0) -> int:
    """Fill ``target`` (a wider CustomV2, :func:`widenable`) from ``source`` so that both compute the same
    function (exactly with ``noise=0``; ``noise`` is the copies' Gaussian noise as a share of each layer's
    weight spread). Returns the number of channels added."""
    if not widenable(source, target):
        raise ValueError("the target network is not a wider copy of the source network")
    gen = torch.Generator().manual_seed(seed)
    mapping: torch.Tensor | None = None
    count: torch.Tensor | None = None
    added = 0
    for (sc, sb), (tc, tb) in zip(_conv_bn_pairs(source), _conv_bn_pairs(target), strict=True):
        weight = sc.weight.detach().clone()
        if mapping is not None:  # the previous layer's copies share each old input's weight among them
            weight = weight[:, mapping] / count[mapping].view(1, -1, 1, 1)
        old, new = sc.out_channels, tc.out_channels
        out_map = torch.cat([torch.arange(old), torch.randint(old, (new - old,), generator=gen)])
        weight = weight[out_map]
        if noise and new > old:
            weight[old:] += noise * weight.std() * torch.randn(weight[old:].shape, generator=gen)
        tc.weight.copy_(weight)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(tb, name).copy_(getattr(sb, name)[out_map])
        tb.num_batches_tracked.copy_(sb.num_batches_tracked)
        mapping, count = out_map, torch.bincount(out_map, minlength=old).to(weight.dtype)
        added += new - old
    first, target_first = _first_linear(source.head), _first_linear(target.head)
    target_first.weight.copy_(first.weight[:, mapping] / count[mapping].view(1, -1))
    target_first.bias.copy_(first.bias)
    prefix = _linear_prefix(source.head)
    rest = {k: v for k, v in source.head.state_dict().items() if not k.startswith(prefix)}
    target.head.load_state_dict({**target.head.state_dict(), **rest})
    return added


def _linear_prefix(head: nn.Module) -> str:
    first = _first_linear(head)
    return next(name for name, m in head.named_modules() if m is first) + "."
