"""Net2WiderNet (bonecls.training.widen): a wider CustomV2 that computes what the narrower one computed,
and ``--init-from`` a narrower model into ``custom_v2w_lse_lcn``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bonecls.models import create_model
from bonecls.training.widen import widen_into, widenable


@pytest.mark.parametrize("head", ["linear", "dense_bn"])
def test_widening_keeps_the_outputs(head: str) -> None:
    torch.manual_seed(0)
    narrow = create_model("custom_v2_lse_lcn", num_classes=3, in_chans=1, head=head)
    narrow.train()
    with torch.no_grad():  # batch-norm statistics of a trained model, not the fresh 0 / 1
        for _ in range(3):
            narrow(torch.rand(8, 1, 64, 64))
    narrow.eval()
    wide = create_model("custom_v2w_lse_lcn", num_classes=3, in_chans=1, head=head).eval()
    assert widenable(narrow, wide) and not widenable(wide, narrow)

    added = widen_into(narrow, wide, noise=0.0)
    x = torch.rand(4, 1, 64, 64)
    with torch.no_grad():
        before, after = narrow(x), wide(x)
    assert added == (96 - 64) * 2 + (256 - 128) * 2
    assert sum(p.numel() for p in wide.parameters()) > 3 * sum(p.numel() for p in narrow.parameters())
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)

    noisy = create_model("custom_v2w_lse_lcn", num_classes=3, in_chans=1, head=head).eval()
    widen_into(narrow, noisy, noise=0.01, seed=1)
    with torch.no_grad():
        near = noisy(x)
    assert not torch.equal(near, before)  # the copies differ, so training can pull them apart
    torch.testing.assert_close(near, before, atol=0.05, rtol=0.05)
    conv = noisy.features.block4[3].weight  # 256 outputs: 128 originals, 128 noisy copies
    assert not any(torch.equal(conv[j], conv[k]) for j in range(128, 136) for k in range(128))


def test_widening_refuses_another_network() -> None:
    narrow = create_model("custom_v2_lse_lcn", num_classes=2, in_chans=1)
    with pytest.raises(ValueError, match="not a wider copy"):
        widen_into(narrow, create_model("simple_cnn", num_classes=2, in_chans=1))
    with pytest.raises(ValueError, match="not a wider copy"):  # other classes: the head cannot be kept
        widen_into(narrow, create_model("custom_v2w_lse_lcn", num_classes=3, in_chans=1))
    other_input = create_model("custom_v2_lse", num_classes=2, in_chans=1)  # image-wide standardisation
    assert not widenable(other_input, create_model("custom_v2w_lse_lcn", num_classes=2, in_chans=1))


def test_init_from_a_narrower_model_widens_it(tmp_path: Path) -> None:
    from test_train import base_args

    from bonecls.phantom import write_dataset
    from bonecls.prepare import prepare
    from bonecls.training.classify import parse_args, run
    from bonecls.weights import load_pytorch

    write_dataset("fracture", "kaggle", tmp_path / "src", n=24, size=64, seed=5, progress=False)
    prepare(
        tmp_path / "src", tmp_path / "prep", size=32, scheduler="sync", progress=False, echo=lambda s: None
    )
    common = ["--batch-size", "8", "--image-size", "32"]
    run(parse_args(base_args(tmp_path / "prep", tmp_path / "a", *common, "--model", "custom_v2_lse_lcn")))
    source, src_card = load_pytorch(tmp_path / "a" / "model")
    wide_args = base_args(
        tmp_path / "prep", tmp_path / "b", *common, "--model", "custom_v2w_lse_lcn",
        "--init-from", str(tmp_path / "a" / "model"), "--max-train-batches", "0",
    )  # fmt: skip
    run(parse_args(wide_args))  # no step: the saved weights are the widened initialization itself
    wide, card = load_pytorch(tmp_path / "b" / "model")
    assert card.architecture == "custom_v2w_lse_lcn"
    assert card.extra["init_from_sha256"] == src_card.sha256
    assert wide.features.block4[0].weight.shape == (256, 96, 3, 3)
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(wide(x), source(x), atol=0.05, rtol=0.05)
