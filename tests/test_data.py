"""Dataset readers (class folders, FracAtlas, RSNA, YOLO) on tiny fixtures, validation errors, splits."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from realdata import write_cr_dicom

from bonecls.data import (
    FRACATLAS_COLUMNS,
    TASK_CLASSES,
    detect_layout,
    probe_image,
    read_class_folders,
    read_dataset,
    read_fracatlas,
    read_kaggle,
    read_rsna,
    read_threeclass,
    read_yolo,
    stratified_split,
    task_for,
)
from bonecls.errors import DataError


def write_png(path: Path, h: int = 12, w: int = 16, value: int = 100, bits: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((h, w), value, dtype=np.uint16 if bits == 16 else np.uint8)
    Image.fromarray(arr).save(path)
    return path


def write_jpg(path: Path, h: int = 12, w: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w), 90, dtype=np.uint8)).save(path, format="JPEG")
    return path


def write_dicom(path: Path, h: int = 20, w: int = 24) -> Path:
    return write_cr_dicom(path, np.arange(h * w, dtype=np.uint16).reshape(h, w) % 4096)


def make_kaggle(root: Path, per_class: int = 3) -> Path:
    for split in ("train", "val", "test"):
        for cls in ("fractured", "not fractured"):
            for i in range(per_class):
                write_png(root / split / cls / f"{i}.png", 10 + i, 14)
    return root


# ------------------------------------------------------------------------------------------ class folders


def test_kaggle_layout_reads_splits_classes_and_balance(tmp_path: Path) -> None:
    root = make_kaggle(tmp_path / "kaggle", per_class=2)
    write_png(root / "train" / "fractured" / "extra.png")
    ds = read_kaggle(root)
    assert ds.class_names == ["not fractured", "fractured"]
    assert len(ds) == 13 and not ds.skipped
    assert ds.balance() == {
        "train": {"not fractured": 2, "fractured": 3},
        "val": {"not fractured": 2, "fractured": 2},
        "test": {"not fractured": 2, "fractured": 2},
    }
    rec = next(r for r in ds.records if r.path.name == "1.png" and r.split == "val")
    assert rec.size == (11, 14)  # header probed
    assert all(r.label == ds.class_names.index(r.class_name) for r in ds.records)
    assert "train: not fractured 2 (40.0%), fractured 3 (60.0%)" in ds.summary()
    assert detect_layout(root) == "kaggle" and task_for(ds) == "fracture"


def test_threeclass_layout(tmp_path: Path) -> None:
    root = tmp_path / "three"
    for split in ("train", "val", "test"):
        for cls in TASK_CLASSES["threeclass"]:
            write_png(root / split / cls / "a.png")
    ds = read_threeclass(root)
    assert ds.class_names == ["healthy", "fractured", "beyond_repair"]
    assert detect_layout(root) == "threeclass"
    assert read_dataset(root).layout == "threeclass"


def test_unreadable_images_are_skipped_and_listed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_kaggle(tmp_path / "k", per_class=1)
    (root / "train" / "fractured" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (root / "val" / "fractured" / "empty.jpg").write_bytes(b"")
    (root / "test" / "fractured" / "notes.txt").write_text("hello")
    with caplog.at_level("WARNING"):
        ds = read_kaggle(root)
    reasons = {s.path.name: s.reason for s in ds.skipped}
    assert set(reasons) == {"broken.png", "empty.jpg", "notes.txt"}
    assert "empty" in reasons["empty.jpg"]
    assert len(ds) == 6
    assert "broken.png" in caplog.text
    assert "skipped 3 unreadable" in ds.summary()


def test_missing_split_folder_is_a_clear_error(tmp_path: Path) -> None:
    root = make_kaggle(tmp_path / "k", per_class=1)
    for f in (root / "test").rglob("*.png"):
        f.unlink()
    for d in sorted((root / "test").rglob("*"), reverse=True):
        d.rmdir()
    (root / "test").rmdir()
    with pytest.raises(DataError, match=r"has no test folder"):
        read_kaggle(root)
    with pytest.raises(DataError, match="does not exist"):
        read_kaggle(tmp_path / "nowhere")


def test_unknown_class_folder_lists_the_expected_ones(tmp_path: Path) -> None:
    root = make_kaggle(tmp_path / "k", per_class=1)
    write_png(root / "train" / "maybe" / "x.png")
    with pytest.raises(DataError) as err:
        read_kaggle(root)
    msg = str(err.value)
    assert "'maybe'" in msg and "'fractured'" in msg and "'not fractured'" in msg and msg.endswith(".")


def test_folder_spellings_and_unsplit_root(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    write_png(root / "Fractured" / "a.png")
    write_png(root / "not_fractured" / "b.png")
    ds = read_class_folders(root, TASK_CLASSES["fracture"])
    assert not ds.has_splits and {r.split for r in ds.records} == {None}
    assert {r.class_name for r in ds.records} == {"fractured", "not fractured"}


# ------------------------------------------------------------------------------------------------ FracAtlas


def make_fracatlas(root: Path, n_pos: int = 4, n_neg: int = 6) -> Path:
    cols = ",".join(FRACATLAS_COLUMNS)
    rows = [cols]
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "fractured"}]}
    for i in range(n_pos + n_neg):
        pos = i < n_pos
        name = f"IMG{i:07d}.jpg"
        write_jpg(root / "images" / ("Fractured" if pos else "Non_fractured") / name, 40, 50)
        rows.append(f"{name},1,0,0,0,0,0,0,{int(pos)},{int(pos)},1,0,0")
        if pos:
            coco["images"].append({"id": i, "file_name": name, "height": 40, "width": 50})
            coco["annotations"].append({"id": i, "image_id": i, "category_id": 1, "bbox": [5, 6, 10, 8]})
            ytxt = root / "Annotations" / "YOLO" / f"IMG{i:07d}.txt"
            ytxt.parent.mkdir(parents=True, exist_ok=True)
            ytxt.write_text("0 0.2 0.25 0.2 0.2\n")
    (root / "dataset.csv").write_text("\n".join(rows) + "\n")
    cj = root / "Annotations" / "COCO JSON" / "COCO_fracture_masks.json"
    cj.parent.mkdir(parents=True, exist_ok=True)
    cj.write_text(json.dumps(coco))
    return root


def test_fracatlas_labels_boxes_meta_and_split(tmp_path: Path) -> None:
    root = make_fracatlas(tmp_path / "fa", 4, 6)
    ds = read_fracatlas(root)
    assert ds.layout == "fracatlas" and not ds.has_splits and len(ds) == 10
    pos = [r for r in ds.records if r.class_name == "fractured"]
    assert len(pos) == 4 and all(r.label == 1 for r in pos)
    assert pos[0].boxes[0].x0 == 5 and pos[0].boxes[0].x1 == 15 and pos[0].boxes[0].y1 == 14  # COCO xywh
    assert pos[0].meta_dict["hand"] == "1" and "fracture_count" in pos[0].meta_dict
    assert detect_layout(root) == "fracatlas"
    split = read_dataset(root, fractions=(0.5, 0.25, 0.25), seed=3)
    assert {r.split for r in split.records} == {"train", "val", "test"}


def test_fracatlas_yolo_boxes_when_no_coco(tmp_path: Path) -> None:
    root = make_fracatlas(tmp_path / "fa", 2, 2)
    (root / "Annotations" / "COCO JSON" / "COCO_fracture_masks.json").unlink()
    ds = read_fracatlas(root)
    box = next(r for r in ds.records if r.boxes).boxes[0]
    assert box.x0 == pytest.approx(5.0) and box.y0 == pytest.approx(6.0) and box.x1 == pytest.approx(15.0)


def test_fracatlas_mismatches_are_listed(tmp_path: Path) -> None:
    root = make_fracatlas(tmp_path / "fa", 2, 2)
    write_jpg(root / "images" / "Fractured" / "IMG9999999.jpg")  # no csv row
    src = root / "images" / "Non_fractured" / "IMG0000003.jpg"
    src.rename(root / "images" / "Fractured" / "IMG0000003.jpg")  # folder disagrees with the csv
    ds = read_fracatlas(root)
    reasons = {s.path.name: s.reason for s in ds.skipped}
    assert "no label" in reasons["IMG9999999.jpg"]
    assert "folder of its label" in reasons["IMG0000003.jpg"]
    assert len(ds) == 3


def test_fracatlas_errors(tmp_path: Path) -> None:
    root = make_fracatlas(tmp_path / "fa", 1, 1)
    (root / "dataset.csv").write_text("image_id,hand\nIMG0000000.jpg,1\n")
    with pytest.raises(DataError, match="lacks the column"):
        read_fracatlas(root)
    (root / "dataset.csv").unlink()
    with pytest.raises(DataError, match=r"no dataset\.csv"):
        read_fracatlas(root)


# ----------------------------------------------------------------------------------------------------- RSNA


def make_rsna(root: Path, n_pos: int = 3, n_neg: int = 5) -> Path:
    rows = ["patientId,x,y,width,height,Target"]
    for i in range(n_pos + n_neg):
        pid = f"p{i:04d}"
        write_dicom(root / "stage_2_train_images" / f"{pid}.dcm")
        if i < n_pos:
            rows.append(f"{pid},2,3,4,5,1")
            rows.append(f"{pid},10,11,3,3,1")  # second box, same patient
        else:
            rows.append(f"{pid},,,,,0")
    (root / "stage_2_train_labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_rsna_one_record_per_patient_with_all_boxes(tmp_path: Path) -> None:
    root = make_rsna(tmp_path / "rsna", 3, 5)
    (root / "stage_2_train_images" / "p0007.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    ds = read_rsna(root)
    assert ds.class_names == ["normal", "pneumonia"]
    assert len(ds) == 7 and [s.path.name for s in ds.skipped] == ["p0007.dcm"]
    p0 = next(r for r in ds.records if r.path.stem == "p0000")
    assert p0.label == 1 and len(p0.boxes) == 2 and p0.boxes[0].kind == "opacity"
    assert p0.boxes[0].x1 == 6 and p0.size == (20, 24)
    assert probe_image(p0.path) == (20, 24)
    assert detect_layout(root) == "rsna"


def test_rsna_missing_csv_column_and_image(tmp_path: Path) -> None:
    root = make_rsna(tmp_path / "rsna", 1, 1)
    with (root / "stage_2_train_labels.csv").open("a") as fh:
        fh.write("ghost,,,,,0\n")
    ds = read_rsna(root)
    assert any(s.path.name == "ghost.dcm" and "missing" in s.reason for s in ds.skipped)
    (root / "stage_2_train_labels.csv").write_text("patientId,Target\np0000,1\n")
    with pytest.raises(DataError, match="x, y, width, height"):
        read_rsna(root)


# ----------------------------------------------------------------------------------------------------- YOLO


def test_yolo_dataset(tmp_path: Path) -> None:
    root = tmp_path / "yolo"
    (root).mkdir()
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames:\n  0: opacity\n")
    for split in ("train", "val"):
        write_png(root / "images" / split / "a.png", 20, 40)
        write_png(root / "images" / split / "b.png", 20, 40)
        lab = root / "labels" / split
        lab.mkdir(parents=True)
        (lab / "a.txt").write_text("0 0.5 0.5 0.25 0.5\n")
        (lab / "b.txt").write_text("")
    ds = read_yolo(root, class_names=("normal", "pneumonia"))
    assert ds.class_names == ["normal", "pneumonia"] and len(ds) == 4
    a = next(r for r in ds.records if r.path.name == "a.png" and r.split == "train")
    assert a.label == 1 and a.boxes[0].kind == "opacity"
    assert (a.boxes[0].x0, a.boxes[0].y0, a.boxes[0].x1, a.boxes[0].y1) == (15.0, 5.0, 25.0, 15.0)
    assert detect_layout(root) == "yolo"
    (root / "data.yaml").write_text("train: images/nope\nnames: [opacity]\n")
    with pytest.raises(DataError, match="does not exist"):
        read_yolo(root)


# ---------------------------------------------------------------------------------------------------- splits


def test_stratified_split_proportions_per_class_and_determinism() -> None:
    labels = [0] * 500 + [1] * 120 + [2] * 30
    a = stratified_split(labels, (0.8, 0.1, 0.1), seed=2)
    b = stratified_split(labels, (0.8, 0.1, 0.1), seed=2)
    c = stratified_split(labels, (0.8, 0.1, 0.1), seed=3)
    assert a == b and a != c
    per = {k: Counter(s for s, y in zip(a, labels, strict=True) if y == k) for k in (0, 1, 2)}
    assert per[0] == {"train": 400, "val": 50, "test": 50}
    assert per[1] == {"train": 96, "val": 12, "test": 12}
    assert per[2] == {"train": 24, "val": 3, "test": 3}
    # rounding never loses items and keeps every class in every split
    odd = [0] * 7 + [1] * 3
    s = stratified_split(odd, (0.8, 0.1, 0.1), seed=0)
    assert len(s) == 10
    assert all({x for x, y in zip(s, odd, strict=True) if y == k} == {"train", "val", "test"} for k in (0, 1))


def test_stratified_split_rejects_bad_fractions() -> None:
    with pytest.raises(DataError, match="add up to 1"):
        stratified_split([0, 1], (0.5, 0.2, 0.2))
    with pytest.raises(DataError):
        stratified_split([0, 1], (0.5, 0.5))


def test_detect_layout_unknown(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="Cannot tell the layout"):
        detect_layout(tmp_path / "empty")
    np.testing.assert_equal(len(stratified_split(np.zeros(0, int))), 0)
