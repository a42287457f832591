"""Training that rewards the lesion: with/without sets in one batch, the ranking loss, log-sum-exp
pooling with per-image standardisation, and ``train/classify.py --pair-loss --val-data``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bonecls.errors import DataError
from bonecls.training import TrainingError
from bonecls.training.pairs import PairRanking, PairSampler, group_augment_table, pair_groups


def test_pair_groups_come_from_the_phantom_index_and_need_whole_sets() -> None:
    sources = [f"train/{c}/phantom_{i:06d}.jpg" for i, c in enumerate(["no", "yes"] * 3)]
    labels = np.array([0, 1, 0, 1, 0, 1])
    assert pair_groups(sources, labels, 2).tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(DataError, match="incomplete sets"):
        pair_groups(sources[:5], labels[:5], 2)
    with pytest.raises(DataError, match="incomplete sets"):
        pair_groups(sources, np.array([0, 0, 0, 1, 0, 1]), 2)  # a set without its lesion image
    with pytest.raises(DataError, match="not a phantom file"):
        pair_groups(["train/yes/IMG001.jpg"], np.array([1]), 2)


def test_pair_sampler_yields_whole_sets_shuffled_per_epoch_and_split_by_rank() -> None:
    groups = np.repeat(np.arange(10), 3)
    labels = np.tile([2, 0, 1], 10)
    s = PairSampler(groups, labels, seed=1)
    order = list(s)
    assert len(order) == len(s) == 30
    for start in range(0, 30, 3):
        chunk = order[start : start + 3]
        assert len(set(groups[chunk])) == 1 and labels[chunk].tolist() == [0, 1, 2]
    s.set_epoch(1)
    assert list(s) != order and sorted(s) == list(range(30))
    ranks = [set(PairSampler(groups, labels, rank=r, world_size=2)) for r in range(2)]
    assert not ranks[0] & ranks[1] and len(ranks[0] | ranks[1]) == 30


def test_group_augment_table_gives_a_set_one_draw() -> None:
    table = torch.arange(12.0).view(6, 2)
    out = group_augment_table(table, np.array([0, 0, 1, 1, 2, 2]))
    assert torch.equal(out[0], out[1]) and torch.equal(out[2], out[3]) and not torch.equal(out[1], out[2])


def test_ranking_loss_rewards_the_lesion_image_above_its_twin() -> None:
    rank = PairRanking(num_classes=2, positive=[1], weight=1.0, margin=1.0)
    labels = torch.tensor([0, 1, 0, 1])
    seeing = torch.tensor([[3.0, -3.0], [-3.0, 3.0], [2.0, -2.0], [-2.0, 2.0]])
    blind = torch.zeros(4, 2)
    assert rank.loss(seeing, labels) < 0.01 < rank.loss(blind, labels) < rank.loss(-seeing, labels)
    logits = blind.clone().requires_grad_(True)
    rank.loss(logits, labels).backward()
    assert logits.grad[1, 1] < 0 < logits.grad[0, 1]  # descent raises the lesion image's suspicion
    three = PairRanking(3, [1, 2])
    assert float(three.loss(torch.zeros(3, 3), torch.tensor([2, 0, 1]))) > 0
    with pytest.raises(ValueError, match="whole sets"):
        rank.loss(torch.zeros(3, 2), torch.tensor([0, 1, 0]))


def test_lse_model_ignores_brightness_and_contrast_and_pools_between_mean_and_max() -> None:
    from bonecls.models import LogSumExpPool2d, create_model, weights_compatible

    torch.manual_seed(0)
    model = create_model("custom_v2_lse", 2, 1).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), model(0.5 * x + 0.2), atol=1e-3)
    cells = torch.rand(1, 3, 4, 4)
    pooled = LogSumExpPool2d(5.0)(cells).flatten()
    assert torch.all(cells.mean(dim=(2, 3)).flatten() <= pooled + 1e-6)
    assert torch.all(pooled <= cells.amax(dim=(2, 3)).flatten() + 1e-6)
    plain = create_model("custom_v2_max", 2, 1)
    model.load_state_dict(plain.state_dict())  # same weights: --init-from works across the variants
    assert weights_compatible("custom_v2_max", "custom_v2_lse")
    assert not weights_compatible("resnet18", "custom_v2_lse")


def test_os8_variant_loads_the_same_weights_with_a_twice_finer_cam_layer() -> None:
    from bonecls.models import create_model, target_layers, weights_compatible

    torch.manual_seed(0)
    coarse = create_model("custom_v2_lse", 2, 1).eval()
    fine = create_model("custom_v2_lse_os8", 2, 1).eval()
    fine.load_state_dict(coarse.state_dict())  # strict: not one weight added or missing
    assert weights_compatible("custom_v2_lse", "custom_v2_lse_os8")
    shapes = {}
    for name, model in (("coarse", coarse), ("fine", fine)):
        layer = target_layers(model, "custom_v2_lse" if name == "coarse" else "custom_v2_lse_os8")[0]
        handle = layer.register_forward_hook(
            lambda _m, _a, out, name=name: shapes.__setitem__(name, out.shape)
        )
        with torch.no_grad():
            model(torch.rand(1, 1, 256, 256))
        handle.remove()
    assert tuple(shapes["coarse"][-2:]) == (16, 16) and tuple(shapes["fine"][-2:]) == (32, 32)
    with pytest.raises(ValueError, match="stride must be 8 or 16"):
        from bonecls.models import CustomV2

        CustomV2(2, stride=4)


def test_lcn_variant_ignores_slow_grey_levels_but_keeps_a_gap() -> None:
    from bonecls.layers import ImageStandardize, LocalStandardize
    from bonecls.models import CustomV2, create_model, weights_compatible

    torch.manual_seed(0)
    plain = create_model("custom_v2_lse", 2, 1).eval()
    local = create_model("custom_v2_lse_lcn", 2, 1).eval()
    local.load_state_dict(plain.state_dict())  # strict: the Gaussian kernel is not in the state dict
    assert weights_compatible("custom_v2_lse", "custom_v2_lse_lcn")
    norm = LocalStandardize(sigma=4.0)
    rows, cols = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    texture = 0.05 * torch.rand(1, 1, 64, 64)
    bone = ((rows - 32).abs() < 6).float()[None, None] * 0.3 + texture
    slow = 0.4 * (cols / 63)[None, None] + 0.2 * torch.sin(rows / 20)[None, None]  # a thicker body, a curve
    inner = (slice(None), slice(None), slice(16, 48), slice(16, 48))  # away from the padded border
    assert torch.allclose(norm(bone)[inner], norm(bone + slow)[inner], atol=0.15)
    whole = ImageStandardize()  # custom_v2_lse's image-wide standardisation keeps the slow part
    assert not torch.allclose(whole(bone)[inner], whole(bone + slow)[inner], atol=0.15)
    broken = bone.clone()
    broken[..., 26:39, 30:33] = texture[..., 26:39, 30:33]  # a 3-px gap across the bone
    assert (norm(broken) - norm(bone))[..., 26:39, 30:33].abs().mean() > 1.0
    with pytest.raises(ValueError, match="sigma must be positive"):
        LocalStandardize(sigma=0)
    with pytest.raises(ValueError, match="standardize must be"):
        CustomV2(2, standardize="global")
    with torch.no_grad():
        assert local(torch.rand(1, 1, 16, 16)).shape == (1, 2)  # replicate padding: small inputs work


def test_lcn_blur_as_matrices_is_the_replicate_padded_gaussian() -> None:
    """The band matrices must give exactly the Gaussian convolution with replicate padding, also on
    images smaller than the kernel and on non-square ones, in every channel alike."""
    import torch.nn.functional as F

    from bonecls.layers import LocalStandardize

    norm = LocalStandardize(sigma=3.0)
    kernel = torch.tensor(norm.kernel, dtype=torch.float32)
    radius = kernel.numel() // 2
    assert radius == 9 and abs(float(kernel.sum()) - 1.0) < 1e-6
    torch.manual_seed(1)
    for shape in [(2, 1, 32, 32), (1, 3, 12, 40), (1, 1, 4, 7)]:
        x = torch.rand(*shape)
        n, c, h, w = shape
        padded = F.pad(x.reshape(n * c, 1, h, w), (radius,) * 4, mode="replicate")
        reference = F.conv2d(F.conv2d(padded, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))
        assert torch.allclose(norm._blur(x), reference.reshape(shape), atol=1e-6)
    band = norm.band(5, torch.device("cpu"), torch.float32)
    assert torch.allclose(band.sum(dim=1), torch.ones(5))  # every row keeps the grey level
    assert band[0, 0] > band[2, 2]  # the edge row holds the taps that fell off the image


@pytest.fixture(scope="module")
def paired_prep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Paired fracture phantoms (classic recipe, 64 px) prepared at 32 px, and a second paired set."""
    from bonecls.phantom import write_dataset
    from bonecls.prepare import prepare

    base = tmp_path_factory.mktemp("pairs")
    out = []
    for name, seed in (("train", 3), ("select", 4)):
        src = write_dataset(
            "fracture", "kaggle", base / name, n=20, size=64, seed=seed, progress=False, paired=True
        )
        prepare(src, base / f"prep-{name}", size=32, scheduler="sync", progress=False, echo=lambda s: None)
        out.append(base / f"prep-{name}")
    return out[0], out[1]


def test_classify_with_pair_loss_and_val_data(paired_prep: tuple[Path, Path], tmp_path: Path) -> None:
    from test_train import base_args

    from bonecls.training.classify import parse_args, run
    from bonecls.weights import load_pytorch

    prep, select = paired_prep
    with pytest.raises(TrainingError, match="multiple of 2"):
        run(parse_args(base_args(prep, tmp_path / "a", "--pair-loss", "1", "--batch-size", "5")))
    args = base_args(prep, tmp_path, "--pair-loss", "1", "--batch-size", "4", "--val-data", str(select))
    summary = run(parse_args([*args, "--model", "custom_v2_lse", "--box-loss", "1"]))
    assert np.isfinite(summary["test_accuracy"])
    _, card = load_pytorch(tmp_path / "model")
    assert card.architecture == "custom_v2_lse" and card.extra["pair_loss"] == 1.0
    assert card.extra["val_data"] == str(select)
    scale = card.extra["mm_per_pixel"]  # of the 32-px input, from the phantoms' manifest
    assert 0 < scale["p5"] <= scale["median"] <= scale["p95"]
    assert card.scale is not None and card.scale.mm_per_pixel == scale["median"]  # the card field too
