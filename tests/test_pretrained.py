"""``--pretrained PATH``: timm/torchvision checkpoints from disk (safetensors, or .pth read with
weights_only=True), sha256 checked and on the card; other architectures and code-carrying pickles are
refused; a 3-channel stem is folded for a 1-channel model."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bonecls.models import create_model
from bonecls.training import TrainingError
from bonecls.training.pretrained import load_pretrained_file, pretrained_arg


def test_arguments() -> None:
    assert pretrained_arg("imagenet") == "imagenet" and pretrained_arg("none") is None
    assert pretrained_arg("/w/resnet18.safetensors") == "/w/resnet18.safetensors"


def test_timm_resnet_checkpoint_fills_a_one_channel_model(tmp_path: Path) -> None:
    import timm

    torch.manual_seed(0)
    donor = timm.create_model("resnet18", pretrained=False, num_classes=1000)  # 3 channels, 1000 classes
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(path))
    model = create_model("resnet18", 2, in_chans=1)
    record = load_pretrained_file(model, path, 1, None)
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["backbone_filled"] == 1.0 and "fc.fc.weight" in record["not_filled"]
    assert torch.equal(
        model.state_dict()["layer4.1.conv2.weight"], donor.state_dict()["layer4.1.conv2.weight"]
    )
    folded = donor.state_dict()["conv1.weight"].sum(dim=1, keepdim=True)
    assert torch.allclose(model.state_dict()["conv1.weight"], folded)
    with pytest.raises(TrainingError, match="sha256"):
        load_pretrained_file(create_model("resnet18", 2, in_chans=1), path, 1, "0" * 64)
    with pytest.raises(TrainingError, match="another architecture"):
        load_pretrained_file(create_model("simple_cnn", 2, in_chans=1), path, 1, None)


def test_pth_is_read_without_running_code(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "extra": Payload()}, bad)
    with pytest.raises(TrainingError, match="refused on purpose"):
        load_pretrained_file(create_model("simple_cnn", 2, in_chans=1), bad, 1, None)
    good = tmp_path / "simple.pth"
    donor = create_model("simple_cnn", 2, in_chans=1)
    torch.save({"model": {f"module.{k}": v for k, v in donor.state_dict().items()}}, good)
    record = load_pretrained_file(create_model("simple_cnn", 2, in_chans=1), good, 1, None)
    assert record["tensors_filled"] == record["tensors_total"]


def test_training_from_a_local_checkpoint_records_it_on_the_card(tmp_path: Path) -> None:
    from test_train import base_args

    from bonecls.phantom import write_dataset
    from bonecls.prepare import prepare
    from bonecls.training.classify import parse_args, run
    from bonecls.weights import load_pytorch

    src = write_dataset("fracture", "kaggle", tmp_path / "src", n=30, size=32, seed=2, progress=False)
    prepare(src, tmp_path / "prep", size=32, scheduler="sync", progress=False, echo=lambda s: None)
    weights = tmp_path / "start.safetensors"
    save_file(create_model("simple_cnn", 2, in_chans=1).state_dict(), str(weights))
    run(parse_args(base_args(tmp_path / "prep", tmp_path, "--pretrained", str(weights))))
    _, card = load_pytorch(tmp_path / "model")
    assert card.extra["pretrained"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert card.extra["pretrained"]["file"] == "start.safetensors"
