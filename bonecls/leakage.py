"""Leakage between splits: the same radiograph (or the same patient) in training and in test.

A test figure means something only if the test images were never seen in training. Public sets break
this quietly: FracAtlas and the Kaggle sets hold the same film saved twice, resized or re-encoded, and
a hospital export holds several views of one patient. :func:`leakage_report` looks for three things
across train / val / test:

* **exact copies** -- the sha256 of the decoded pixels (so a PNG re-saved losslessly still matches);
* **near copies** -- a perceptual hash (``imagehash.phash``, DCT of a 64 x 64 greyscale, 256 bits)
  within :data:`NEAR_BITS` bits: resized and JPEG re-encoded copies land within a few bits while distinct
  radiographs, even of one phantom anatomy, lie far apart (tests/test_leakage.py measures both);
* **shared patients** -- one group key in two splits, where the dataset has patient keys.

Anything of the kind in the test split (against train or val) makes ``leaks_into_test`` true, and
``train/prepare.py`` refuses the split unless told ``--allow-leakage``; train-vs-val findings are
reported (they bias early stopping and thresholds) but do not refuse. The report goes beside the
prepared set (``leakage.json``), into its index and onto the model card.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

HASH_SIZE = 16  # phash side: 16 x 16 = 256 bits
NEAR_BITS = 24  # Hamming distance at or under which two images are near copies (of 256 bits)
MAX_EXAMPLES = 20
#: split pairs checked, "a-b": images of ``a`` that copy an image of ``b``
PAIRS = (("test", "train"), ("test", "val"), ("val", "train"))


def pixel_sha256(pixels: np.ndarray) -> str:
    """sha256 of the decoded pixels with their shape and dtype (the exact-copy key)."""
    arr = np.ascontiguousarray(pixels)
    h = hashlib.sha256(f"{arr.shape}|{arr.dtype}|".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def perceptual_hash(pixels: np.ndarray) -> str:
    """``imagehash.phash`` (256 bits, hex) of a greyscale image given as floats in [0, 1] or uint8."""
    import imagehash
    from PIL import Image

    arr = np.asarray(pixels)
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    return str(imagehash.phash(Image.fromarray(arr), hash_size=HASH_SIZE))


def _bits(hashes: Sequence[str]) -> np.ndarray:
    """Hex hashes -> ``(n, words)`` uint64, for Hamming distances with ``np.bitwise_count``."""
    raw = np.frombuffer(b"".join(bytes.fromhex(h) for h in hashes), dtype=np.uint8)
    width = len(bytes.fromhex(hashes[0])) if hashes else 8
    return raw.reshape(len(hashes), width).view(">u8").astype(np.uint64)


def nearest(query: Sequence[str], pool: Sequence[str], block: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """For each query hash, (Hamming distance to the nearest pool hash, its index); brute force in blocks
    (20,000 x 20,000 hashes of 256 bits take seconds)."""
    if not len(query) or not len(pool):
        return np.full(len(query), np.iinfo(np.int32).max), np.full(len(query), -1)
    q, p = _bits(query), _bits(pool)
    dist = np.empty(len(q), dtype=np.int32)
    where = np.empty(len(q), dtype=np.int64)
    for start in range(0, len(q), block):
        d = np.bitwise_count(q[start : start + block, None, :] ^ p[None, :, :]).sum(axis=2)
        where[start : start + block] = d.argmin(axis=1)
        dist[start : start + block] = d.min(axis=1)
    return dist, where


def leakage_report(items: Sequence[dict[str, Any]], *, near_bits: int = NEAR_BITS) -> dict[str, Any]:
    """Exact copies, near copies and shared patients between splits.

    ``items`` are index entries: ``split``, ``source`` (shown in examples), ``pixel_sha256``, ``phash``
    and optionally ``group`` (a patient key). Per pair ``"test-train"`` etc.: how many images of the
    first split have an exact copy, a near copy (not exact), and how many patients both splits share.
    ``copies`` lists every such image with its twin (``leakage.json`` keeps it; :func:`compact` drops it
    for the index and the card), ``examples`` the first :data:`MAX_EXAMPLES`.
    """
    by_split: dict[str, list[dict[str, Any]]] = {}
    for it in items:
        by_split.setdefault(it["split"], []).append(it)
    pairs: dict[str, dict[str, int]] = {}
    copies: list[dict[str, Any]] = []
    for a, b in PAIRS:
        query, pool = by_split.get(a, []), by_split.get(b, [])
        exact_pool = {it["pixel_sha256"]: it for it in pool}
        dist, where = nearest([it["phash"] for it in query], [it["phash"] for it in pool])
        n_exact = n_near = 0
        for it, d, w in zip(query, dist, where, strict=True):
            twin = exact_pool.get(it["pixel_sha256"])
            kind = "exact" if twin is not None else "near" if d <= near_bits else None
            if kind is None:
                continue
            twin = twin if twin is not None else pool[int(w)]
            n_exact += kind == "exact"
            n_near += kind == "near"
            copies.append(
                {"kind": kind, "bits": int(d), a: it["source"], b: twin["source"], "pair": f"{a}-{b}"}
            )
        pairs[f"{a}-{b}"] = {"images": len(query), "exact": n_exact, "near": n_near}
    shared = _shared_groups(by_split)
    within = _within_split_exact(by_split)
    into_test = any(pairs[p]["exact"] + pairs[p]["near"] for p in ("test-train", "test-val")) or any(
        shared.get(p, 0) for p in ("test-train", "test-val")
    )
    return {
        "method": {
            "exact": "sha256 of the decoded pixels",
            "near": f"imagehash.phash, {HASH_SIZE * HASH_SIZE} bits, Hamming distance <= {near_bits}",
            "patients": "group keys (patient) present in two splits",
        },
        "pairs": pairs,
        "patients_shared": shared,
        "within_split_exact": within,
        "examples": copies[:MAX_EXAMPLES],
        "copies": copies,
        "leaks_into_test": bool(into_test),
    }


def _shared_groups(by_split: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    keys = {s: {it["group"] for it in its if it.get("group")} for s, its in by_split.items()}
    return {f"{a}-{b}": len(keys.get(a, set()) & keys.get(b, set())) for a, b in PAIRS}


def _within_split_exact(by_split: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    """Images that exactly repeat another image of their own split (harmless to the test figures, but
    they weigh a film twice)."""
    return {s: len(its) - len({it["pixel_sha256"] for it in its}) for s, its in by_split.items()}


def summary_lines(report: dict[str, Any]) -> list[str]:
    """What ``train/prepare.py`` prints and a card reader sees."""
    lines = []
    for pair, row in report["pairs"].items():
        a, b = pair.split("-")
        shared = report["patients_shared"].get(pair, 0)
        lines.append(
            f"  {a} vs {b}: {row['exact']} exact and {row['near']} near copies among {row['images']} "
            f"{a} images" + (f"; {shared} patient(s) in both" if shared else "")
        )
    for ex in report["examples"][:5]:
        a, b = ex["pair"].split("-")
        lines.append(f"    e.g. {ex['kind']} ({ex['bits']} bits): {ex[a]} ~ {ex[b]}")
    return lines


def compact(report: dict[str, Any]) -> dict[str, Any]:
    """The report without its full ``copies`` list (what the index and the model card keep)."""
    return {k: v for k, v in report.items() if k != "copies"}


def pair_counts(report: dict[str, Any]) -> dict[str, int]:
    """Copies (exact + near) per pair, for the card's one-line summary."""
    return {p: r["exact"] + r["near"] for p, r in report["pairs"].items()}


__all__ = [
    "HASH_SIZE",
    "MAX_EXAMPLES",
    "NEAR_BITS",
    "PAIRS",
    "compact",
    "leakage_report",
    "nearest",
    "pair_counts",
    "perceptual_hash",
    "pixel_sha256",
    "summary_lines",
]
