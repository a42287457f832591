"""Dask preparation into uint8 shards: index, re-run does nothing, size report, real clusters."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from realdata import write_cr_dicom

from bonecls.errors import DataError
from bonecls.prepare import format_size_report, load_index, prepare, size_report


def _img(path: Path, h: int, w: int, bright: bool, bits: int = 8) -> None:
    """A dim film (with its own texture, so no two are copies) holding a bright square when ``bright``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    top = 65535 if bits == 16 else 255
    rng = np.random.default_rng(zlib.crc32(path.as_posix().encode()))
    texture = rng.uniform(0.1, 0.3, (max(2, h // 8), max(2, w // 8)))
    base = np.kron(texture, np.ones((8, 8)))[:h, :w]
    base = np.pad(base, ((0, h - base.shape[0]), (0, w - base.shape[1])), mode="edge")
    arr = (base * top).astype(np.uint16 if bits == 16 else np.uint8)
    if bright:
        arr[h // 4 : h // 2, w // 4 : w // 2] = top
    Image.fromarray(arr).save(path)


def make_dataset(root: Path, n_train: int = 6, n_eval: int = 2) -> Path:
    """20 images by default: train 6+6, val 2+2, test 2+2; sizes vary (aspect ratios 0.8-1.5)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_eval), ("test", n_eval)):
        for cls in ("fractured", "not fractured"):
            for i in range(n):
                h = int(rng.integers(40, 60))
                w = int(h * rng.uniform(0.8, 1.5))
                _img(root / split / cls / f"{i}.png", h, w, cls == "fractured", bits=16 if i % 2 else 8)
    return root


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "src")


def test_prepare_writes_shards_and_index(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "prep"
    lines: list[str] = []
    res = prepare(
        dataset, out, size=32, scheduler="sync", shard_size=8, chunk_size=3, progress=False, echo=lines.append
    )
    assert not res.up_to_date
    index = load_index(out)
    assert index["size"] == 32 and index["class_names"] == ["not fractured", "fractured"]
    assert len(index["items"]) == 20 and [s["count"] for s in index["shards"]] == [8, 8, 4]
    assert index["balance"]["train"] == {"not fractured": 6, "fractured": 6}
    # every image stored once; split order train, val, test
    assert [it["split"] for it in index["items"]] == ["train"] * 12 + ["val"] * 4 + ["test"] * 4
    assert len({(it["shard"], it["offset"]) for it in index["items"]}) == 20
    for it in index["items"]:
        arr = np.load(out / index["shards"][it["shard"]]["file"], mmap_mode="r")
        assert arr.dtype == np.uint8 and arr.shape[1:] == (32, 32)
        img = arr[it["offset"]]
        # the bright square (16-bit sources too: full bit depth decoded) survives the resize; the
        # textured films without it stay well below white there
        assert (img[9:15, 9:15].mean() > 240) == (it["class_name"] == "fractured")
        assert len(it["file_hash"]) == 16 and it["source"].endswith(".png")
    rep = index["size_report"]
    assert rep["count"] == 20 and rep["recommended_size"] in (32, 64)
    assert any("Recommended resize" in line for line in lines)


def test_rerun_is_up_to_date_and_changes_are_detected(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "prep"
    prepare(dataset, out, size=32, scheduler="sync", progress=False, echo=lambda s: None)
    shard = out / "shard_00000.npy"
    mtime = shard.stat().st_mtime_ns
    lines: list[str] = []
    res = prepare(dataset, out, size=32, scheduler="sync", progress=False, echo=lines.append)
    assert res.up_to_date and "up to date" in lines[0]
    assert shard.stat().st_mtime_ns == mtime
    # a different parameter or a touched source file means work again
    assert not prepare(
        dataset, out, size=48, scheduler="sync", progress=False, echo=lambda s: None
    ).up_to_date
    f = dataset / "val" / "fractured" / "0.png"
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    assert not prepare(
        dataset, out, size=48, scheduler="sync", progress=False, echo=lambda s: None
    ).up_to_date
    assert prepare(dataset, out, size=48, scheduler="sync", progress=False, echo=lambda s: None).up_to_date


def test_unreadable_images_are_skipped_and_listed(dataset: Path, tmp_path: Path) -> None:
    (dataset / "train" / "fractured" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    res = prepare(dataset, tmp_path / "p", size=32, scheduler="threads", progress=False, echo=lambda s: None)
    assert len(res.index["items"]) == 20
    assert [Path(s["source"]).name for s in res.index["skipped"]] == ["bad.png"]


def test_size_report_recommendation() -> None:
    rep = size_report([(1000, 800)] * 6 + [(2000, 1500)] * 3 + [(3000, 3000)], cap=512)
    assert rep["short_side"]["p50"] == 800 and rep["recommended_size"] == 512  # capped
    rep = size_report([(300, 200), (300, 230), (300, 240)], cap=512)
    assert rep["recommended_size"] == 224  # median short side 230 -> multiple of 32
    assert rep["aspect_histogram"]["0.75-0.9"] == 2 and rep["aspect_histogram"]["0.5-0.75"] == 1
    assert "Recommended resize: 224 px" in format_size_report(rep)
    assert size_report([], cap=512)["recommended_size"] is None


def test_auto_size_and_errors(dataset: Path, tmp_path: Path) -> None:
    res = prepare(
        dataset,
        tmp_path / "auto",
        size="auto",
        size_cap=32,
        scheduler="sync",
        progress=False,
        echo=lambda s: None,
    )
    assert res.index["size"] == 32
    with pytest.raises(DataError, match="between 8 and 4096"):
        prepare(dataset, tmp_path / "x", size=4, scheduler="sync", progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises((DataError, OSError)):
        prepare(dataset, blocker / "out", size=32, scheduler="sync", progress=False, echo=lambda s: None)
    with pytest.raises(DataError, match="Unknown scheduler"):
        prepare(dataset, tmp_path / "y", size=32, scheduler="bogus", progress=False, echo=lambda s: None)


def test_rsna_dicoms_decode_at_full_bit_depth(tmp_path: Path) -> None:
    """12-bit DICOMs whose values all lie above 255: an 8-bit path would saturate, ours keeps the ramp."""
    root = tmp_path / "rsna"
    rows = ["patientId,x,y,width,height,Target"]
    for i in range(10):
        ramp = np.tile(np.linspace(1000, 3000, 48), (40, 1))
        # each film its own vertical banding (rows stay ramps): identical films would be refused as copies
        bands = np.random.default_rng(i).uniform(0.7, 1.3, 5)
        ramp *= np.repeat(bands, 8)[:, None]
        write_cr_dicom(root / "stage_2_train_images" / f"p{i}.dcm", ramp)
        rows.append(f"p{i},1,1,5,5,1" if i < 4 else f"p{i},,,,,0")
    (root / "stage_2_train_labels.csv").write_text("\n".join(rows) + "\n")
    res = prepare(root, tmp_path / "out", size=32, scheduler="sync", progress=False, echo=lambda s: None)
    assert res.index["layout"] == "rsna" and res.index["class_names"] == ["normal", "pneumonia"]
    assert {it["split"] for it in res.index["items"]} == {"train", "val", "test"}
    img = np.load(tmp_path / "out" / "shard_00000.npy")[0].astype(int)
    assert img[:, -1].mean() - img[:, 0].mean() > 100  # a real gradient left to right
    assert np.all(np.diff(img[16]) >= -1)
    pos = next(it for it in res.index["items"] if it["label"] == 1)
    assert pos["boxes"][0]["kind"] == "opacity" and pos["original_size"] == [40, 48]


def test_real_local_cluster_and_tcp_scheduler(dataset: Path, tmp_path: Path) -> None:
    """The default path (a LocalCluster of worker processes) and connecting to a running scheduler."""
    res = prepare(
        dataset,
        tmp_path / "lc",
        size=32,
        n_workers=2,
        shard_size=16,
        chunk_size=4,
        progress=False,
        echo=lambda s: None,
    )
    ref = np.load(tmp_path / "lc" / "shard_00000.npy")
    assert len(res.index["items"]) == 20

    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        lines: list[str] = []
        res2 = prepare(
            dataset,
            tmp_path / "tcp",
            size=32,
            scheduler=cluster.scheduler_address,
            shard_size=16,
            chunk_size=4,
            progress=False,
            echo=lines.append,
        )
    assert "Dask distributed" in lines[0]
    assert np.array_equal(np.load(tmp_path / "tcp" / "shard_00000.npy"), ref)  # same bytes either way
    assert json.loads((tmp_path / "tcp" / "index.json").read_text())["items"] == res2.index["items"]
