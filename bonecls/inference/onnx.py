"""ONNX Runtime predict-only fast path for the PyTorch classifiers, with a clean PyTorch fallback.

Why: a worklist or a folder of files needs predictions only (no CAM), and ONNX Runtime runs the
same graph with fused kernels and less per-call overhead than eager PyTorch. Whether that is
actually faster depends on the model, the batch size and the CPU, so callers ask
:func:`bonecls.inference.load_classifier` for ``engine="auto"``, which goes through
:func:`fast_predictor`: an :class:`OnnxPredictor` only when one can be built and the plain
:class:`~bonecls.inference.predictor.Predictor` otherwise (onnxruntime not installed, export failed,
parity check failed). Either object answers ``predict`` / ``predict_batch`` with the same
:class:`~bonecls.inference.results.Prediction` objects, built by the same ``Predictor.preprocess`` and
``Predictor.prediction_from_logits``; ``explain`` (CAMs) always runs on the PyTorch model.

The exported graph (fp32, dynamic batch, fixed card input size) is cached outside the repository
under ``$BONECLS_CACHE/onnx-classifiers/<weights sha256>/`` (default ``~/.cache/bonecls``), so it is
exported once per weight file. Beside it a JSON sidecar records the ONNX file's own sha256; the
bytes are hashed and handed to ONNX Runtime from the same buffer, so a damaged or tampered file is
never loaded: it is deleted and exported again. As a second line of defence, every load runs one
probe batch through both engines and refuses the ONNX graph unless the probabilities agree within
``PARITY_TOL`` (this also catches a consistent rewrite of both files, and exporter bugs).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bonecls.errors import BoneclsError
from bonecls.inference.predictor import Predictor, predict_in_chunks
from bonecls.inference.results import Prediction
from bonecls.weights import sha256_bytes

__all__ = [
    "CACHE_DIRNAME",
    "PARITY_TOL",
    "FastPathError",
    "OnnxPredictor",
    "enabled",
    "fast_predictor",
    "onnx_cache_dir",
    "onnxruntime_available",
]

log = logging.getLogger(__name__)

CACHE_DIRNAME = "onnx-classifiers"
OPSET = 17
FORMAT_VERSION = 2  # bump when the export recipe changes: old cache entries are then ignored
# (2: LocalStandardize blurs with band matrices instead of one-channel convolutions)
PARITY_TOL = 1e-4  # max |p_onnx - p_torch| on the probe batch
_PROBE_BATCH = 2
_EXPORT_LOCK = threading.Lock()


class FastPathError(BoneclsError):
    """The ONNX Runtime fast path cannot be used for this model; the PyTorch path still works."""


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def onnx_cache_dir(weights_sha256: str) -> Path:
    """``$BONECLS_CACHE/onnx-classifiers/<weights sha256>`` (the same cache root as phantoms and YOLO)."""
    from bonecls.paths import cache_root

    return cache_root() / CACHE_DIRNAME / weights_sha256


def _entry_paths(predictor: Predictor) -> tuple[Path, Path]:
    card = predictor.card
    if not card.sha256:
        raise FastPathError(f"Model '{card.id}' has no recorded weights checksum; no ONNX cache key.")
    stem = f"s{card.input_size}-c{card.in_chans}-opset{OPSET}-v{FORMAT_VERSION}"
    layers = predictor.scope_guard.layers
    if layers:  # a graph with the scope gate's features as a second output is another file
        stem += "-scope" + sha256_bytes(json.dumps(list(layers)).encode("utf-8"))[:10]
    folder = onnx_cache_dir(card.sha256)
    return folder / f"{stem}.onnx", folder / f"{stem}.json"


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


class _LogitsAndFeatures(torch.nn.Module):
    """The model with the scope gate's pooled features as a second output: the tracer records what
    the predictor's :class:`~bonecls.scope.features.FeatureTap` hooks take during the forward pass,
    so ONNX Runtime computes them in the same run as the logits."""

    def __init__(self, model: torch.nn.Module, tap: Any) -> None:
        super().__init__()
        self.model = model
        self.tap = tap

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.tap.clear()
        logits = self.model(x)
        return logits, self.tap.take()


def _export_bytes(predictor: Predictor) -> bytes:
    """The predictor's model as ONNX bytes: fp32, input ``x`` (N, C, S, S) with a dynamic batch axis;
    outputs ``logits`` and, when its scope gate has a learned part, ``features`` (N, D)."""
    import io

    card = predictor.card
    dummy = torch.zeros(_PROBE_BATCH, card.in_chans, card.input_size, card.input_size)
    buf = io.BytesIO()
    tap = predictor._tap
    # eval(): the exporter restores the wrapper's mode afterwards, and with it the shared model's
    graph = predictor.model if tap is None else _LogitsAndFeatures(predictor.model, tap).eval()
    outputs = ["logits"] if tap is None else ["logits", "features"]
    # The write lock: explain() attaches hooks to the shared model; tracing must not see them.
    with predictor._lock.write(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter and tracer chatter
        try:
            torch.onnx.export(
                graph,
                (dummy,),
                buf,
                dynamo=False,  # the TorchScript exporter: no onnxscript dependency at runtime
                input_names=["x"],
                output_names=outputs,
                dynamic_axes={"x": {0: "batch"}, **{name: {0: "batch"} for name in outputs}},
                opset_version=OPSET,
                do_constant_folding=True,
            )
        except Exception as exc:  # any exporter failure means "no fast path", never a crash
            raise FastPathError(
                f"Model '{card.id}' ({card.architecture}) could not be exported to ONNX "
                f"({type(exc).__name__}); predictions use PyTorch."
            ) from exc
    return buf.getvalue()


def _read_cached(onnx_path: Path, meta_path: Path, weights_sha256: str) -> bytes | None:
    """The cached ONNX bytes if the sidecar names them (sha256 verified on the bytes read), else None."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        data = onnx_path.read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("weights_sha256") != weights_sha256:
        return None
    if sha256_bytes(data) != meta.get("onnx_sha256"):
        log.warning("Cached ONNX file %s does not match its recorded sha256; exporting it again.", onnx_path)
        return None
    return data


def _store(onnx_path: Path, meta_path: Path, predictor: Predictor, data: bytes) -> None:
    card = predictor.card
    meta = {
        "model_id": card.id,
        "weights_sha256": card.sha256,
        "onnx_sha256": sha256_bytes(data),
        "architecture": card.architecture,
        "input_size": card.input_size,
        "in_chans": card.in_chans,
        "scope_layers": list(predictor.scope_guard.layers),
        "opset": OPSET,
        "format_version": FORMAT_VERSION,
        "torch": torch.__version__,
        "exported": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    _atomic_write(onnx_path, data)  # ONNX first: a sidecar never names a file that is not there yet
    _atomic_write(meta_path, json.dumps(meta, indent=1).encode("utf-8"))


def _discard(*paths: Path) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            p.unlink()


def _session(data: bytes, threads: int | None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    # no busy-waiting between runs: the app shares its few cores with PyTorch and Streamlit
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT's own exception types (InvalidGraph, Fail, ...)
        raise FastPathError(
            f"ONNX Runtime could not load the exported graph ({type(exc).__name__})."
        ) from exc


class OnnxPredictor:
    """Predict-only ONNX Runtime twin of a :class:`Predictor`; CAMs are delegated to the PyTorch one.

    Build with :meth:`from_predictor` (or use :func:`fast_predictor`, which falls back). Thread-safe:
    ONNX Runtime sessions may be run from many threads at once.
    """

    def __init__(self, predictor: Predictor, session: Any, onnx_path: Path) -> None:
        self.torch_predictor = predictor
        self.card = predictor.card
        self.batch_size = predictor.batch_size
        self.onnx_path = Path(onnx_path)
        self._session = session
        self._input = session.get_inputs()[0].name
        self.scope_guard = predictor.scope_guard
        self._with_features = len(session.get_outputs()) > 1 and bool(self.scope_guard.layers)

    @classmethod
    def from_predictor(
        cls, predictor: Predictor, *, threads: int | None = None, check_parity: bool = True
    ) -> OnnxPredictor:
        """The cached export (sha256 verified) or a fresh one; :class:`FastPathError` if impossible."""
        if not isinstance(predictor, Predictor) or predictor.card.framework != "pytorch":
            raise FastPathError("The ONNX fast path serves PyTorch classifiers only.")
        if not onnxruntime_available():
            raise FastPathError("onnxruntime is not installed; predictions use PyTorch.")
        onnx_path, meta_path = _entry_paths(predictor)
        with _EXPORT_LOCK:
            data = _read_cached(onnx_path, meta_path, predictor.card.sha256)
            fresh = data is None
            if fresh:
                _discard(onnx_path, meta_path)
                data = _export_bytes(predictor)
        try:
            out = cls(predictor, _session(data, threads), onnx_path)
            if check_parity:
                out.check_parity()
        except FastPathError:
            _discard(onnx_path, meta_path)  # never keep (or keep trusting) a graph that fails
            if fresh:
                raise
            log.warning(
                "Cached ONNX graph for '%s' failed its checks; exporting it again.", predictor.card.id
            )
            return cls.from_predictor(predictor, threads=threads, check_parity=check_parity)
        if fresh:
            try:
                with _EXPORT_LOCK:
                    _store(onnx_path, meta_path, predictor, data)
            except OSError as exc:  # a read-only cache only costs a re-export next time
                log.warning("Could not cache the ONNX export in %s: %s", onnx_path.parent, exc)
        return out

    @classmethod
    def from_card(cls, path_or_id: str | os.PathLike, *, threads: int | None = None) -> OnnxPredictor:
        return cls.from_predictor(Predictor.from_card(path_or_id), threads=threads)

    # -- prediction ---------------------------------------------------------------------------------

    def preprocess(self, rg: Any) -> torch.Tensor:
        return self.torch_predictor.preprocess(rg)

    def prediction_from_logits(self, logits: torch.Tensor) -> Prediction:
        return self.torch_predictor.prediction_from_logits(logits)

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Raw logits (N, num_classes) for a preprocessed batch."""
        return self.logits_and_features(batch)[0]

    def logits_and_features(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw logits (N, num_classes) and the scope gate's features (N, D) from one ONNX Runtime run
        (the graph's second output), or None when the gate has no learned part."""
        x = np.ascontiguousarray(batch.detach().cpu().contiguous().numpy(), dtype=np.float32)
        outputs = self._session.run(None, {self._input: x})
        features = torch.from_numpy(outputs[1]) if self._with_features else None
        return torch.from_numpy(outputs[0]), features

    def predict(self, rg: Any) -> Prediction:
        return self.predict_batch([rg])[0]

    def predict_batch(self, rgs: Sequence[Any]) -> list[Prediction]:
        """Predictions for many images, run in chunks of ``batch_size`` (same as the PyTorch path)."""
        return predict_in_chunks(self, rgs, torch.cat)

    def check_parity(self, tol: float = PARITY_TOL) -> float:
        """Max |probability difference| between ONNX Runtime and PyTorch on a fixed probe batch."""
        card = self.card
        rng = np.random.default_rng(0)
        probe = rng.random((_PROBE_BATCH, card.input_size, card.input_size), dtype=np.float32)
        probe[1] = np.linspace(0.0, 1.0, card.input_size, dtype=np.float32)[None, :]  # a smooth ramp
        batch = torch.cat([self.preprocess(p) for p in probe])
        t = torch.softmax(self.torch_predictor.logits(batch).double() / card.temperature, dim=1)
        try:
            o = torch.softmax(self.logits(batch).double() / card.temperature, dim=1)
        except Exception as exc:  # a graph that loads but cannot run (ORT's own exception types)
            raise FastPathError(
                f"The ONNX graph of model '{card.id}' failed to run ({type(exc).__name__}); "
                "predictions use PyTorch."
            ) from exc
        diff = float((t - o).abs().max()) if t.shape == o.shape else float("inf")
        if not diff <= tol:
            raise FastPathError(
                f"The ONNX graph of model '{card.id}' does not reproduce the PyTorch probabilities "
                f"(max difference {diff:.2g} > {tol:g}); predictions use PyTorch."
            )
        self._check_scope_parity(batch)
        return diff

    def _check_scope_parity(self, batch: torch.Tensor) -> None:
        """The gate must score the ONNX features as it scores PyTorch's (within 0.1% of its threshold)."""
        guard = self.scope_guard
        if not guard.layers:
            return
        if not self._with_features:
            raise FastPathError(
                f"The ONNX graph of model '{self.card.id}' has no scope features; predictions use PyTorch."
            )
        torch_scores = guard.scores(self.torch_predictor.logits_and_features(batch)[1])
        onnx_scores = guard.scores(self.logits_and_features(batch)[1])
        gap = float(np.max(np.abs(torch_scores - onnx_scores)))
        if not gap <= 1e-3 * max(abs(guard.threshold or 1.0), 1e-6):
            raise FastPathError(
                f"The ONNX graph of model '{self.card.id}' does not reproduce the scope gate's scores "
                f"(difference {gap:.3g}); predictions use PyTorch."
            )

    # -- explanation: always the PyTorch model ------------------------------------------------------

    def explain(self, rg: Any, *args: Any, **kwargs: Any) -> Any:
        return self.torch_predictor.explain(rg, *args, **kwargs)

    predict_and_explain = explain

    def class_index(self, target_class: str | int) -> int:
        return self.torch_predictor.class_index(target_class)


def enabled() -> bool:
    """False when ``BONECLS_ONNX`` is 0/false/no/off (an operator's switch back to PyTorch only)."""
    return os.environ.get("BONECLS_ONNX", "1").strip().lower() not in {"0", "false", "no", "off"}


def fast_predictor(predictor: Any, *, threads: int | None = None) -> Any:
    """An :class:`OnnxPredictor` for ``predictor`` when possible, otherwise ``predictor`` itself.

    Never raises for a missing onnxruntime, a failed export, a failed parity check, a non-PyTorch
    predictor or ``BONECLS_ONNX=0``: those are logged and the given predictor is returned, so
    callers need no second code path.
    """
    if not enabled():
        return predictor
    try:
        return OnnxPredictor.from_predictor(predictor, threads=threads)
    except FastPathError as exc:
        log.info("ONNX fast path unavailable for '%s': %s", getattr(predictor.card, "id", "?"), exc)
        return predictor
