"""Model access for the app: load once per process, predict once per (image, model), CAM once per view.

- Models: :func:`predictor` / :func:`detector` are ``st.cache_resource`` wrappers keyed by the card
  folder and the weights' sha256, so a replaced weight file loads fresh and nothing loads twice.
  The worklist's batches go through :func:`batch_predictor`, the ONNX Runtime fast path
  (bonecls.inference.onnx, PyTorch when unavailable or ``BONECLS_ONNX=0``); CAMs always run on PyTorch.
- Predictions: cached per (image sha256, model sha256) in a process-wide LRU, so switching the CAM
  method, the colormap, the opacity or the window never runs the classifier again.
- Heat maps: cached per (image, model, method, target class), at most 1024 px a side; colormap,
  opacity and window are applied afterwards on the cached map (cheap). On a new image the CAM's
  forward pass is also the prediction: one pass, not two.
- Warm-up: :func:`warm_up` imports torch and loads every installed model in a background thread
  when the first session starts, the detector's ONNX export (:func:`box_detector`) included.
- Detections: run once per (image, model) at a low confidence floor; the page's slider filters.

``STATS`` counts the real model calls (tests and the latency caption use it).
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from bonecls.errors import BoneclsError

log = logging.getLogger("bonecls.ui")

__all__ = [
    "CAM_LABELS",
    "STATS",
    "HeatMap",
    "ModelEntry",
    "batch_predictor",
    "box_detector",
    "cached_prediction",
    "cam",
    "cam_methods",
    "clear_caches",
    "colormaps",
    "detect",
    "detector",
    "detector_eigencam",
    "display_panel",
    "installed_models",
    "invalid_cards",
    "models_for",
    "predict",
    "predict_many",
    "predictor",
    "presets_for",
    "render_overlay",
    "thumbnail",
    "warm_up",
]

#: Display name -> CAM method id (bonecls.inference.torch_cam.CAM_METHODS), in the order shown.
CAM_LABELS: dict[str, str] = {
    "Grad-CAM": "gradcam",
    "Grad-CAM++": "gradcam++",
    "HiResCAM": "hirescam",
    "XGrad-CAM": "xgradcam",
    "LayerCAM": "layercam",
    "EigenCAM": "eigencam",
    "ScoreCAM": "scorecam",
}
DEFAULT_COLORMAPS = ("jet", "inferno", "viridis", "turbo", "hot")

STATS: Counter[str] = Counter()
LAST_SECONDS: dict[str, float] = {}


class LRU:
    """A small thread-safe LRU mapping."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            return None

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


_PREDICTIONS = LRU(4096)
_HEATMAPS = LRU(48)  # each at most HEAT_MAX_SIDE a side
_DETECTIONS = LRU(1024)
# One lock per key so two sessions asking for the same new prediction compute it once.
_KEY_LOCKS: dict[Hashable, threading.Lock] = {}
_KEY_LOCKS_GUARD = threading.Lock()


def _key_lock(key: Hashable) -> threading.Lock:
    with _KEY_LOCKS_GUARD:
        if len(_KEY_LOCKS) > 4096:  # forget idle locks only: a held one guards a computation under way
            for k in [k for k, lock in _KEY_LOCKS.items() if not lock.locked()]:
                del _KEY_LOCKS[k]
        return _KEY_LOCKS.setdefault(key, threading.Lock())


_STATS_LOCK = threading.Lock()


def _count(stat: str) -> None:
    """Count one call under a lock: concurrent sessions must not lose increments."""
    with _STATS_LOCK:
        STATS[stat] += 1


def _cached(cache: LRU, key: Hashable, stat: str, compute: Callable[[], Any]) -> Any:
    value = cache.get(key)
    if value is not None:
        return value
    with _key_lock(key):
        value = cache.get(key)
        if value is None:
            t0 = time.perf_counter()
            value = compute()
            LAST_SECONDS[stat] = time.perf_counter() - t0
            _count(stat)
            cache.put(key, value)
    return value


def clear_caches() -> None:
    """Forget predictions, heat maps, detections, loaded models and the counters."""
    for cache in (_PREDICTIONS, _HEATMAPS, _DETECTIONS, _THUMBS, _DISPLAY, _PRESETS, _SCANS):
        cache.clear()
    STATS.clear()
    LAST_SECONDS.clear()
    predictor.clear()
    batch_predictor.clear()
    detector.clear()
    box_detector.clear()
    _PRELOADED.clear()
    _LOADED.clear()


# --- installed models -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelEntry:
    card: Any  # bonecls.weights.ModelCard
    path: Path  # the card's folder

    @property
    def id(self) -> str:
        return self.card.id

    @property
    def sha256(self) -> str:
        return self.card.sha256

    @property
    def task(self) -> str:
        return self.card.task

    @property
    def framework(self) -> str:
        return self.card.framework


_SCANS = LRU(4)


def _scan() -> list[Any]:
    """Every card under the weights root, parsed again only when a model folder or its card.json changed
    (each page run asks once per model picker; parsing the cards costs 5-15 ms, a ``stat`` microseconds)."""
    from bonecls.weights import CARD_FILE, scan_cards, weights_root

    root = weights_root()
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        stamp = tuple((str(p), p.stat().st_mtime_ns, *_file_stamp(p / CARD_FILE)) for p in folders)
    except OSError:  # a folder vanished while listing: read it all again
        return list(scan_cards(root))
    cached = _SCANS.get((str(root), stamp))
    if cached is None:
        cached = list(scan_cards(root))
        _SCANS.put((str(root), stamp), cached)
    return list(cached)


def _file_stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return 0, -1
    return st.st_mtime_ns, st.st_size


def installed_models() -> list[ModelEntry]:
    """Every valid card under the weights root (read each call: cheap JSON, picks up new cards)."""
    out = []
    for entry in _scan():
        card = getattr(entry, "card", None)
        if card is not None:
            out.append(ModelEntry(card=card, path=Path(entry.directory)))
    return out


def invalid_cards() -> list[tuple[Path, str]]:
    """(folder, sentence) for each card folder that could not be read."""
    return [(Path(e.path).parent, str(e.error)) for e in _scan() if getattr(e, "card", None) is None]


def models_for(task: str) -> list[ModelEntry]:
    """Cards of ``task`` (the one whose id equals the task first)."""
    found = [m for m in installed_models() if m.task == task]
    return sorted(found, key=lambda m: (m.id != task, m.id))


def cam_methods() -> dict[str, str]:
    try:
        from bonecls.inference.torch_cam import CAM_METHODS
    except ImportError:
        return dict(CAM_LABELS)
    return {label: method for label, method in CAM_LABELS.items() if method in CAM_METHODS}


def colormaps() -> list[str]:
    try:
        from bonecls.inference.heatmap import COLORMAPS
    except ImportError:
        return list(DEFAULT_COLORMAPS)
    names = list(COLORMAPS)
    preferred = [c for c in DEFAULT_COLORMAPS if c in names]
    return preferred + [c for c in names if c not in preferred]


# --- models, loaded once per process ----------------------------------------------------------------


_PRELOADED: dict[tuple[str, str, str], Any] = {}
_WARM_LOCK = threading.Lock()
_WARM_STARTED = False


_LOADED: set[tuple[str, str, str]] = set()


@functools.cache
def _limit_torch_threads() -> None:
    """Once per process, before the first model: torch's intra-op threads in the app
    (``$BONECLS_TORCH_THREADS``, default 1; 0 keeps torch's one per core). A reading is one small image
    through a small network and readers are concurrent sessions: on the 2-core machine at load 9 a
    second intra-op thread, waiting for a core, made a new image's answer 1.2 s (median) instead of
    0.12 s (issue 25). The worklist's ONNX sessions follow the same count."""
    raw = os.environ.get("BONECLS_TORCH_THREADS", "1").strip()
    try:
        threads = int(raw)
    except ValueError:
        log.warning("BONECLS_TORCH_THREADS=%r is not a whole number; keeping torch's thread count", raw)
        return
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def _construct(kind: str, card_dir: str) -> Any:
    _limit_torch_threads()
    t0 = time.perf_counter()
    if kind == "classifier":
        from bonecls.inference.load import load_classifier

        model = load_classifier(card_dir, engine="native")
    elif kind == "onnx_detector":
        from bonecls.detection.detector import OnnxDetector

        model = OnnxDetector.from_card(card_dir)
    else:
        from bonecls.detection.detector import Detector

        model = Detector.from_card(card_dir)
    LAST_SECONDS["load"] = time.perf_counter() - t0
    _count("load")
    log.info("loaded %s %s in %.2f s", kind, Path(card_dir).name, LAST_SECONDS["load"])
    return model


def _load(kind: str, card_dir: str, sha256: str) -> Any:
    """Load a model, or take the one the warm-up thread loaded (never both at once)."""
    key = (kind, card_dir, sha256)
    with _key_lock(key):
        model = _PRELOADED.pop(key, None)
        if model is None:
            model = _construct(kind, card_dir)
        _LOADED.add(key)
        return model


@st.cache_resource(show_spinner="Loading the model (once per server)…", max_entries=8)
def predictor(card_dir: str, sha256: str) -> Any:
    """The card's native classifier (:func:`bonecls.inference.load_classifier`, ``engine="native"``:
    every CAM method works on it); ``sha256`` is part of the cache key only."""
    return _load("classifier", card_dir, sha256)


@st.cache_resource(show_spinner="Loading the detector (once per server)…", max_entries=4)
def detector(card_dir: str, sha256: str) -> Any:
    """A :class:`bonecls.detection.detector.Detector`; ``sha256`` is part of the cache key only."""
    return _load("detector", card_dir, sha256)


@st.cache_resource(show_spinner="Loading the detector (once per server)…", max_entries=4)
def box_detector(card_dir: str, sha256: str) -> Any:
    """What draws the pneumonia boxes: the card's ONNX export on ONNX Runtime
    (:class:`bonecls.detection.detector.OnnxDetector`, same boxes as PyTorch: tests/test_detect.py; faster:
    BENCHMARKS.md) when the card has one and ``BONECLS_ONNX`` is not 0, else :func:`detector`.
    EigenCAM always runs on the PyTorch detector."""
    from bonecls.inference.onnx import enabled

    if enabled():
        try:
            return _load("onnx_detector", card_dir, sha256)
        except (BoneclsError, ImportError) as exc:
            log.info("ONNX boxes unavailable for %s (%s); using PyTorch", Path(card_dir).name, exc)
    return detector(card_dir, sha256)


def _has_onnx(entry: ModelEntry) -> bool:
    """Whether :func:`box_detector` will ask for this detector's ONNX export (so warm-up loads it)."""
    from bonecls.inference.onnx import enabled

    return enabled() and "onnx" in dict(entry.card.extra or {})


def warm_up() -> bool:
    """Once per process: import torch & co. and load every installed model in a background thread,
    so that the first image does not pay for it. ``BONECLS_WARMUP=0`` turns it off. Returns whether
    this call started the thread."""
    global _WARM_STARTED
    if os.environ.get("BONECLS_WARMUP", "1").strip().lower() in {"0", "false", "no", "off"}:
        return False
    with _WARM_LOCK:
        if _WARM_STARTED:
            return False
        _WARM_STARTED = True
    threading.Thread(target=_warm, name="bonecls-warm-up", daemon=True).start()
    return True


def _warm() -> None:
    t0 = time.perf_counter()
    try:
        import bonecls.inference.predictor  # noqa: F401  (torch, timm, pytorch-grad-cam)

        for entry in installed_models():
            if entry.framework == "pytorch":
                kinds = ["classifier"]
            elif entry.framework == "ultralytics":  # EigenCAM's PyTorch model, and what draws the boxes
                kinds = ["detector", *(["onnx_detector"] if _has_onnx(entry) else [])]
            else:
                continue
            for kind in kinds:
                key = (kind, str(entry.path), entry.sha256)
                with _key_lock(key):
                    if key in _LOADED or key in _PRELOADED:
                        continue
                    try:
                        _PRELOADED[key] = _construct(kind, str(entry.path))
                    except (BoneclsError, ImportError) as exc:
                        if kind != "onnx_detector":
                            raise
                        # box_detector meets the same error on first use and falls back to PyTorch
                        log.info("warm-up: no ONNX boxes for %s (%s)", entry.id, exc)
    except Exception:  # warm-up is an optimisation: the pages load (and report) on their own
        log.warning("warm-up failed; models will load on first use", exc_info=True)
    # torch & co. and the models (~0.5 M objects) live as long as the server: out of the collector's
    # sight, a full collection walks only what came after (else 0.2-0.5 s with the GIL held; issue 25)
    gc.freeze()
    log.info("warm-up done in %.1f s", time.perf_counter() - t0)


def _predictor_for(entry: ModelEntry) -> Any:
    return predictor(str(entry.path), entry.sha256)


@st.cache_resource(show_spinner=False, max_entries=8)
def batch_predictor(card_dir: str, sha256: str) -> Any:
    """Predict-only engine for the worklist (``engine="auto"``): the ONNX Runtime twin of
    :func:`predictor`, wrapping its weights (measured faster than PyTorch on CPU for batches) or,
    when it cannot be built or ``BONECLS_ONNX=0``, that predictor itself. CAMs never use it."""
    from bonecls.inference.load import load_classifier

    return load_classifier(card_dir, engine="auto", native=predictor(card_dir, sha256))


# --- cached results ---------------------------------------------------------------------------------


def predict(entry: ModelEntry, rg: Any) -> Any:
    """The :class:`~bonecls.inference.results.Prediction` for (image, model), computed at most once."""
    return _cached(
        _PREDICTIONS, (rg.sha256, entry.sha256), "predict", lambda: _predictor_for(entry).predict(rg)
    )


def predict_many(entry: ModelEntry, rgs: Sequence[Any], batch_size: int = 16) -> list[Any]:
    """Predictions for many images; cache misses go through ``predict_batch`` in chunks."""
    out: list[Any] = [_PREDICTIONS.get((rg.sha256, entry.sha256)) for rg in rgs]
    missing = [i for i, p in enumerate(out) if p is None]
    if missing:
        model = batch_predictor(str(entry.path), entry.sha256)
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            t0 = time.perf_counter()
            preds = model.predict_batch([rgs[i] for i in chunk])
            LAST_SECONDS["predict_batch"] = time.perf_counter() - t0
            _count("predict_batch")
            for i, pred in zip(chunk, preds, strict=True):
                _PREDICTIONS.put((rgs[i].sha256, entry.sha256), pred)
                out[i] = pred
    return out


@dataclass(frozen=True)
class HeatMap:
    heatmap: np.ndarray  # float32 (H, W) in [0, 1], at the radiograph's size
    target_class: str
    warnings: tuple[str, ...] = ()


def cached_prediction(entry: ModelEntry, rg: Any) -> Any | None:
    return _PREDICTIONS.get((rg.sha256, entry.sha256))


def cam(entry: ModelEntry, rg: Any, method: str, target_class: str | None = None) -> HeatMap:
    """Heat map for (image, model, method, target class), computed at most once.

    ``target_class`` None explains the predicted class. When the image has no prediction yet, the
    CAM's own forward pass provides it (and caches it), so a new image costs one forward pass for
    both the prediction and its heat map, not two.
    """
    pred_key = (rg.sha256, entry.sha256)
    if target_class is None:
        known = _PREDICTIONS.get(pred_key)
        if known is not None:
            target_class = known.label
    if target_class is not None:
        key = (rg.sha256, entry.sha256, method, target_class)
        return _cached(_HEATMAPS, key, "explain", lambda: _explain(entry, rg, method, target_class))
    with _key_lock(pred_key):  # first view of this image: explain the predicted class
        known = _PREDICTIONS.get(pred_key)
        if known is not None:
            target_class = known.label
        else:
            t0 = time.perf_counter()
            heat = _explain(entry, rg, method, None)
            LAST_SECONDS["explain"] = time.perf_counter() - t0
            _count("explain")
            _HEATMAPS.put((rg.sha256, entry.sha256, method, heat.target_class), heat)
            return heat
    return cam(entry, rg, method, target_class)


HEAT_MAX_SIDE = 1024


def _shrink_heat(heatmap: Any) -> np.ndarray:
    """Heat maps are smooth: keep at most HEAT_MAX_SIDE a side in the cache (the overlay resizes)."""
    heat = np.asarray(heatmap, dtype=np.float32)
    h, w = heat.shape[:2]
    if max(h, w) <= HEAT_MAX_SIDE:
        return heat
    from bonecls.inference.heatmap import resize_heatmap

    scale = HEAT_MAX_SIDE / max(h, w)
    return resize_heatmap(heat, (max(1, round(h * scale)), max(1, round(w * scale))))


def _explain(entry: ModelEntry, rg: Any, method: str, target_class: str | None) -> HeatMap:
    explanation = _predictor_for(entry).explain(rg, method=method, target_class=target_class)
    key = (rg.sha256, entry.sha256)
    if _PREDICTIONS.get(key) is None:  # the CAM's forward pass is a prediction too
        _PREDICTIONS.put(key, explanation.prediction)
    return HeatMap(
        _shrink_heat(explanation.heatmap),
        str(explanation.target_class),
        tuple(getattr(explanation, "warnings", ()) or ()),
    )


def detect(entry: ModelEntry, rg: Any, floor: float = 0.05) -> list[Any]:
    """All boxes at confidence >= ``floor`` (the page filters with its slider), computed at most once;
    none for an image outside the detector's scope (:func:`detect_scoped` says why)."""
    return list(detect_scoped(entry, rg, floor).boxes)


def detect_scoped(entry: ModelEntry, rg: Any, floor: float = 0.05) -> Any:
    """Boxes through the detector's scope gate (``bonecls.detection.detector.ScopedBoxes``), computed at
    most once, on :func:`box_detector`'s engine: ONNX Runtime when its graph carries the scope-feature
    output (``scope_ready``), which the gate reads from the same run, else the PyTorch detector (an old
    export of a card with a learned scope)."""

    def compute() -> Any:
        engine = box_detector(str(entry.path), entry.sha256)
        if entry.card.scope is not None and not getattr(engine, "scope_ready", True):
            engine = detector(str(entry.path), entry.sha256)
        return engine.detect_scoped(rg, conf=floor)

    return _cached(_DETECTIONS, (rg.sha256, entry.sha256, floor), "detect", compute)


def detector_eigencam(entry: ModelEntry, rg: Any) -> HeatMap:
    def compute() -> HeatMap:
        result = detector(str(entry.path), entry.sha256).eigencam(rg)
        heat = _shrink_heat(getattr(result, "heatmap", result))
        return HeatMap(heat, "", tuple(getattr(result, "warnings", ()) or ()))

    return _cached(_HEATMAPS, (rg.sha256, entry.sha256, "eigencam-det", ""), "explain", compute)


_THUMBS = LRU(1024)
_DISPLAY = LRU(32)
VIEW_MAX_SIDE = 1024


def display_panel(rg: Any, window: tuple[float, float] | None, pixels: np.ndarray) -> tuple[np.ndarray, Any]:
    """(shrunk uint8 display image, encoded viewer panel) for an image at a window, cached."""
    from bonecls.ui.figures import encode_panel, shrink

    key = (rg.sha256, None if window is None else (round(window[0], 6), round(window[1], 6)))
    cached = _DISPLAY.get(key)
    if cached is None:
        small = shrink(pixels, VIEW_MAX_SIDE)
        cached = (small, encode_panel(small, original_size=tuple(np.asarray(pixels).shape[:2])))
        _DISPLAY.put(key, cached)
    return cached


_PRESETS = LRU(256)


def presets_for(rg: Any, compute: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """The viewer's window presets for an image (``compute(rg)``, bonecls.imaging.presets), once per image."""
    cached = _PRESETS.get(rg.sha256)
    if cached is None:
        cached = compute(rg)
        _PRESETS.put(rg.sha256, cached)
    return cached


def thumbnail(rg: Any, size: int = 128) -> np.ndarray:
    """A small uint8 (h, w) preview of the display pixels (cached per image)."""
    cached = _THUMBS.get((rg.sha256, size))
    if cached is not None:
        return cached
    from PIL import Image

    pix = np.clip(np.asarray(rg.pixels, dtype=np.float32), 0.0, 1.0)
    step = max(1, max(pix.shape[:2]) // (size * 2))
    img = Image.fromarray(np.rint(pix[::step, ::step] * 255.0).astype(np.uint8))
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    thumb = np.asarray(img)
    _THUMBS.put((rg.sha256, size), thumb)
    return thumb


def render_overlay(pixels: np.ndarray, heatmap: np.ndarray, colormap: str, opacity: float) -> np.ndarray:
    """The heat map blended on ``pixels`` (the currently windowed image, possibly shrunk), uint8 RGB.

    The heat map is resized to ``pixels`` when their sizes differ (the viewer works on a shrunk copy).
    """
    from bonecls.inference.heatmap import overlay, resize_heatmap

    pix = np.asarray(pixels)
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.shape != pix.shape[:2]:
        heat = resize_heatmap(heat, pix.shape[:2])
    return np.asarray(overlay(pix, heat, colormap=colormap, opacity=opacity), dtype=np.uint8)
