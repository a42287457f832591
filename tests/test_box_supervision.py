"""Box supervision: boxes.csv beside class folders, box masks from shards, masks that follow the
augmentation, per-cell targets, the training-only lesion head and ``train/classify.py --box-loss``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bonecls.data import read_kaggle, read_threeclass
from bonecls.errors import DataError
from bonecls.training import TrainingError
from bonecls.training.augment import AugmentConfig, BatchAugment, DevicePreprocess, augment_table
from bonecls.training.lesion import (
    HEAD_NAME,
    LESION_CELL_WEIGHT,
    attach_lesion_head,
    box_crops,
    cell_targets,
    lesion_head_of,
    negative_class,
    strip_lesion_head,
)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """40 fracture phantoms (Kaggle layout with boxes.csv) at 64 px, and the same prepared at 32 px."""
    from bonecls.phantom import write_dataset
    from bonecls.prepare import prepare

    base = tmp_path_factory.mktemp("boxes")
    src = write_dataset("fracture", "kaggle", base / "src", n=40, size=64, seed=3, progress=False)
    prepare(src, base / "prep", size=32, scheduler="sync", progress=False, echo=lambda s: None)
    return src, base / "prep"


def _manifest_boxes(src: Path) -> dict[str, list[dict]]:
    manifest = json.loads((src / "manifest.json").read_text())
    return {s["file"]: s["boxes"] for s in manifest["samples"]}


def test_class_folder_layouts_write_and_read_boxes_csv(phantoms: tuple[Path, Path], tmp_path: Path) -> None:
    src, _ = phantoms
    truth = _manifest_boxes(src)
    ds = read_kaggle(src)
    assert src / "boxes.csv" in ds.label_files
    by_file = {r.path.relative_to(src).as_posix(): r for r in ds.records}
    assert set(by_file) == set(truth)
    for rel, rec in by_file.items():
        got = [v for b in rec.boxes for v in (b.x0, b.y0, b.x1, b.y1)]
        assert got == pytest.approx([b[k] for b in truth[rel] for k in ("x0", "y0", "x1", "y1")], abs=0.01)
        assert bool(rec.boxes) == (rec.class_name == "fractured")
    # the three-class writer does the same
    from bonecls.phantom import write_dataset

    three = write_dataset(
        "threeclass", "threeclass", tmp_path / "three", n=30, size=32, seed=1, progress=False
    )
    recs = read_threeclass(three).records
    assert all(bool(r.boxes) == (r.class_name != "healthy") for r in recs)


def _copy_with_boxes_csv(src: Path, dst: Path, rows: list[dict]) -> Path:
    import shutil

    shutil.copytree(src, dst)
    with (dst / "boxes.csv").open("w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=["file", "x0", "y0", "x1", "y1"])
        wr.writeheader()
        wr.writerows(rows)
    return dst


def test_boxes_csv_errors_are_named_and_strays_listed(phantoms: tuple[Path, Path], tmp_path: Path) -> None:
    src, _ = phantoms
    stray = {"file": "train/fractured/nope.jpg", "x0": 1, "y0": 1, "x1": 5, "y1": 5}
    ds = read_kaggle(_copy_with_boxes_csv(src, tmp_path / "a", [stray]))
    assert [s.reason for s in ds.skipped if s.path.name == "nope.jpg"] == [
        "has boxes in boxes.csv but is not an image of this set"
    ]
    assert not any(r.boxes for r in ds.records)
    bad = {"file": "train/fractured/x.jpg", "x0": "left", "y0": 1, "x1": 5, "y1": 5}
    with pytest.raises(DataError, match="line 2: the box coordinates are not numbers"):
        read_kaggle(_copy_with_boxes_csv(src, tmp_path / "b", [bad]))
    empty = {"file": "train/fractured/x.jpg", "x0": 5, "y0": 1, "x1": 5, "y1": 5}
    with pytest.raises(DataError, match="x0 < x1 and y0 < y1"):
        read_kaggle(_copy_with_boxes_csv(src, tmp_path / "c", [empty]))


def test_shard_box_masks_scale_boxes_to_the_shard_size(phantoms: tuple[Path, Path]) -> None:
    from bonecls.training.shards import ShardDataset

    _, prep = phantoms
    ds = ShardDataset(prep, "train")
    assert ds.boxed.tolist() == [bool(it["boxes"]) for it in ds.items] and ds.boxed.any()
    masks = ds.box_masks(list(range(len(ds))))
    assert masks.shape == (len(ds), 1, 32, 32)
    for i, it in enumerate(ds.items):
        m = masks[i, 0]
        if not it["boxes"]:
            assert m.sum() == 0
            continue
        b = it["boxes"][0]  # source 64 px -> shards 32 px: half the coordinates
        rows, cols = torch.nonzero(m, as_tuple=True)
        assert cols.min().item() == pytest.approx(b["x0"] / 2, abs=1) and rows.min().item() == pytest.approx(
            b["y0"] / 2, abs=1
        )


def test_masks_follow_the_geometric_augmentation_exactly() -> None:
    geometric_only = AugmentConfig(
        hflip=0.5, rotate_deg=15, scale=0.1, translate=0.05, brightness=0, contrast=0, gamma=0, noise_std=0
    )
    aug = BatchAugment(geometric_only)
    masks = torch.zeros(8, 1, 32, 32)
    masks[:, :, 4:12, 18:30] = 1.0
    params = augment_table(8, seed=2, epoch=1)
    image, moved = aug(masks.clone(), params, masks)
    assert torch.allclose(image, moved, atol=1e-6)  # the same warp for image and mask
    assert not torch.allclose(moved, masks)  # and it did move
    # DevicePreprocess resizes the masks to the model's input with the images
    prep = DevicePreprocess("cpu", 48, 1, [0.5], [0.25], geometric_only)
    x, m = prep((masks * 255).to(torch.uint8), train=True, params=params, masks=masks)
    assert x.shape == m.shape == (8, 1, 48, 48)
    image_box, mask_box = (x * 0.25 + 0.5) > 0.5, m > 0.5  # bilinear vs nearest resize: edges may differ
    iou = (image_box & mask_box).sum(dim=(1, 2, 3)) / (image_box | mask_box).sum(dim=(1, 2, 3))
    assert iou.min() > 0.85


def test_cell_targets_negative_images_boxes_and_unboxed_positives() -> None:
    masks = torch.zeros(3, 1, 8, 8)
    masks[1, 0, 0:4, 0:4] = 1  # positive with a box over the top-left 2 x 2 cells of a 4 x 4 grid
    labels = torch.tensor([0, 1, 1])
    has = torch.tensor([False, True, False])
    target, weight = cell_targets(masks, labels, has, (4, 4), negative=0)
    assert target[0].eq(0).all() and weight[0].eq(1).all()  # negative image: all cells negative
    assert target[1, :2, :2].eq(1).all() and target[1].sum() == 4
    assert weight[1, :2, :2].eq(LESION_CELL_WEIGHT).all() and weight[1, 2:, 2:].eq(1).all()
    assert weight[2].eq(0).all()  # a positive image without boxes: no cell supervision
    assert negative_class(["healthy", "fractured", "beyond_repair"], ["fractured", "beyond_repair"]) == 0
    with pytest.raises(ValueError, match="exactly one negative class"):
        negative_class(["a", "b", "c"], ["c"])


def test_box_crops_keep_lesions_whole_and_relabel_windows_that_miss_them() -> None:
    torch.manual_seed(0)
    n, size, crop = 64, 64, 24
    x = torch.arange(n * size * size, dtype=torch.float32).reshape(n, 1, size, size)
    masks = torch.zeros(n, 1, size, size)
    masks[n // 2 :, 0, 40:48, 8:16] = 1  # positives (label 1) with an 8 x 8 lesion
    labels = torch.tensor([0] * (n // 2) + [1] * (n // 2))
    has = labels.bool()
    cx, cm, cy = box_crops(x, masks, labels, has, crop, negative=0)
    assert cx.shape == (n, 1, crop, crop) and cm.shape == (n, 1, crop, crop) and cy.shape == (n,)
    for i in range(n):  # every window is an unscaled piece of its own image
        r0, c0 = divmod(int(cx[i, 0, 0, 0]) - i * size * size, size)
        assert torch.equal(cx[i], x[i, :, r0 : r0 + crop, c0 : c0 + crop])
        assert torch.equal(cm[i], masks[i, :, r0 : r0 + crop, c0 : c0 + crop]) or cy[i] == 0
    assert cy[: n // 2].eq(0).all() and cm[: n // 2].eq(0).all()  # negatives stay negative
    pos_windows = cy[n // 2 :]
    assert (cm[n // 2 :][pos_windows == 1].flatten(1).sum(1) >= 32).all()  # at least half the lesion
    assert cm[n // 2 :][pos_windows == 0].eq(0).all()  # relabelled windows carry no lesion cells
    assert 0 < int(pos_windows.eq(0).sum()) < n // 4  # about one in four positives is a hard negative
    # a lesion larger than the window (every window lies mostly inside it) keeps the label and its cells,
    # although no window holds half of it
    big = torch.zeros(1, 1, size, size)
    big[0, 0, 4:60, 4:60] = 1
    for _ in range(8):
        _, bm, by = box_crops(x[-1:], big, labels[-1:], torch.tensor([True]), crop, 0)
        assert by.item() == 1 and bm.mean() >= 0.5
    # a positive without boxes is shrunk whole (its lesion cannot be missed), keeping its label
    sx, _, sy = box_crops(x[-1:], torch.zeros(1, 1, size, size), labels[-1:], torch.tensor([False]), crop, 0)
    assert sy.tolist() == [1] and torch.allclose(sx.mean(), x[-1].mean(), rtol=1e-3)


def test_lesion_head_is_training_only() -> None:
    from bonecls.models import create_model

    torch.manual_seed(0)
    model = create_model("simple_cnn", 2, in_chans=1)
    plain = {k: v.clone() for k, v in model.state_dict().items()}
    attach_lesion_head(model, "simple_cnn", 2, 32)
    model.eval()
    x = torch.rand(2, 1, 32, 32)
    logits = model(x)
    cells = lesion_head_of(model).cells
    assert cells is not None and cells.shape[:2] == (2, 2) and cells.shape[-1] > 1
    state = model.state_dict()
    assert any(k.startswith(HEAD_NAME + ".") for k in state)
    stripped = strip_lesion_head(state)
    assert stripped.keys() == plain.keys()
    fresh = create_model("simple_cnn", 2, in_chans=1)
    fresh.load_state_dict(stripped, strict=True)
    fresh.eval()
    assert torch.allclose(fresh(x), logits)  # the head does not change the classifier's output


def test_classify_with_box_loss_writes_a_plain_card_and_refuses_mismatched_resume(
    phantoms: tuple[Path, Path], tmp_path: Path
) -> None:
    from test_train import base_args

    from bonecls.training import checkpoint as ckpt
    from bonecls.training.classify import parse_args, run
    from bonecls.weights import load_pytorch

    _, prep = phantoms
    args = base_args(prep, tmp_path, "--box-loss", "1", "--batch-size", "8", "--resume", "auto")
    summary = run(parse_args(args))
    assert np.isfinite(summary["test_accuracy"])
    _, card = load_pytorch(tmp_path / "model")  # strict architecture check: no lesion head in the weights
    assert card.extra["box_loss"] == 1.0
    state = ckpt.load(ckpt.checkpoint_path(tmp_path / "run" / "checkpoints", 1))
    assert any(k.startswith(HEAD_NAME + ".") for k in state["model"])  # resumable with its head
    resume_without_boxes = base_args(prep, tmp_path, "--epochs", "2", "--batch-size", "8", "--resume", "auto")
    with pytest.raises(TrainingError, match=r"trained with --box-loss 1\.0, not 0\.0"):
        run(parse_args(resume_without_boxes))


def test_classify_with_box_crops_trains_on_windows_and_validates_whole_images(
    phantoms: tuple[Path, Path], tmp_path: Path
) -> None:
    from test_train import base_args

    from bonecls.training.classify import parse_args, run
    from bonecls.weights import load_pytorch

    _, prep = phantoms
    with pytest.raises(TrainingError, match="needs --box-loss"):
        run(parse_args(base_args(prep, tmp_path / "a", "--box-crop", "16")))
    with pytest.raises(TrainingError, match="between 16 and the image size"):
        run(parse_args(base_args(prep, tmp_path / "b", "--box-loss", "1", "--box-crop", "32")))
    args = base_args(prep, tmp_path, "--box-loss", "1", "--box-crop", "16", "--batch-size", "8")
    summary = run(parse_args([*args, "--model", "custom_v2_max"]))
    assert np.isfinite(summary["test_accuracy"])
    model, card = load_pytorch(tmp_path / "model")
    assert card.architecture == "custom_v2_max" and card.extra["box_crop"] == 16
    assert model(torch.rand(1, 1, 32, 32)).shape == (1, 2)  # whole images at inference


def test_two_rank_gloo_run_with_box_crops(phantoms: tuple[Path, Path], tmp_path: Path) -> None:
    """The recipe of the shipped fracture model under torchrun: each rank cuts its own windows, the
    lesion head's gradients are averaged with the rest, and rank 0 writes a plain card."""
    from test_train import base_args, torchrun

    from bonecls.weights import load_pytorch

    _, prep = phantoms
    args = base_args(prep, tmp_path, "--box-loss", "1", "--box-crop", "16", "--batch-size", "4")
    p = torchrun(2, [*args, "--model", "custom_v2_max"])
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    model, card = load_pytorch(tmp_path / "model")  # strict: no lesion head in the shipped weights
    assert card.extra["world_size"] == 2 and card.extra["box_crop"] == 16
    assert card.extra["box_loss"] == 1.0
    assert "Box crops: training on 16-px windows" in p.stdout
    assert model(torch.rand(1, 1, 32, 32)).shape == (1, 2)


def test_box_loss_without_boxes_is_refused(phantoms: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    from test_train import base_args

    from bonecls.prepare import prepare
    from bonecls.training.classify import parse_args, run

    src, _ = phantoms
    shutil.copytree(src, tmp_path / "src")
    (tmp_path / "src" / "boxes.csv").unlink()
    prepare(
        tmp_path / "src", tmp_path / "prep", size=32, scheduler="sync", progress=False, echo=lambda s: None
    )
    with pytest.raises(TrainingError, match="--box-loss needs lesion boxes"):
        run(parse_args(base_args(tmp_path / "prep", tmp_path, "--box-loss", "1")))


def test_init_from_copies_the_head_only_for_the_same_classes(
    phantoms: tuple[Path, Path], tmp_path: Path
) -> None:
    import argparse

    from test_train import base_args

    from bonecls.models import create_model, model_spec
    from bonecls.training.builders import init_from_card
    from bonecls.training.classify import parse_args, run
    from bonecls.weights import load_pytorch

    _, prep = phantoms
    run(parse_args(base_args(prep, tmp_path / "a", "--batch-size", "8")))
    source, src_card = load_pytorch(tmp_path / "a" / "model")
    args = base_args(prep, tmp_path / "b", "--batch-size", "8", "--init-from", str(tmp_path / "a" / "model"))
    args += ["--max-train-batches", "0"]  # no step: the saved weights are the initialization itself
    run(parse_args(args))
    model, card = load_pytorch(tmp_path / "b" / "model")
    src, got = source.state_dict(), model.state_dict()
    assert card.class_names == src_card.class_names
    for key, value in src.items():  # same classes: backbone and head, every tensor
        assert torch.equal(got[key], value), key
    assert card.extra["init_from"] == str(tmp_path / "a" / "model")
    assert card.extra["init_from_sha256"] == src_card.sha256

    # other classes (the same two, swapped): the backbone is copied, the head is left as it was
    head = model_spec(src_card.architecture).classifier + "."
    fresh = create_model(src_card.architecture, num_classes=2, in_chans=1)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    ns = argparse.Namespace(init_from=str(tmp_path / "a" / "model"), model=src_card.architecture, in_chans=1)
    init_from_card(fresh, ns, list(reversed(src_card.class_names)))
    after = fresh.state_dict()
    heads = [k for k in after if k.startswith(head)]
    assert heads and all(torch.equal(after[k], before[k]) for k in heads)
    assert all(torch.equal(after[k], src[k]) for k in after if not k.startswith(head))

    wrong = base_args(
        prep, tmp_path / "c", "--model", "resnet18", "--init-from", str(tmp_path / "a" / "model")
    )
    with pytest.raises(TrainingError, match="is a simple_cnn with 1 channel"):
        run(parse_args(wrong))
