"""Patient groups and splits by patient; MURA and GRAZPEDWRI-DX readers on trees in their real layouts;
DICOM patient keys hashed with the site's salt."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from realdata import make_grazpedwri, make_mura, write_image, write_patient_dicom

from bonecls.data import (
    detect_layout,
    hashed_key,
    read_class_folders,
    read_dataset,
    read_fracatlas,
    read_grazpedwri,
    read_mura,
    stratified_split,
)
from bonecls.errors import DataError


def _splits_per_group(records) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = {}
    for r in records:
        seen.setdefault(r.group, set()).add(r.split)
    return seen


# ------------------------------------------------------------------------------------------------ splits


def test_grouped_split_keeps_groups_whole_and_stays_stratified() -> None:
    rng = np.random.default_rng(0)
    groups, labels = [], []
    for g in range(300):  # 300 patients with 1-4 images each, a third of them positive
        positive = g % 3 == 0
        for _ in range(int(rng.integers(1, 5))):
            groups.append(f"p{g}")
            labels.append(int(positive))
    out = stratified_split(labels, (0.8, 0.1, 0.1), seed=4, groups=groups)
    by_group: dict[str, set[str]] = {}
    for g, s in zip(groups, out, strict=True):
        by_group.setdefault(g, set()).add(s)
    assert all(len(s) == 1 for s in by_group.values())
    n = Counter(out)
    assert abs(n["train"] / len(out) - 0.8) < 0.03 and abs(n["test"] / len(out) - 0.1) < 0.03
    for split in ("train", "val", "test"):  # each split keeps the class balance
        ys = [y for y, s in zip(labels, out, strict=True) if s == split]
        assert abs(np.mean(ys) - np.mean(labels)) < 0.08
    assert out == stratified_split(labels, (0.8, 0.1, 0.1), seed=4, groups=groups)
    assert out != stratified_split(labels, (0.8, 0.1, 0.1), seed=5, groups=groups)


def test_grouped_split_ignores_key_spelling_and_small_sets_fill_every_split() -> None:
    labels = [0, 0, 1, 1, 0, 1, 0, 0]
    a = stratified_split(labels, groups=["a", "a", "b", "b", "c", "d", "e", "f"], seed=1)
    renamed = stratified_split(labels, groups=["x9", "x9", "k", "k", "q", "z", "m", "n"], seed=1)
    assert a == renamed  # a new salt renames every key; the split must not move
    assert a[0] == a[1] and a[2] == a[3]
    assert {"train", "val", "test"} <= set(a)


def test_singleton_groups_give_the_image_split_bonecls_always_made() -> None:
    labels = [i % 2 for i in range(40)]
    assert stratified_split(labels, seed=3, groups=[f"g{i}" for i in range(40)]) == stratified_split(
        labels, seed=3
    )


# -------------------------------------------------------------------------------------------------- MURA


def test_mura_reader_study_labels_patients_and_official_valid_as_test(tmp_path: Path) -> None:
    root = make_mura(tmp_path, patients=8, valid_patients=4)
    assert detect_layout(tmp_path) == "mura" and detect_layout(root) == "mura"
    ds = read_mura(tmp_path)
    assert ds.class_names == ["normal", "abnormal"] and ds.group_info.by == "patient"
    assert not ds.skipped
    rec = next(r for r in ds.records if "patient00002/study1_negative/image2" in r.path.as_posix())
    assert rec.group == "patient00002" and rec.study == "XR_WRIST/patient00002/study1"
    assert rec.label == 0 and rec.meta_dict["region"] == "wrist"
    assert {r.split for r in ds.records if "/valid/" in r.path.as_posix()} == {"test"}
    assert {r.split for r in ds.records if "/train/" in r.path.as_posix()} == {None}
    split = read_dataset(tmp_path, fractions=(0.8, 0.1, 0.1), seed=0)
    assert {r.split for r in split.records if "/train/" in r.path.as_posix()} == {"train", "val"}
    assert all(len(s) == 1 for s in _splits_per_group(split.records).values())
    for study in {r.study for r in split.records}:  # a study's images share its label
        assert len({r.label for r in split.records if r.study == study}) == 1


def test_mura_disagreements_and_missing_files_are_listed(tmp_path: Path) -> None:
    root = make_mura(tmp_path, patients=4, valid_patients=2)
    studies = root / "train_labeled_studies.csv"
    lines = studies.read_text().splitlines()
    lines[0] = lines[0][:-1] + ("0" if lines[0].endswith("1") else "1")  # the CSV contradicts the folder
    studies.write_text("\n".join(lines) + "\n")
    first_image = (root / "train_image_paths.csv").read_text().splitlines()[-1]
    (root.parent / first_image).unlink()
    write_image(root / "train" / "XR_HAND" / "patient00001" / "study1_negative" / "image9.png", False, 1)
    reasons = " | ".join(s.reason for s in read_mura(root).skipped)
    assert "the folder says" in reasons and "but missing" in reasons and "not listed" in reasons
    (root / "valid_labeled_studies.csv").unlink()
    with pytest.raises(DataError, match=r"valid_labeled_studies\.csv"):
        read_mura(root)


# ----------------------------------------------------------------------------------------- GRAZPEDWRI-DX


def test_grazpedwri_reader_fracture_boxes_patients_and_studies(tmp_path: Path) -> None:
    root = make_grazpedwri(tmp_path / "graz", patients=10)
    assert detect_layout(root) == "grazpedwri"
    ds = read_grazpedwri(root)
    assert ds.class_names == ["not fractured", "fractured"] and not ds.skipped
    for rec in ds.records:
        assert rec.label == int(rec.meta_dict.get("fracture_visible") == "1.0")
        assert all(b.kind == "fracture" for b in rec.boxes) and bool(rec.boxes) == bool(rec.label)
        assert rec.meta_dict["findings"] == "text"
    rec = next(r for r in ds.records if r.path.name.startswith("0003_") and "_02_" in r.path.name)
    assert rec.group == "patient3" and rec.study == "patient3/study2"
    box = next(r for r in ds.records if r.label).boxes[0]
    # 32 x 40 px image, YOLO "3 0.5 0.5 0.5 0.1"
    assert (box.x0, box.x1, box.y0, box.y1) == pytest.approx((8, 24, 18, 22))
    split = read_dataset(root, seed=2)
    assert all(len(s) == 1 for s in _splits_per_group(split.records).values())
    assert {r.split for r in split.records} == {"train", "val", "test"}


def test_grazpedwri_missing_label_files_and_unlisted_images(tmp_path: Path) -> None:
    root = make_grazpedwri(tmp_path / "graz", patients=4)
    first = sorted((root / "folder_structure" / "yolov5" / "labels").glob("*.txt"))[0]
    first.unlink()
    write_image(root / "images_part1" / "9999_0000000001_01_WRI-L1_M010.png", False, 5)
    reasons = [s.reason for s in read_grazpedwri(root).skipped]
    assert any("no YOLO label file" in r for r in reasons) and any("not listed" in r for r in reasons)
    (root / "folder_structure" / "yolov5" / "meta.yaml").write_text("names: [a, b]\n")
    with pytest.raises(DataError, match="fracture"):
        read_grazpedwri(root)


# ------------------------------------------------------------------------------------------------- DICOM


def test_dicom_patient_keys_are_salted_hashes_and_split_by_patient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BONECLS_GROUP_SALT", "site-a")
    root = tmp_path / "dcm"
    for p in range(12):
        cls = "fractured" if p % 2 else "not fractured"
        for view in range(2):
            write_patient_dicom(root / cls / f"{p}_{view}.dcm", f"MRN{p:04d}", f"1.2.3.{p}", 900 + p)
    ds = read_class_folders(root)
    assert ds.group_info.by == "patient" and "salted sha256" in ds.group_info.source
    keys = {r.group for r in ds.records}
    assert len(keys) == 12 and not any("MRN" in k for k in keys)
    assert hashed_key("PatientID", "MRN0003") in keys
    assert hashed_key("PatientID", "MRN0003", b"site-b") not in keys  # another site's salt, other keys
    split = ds.with_splits(seed=0)
    assert all(len(s) == 1 for s in _splits_per_group(split.records).values())


def test_salt_is_made_once_and_kept_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bonecls.data.groups import group_salt

    monkeypatch.delenv("BONECLS_GROUP_SALT", raising=False)
    monkeypatch.setenv("BONECLS_CACHE", str(tmp_path / "cache"))
    first = group_salt()
    assert first == group_salt() and len(first) == 64
    assert (tmp_path / "cache" / "group_salt").stat().st_mode & 0o077 == 0


def test_fracatlas_says_it_has_no_patients(tmp_path: Path) -> None:
    from test_data import make_fracatlas

    ds = read_fracatlas(make_fracatlas(tmp_path / "fa"))
    assert ds.group_info.by == "image" and "FracAtlas publishes no patient identifiers" in ds.group_info.note
