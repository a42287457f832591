"""Leakage between splits: planted exact, resized and re-encoded copies of training phantoms in val and
test are found (targets: 100% of exact, >= 95% of resized or re-encoded), distinct phantoms are not
flagged, patients shared between splits are counted, and prepare refuses a leaking test split unless
told ``allow_leakage``."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bonecls.errors import LeakageError
from bonecls.leakage import NEAR_BITS, leakage_report, nearest, perceptual_hash, pixel_sha256
from bonecls.prepare import INDEX_NAME, LEAKAGE_NAME, load_index, prepare

RESIZES = (0.5, 0.75, 1.5)
JPEG_QUALITIES = (90, 75, 50)


def _resized(src: Path, dst: Path, scale: float) -> None:
    im = Image.open(src)
    im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS).save(dst)


def _reencoded(src: Path, dst: Path, quality: int, scale: float = 1.0) -> None:
    im = Image.open(src).convert("L")
    if scale != 1.0:
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    dst.write_bytes(buf.getvalue())


def plant_copies(root: Path) -> dict[str, set[str]]:
    """Copies of distinct training phantoms planted into val and test; returns the planted files
    (relative to ``root``) by kind: exact / resized / reencoded."""
    train = sorted((root / "train").rglob("*.jpg"))
    planted: dict[str, set[str]] = {"exact": set(), "resized": set(), "reencoded": set()}
    for k, src in enumerate(train[:36]):
        split = ("test", "val")[k % 2]
        dst_dir = root / split / src.parent.name
        kind = ("exact", "resized", "reencoded")[k % 3]
        if kind == "exact":
            dst = dst_dir / f"copy_{k}.jpg"
            shutil.copy(src, dst)
        elif kind == "resized":
            dst = dst_dir / f"copy_{k}.png"
            _resized(src, dst, RESIZES[k % len(RESIZES)])
        else:
            dst = dst_dir / f"copy_{k}.jpg"
            _reencoded(src, dst, JPEG_QUALITIES[k % len(JPEG_QUALITIES)], 0.6 if k % 4 == 0 else 1.0)
        planted[kind].add(dst.relative_to(root).as_posix())
    return planted


@pytest.fixture(scope="module")
def leaky(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, set[str]]]:
    from bonecls.phantom import write_dataset

    base = tmp_path_factory.mktemp("leak")
    src = write_dataset("fracture", "kaggle", base / "src", n=120, size=96, seed=5, progress=False)
    return src, plant_copies(src)


def test_planted_copies_are_found_and_distinct_phantoms_are_not(
    leaky: tuple[Path, dict[str, set[str]]], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    src, planted = leaky
    with pytest.raises(LeakageError, match="allow-leakage"):
        prepare(src, tmp_path / "prep", size=32, scheduler="sync", progress=False, echo=lambda s: None)
    assert not (tmp_path / "prep" / INDEX_NAME).exists()  # refused: the set stays unprepared
    report = json.loads((tmp_path / "prep" / LEAKAGE_NAME).read_text())
    assert report["leaks_into_test"] and report["allowed"] is False
    found = {c[c["pair"].split("-")[0]]: c for c in report["copies"]}
    rates = {kind: len(files & set(found)) / len(files) for kind, files in planted.items()}
    assert {found[f]["kind"] for f in planted["exact"]} == {"exact"}
    every_planted = set().union(*planted.values())
    distinct = [
        p.relative_to(src).as_posix()
        for split in ("val", "test")
        for p in (src / split).rglob("*.*")
        if p.relative_to(src).as_posix() not in every_planted
    ]
    false_positives = [f for f in distinct if f in found]
    with capsys.disabled():
        print(
            f"\nleakage: found exact {rates['exact']:.0%}, resized {rates['resized']:.0%}, re-encoded "
            f"{rates['reencoded']:.0%} of {len(every_planted)} planted copies; "
            f"false positives {len(false_positives)}/{len(distinct)} distinct val/test phantoms"
        )
    assert rates["exact"] == 1.0
    assert rates["resized"] >= 0.95 and rates["reencoded"] >= 0.95
    assert false_positives == []
    counts = report["pairs"]
    assert counts["test-train"]["exact"] + counts["test-train"]["near"] == 18
    assert counts["val-train"]["exact"] + counts["val-train"]["near"] == 18


def test_allow_leakage_prepares_and_the_index_says_so(
    leaky: tuple[Path, dict[str, set[str]]], tmp_path: Path
) -> None:
    src, _ = leaky
    lines: list[str] = []
    prepare(
        src, tmp_path / "p", size=32, scheduler="sync", progress=False, echo=lines.append, allow_leakage=True
    )
    index = load_index(tmp_path / "p")
    assert index["leakage"]["leaks_into_test"] and index["leakage"]["allowed"] is True
    assert "copies" not in index["leakage"] and len(index["leakage"]["examples"]) <= 20
    assert index["grouping"]["by"] == "image"
    assert any("test vs train" in line for line in lines)
    it = index["items"][0]
    assert len(it["pixel_sha256"]) == 64 and len(it["phash"]) == 64
    # up to date, but a re-run without the permission still refuses
    with pytest.raises(LeakageError):
        prepare(src, tmp_path / "p", size=32, scheduler="sync", progress=False, echo=lambda s: None)


def test_distinct_phantoms_lie_far_beyond_the_near_threshold() -> None:
    """Pairwise over 150 phantoms of two tasks (many views of one CT anatomy): none within NEAR_BITS."""
    from bonecls.phantom import generate

    hashes = [
        perceptual_hash(s.image.astype(np.float32) / 65535.0)
        for task in ("fracture", "pneumonia")
        for s in generate(task, n=75, size=96, seed=9)
    ]
    dist, _ = nearest(hashes[:75], hashes[75:])
    own = [nearest([h], hashes[:i] + hashes[i + 1 :])[0][0] for i, h in enumerate(hashes)]
    assert min(dist.min(), min(own)) > NEAR_BITS


def test_shared_patients_and_within_split_repeats() -> None:
    px = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    rng = np.random.default_rng(0)

    def item(split: str, group: str, arr: np.ndarray, name: str) -> dict:
        return {
            "split": split,
            "source": name,
            "group": group,
            "pixel_sha256": pixel_sha256(arr),
            "phash": perceptual_hash(arr),
        }

    films = [rng.uniform(0, 1, (8, 8)).repeat(8, 0).repeat(8, 1).astype(np.float32) for _ in range(4)]
    items = [
        item("train", "p1", films[0], "a"),
        item("train", "p1", films[0], "a-again"),  # a repeat inside train
        item("val", "p2", films[1], "b"),
        item("test", "p1", films[2], "c"),  # patient p1 again, different film
        item("test", "p3", px, "d"),
    ]
    rep = leakage_report(items)
    assert rep["patients_shared"] == {"test-train": 1, "test-val": 0, "val-train": 0}
    assert rep["within_split_exact"]["train"] == 1
    assert rep["pairs"]["test-train"] == {"images": 2, "exact": 0, "near": 0}
    assert rep["leaks_into_test"]  # a shared patient is enough
