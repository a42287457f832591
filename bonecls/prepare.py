"""Dask preparation: decode every image once into uint8 shards + ``index.json``.

``prepare(source, out, size=...)`` reads a dataset with :mod:`bonecls.data` (any layout), then in
parallel on a Dask cluster

1. probes every image header (original sizes -> a size/aspect report and a recommended resolution:
   near the median short side, capped, a multiple of 32 -- how seed 004 chose its resolution);
2. decodes with :func:`bonecls.imaging.load_radiograph` (full bit depth, DICOM windowing), resizes in
   float with ``cv2.INTER_AREA`` to ``size x size`` and quantizes once to uint8.

The client writes the results into ``shard_NNNNN.npy`` files (``(n, size, size)`` uint8, ``shard_size``
images each; open with ``np.load(path, mmap_mode="r")``) and finally ``index.json`` (atomically): split,
class names, label, shard/offset, source path, a hash of the source file's size + mtime, boxes, the
class balance, skipped images with reasons, the size report and a fingerprint of inputs + parameters.
Re-running with unchanged inputs and parameters does nothing and prints "up to date".

Each item also carries its patient ``group`` and ``study`` keys (hashed for DICOM, see
:mod:`bonecls.data.groups`) and its leakage keys (sha256 of the decoded pixels, perceptual hash); the
index names the split's grouping and holds the leakage report, also written to ``leakage.json``. A test
split that copies training/validation images or shares their patients is refused (:class:`LeakageError`,
no index written) unless ``allow_leakage`` -- see :mod:`bonecls.leakage`. ``scope_labels`` sums up per
split the body parts, views, modalities and age groups the images' labels name (codes and counts only,
:mod:`bonecls.data.scope_labels`): the trainers declare the model's scope from its ``train`` entry.

Cluster: a ``distributed.LocalCluster(n_workers, threads_per_worker=1, processes=True)`` by default;
``scheduler="tcp://host:8786"`` connects to a running scheduler (the workers need bonecls installed and
the dataset at the same path); ``"sync"``/``"threads"`` use Dask's local schedulers (tests, debugging).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bonecls.data import Dataset, Record, read_dataset
from bonecls.data.scope_labels import scope_labels_by_split
from bonecls.errors import DataError, LeakageError
from bonecls.leakage import compact, leakage_report, pair_counts, summary_lines

log = logging.getLogger(__name__)

INDEX_NAME = "index.json"
LEAKAGE_NAME = "leakage.json"
INDEX_FORMAT = "bonecls-shards/1"
PREPARE_VERSION = 1  # bump when the decoded pixels would change for the same inputs
DEFAULT_SHARD_SIZE = 1024
DEFAULT_SIZE_CAP = 512


# ------------------------------------------------------------------------------------- per-image work


def _probe(path: str) -> tuple[int, int] | str:
    from bonecls.data import probe_image

    try:
        return probe_image(Path(path))
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


def probe_chunk(paths: Sequence[str]) -> list[tuple[int, int] | str]:
    """(height, width) per path, or the reason it cannot be read."""
    return [_probe(p) for p in paths]


def _decode(path: str) -> np.ndarray:
    """Full bit depth (windowed, MONOCHROME2) float pixels in [0, 1], (H, W)."""
    from bonecls.imaging import load_radiograph

    px = np.asarray(load_radiograph(path).pixels, dtype=np.float32)
    return px.mean(axis=-1) if px.ndim == 3 else px  # defensive: the contract says (H, W)


def _resize(px: np.ndarray, size: int) -> np.ndarray:
    import cv2

    interp = cv2.INTER_AREA if min(px.shape) >= size else cv2.INTER_LINEAR
    small = cv2.resize(px, (size, size), interpolation=interp)
    return np.clip(np.rint(small * 255.0), 0, 255).astype(np.uint8)


def decode_resize(path: str, size: int) -> np.ndarray:
    """Decode at full bit depth (windowed, MONOCHROME2), resize in float with INTER_AREA, quantize once."""
    return _resize(_decode(path), size)


def decode_chunk(
    paths: Sequence[str], size: int
) -> tuple[np.ndarray, list[str | None], list[tuple[str, str] | None]]:
    """A ``(len(paths), size, size)`` uint8 block, per image ``None`` or the decode error, and per image
    its leakage keys (sha256 of the decoded pixels, perceptual hash; see :mod:`bonecls.leakage`) --
    computed here, from the full-resolution pixels, so each image is decoded once."""
    from bonecls.leakage import perceptual_hash, pixel_sha256

    out = np.zeros((len(paths), size, size), dtype=np.uint8)
    errors: list[str | None] = []
    keys: list[tuple[str, str] | None] = []
    for i, p in enumerate(paths):
        try:
            px = _decode(p)
            out[i] = _resize(px, size)
            keys.append((pixel_sha256(px), perceptual_hash(px)))
            errors.append(None)
        except Exception as exc:  # any decoder failure skips the image, with its reason
            errors.append(f"{type(exc).__name__}: {exc}")
            keys.append(None)
    return out, errors, keys


# -------------------------------------------------------------------------------------------- executor


class Executor:
    """Runs ``fn(chunk)`` over chunks on Dask and yields ``(chunk_index, result)`` as they finish."""

    def __init__(self, scheduler: str | None = None, n_workers: int | None = None):
        self.scheduler = scheduler
        self.client = None
        self.cluster = None
        self.n_workers = n_workers or max(1, min(os.cpu_count() or 1, 8))
        if scheduler in (None, "local", "processes-cluster"):
            from distributed import Client, LocalCluster

            self.cluster = LocalCluster(
                n_workers=self.n_workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
            self.client = Client(self.cluster)
        elif scheduler.startswith(("tcp://", "tls://", "ucx://", "inproc://")):
            from distributed import Client

            self.client = Client(scheduler)
            self.n_workers = max(1, sum(self.client.nthreads().values()))
        elif scheduler not in ("sync", "synchronous", "threads"):
            raise DataError(
                f"Unknown scheduler {scheduler!r}; give nothing for a local cluster, a tcp:// address, "
                "'threads' or 'sync'."
            )

    @property
    def description(self) -> str:
        if self.client is not None:
            return f"Dask distributed ({self.client.scheduler.address}, {self.n_workers} worker thread(s))"
        return f"Dask {self.scheduler} scheduler"

    def map(self, fn: Callable, chunks: Sequence[Any], *args: Any) -> Iterator[tuple[int, Any]]:
        if self.client is not None:
            from distributed import as_completed

            window = max(2, 4 * self.n_workers)  # bounded in-flight results (memory)
            pending = {}
            todo = iter(enumerate(chunks))
            for i, chunk in todo:
                pending[self.client.submit(fn, chunk, *args, pure=False)] = i
                if len(pending) >= window:
                    break
            ac = as_completed(list(pending))
            for fut in ac:
                result = fut.result()
                yield pending.pop(fut), result
                fut.release()
                nxt = next(todo, None)
                if nxt is not None:
                    new = self.client.submit(fn, nxt[1], *args, pure=False)
                    pending[new] = nxt[0]
                    ac.add(new)
            return
        import dask

        sched = "sync" if self.scheduler in ("sync", "synchronous") else "threads"
        window = 1 if sched == "sync" else max(2, 2 * (os.cpu_count() or 1))
        items = list(enumerate(chunks))
        for start in range(0, len(items), window):
            part = items[start : start + window]
            results = dask.compute(*[dask.delayed(fn)(c, *args) for _, c in part], scheduler=sched)
            for (i, _), r in zip(part, results, strict=True):
                yield i, r

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------- size report


def size_report(sizes: Sequence[tuple[int, int]], cap: int = DEFAULT_SIZE_CAP, multiple: int = 32) -> dict:
    """Distribution of original sizes and aspect ratios and the recommended square resize.

    Recommended: the median short side rounded to a multiple of ``multiple``, at least ``multiple`` and
    at most ``cap`` -- upsampling smaller images adds nothing and larger inputs cost memory/time.
    """
    if not sizes:
        return {"count": 0, "recommended_size": None}
    arr = np.asarray(sizes, dtype=float)
    h, w = arr[:, 0], arr[:, 1]
    short = np.minimum(h, w)
    aspect = w / h
    qs = (0, 5, 25, 50, 75, 95, 100)

    def pct(x: np.ndarray) -> dict[str, float]:
        return {f"p{q}": float(np.percentile(x, q)) for q in qs}

    edges = [0, 0.5, 0.75, 0.9, 1.1, 1.33, 2.0, math.inf]
    hist = np.histogram(aspect, bins=edges)[0]
    labels = ["<0.5", "0.5-0.75", "0.75-0.9", "0.9-1.1", "1.1-1.33", "1.33-2", ">=2"]
    median_short = float(np.median(short))
    rec = int(min(cap, max(multiple, multiple * round(median_short / multiple))))
    return {
        "count": len(sizes),
        "height": pct(h),
        "width": pct(w),
        "short_side": pct(short),
        "aspect_w_over_h": pct(aspect),
        "aspect_histogram": dict(zip(labels, map(int, hist), strict=True)),
        "recommended_size": rec,
        "rule": f"median short side {median_short:.0f} px rounded to a multiple of {multiple}, "
        f"capped at {cap}",
    }


def format_size_report(rep: dict) -> str:
    if not rep.get("count"):
        return "No images to report sizes for."
    s, a = rep["short_side"], rep["aspect_w_over_h"]
    lines = [
        f"Original sizes of {rep['count']} images:",
        *(
            f"  {k:<7} median {rep[k]['p50']:.0f} px (p5 {rep[k]['p5']:.0f}, p95 {rep[k]['p95']:.0f})"
            for k in ("height", "width")
        ),
        f"  short side min {s['p0']:.0f} / median {s['p50']:.0f} / max {s['p100']:.0f} px",
        f"  aspect (w/h) p5 {a['p5']:.2f} / median {a['p50']:.2f} / p95 {a['p95']:.2f}; "
        + ", ".join(f"{k}: {v}" for k, v in rep["aspect_histogram"].items() if v),
        f"Recommended resize: {rep['recommended_size']} px ({rep['rule']}).",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- fingerprint


def file_hash(path: Path) -> str:
    """A cheap change detector: sha256 of the file's size and mtime (not its bytes)."""
    st = path.stat()
    return hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]


def fingerprint(ds: Dataset, params: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(params, sort_keys=True).encode())
    for rec in sorted(ds.records, key=lambda r: str(r.path)):
        h.update(f"{rec.path}|{rec.label}|{rec.split}|{file_hash(rec.path)}\n".encode())
    for s in ds.skipped:
        h.update(f"skip|{s.path}\n".encode())
    for p in ds.label_files:
        h.update(f"label|{p}|{file_hash(p)}\n".encode())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ main


@dataclass
class PrepareResult:
    out: Path
    index: dict
    up_to_date: bool
    seconds: float = 0.0
    skipped: list[dict] = field(default_factory=list)


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_index(out: str | os.PathLike) -> dict:
    path = Path(out) / INDEX_NAME
    if not path.is_file():
        raise DataError(
            f"{out} holds no prepared dataset ({INDEX_NAME} is missing); run train/prepare.py first."
        )
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is damaged ({exc.msg}); run train/prepare.py again.") from None
    if index.get("format") != INDEX_FORMAT:
        raise DataError(f"{path} is not a bonecls shard index (format {index.get('format')!r}).")
    return index


def _chunks(seq: Sequence[Any], n: int) -> list[list[Any]]:
    return [list(seq[i : i + n]) for i in range(0, len(seq), n)]


def _progress(total: int, desc: str, enabled: bool):
    from bonecls.progress import progress_bar

    return progress_bar(total=total, desc=desc, unit="img", enabled=enabled)


def prepare(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    size: int | str | None = "auto",
    layout: str = "auto",
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    shard_size: int = DEFAULT_SHARD_SIZE,
    chunk_size: int = 32,
    size_cap: int = DEFAULT_SIZE_CAP,
    scheduler: str | None = None,
    n_workers: int | None = None,
    force: bool = False,
    allow_leakage: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> PrepareResult:
    """Prepare ``source`` into ``out`` (see the module docstring). ``size="auto"`` uses the recommendation.

    Raises :class:`~bonecls.errors.LeakageError` when the test split copies training or validation
    images or shares their patients, unless ``allow_leakage`` (see :mod:`bonecls.leakage`)."""
    t0 = time.perf_counter()
    source, out = Path(source).resolve(), Path(out).resolve()
    if shard_size < 1 or chunk_size < 1:
        raise DataError("shard_size and chunk_size must be positive.")
    if isinstance(size, str) and size != "auto":
        size = int(size)
    if isinstance(size, int) and not 8 <= size <= 4096:
        raise DataError(f"The image size must be between 8 and 4096 px; got {size}.")
    ds = read_dataset(source, layout, verify=False, fractions=fractions, seed=seed)
    params = {
        "version": PREPARE_VERSION,
        "size": size,
        "size_cap": size_cap,
        "layout": ds.layout,
        "fractions": list(fractions),
        "seed": seed,
        "shard_size": shard_size,
    }
    fp = fingerprint(ds, params)
    index_path = out / INDEX_NAME
    if not force and index_path.is_file():
        try:
            old = load_index(out)
        except DataError:
            old = {}
        fresh = old.get("fingerprint") == fp and "leakage" in old
        if fresh and all((out / s["file"]).is_file() for s in old.get("shards", [])):
            if old["leakage"]["leaks_into_test"] and not allow_leakage:
                raise LeakageError(leakage_sentence(old["leakage"], out / LEAKAGE_NAME))
            echo(f"{out} is up to date ({len(old['items'])} images); nothing to do.")
            return PrepareResult(out, old, True, time.perf_counter() - t0, old.get("skipped", []))

    out.mkdir(parents=True, exist_ok=True)
    probe = out / f".write-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as exc:
        raise DataError(f"Cannot write to the output folder {out} ({exc.strerror}).") from None

    records: list[Record] = list(ds.records)
    skipped = [{"source": str(s.path), "reason": s.reason} for s in ds.skipped]
    with Executor(scheduler, n_workers) as ex:
        echo(f"Preparing {len(records)} images from {source} ({ds.layout}) with {ex.description}.")
        # 1. headers -> sizes
        paths = [str(r.path) for r in records]
        probed: list[Any] = [None] * len(paths)
        with _progress(len(paths), "probe", progress) as bar:
            for i, res in ex.map(probe_chunk, _chunks(paths, max(chunk_size, 64))):
                probed[i * max(chunk_size, 64) : i * max(chunk_size, 64) + len(res)] = res
                bar.update(len(res))
        good: list[tuple[Record, tuple[int, int]]] = []
        for rec, res in zip(records, probed, strict=True):
            if isinstance(res, str):
                skipped.append({"source": str(rec.path), "reason": res})
                log.warning("Skipping unreadable image %s: %s", rec.path, res)
            else:
                good.append((rec, (int(res[0]), int(res[1]))))
        report = size_report([s for _, s in good], cap=size_cap)
        echo(format_size_report(report))
        target = int(report["recommended_size"] or 224) if size in (None, "auto") else int(size)
        if size not in (None, "auto") and report["recommended_size"] and target != report["recommended_size"]:
            echo(f"Using --size {target} as asked (recommended {report['recommended_size']}).")

        # 2. decode + resize -> shards (split order: train, val, test; stable within a split)
        order = {"train": 0, "val": 1, "test": 2}
        good.sort(key=lambda g: order.get(g[0].split or "train", 3))
        index_path.unlink(missing_ok=True)  # a folder without index.json is "not prepared" until we finish
        decoded = _decode_to_shards(
            ex, [str(r.path) for r, _ in good], out, target, shard_size, chunk_size, progress
        )
    shards, errors, keys = decoded

    items = []
    for g, (rec, (h, w)) in enumerate(good):
        if g not in keys:
            skipped.append({"source": str(rec.path), "reason": errors.get(g, "not decoded")})
            log.warning("Skipping undecodable image %s: %s", rec.path, errors.get(g))
            continue
        rel = os.path.relpath(rec.path, source)
        items.append(
            {
                "split": rec.split,
                "label": rec.label,
                "class_name": rec.class_name,
                "shard": g // shard_size,
                "offset": g % shard_size,
                "source": rel,
                "file_hash": file_hash(rec.path),
                "original_size": [h, w],
                "boxes": [b.to_dict() for b in rec.boxes],
                "group": rec.group,
                "study": rec.study,
                "pixel_sha256": keys[g][0],
                "phash": keys[g][1],
            }
        )
    leakage = _check_leakage(items, out, allow_leakage, echo)
    kept = [rec for g, (rec, _) in enumerate(good) if g in keys]
    scope_labels = scope_labels_by_split(kept, ds.layout, source)  # codes per split, for the card
    balance: dict[str, dict[str, int]] = {}
    for it in items:
        row = balance.setdefault(it["split"], dict.fromkeys(ds.class_names, 0))
        row[it["class_name"]] += 1
    index = {
        "format": INDEX_FORMAT,
        "fingerprint": fp,
        "params": params,
        "source": str(source),
        "layout": ds.layout,
        "size": target,
        "channels": 1,
        "dtype": "uint8",
        "class_names": list(ds.class_names),
        "shards": shards,
        "items": items,
        "skipped": skipped,
        "balance": balance,
        "size_report": report,
        "grouping": ds.group_info.to_dict(),
        "leakage": leakage,
        "scope_labels": scope_labels,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _write_json_atomic(index_path, index)
    seconds = time.perf_counter() - t0
    echo(f"Wrote {len(items)} images in {len(shards)} shard(s) to {out} in {seconds:.1f} s.")
    for split, row in balance.items():
        total = sum(row.values()) or 1
        echo(f"  {split}: " + ", ".join(f"{c} {k} ({100 * k / total:.1f}%)" for c, k in row.items()))
    if skipped:
        echo(f"Skipped {len(skipped)} image(s):")
        for s in skipped[:20]:
            echo(f"  {s['source']}: {s['reason']}")
        if len(skipped) > 20:
            echo(f"  ... and {len(skipped) - 20} more (listed in {index_path})")
    return PrepareResult(out, index, False, seconds, skipped)


def _decode_to_shards(
    ex: Executor,
    paths: list[str],
    out: Path,
    target: int,
    shard_size: int,
    chunk_size: int,
    progress: bool,
) -> tuple[list[dict], dict[int, str], dict[int, tuple[str, str]]]:
    """Decode ``paths`` on the cluster into fresh ``shard_NNNNN.npy`` memmaps (image ``g`` at shard
    ``g // shard_size``, offset ``g % shard_size``); returns the shard list, the decode error of each
    image that failed and the leakage keys of each image that did not."""
    for old_shard in out.glob("shard_*.npy"):
        old_shard.unlink()
    n = len(paths)
    shards, memmaps = [], []
    for k in range(max(1, math.ceil(n / shard_size))):
        count = min(shard_size, n - k * shard_size)
        name = f"shard_{k:05d}.npy"
        shards.append({"file": name, "count": count})
        memmaps.append(
            np.lib.format.open_memmap(out / name, mode="w+", dtype=np.uint8, shape=(count, target, target))
        )
    errors: dict[int, str] = {}
    keys: dict[int, tuple[str, str]] = {}
    with _progress(n, f"decode {target}px", progress) as bar:
        for ci, (block, errs, chunk_keys) in ex.map(decode_chunk, _chunks(paths, chunk_size), target):
            for j, err in enumerate(errs):
                g = ci * chunk_size + j
                if err is not None:
                    errors[g] = err
                    continue
                memmaps[g // shard_size][g % shard_size] = block[j]
                keys[g] = chunk_keys[j]
            bar.update(len(errs))
    for mm in memmaps:
        mm.flush()
    return shards, errors, keys


def _check_leakage(
    items: list[dict], out: Path, allow_leakage: bool, echo: Callable[[str], None]
) -> dict[str, Any]:
    """The leakage report (:mod:`bonecls.leakage`), written to ``leakage.json`` and printed; raises
    :class:`LeakageError` when the test split copies training or validation images (or shares their
    patients) and ``allow_leakage`` is false -- before ``index.json`` exists, so the set stays unprepared."""
    report = leakage_report(items)
    report["allowed"] = bool(allow_leakage)
    _write_json_atomic(out / LEAKAGE_NAME, report)
    echo("Leakage check (exact copies, near copies, shared patients):")
    for line in summary_lines(report):
        echo(line)
    if report["leaks_into_test"] and not allow_leakage:
        raise LeakageError(leakage_sentence(report, out / LEAKAGE_NAME))
    if report["leaks_into_test"]:
        echo("warning: the test split copies training data (--allow-leakage); the card will say so.")
    return compact(report)


def leakage_sentence(report: dict[str, Any], where: Path) -> str:
    """The refusal a trainer reads: how much of test leaks, where the list is, what to do."""
    copies = pair_counts(report)
    leaked = copies["test-train"] + copies["test-val"]
    shared = report["patients_shared"]["test-train"] + report["patients_shared"]["test-val"]
    return (
        f"The test split holds {leaked} exact or near copies of training/validation images and "
        f"{shared} patient(s) who also appear in training/validation (listed in {where}); its figures "
        "would be optimistic. Remove the copies or re-split, or pass --allow-leakage to prepare it "
        "anyway (the model card will then say so)."
    )


def clean(out: str | os.PathLike) -> None:
    """Remove a prepared folder's shards and index (only files this module writes)."""
    out = Path(out)
    for p in [*out.glob("shard_*.npy"), out / INDEX_NAME, out / LEAKAGE_NAME]:
        p.unlink(missing_ok=True)
    if out.is_dir() and not any(out.iterdir()):
        shutil.rmtree(out)
