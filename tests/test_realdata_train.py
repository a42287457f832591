"""The new readers end to end: a MURA and a GRAZPEDWRI-DX tree in their real layouts, prepared (split by
patient, leakage checked) and trained one epoch (tiny model, tiny images) to a card that states how the
split was made and carries its headline metrics with 95% intervals, per image and per study."""

from __future__ import annotations

from pathlib import Path

import pytest
from realdata import make_grazpedwri, make_mura

from bonecls.prepare import load_index, prepare
from bonecls.training.classify import parse_args, run

OPTIONS = (
    "--model simple_cnn --epochs 1 --batch-size 8 --lr 2e-3 --lr-base-batch 8 --device cpu --threads 1 "
    "--no-progress --no-tensorboard --seed 1"
)


def _train(prep: Path, out: Path, card_id: str):
    from bonecls.weights import load_pytorch

    args = ["--data", str(prep), "--output", str(out / "model"), "--run-dir", str(out / "run")]
    run(parse_args([*args, "--id", card_id, *OPTIONS.split()]))
    return load_pytorch(out / "model")[1]


def _check_headline(block: dict, with_studies: bool) -> None:
    for key in ("roc_auc", "pr_auc", "sensitivity_doubt", "specificity_positive", "accuracy", "f1_macro"):
        assert key in block["image"], key
    assert block["image"]["bootstrap"]["unit"] == "group"  # resampled by patient
    assert (block["study"] is not None) == with_studies
    if with_studies:
        assert block["study_rule"].startswith("max") and block["study"]["n"] < block["image"]["n"]


@pytest.mark.parametrize("layout", ["mura", "grazpedwri"])
def test_one_epoch_on_a_real_layout(layout: str, tmp_path: Path) -> None:
    if layout == "mura":
        make_mura(tmp_path / "src", patients=16, valid_patients=6)
        source, task = tmp_path / "src" / "MURA-v1.1", "abnormality"
    else:
        source, task = make_grazpedwri(tmp_path / "src", patients=24), "fracture"
    prepare(source, tmp_path / "prep", size=32, scheduler="sync", progress=False, echo=lambda s: None)
    index = load_index(tmp_path / "prep")
    assert index["layout"] == layout and index["grouping"]["by"] == "patient"
    assert not index["leakage"]["leaks_into_test"]
    splits_of: dict[str, set[str]] = {}
    for it in index["items"]:
        splits_of.setdefault(it["group"], set()).add(it["split"])
    assert all(len(s) == 1 for s in splits_of.values())
    card = _train(tmp_path / "prep", tmp_path / "out", f"{layout}-tiny")
    assert card.task == task
    tm = card.test_metrics
    _check_headline(tm["headline"], with_studies=True)
    assert tm["data_checks"]["grouping"]["by"] == "patient"
    assert "Split by patient" in card.training_data
