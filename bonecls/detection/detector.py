"""YOLOv8 opacity detectors from verified model cards: PyTorch (Ultralytics), EigenCAM, ONNX Runtime.

Public API::

    Detector.from_card(path_or_id, device="cpu")     # sha256 verified before the .pt (a pickle) is opened
        .detect(image, conf=None, iou=0.5, max_det=100) -> list[DetBox]
        .eigencam(image, layers=None) -> np.ndarray  # float32 (H, W) in [0, 1]
    export_onnx(path_or_id) -> Path                  # model.onnx beside model.pt, hash recorded in the card
    OnnxDetector.from_card(path_or_id)               # ONNX Runtime fast path, same boxes as Detector
        .detect(image, conf=None, iou=0.5, max_det=100) -> list[DetBox]
    eigen_projection(activations) -> np.ndarray      # EigenCAM's map without a full SVD

``image``: see :mod:`bonecls.detection.boxes`. ``conf=None`` means the card's operating threshold
(``thresholds.positive_at``, chosen on the validation split when the model was trained); ``iou`` is the
NMS IoU. Ultralytics, torch, OpenCV, pytorch-grad-cam, onnx and onnxruntime are imported inside the
functions that use them, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bonecls.detection.boxes import (
    DetBox,
    boxes_on_film,
    film_at_card_scale,
    letterbox,
    postprocess,
    to_detboxes,
)
from bonecls.detection.offline import import_ultralytics
from bonecls.errors import WeightsError

if TYPE_CHECKING:  # pragma: no cover
    from bonecls.weights import ModelCard

__all__ = [
    "DEFAULT_CONF",
    "DETECTOR_TASKS",
    "FRAMEWORK",
    "ONNX_FILE",
    "TASK",
    "WEIGHTS_FILE",
    "Detector",
    "OnnxDetector",
    "ScopedBoxes",
    "detect_unfitted",
    "eigen_projection",
    "export_onnx",
    "load_detection_card",
    "open_yolo",
    "updated_card",
]

log = logging.getLogger(__name__)

FRAMEWORK = "ultralytics"
TASK = "pneumonia-det"
# Card tasks this module opens: opacity boxes on a chest film, fracture boxes (fracture / comminuted)
DETECTOR_TASKS = ("pneumonia-det", "fracture-det")
WEIGHTS_FILE = "model.pt"
ONNX_FILE = "model.onnx"
DEFAULT_CONF = 0.25


# --------------------------------------------------------------------------------------------------------
# Cards and verified bytes
# --------------------------------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    from bonecls.weights import sha256_file

    return sha256_file(path)


def load_detection_card(path_or_id: str | os.PathLike) -> tuple[ModelCard, Path]:
    """Load and validate a detection card; the weight file's sha256 is checked when it is read."""
    from bonecls.weights import load_card

    card, card_dir = load_card(path_or_id, verify=False)
    if card.framework != FRAMEWORK or card.task not in DETECTOR_TASKS:
        raise WeightsError(
            f"Model '{card.id}' is a {card.framework} '{card.task}' model, not an Ultralytics "
            f"box detector; choose a detection model."
        )
    return card, Path(card_dir)


def _read_verified(path: Path, expected: str, what: str) -> bytes:
    """The file's bytes, read once, after checking them against ``expected`` (sha256 hex)."""
    from bonecls.weights import sha256_bytes

    if not expected:
        raise WeightsError(f"The {what} have no recorded checksum and are not opened; reinstall the model.")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise WeightsError(f"The {what} file {path.name} is missing; reinstall the model.") from None
    if sha256_bytes(data) != expected.lower():
        raise WeightsError(
            f"The {what} file {path.name} does not match its recorded checksum and was not opened; "
            f"it may be damaged or tampered with. Reinstall the model."
        )
    return data


def updated_card(card: ModelCard, **changes: Any) -> ModelCard:
    """A validated copy of ``card`` with ``changes``."""
    return type(card).model_validate({**card.model_dump(), **changes})


def _write_card(card: ModelCard, out_dir: Path) -> Path:
    from bonecls.weights import write_card

    return write_card(card, out_dir)


# --------------------------------------------------------------------------------------------------------
# PyTorch detector and EigenCAM
# --------------------------------------------------------------------------------------------------------


def open_yolo(pt_path: Path, expected_sha256: str, what: str = "weights") -> Any:
    """Open an Ultralytics checkpoint (a pickle) only after its sha256 matched.

    The bytes are read once, checked, and loaded from a private temporary copy, so the bytes checked
    are the bytes unpickled (no swap between check and load). Ultralytics' restricted loader
    (``ULTRALYTICS_SAFE_LOAD``, weights_only) is a second line of defence.
    """
    data = _read_verified(pt_path, expected_sha256, what)
    ul = import_ultralytics()
    with tempfile.TemporaryDirectory(prefix="bonecls-pt-") as td:
        tmp = Path(td) / pt_path.name
        tmp.write_bytes(data)
        try:
            yolo = ul.YOLO(str(tmp), task="detect")
        except Exception as e:  # any failure here is a broken weights file for the user
            raise WeightsError(
                f"The {what} file {pt_path.name} could not be loaded ({type(e).__name__}); "
                "reinstall the model."
            ) from e
    if getattr(yolo, "task", "detect") != "detect":
        raise WeightsError(f"The {what} file {pt_path.name} is not a detection model.")
    # point Ultralytics at the real file (exports are written beside it)
    yolo.model.pt_path = str(pt_path)
    yolo.ckpt_path = str(pt_path)
    yolo.overrides["model"] = str(pt_path)
    yolo.model_name = str(pt_path)
    return yolo


def _cam_wrapper():
    import torch

    class YoloCamWrapper(torch.nn.Module):
        """Eval-mode DetectionModel whose forward returns one tensor (what pytorch-grad-cam expects)."""

        def __init__(self, model: torch.nn.Module):
            super().__init__()
            self.model = model

        def forward(self, x):
            out = self.model(x)
            while isinstance(out, (list, tuple)):
                out = out[0]
            if isinstance(out, dict):  # end-to-end heads return a dict in some versions
                out = next(v for v in out.values() if isinstance(v, torch.Tensor))
            return out

    return YoloCamWrapper


def eigen_projection(activations: np.ndarray) -> np.ndarray:
    """EigenCAM's map: activations (B, C, H, W) projected on their first principal component -> (B, H, W).

    Same maths as ``pytorch_grad_cam.utils.svd_on_activations.get_2d_projection`` (centre the (H*W, C)
    matrix, project on its first right singular vector), but the vector comes from ``eigh`` of the small
    C x C Gram matrix instead of a full SVD (the library's ``full_matrices=True`` builds an (H*W)^2
    matrix: seconds at 512 px), and the sign is fixed as in Seg-Eigen-CAM (flip when |min| > |max|),
    since an SVD's sign is arbitrary.
    """
    try:  # small matrices: BLAS threads only spin (50x slower on a busy 2-core machine)
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(limits=1, user_api="blas")
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn (a grad-cam dependency)
        limit = contextlib.nullcontext()
    out = []
    with limit:
        for act in np.nan_to_num(np.asarray(activations, dtype=np.float32)):
            m = act.reshape(act.shape[0], -1).T.astype(np.float64)
            m -= m.mean(axis=0)
            _, vecs = np.linalg.eigh(m.T @ m)  # ascending eigenvalues: the last is the first component
            proj = (m @ vecs[:, -1]).reshape(act.shape[1:])
            if abs(proj.min()) > abs(proj.max()):
                proj = -proj
            out.append(proj)
    return np.asarray(out, dtype=np.float32)


def _eigencam_class():
    from pytorch_grad_cam import EigenCAM

    class FastEigenCAM(EigenCAM):
        """pytorch-grad-cam's EigenCAM (no targets, no gradients) with :func:`eigen_projection`."""

        def get_cam_image(
            self, input_tensor, target_layer, target_category, activations, grads, eigen_smooth
        ):
            return eigen_projection(activations)

    return FastEigenCAM


_NOT_FITTED = (
    "This detector's learned scope is not fitted, so only the DICOM header and the image checks were "
    "applied; an unfamiliar image that passes them may still get boxes that mean nothing."
)


@dataclass(frozen=True)
class ScopedBoxes:
    """Boxes through the scope gate: ``boxes`` empty when out of scope (``raw_boxes``: what the detector
    drew anyway, unreliable); ``verdict`` None when the gate was switched off (research output)."""

    boxes: list[DetBox]
    verdict: Any  # bonecls.scope.ScopeVerdict | None
    raw_boxes: list[DetBox]

    @property
    def in_scope(self) -> bool:
        return self.verdict is None or bool(self.verdict.in_scope)


def _unfitted_precheck(card: ModelCard, image: Any) -> tuple[str, ...]:
    """Header rules and image heuristics for a detector whose card has no learned scope."""
    from bonecls import ood
    from bonecls.scope.declared import DECLARED_SCOPES, header_reasons

    declared = DECLARED_SCOPES.get(card.task)
    reasons = list(header_reasons(declared, image)) if declared is not None else []
    if hasattr(image, "pixels"):
        reasons.extend(r for r in ood.check(image).reasons if r not in reasons)
    return tuple(reasons)


def _gate_score(gate: Any, features: Any) -> float | None:
    """The learned score of one image's (1, D) ``features`` (None without a gate or features)."""
    return None if gate is None or features is None else float(gate.stats.score(features)[0])


def detect_unfitted(card: ModelCard, image: Any, detect: Any) -> ScopedBoxes:
    """The gate of a detector card with no learned scope, around any ``detect(image) -> boxes`` (the ONNX
    fast path too): header rules and image heuristics, and a reason saying the learned part is not fitted."""
    from bonecls.scope.gate import ScopeVerdict

    reasons = _unfitted_precheck(card, image)
    if reasons:
        return ScopedBoxes([], ScopeVerdict(False, None, float("nan"), reasons), [])
    return ScopedBoxes(list(detect(image)), ScopeVerdict(True, None, float("nan"), (_NOT_FITTED,)), [])


class Detector:
    """YOLOv8 opacity detector from a verified card. Thread-safe (one lock around the model)."""

    def __init__(self, yolo, card: ModelCard, card_dir: Path, device: str = "cpu", *, scope: bool = True):
        self._yolo = yolo
        self.card = card
        self.card_dir = Path(card_dir)
        self.device = device
        self._lock = threading.Lock()
        self.scope_enabled = bool(scope)
        self.scope_gate = None
        self._scope_features: dict[int, Any] = {}
        if scope and card.scope is not None:
            from bonecls.scope.gate import ScopeGate

            self.scope_gate = ScopeGate.from_card(card, card_dir)
            self._hook_scope_layers(self.scope_gate.layers)
        self.class_names = list(card.class_names)
        try:
            nc = int(yolo.model.model[-1].nc)
        except (AttributeError, IndexError, TypeError, ValueError):
            nc = len(getattr(yolo, "names", None) or {})
        if nc and nc != len(self.class_names):
            log.warning(
                "Model '%s' predicts %d classes but its card names %d; boxes of unnamed classes are "
                "labelled by their index.",
                card.id,
                nc,
                len(self.class_names),
            )

    @classmethod
    def from_card(cls, path_or_id: str | os.PathLike, device: str = "cpu", *, scope: bool = True) -> Detector:
        """The detector of a verified card, with its scope gate (``scope=False``: raw research boxes)."""
        card, card_dir = load_detection_card(path_or_id)
        return cls(open_yolo(card_dir / card.weights_file, card.sha256), card, card_dir, device, scope=scope)

    def _hook_scope_layers(self, layers: Sequence[str]) -> None:
        """Forward hooks on the backbone stages the gate reads (``model.4`` ...): the spatial means of
        their outputs are recorded while Ultralytics runs the model for :meth:`detect` (the last pass
        wins: a warm-up pass comes before the real one), so the gate costs no second pass."""
        model = self._yolo.model
        for slot, name in enumerate(layers):
            index = int(str(name).split(".")[-1])

            def hook(_module, _args, output, slot=slot):
                self._scope_features[slot] = output.detach().float().mean(dim=(2, 3)).cpu()

            model.model[index].register_forward_hook(hook)

    @property
    def input_size(self) -> int:
        return int(self.card.input_size)

    @property
    def model_sha256(self) -> str:
        return self.card.sha256

    def default_conf(self) -> float:
        return float(self.card.thresholds.positive_at)

    def detect(
        self, image: Any, conf: float | None = None, iou: float = 0.5, max_det: int = 100
    ) -> list[DetBox]:
        """Boxes with confidence > ``conf`` after NMS at ``iou``, in original-image pixels, best first."""
        return self._run_film(image, conf, iou, max_det)[0]

    def detect_and_score(
        self, image: Any, conf: float | None = None, iou: float = 0.5, max_det: int = 100
    ) -> tuple[list[DetBox], float | None]:
        """:meth:`detect`'s boxes and the learned scope score of the same pass (None without a learned
        gate, or when its features were not recorded): what :meth:`detect_scoped` judges, and what the
        held-out figures over the answered images use (:mod:`bonecls.detection.held_out`)."""
        boxes, features = self._run_film(image, conf, iou, max_det)
        gate = self.scope_gate if self.scope_enabled else None
        return boxes, _gate_score(gate, features)

    def detect_scoped(
        self, image: Any, conf: float | None = None, iou: float = 0.5, max_det: int = 100
    ) -> ScopedBoxes:
        """:meth:`detect` through the model's scope gate: the header rules and image heuristics first
        (refused: the model does not run), then the learned score on the backbone features recorded
        during the same pass. Out of scope: no boxes (``raw_boxes`` keeps them, unreliable)."""
        gate = self.scope_gate if self.scope_enabled else None
        if not self.scope_enabled:
            return ScopedBoxes(self.detect(image, conf, iou, max_det), None, [])
        from bonecls.scope.gate import ScopeVerdict

        if gate is None:
            return detect_unfitted(self.card, image, lambda im: self.detect(im, conf, iou, max_det))
        reasons = gate.precheck(image)
        if reasons:
            return ScopedBoxes([], ScopeVerdict(False, None, gate.threshold, reasons), [])
        boxes, score = self.detect_and_score(image, conf, iou, max_det)
        if score is None:
            verdict = ScopeVerdict(False, None, gate.threshold, ("The learned scope could not be checked.",))
        else:
            verdict = gate.verdict_from_score(score)
        return ScopedBoxes(boxes if verdict.in_scope else [], verdict, [] if verdict.in_scope else boxes)

    def _run_film(self, image: Any, conf: float | None, iou: float, max_det: int) -> tuple[list[DetBox], Any]:
        """:meth:`_run` on the film at the card's scale, the boxes mapped back to the film's pixels."""
        img, factors = film_at_card_scale(image, self.card, self.input_size)
        boxes, features = self._run(img, conf, iou, max_det)
        return boxes_on_film(boxes, factors), features

    def _run(self, img: np.ndarray, conf: float | None, iou: float, max_det: int) -> tuple[list[DetBox], Any]:
        """Boxes and, when the gate is hooked, its (1, D) features from the same forward pass."""
        conf = self.default_conf() if conf is None else float(conf)
        with self._lock:
            self._scope_features.clear()
            res = self._yolo.predict(
                img,
                imgsz=self.input_size,
                conf=conf,
                iou=iou,
                max_det=max_det,
                device=self.device,
                rect=False,  # full square letterbox, as the static-shape ONNX model sees it
                verbose=False,
                save=False,
            )[0]
            features = None
            if self.scope_gate is not None and len(self._scope_features) == len(self.scope_gate.layers):
                import torch

                features = torch.cat([self._scope_features[s] for s in range(len(self._scope_features))], 1)
        b = res.boxes
        boxes = to_detboxes(
            b.xyxy.cpu().numpy(), b.conf.cpu().numpy(), b.cls.cpu().numpy().astype(int), self.class_names
        )
        return boxes, features

    def torch_model(self):
        """The underlying ``DetectionModel`` (eval mode, float32, on this detector's device)."""
        model = self._yolo.model
        if self.device != "cpu":
            from ultralytics.utils.torch_utils import select_device

            model = model.to(select_device(self.device, verbose=False))
        return model.float().eval()

    def default_cam_layers(self) -> list[int]:
        """Indices of the layers feeding the Detect head (P3, P4, P5 necks for YOLOv8)."""
        head = self._yolo.model.model[-1]
        f = getattr(head, "f", None)
        return list(f) if isinstance(f, (list, tuple)) else [len(self._yolo.model.model) - 2]

    def eigencam(self, image: Any, layers: Sequence[int] | None = None) -> np.ndarray:
        """EigenCAM heat map: float32 (H, W) in [0, 1] at the image's size.

        EigenCAM needs no target and no gradient: it projects the target layers' activations on their
        first principal component. The model runs in eval mode through a wrapper returning one tensor;
        default layers are those feeding the Detect head. The component's sign is fixed so that its
        larger-magnitude side is positive; still, on a poor model the map can highlight background.
        """
        import cv2
        import torch

        h, w = np.asarray(getattr(image, "pixels", image)).shape[:2]
        img, _ = film_at_card_scale(image, self.card, self.input_size)  # what the boxes were read from
        lb, gain, (px, py) = letterbox(img, self.input_size)
        with self._lock:
            model = self.torch_model()
            dev = next(model.parameters()).device
            x = torch.from_numpy(np.ascontiguousarray(lb[..., ::-1].transpose(2, 0, 1))).to(dev)
            x = x.float().div(255.0)[None]
            idx = list(layers) if layers is not None else self.default_cam_layers()
            target_layers = [model.model[i] for i in idx]
            wrapper = _cam_wrapper()(model).eval()
            with torch.no_grad(), _eigencam_class()(wrapper, target_layers) as cam:
                heat = cam(input_tensor=x, targets=None)[0]
        nh, nw = max(round(img.shape[0] * gain[0]), 1), max(round(img.shape[1] * gain[1]), 1)
        heat = np.asarray(heat, dtype=np.float32)[py : py + nh, px : px + nw]
        heat = cv2.resize(heat, (w, h), interpolation=cv2.INTER_LINEAR)
        heat = np.nan_to_num(heat, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(heat.min()), float(heat.max())
        heat = (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)
        return np.clip(heat, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------------------
# ONNX export and ONNX Runtime fast path
# --------------------------------------------------------------------------------------------------------


def _scope_layer_indices(card: ModelCard, card_dir: Path) -> tuple[int, ...]:
    """The backbone stages the card's scope gate reads (``model.4`` -> 4), else the default ones."""
    from bonecls.detection.scope_features import BACKBONE_LAYERS

    if card.scope is None:
        return BACKBONE_LAYERS
    from bonecls.scope.gate import ScopeGate

    return tuple(int(str(name).split(".")[-1]) for name in ScopeGate.from_card(card, card_dir).layers)


def export_onnx(path_or_id: str | os.PathLike, opset: int | None = None) -> Path:
    """Export the card's verified model.pt to ``model.onnx`` (static 1x3xSxS, fp32, no NMS inside) beside it
    and record ``extra["onnx"] = {file, sha256, opset, input_size, output, feature_layers}`` in card.json.

    The graph has a second output, ``features``: the pooled backbone features of the scope gate's
    stages (:func:`bonecls.detection.scope_features.add_feature_output`), so the ONNX fast path answers
    through the gate too (:meth:`OnnxDetector.detect_scoped`)."""
    from bonecls.detection.scope_features import add_feature_output, layer_names

    det = Detector.from_card(path_or_id, scope=False)
    card, card_dir = det.card, det.card_dir
    with det._lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer / exporter deprecation chatter
        f = det._yolo.export(
            format="onnx",
            imgsz=det.input_size,
            simplify=False,
            dynamic=False,
            nms=False,
            device="cpu",
            opset=opset,
            verbose=False,
        )
    src = Path(f)
    dst = card_dir / ONNX_FILE
    if src.resolve() != dst.resolve():
        shutil.move(str(src), dst)
    import onnx

    layers = _scope_layer_indices(card, card_dir)
    proto = add_feature_output(onnx.load(str(dst), load_external_data=False), layers)
    onnx.save(proto, str(dst))
    out_shape = [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    info = {
        "file": ONNX_FILE,
        "sha256": _sha256_file(dst),
        "opset": int(max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))),
        "input_size": det.input_size,
        "output": out_shape,
        "feature_layers": list(layer_names(layers)),
        "exported": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    _write_card(updated_card(card, extra={**card.extra, "onnx": info}), card_dir)
    return dst


class OnnxDetector:
    """ONNX Runtime detector: our letterbox + Ultralytics-equivalent NMS; boxes match :class:`Detector`.

    A graph exported with the ``features`` output (:func:`export_onnx`) also answers through the card's
    learned scope gate (:meth:`detect_scoped`) from the same run; an older graph cannot
    (``scope_ready`` is False) and the caller keeps the PyTorch :class:`Detector` for the gate."""

    def __init__(self, session, card: ModelCard, card_dir: Path):
        self._session = session
        self._input = session.get_inputs()[0].name
        self.card = card
        self.card_dir = Path(card_dir)
        self.class_names = list(card.class_names)
        self.scope_gate = None
        outputs = [o.name for o in session.get_outputs()]
        feature_layers = tuple(dict(card.extra).get("onnx", {}).get("feature_layers") or ())
        if card.scope is not None and "features" in outputs:
            from bonecls.scope.gate import ScopeGate

            gate = ScopeGate.from_card(card, card_dir)
            if tuple(gate.layers) == feature_layers:
                self.scope_gate = gate
        self._features_index = outputs.index("features") if "features" in outputs else None

    @property
    def scope_ready(self) -> bool:
        """True when this graph gives the card's learned scope gate its features (or the card has no
        learned scope, so the header rules and image checks are the whole gate)."""
        return self.card.scope is None or self.scope_gate is not None

    @classmethod
    def from_card(
        cls, path_or_id: str | os.PathLike, providers: Sequence[str] | None = None, threads: int | None = None
    ) -> OnnxDetector:
        import onnxruntime as ort

        card, card_dir = load_detection_card(path_or_id)
        info = dict(card.extra).get("onnx")
        if not info or "sha256" not in info:
            raise WeightsError(f"Model '{card.id}' has no ONNX export; run the export first.")
        name = str(info.get("file", ONNX_FILE))
        if Path(name).name != name or not name.endswith(".onnx"):
            raise WeightsError(f"The card of model '{card.id}' names an invalid ONNX file; export it again.")
        path = card_dir / name
        if not path.is_file():
            raise WeightsError(f"The ONNX file of model '{card.id}' is missing; export it again.")
        data = _read_verified(path, info["sha256"], "ONNX model")  # hash and load the same bytes
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        # no busy-waiting between runs: the app shares its few cores with PyTorch and Streamlit
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        session = ort.InferenceSession(data, opts, providers=list(providers or ["CPUExecutionProvider"]))
        return cls(session, card, card_dir)

    @property
    def input_size(self) -> int:
        return int(self.card.extra["onnx"].get("input_size", self.card.input_size))

    def default_conf(self) -> float:
        return float(self.card.thresholds.positive_at)

    def detect(
        self, image: Any, conf: float | None = None, iou: float = 0.5, max_det: int = 100
    ) -> list[DetBox]:
        return self._run(image, conf, iou, max_det)[0]

    def features(self, image: Any) -> np.ndarray:
        """(1, D) pooled backbone features of ``image`` from the graph's ``features`` output."""
        if self._features_index is None:
            raise WeightsError(
                f"The ONNX graph of model '{self.card.id}' has no feature output; export it again."
            )
        return self._run(image, None, 0.5, 1)[1]

    def detect_and_score(
        self, image: Any, conf: float | None = None, iou: float = 0.5, max_det: int = 100
    ) -> tuple[list[DetBox], float | None]:
        """:meth:`Detector.detect_and_score` on ONNX Runtime: the boxes and the learned scope score of one
        run (None when this graph cannot feed the card's gate or the card has none)."""
        boxes, features = self._run(image, conf, iou, max_det)
        return boxes, _gate_score(self.scope_gate, features)

    def detect_scoped(
        self, image: Any, conf: float | None = None, iou: float = 0.5, max_det: int = 100
    ) -> ScopedBoxes:
        """:meth:`Detector.detect_scoped` on ONNX Runtime: header rules and image checks first, then the
        learned score on the ``features`` output of the same run. Raises ``WeightsError`` when the card
        has a learned scope that this graph cannot feed (see :attr:`scope_ready`)."""
        from bonecls.scope.gate import ScopeVerdict

        gate = self.scope_gate
        if gate is None:
            if self.card.scope is not None:
                raise WeightsError(
                    f"The ONNX graph of model '{self.card.id}' has no scope features; "
                    "use the PyTorch detector."
                )
            return detect_unfitted(self.card, image, lambda im: self.detect(im, conf, iou, max_det))
        reasons = gate.precheck(image)
        if reasons:
            return ScopedBoxes([], ScopeVerdict(False, None, gate.threshold, reasons), [])
        boxes, score = self.detect_and_score(image, conf, iou, max_det)
        verdict = gate.verdict_from_score(score)  # the gate is fed: the graph has its features output
        return ScopedBoxes(boxes if verdict.in_scope else [], verdict, [] if verdict.in_scope else boxes)

    def _run(
        self, image: Any, conf: float | None, iou: float, max_det: int
    ) -> tuple[list[DetBox], np.ndarray | None]:
        """Boxes and, when the graph has them, the (1, D) scope features of one ONNX Runtime run."""
        img, factors = film_at_card_scale(image, self.card, self.input_size)
        conf = self.default_conf() if conf is None else float(conf)
        lb, gain, pad = letterbox(img, self.input_size)
        x = np.ascontiguousarray(lb[..., ::-1].transpose(2, 0, 1), dtype=np.float32)[None] / 255.0
        outputs = self._session.run(None, {self._input: x})
        boxes, scores, cls = postprocess(outputs[0][0], conf, iou, max_det, gain, pad, img.shape[:2])
        features = None if self._features_index is None else outputs[self._features_index]
        return boxes_on_film(to_detboxes(boxes, scores, cls, self.class_names), factors), features
