"""Pneumonia opacity boxes with Ultralytics YOLOv8: offline set-up, inference, EigenCAM, ONNX, training.

This is the ONLY module of bonecls that imports ``ultralytics`` (AGPL-3.0). The import is lazy, inside
functions, and always after :func:`configure_offline`, which makes sure Ultralytics never reaches the
network (no font, weight or dataset download, no analytics, no pip install, no update check).

Public API::

    configure_offline() -> Path                      # idempotent; Ultralytics' settings dir
    DetBox(x0, y0, x1, y1, confidence, label)        # original-image pixel coordinates
    Detector.from_card(path_or_id, device="cpu")     # sha256 verified before the .pt (a pickle) is opened
        .detect(image, conf=None, iou=0.5, max_det=100) -> list[DetBox]
        .eigencam(image, layers=None) -> np.ndarray  # float32 (H, W) in [0, 1]
    export_onnx(path_or_id) -> Path                  # model.onnx beside model.pt, hash recorded in the card
    OnnxDetector.from_card(path_or_id)               # ONNX Runtime fast path, same boxes as Detector
        .detect(image, conf=None, iou=0.5, max_det=100) -> list[DetBox]
    letterbox(image, size) -> (padded, gain, pad)    # Ultralytics' square letterbox, exactly
    train_detector(data, output, ...) -> (ModelCard, Path)   # used by train/detect.py
    evaluate_detector(detector, data, split="test", conf=...) -> dict

``image`` is a :class:`bonecls.imaging.Radiograph` (its ``.pixels``, float32 in [0, 1]) or a numpy array:
float in [0, 1], or uint8 / uint16 grey (H, W) or BGR (H, W, 3).

``conf=None`` means the card's operating threshold (``thresholds.positive_at``, chosen on the validation
split when the model was trained); ``iou`` is the NMS IoU.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bonecls.errors import DataError, ImageError, WeightsError
from bonecls.paths import cache_root

if TYPE_CHECKING:  # pragma: no cover
    from bonecls.weights import ModelCard

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "DetBox",
    "Detector",
    "OnnxDetector",
    "configure_offline",
    "evaluate_detector",
    "export_onnx",
    "letterbox",
    "to_bgr_uint8",
    "train_detector",
]

log = logging.getLogger(__name__)

FRAMEWORK = "ultralytics"
TASK = "pneumonia-det"
DEFAULT_IMAGE_SIZE = 512
WEIGHTS_FILE = "model.pt"
ONNX_FILE = "model.onnx"
CARD_FILE = "card.json"
MAX_WEIGHTS_BYTES = 25 * 2**20
DEFAULT_CONF = 0.25
PAD_VALUE = 114  # Ultralytics' letterbox grey
_MAX_NMS = 30000  # Ultralytics' cap on boxes entering NMS
_MAX_WH = 7680  # Ultralytics' per-class coordinate offset for class-aware NMS
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}

INTENDED_USE = (
    "Reading aid that draws candidate lung-opacity boxes on a frontal chest radiograph for a clinician "
    "to review. It does not diagnose pneumonia and must not be used to rule it out."
)
LIMITATIONS = (
    "Trained on synthetic phantoms (digitally reconstructed radiographs from one CT with simulated "
    "opacities), not on patient images; performance on real radiographs is unknown. Not for clinical use."
)


# --------------------------------------------------------------------------------------------------------
# Offline configuration
# --------------------------------------------------------------------------------------------------------

_OFFLINE_LOCK = threading.RLock()
_CONFIGURED: Path | None = None

# Settings that would make Ultralytics talk to a server or load an integration that may (each False/"").
_OFFLINE_SETTINGS: dict[str, Any] = {
    "sync": False,  # anonymous usage analytics (events) and Sentry crash reports
    "hub": False,  # Ultralytics HUB callbacks (key only exists in some versions)
    "api_key": "",  # Ultralytics Platform uploads (training callbacks start only with a key)
    "openai_api_key": "",
    "clearml": False,  # experiment-tracker integrations: each imports its client and may log remotely
    "comet": False,
    "dvc": False,
    "mlflow": False,
    "raytune": False,
    "tensorboard": False,
    "wandb": False,
    "vscode_msg": False,  # console hints only
    "openvino_msg": False,
}


def _font_source() -> Path | None:
    """DejaVuSans.ttf from matplotlib's package data (matplotlib is a hard dependency of ultralytics)."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    return path if path.is_file() else None


def _place_fonts(config_dir: Path) -> bool:
    """Put Arial.ttf / Arial.Unicode.ttf (copies of DejaVuSans) where ``check_font`` looks first."""
    src = _font_source()
    ok = True
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        dst = config_dir / name
        if dst.is_file() and dst.stat().st_size > 0:
            continue
        if src is None:
            ok = False
            continue
        tmp = dst.with_suffix(f".tmp{os.getpid()}")
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        except OSError:
            ok = False
    return ok


def configure_offline() -> Path:
    """Make Ultralytics fully offline in this process; safe to call many times. Returns its settings dir.

    Environment (set before ``ultralytics`` is first imported, because it reads them at import):

    * ``YOLO_OFFLINE=1``: ``ultralytics.utils.ONLINE`` is False without a DNS probe, which disables the
      analytics events, the Sentry crash reporter, the PyPI update check and retries of failed downloads.
    * ``ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS=1``: ``check_requirements`` never runs ``pip``/``uv install``
      (export, DDP and integrations call it).
    * ``YOLO_CONFIG_DIR`` (if unset): ``$BONECLS_CACHE/ultralytics`` (or ``~/.cache/bonecls/ultralytics``) —
      settings.json, fonts and DDP temp files go there, never to the user's home config.
    * ``ULTRALYTICS_SAFE_LOAD=1`` (if unset): checkpoints are unpickled with ``torch.load(weights_only=True)``
      against Ultralytics' allow-list — a second line of defence after our sha256 check.
    * ``ULTRALYTICS_API_KEY`` is removed so the Platform upload callbacks never start.

    Settings: ``sync`` off and every integration off (see ``_OFFLINE_SETTINGS``); ``runs_dir``,
    ``weights_dir`` and ``datasets_dir`` point into the cache dir, so a bare model name never resolves to
    some stray file and nothing lands in the working directory.

    Fonts: ``check_font`` (called by every dataset check and by plotting) returns a file found in the
    settings dir and otherwise downloads Arial.ttf; DejaVuSans.ttf from matplotlib is copied there as
    Arial.ttf and Arial.Unicode.ttf.
    """
    global _CONFIGURED
    with _OFFLINE_LOCK:
        if _CONFIGURED is not None:
            return _CONFIGURED
        already_imported = "ultralytics" in sys.modules
        base = Path(os.environ.setdefault("YOLO_CONFIG_DIR", str(cache_root() / "ultralytics"))).expanduser()
        with contextlib.suppress(OSError):
            base.mkdir(parents=True, exist_ok=True)
        os.environ["YOLO_OFFLINE"] = "1"
        os.environ["ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS"] = "1"
        os.environ.setdefault("ULTRALYTICS_SAFE_LOAD", "1")
        os.environ.pop("ULTRALYTICS_API_KEY", None)

        import ultralytics.utils as uutils
        import ultralytics.utils.patches as upatches

        # Ultralytics replaces PIL.Image.open process-wide with a wrapper that, on any unidentified
        # image, tries to install and import pi_heif (ModuleNotFoundError here). That would turn every
        # unreadable upload into a crash instead of an ImageError: put PIL's own opener back.
        original_open = getattr(upatches, "_image_open", None)
        if original_open is not None:
            import PIL.Image

            PIL.Image.open = original_open

        if already_imported:
            # ultralytics was imported before us: its import-time constants are stale, fix what matters.
            log.warning("ultralytics was imported before bonecls.detect.configure_offline(); patching it.")
            for name, mod in list(sys.modules.items()):
                if name.startswith("ultralytics") and getattr(mod, "ONLINE", None) is True:
                    mod.ONLINE = False
            events = getattr(sys.modules.get("ultralytics.utils.events"), "events", None)
            if events is not None:
                events.enabled = False
        config_dir = Path(uutils.USER_CONFIG_DIR)
        settings = uutils.SETTINGS
        work = base / "work"
        wanted = dict(_OFFLINE_SETTINGS)
        wanted.update(
            runs_dir=str(work / "runs"),
            weights_dir=str(work / "weights"),
            datasets_dir=str(work / "datasets"),
        )
        update = {k: v for k, v in wanted.items() if k in settings and settings[k] != v}
        if update:
            settings.update(update)
        if not _place_fonts(config_dir):
            # No font to ship: make check_font a no-op so it cannot download (plots must then stay off).
            log.warning("No DejaVuSans.ttf found; Ultralytics font look-ups disabled (plots unavailable).")
            import ultralytics.data.utils as udata

            udata.check_font = lambda *a, **k: None
        _CONFIGURED = config_dir
        return config_dir


def _ultralytics():
    configure_offline()
    import ultralytics

    return ultralytics


def fonts_available() -> bool:
    """Whether Ultralytics plotting can run without a download (fonts in its settings dir)."""
    d = configure_offline()
    return (d / "Arial.ttf").is_file() and (d / "Arial.Unicode.ttf").is_file()


# --------------------------------------------------------------------------------------------------------
# Boxes, images, letterbox, NMS
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DetBox:
    """One detected box in original-image pixel coordinates (x to the right, y down; continuous)."""

    x0: float
    y0: float
    x1: float
    y1: float
    confidence: float
    label: str

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)


def to_bgr_uint8(image: Any) -> np.ndarray:
    """A Radiograph or array as the contiguous uint8 (H, W, 3) BGR image Ultralytics expects."""
    arr = np.asarray(getattr(image, "pixels", image))
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)) or min(arr.shape[:2]) < 2:
        raise ImageError(f"The image has an unsupported shape {arr.shape}; expected a 2-D grey image.")
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == np.uint16:
        out = (arr >> 8).astype(np.uint8)  # what cv2.imread(IMREAD_COLOR) does, as in training
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageError("The image contains non-finite values and cannot be analysed.")
        out = np.rint(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        raise ImageError(f"The image has an unsupported pixel type {arr.dtype}.")
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=2)
    return np.ascontiguousarray(out)


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
    """Resize keeping aspect and pad to ``size`` x ``size`` with grey 114, centred (Ultralytics' LetterBox
    with ``auto=False``). Returns ``(padded, (gain_y, gain_x), (pad_x, pad_y))``."""
    import cv2

    h, w = image.shape[:2]
    r = min(size / h, size / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    if (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return image, (new_h / h, new_w / w), (left, top)


def _postprocess(
    raw: np.ndarray,
    conf: float,
    iou: float,
    max_det: int,
    gain: tuple[float, float],
    pad: tuple[int, int],
    shape: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ultralytics' detect post-processing on one (4 + nc, N) output: filter, class-aware NMS, unletterbox."""
    import torch
    import torchvision

    pred = np.asarray(raw, dtype=np.float32).T  # (N, 4 + nc): cx, cy, w, h, class scores
    scores_all = pred[:, 4:]
    cls = scores_all.argmax(1)
    scores = scores_all[np.arange(len(pred)), cls]
    keep = scores > conf
    pred, scores, cls = pred[keep], scores[keep], cls[keep]
    if len(pred) > _MAX_NMS:
        top = np.argsort(-scores, kind="stable")[:_MAX_NMS]
        pred, scores, cls = pred[top], scores[top], cls[top]
    xy, wh = pred[:, :2], pred[:, 2:4] / 2
    boxes = np.concatenate([xy - wh, xy + wh], axis=1)
    if len(boxes):
        offset = (cls[:, None] * _MAX_WH).astype(np.float32)
        idx = torchvision.ops.nms(torch.from_numpy(boxes + offset), torch.from_numpy(scores), iou)
        idx = idx[:max_det].numpy()
        boxes, scores, cls = boxes[idx], scores[idx], cls[idx]
    boxes[:, [0, 2]] = (boxes[:, [0, 2]] - pad[0]) / gain[1]
    boxes[:, [1, 3]] = (boxes[:, [1, 3]] - pad[1]) / gain[0]
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, shape[1])
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, shape[0])
    return boxes, scores, cls


def _to_detboxes(boxes, scores, cls, names: Sequence[str]) -> list[DetBox]:
    out = []
    for b, s, c in zip(np.asarray(boxes), np.asarray(scores), np.asarray(cls), strict=True):
        label = names[int(c)] if 0 <= int(c) < len(names) else str(int(c))
        out.append(DetBox(float(b[0]), float(b[1]), float(b[2]), float(b[3]), float(s), label))
    return out


# --------------------------------------------------------------------------------------------------------
# Cards and hashes
# --------------------------------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    from bonecls.weights import sha256_file

    return sha256_file(path)


def _load_det_card(path_or_id: str | os.PathLike) -> tuple[ModelCard, Path]:
    """Load and validate a detection card; the weight file's sha256 is checked when it is read."""
    from bonecls.weights import load_card

    card, card_dir = load_card(path_or_id, verify=False)
    if card.framework != FRAMEWORK or card.task != TASK:
        raise WeightsError(
            f"Model '{card.id}' is a {card.framework} '{card.task}' model, not an Ultralytics "
            f"pneumonia box detector; choose a detection model."
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


def _updated(card: ModelCard, **changes) -> ModelCard:
    """A validated copy of ``card`` with ``changes``."""
    return type(card).model_validate({**card.model_dump(), **changes})


def _write_card(card: ModelCard, out_dir: Path) -> Path:
    from bonecls.weights import write_card

    return write_card(card, out_dir)


# --------------------------------------------------------------------------------------------------------
# PyTorch detector
# --------------------------------------------------------------------------------------------------------


def _open_yolo(pt_path: Path, expected_sha256: str, what: str = "weights"):
    """Open an Ultralytics checkpoint (a pickle) only after its sha256 matched.

    The bytes are read once, checked, and loaded from a private temporary copy, so the bytes checked
    are the bytes unpickled (no swap between check and load). Ultralytics' restricted loader
    (``ULTRALYTICS_SAFE_LOAD``, weights_only) is a second line of defence.
    """
    data = _read_verified(pt_path, expected_sha256, what)
    ul = _ultralytics()
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


class Detector:
    """YOLOv8 opacity detector from a verified card. Thread-safe (one lock around the model)."""

    def __init__(self, yolo, card: ModelCard, card_dir: Path, device: str = "cpu"):
        self._yolo = yolo
        self.card = card
        self.card_dir = Path(card_dir)
        self.device = device
        self._lock = threading.Lock()
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
    def from_card(cls, path_or_id: str | os.PathLike, device: str = "cpu") -> Detector:
        card, card_dir = _load_det_card(path_or_id)
        return cls(_open_yolo(card_dir / card.weights_file, card.sha256), card, card_dir, device)

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
        img = to_bgr_uint8(image)
        conf = self.default_conf() if conf is None else float(conf)
        with self._lock:
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
        b = res.boxes
        return _to_detboxes(
            b.xyxy.cpu().numpy(), b.conf.cpu().numpy(), b.cls.cpu().numpy().astype(int), self.class_names
        )

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

        img = to_bgr_uint8(image)
        h, w = img.shape[:2]
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
        nh, nw = max(round(h * gain[0]), 1), max(round(w * gain[1]), 1)
        heat = np.asarray(heat, dtype=np.float32)[py : py + nh, px : px + nw]
        heat = cv2.resize(heat, (w, h), interpolation=cv2.INTER_LINEAR)
        heat = np.nan_to_num(heat, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(heat.min()), float(heat.max())
        heat = (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)
        return np.clip(heat, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------------------
# ONNX export and ONNX Runtime fast path
# --------------------------------------------------------------------------------------------------------


def export_onnx(path_or_id: str | os.PathLike, opset: int | None = None) -> Path:
    """Export the card's verified model.pt to ``model.onnx`` (static 1x3xSxS, fp32, no NMS inside) beside it
    and record ``extra["onnx"] = {file, sha256, opset, input_size, output}`` in card.json."""
    det = Detector.from_card(path_or_id)
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

    proto = onnx.load(str(dst), load_external_data=False)
    out_shape = [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    info = {
        "file": ONNX_FILE,
        "sha256": _sha256_file(dst),
        "opset": int(max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))),
        "input_size": det.input_size,
        "output": out_shape,
        "exported": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    _write_card(_updated(card, extra={**card.extra, "onnx": info}), card_dir)
    return dst


class OnnxDetector:
    """ONNX Runtime detector: our letterbox + Ultralytics-equivalent NMS; boxes match :class:`Detector`."""

    def __init__(self, session, card: ModelCard, card_dir: Path):
        self._session = session
        self._input = session.get_inputs()[0].name
        self.card = card
        self.card_dir = Path(card_dir)
        self.class_names = list(card.class_names)

    @classmethod
    def from_card(
        cls, path_or_id: str | os.PathLike, providers: Sequence[str] | None = None, threads: int | None = None
    ) -> OnnxDetector:
        import onnxruntime as ort

        card, card_dir = _load_det_card(path_or_id)
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
        img = to_bgr_uint8(image)
        conf = self.default_conf() if conf is None else float(conf)
        lb, gain, pad = letterbox(img, self.input_size)
        x = np.ascontiguousarray(lb[..., ::-1].transpose(2, 0, 1), dtype=np.float32)[None] / 255.0
        raw = self._session.run(None, {self._input: x})[0][0]
        boxes, scores, cls = _postprocess(raw, conf, iou, max_det, gain, pad, img.shape[:2])
        return _to_detboxes(boxes, scores, cls, self.class_names)


# --------------------------------------------------------------------------------------------------------
# Dataset reading and evaluation
# --------------------------------------------------------------------------------------------------------


def _read_data_yaml(data: str | os.PathLike) -> dict:
    import yaml

    path = Path(data)
    if not path.is_file():
        raise DataError(f"The dataset description {path} does not exist.")
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise DataError(f"The dataset description {path.name} is not valid YAML.") from e
    if not isinstance(cfg, dict) or "train" not in cfg or "val" not in cfg or "names" not in cfg:
        raise DataError(f"The dataset description {path.name} needs 'train', 'val' and 'names' entries.")
    root = Path(cfg.get("path") or path.parent)
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    names = cfg["names"]
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    cfg = {k: v for k, v in cfg.items() if k != "download"}  # never run a dataset's download script
    cfg.update(path=str(root), names=list(names), nc=len(names))
    return cfg


def _split_images(cfg: dict, split: str) -> list[Path]:
    entry = cfg.get(split)
    if not entry:
        return []
    root = Path(cfg["path"])
    files: list[Path] = []
    for item in entry if isinstance(entry, list) else [entry]:
        p = Path(item)
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.suffix == ".txt" and p.is_file():
            for line in p.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    q = Path(line.strip())
                    files.append(q if q.is_absolute() else root / q)
        else:
            raise DataError(f"The '{split}' images of the dataset ({p}) were not found.")
    return files


def _label_path(image: Path) -> Path:
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _read_yolo_labels(image: Path, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """YOLO txt (class cx cy w h, normalised) -> (boxes xyxy pixels, classes)."""
    lp = _label_path(image)
    if not lp.is_file():
        return np.zeros((0, 4)), np.zeros(0, dtype=int)
    rows = [r.split() for r in lp.read_text(encoding="utf-8").splitlines() if r.strip()]
    if not rows:
        return np.zeros((0, 4)), np.zeros(0, dtype=int)
    arr = np.array([[float(v) for v in r[:5]] for r in rows], dtype=np.float64)
    cx, cy, bw, bh = arr[:, 1] * w, arr[:, 2] * h, arr[:, 3] * w, arr[:, 4] * h
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    return boxes, arr[:, 0].astype(int)


def _load_image(path: Path) -> np.ndarray:
    """Read a dataset image exactly as Ultralytics does in training (OpenCV, 8-bit BGR), so the card's
    metrics measure the model rather than a difference in image decoding."""
    import cv2

    img = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"The dataset image {path.name} cannot be read.")
    return img


def _collect(
    detect: Callable[[Any], list[DetBox]], images: Sequence[Path], names: Sequence[str]
) -> tuple[list, list, list, list, list]:
    pb, ps, pl, gb, gl = [], [], [], [], []
    index = {n: i for i, n in enumerate(names)}
    for p in images:
        img = _load_image(p)
        h, w = img.shape[:2]
        boxes = detect(img)
        pb.append(np.array([b.xyxy() for b in boxes], dtype=np.float64).reshape(-1, 4))
        ps.append(np.array([b.confidence for b in boxes], dtype=np.float64))
        pl.append(np.array([index.get(b.label, -1) for b in boxes], dtype=int))
        g, c = _read_yolo_labels(p, h, w)
        gb.append(g)
        gl.append(c)
    return pb, ps, pl, gb, gl


def _filter(pb, ps, pl, conf: float):
    keep = [s > conf for s in ps]
    return (
        [b[k] for b, k in zip(pb, keep, strict=True)],
        [s[k] for s, k in zip(ps, keep, strict=True)],
        [c[k] for c, k in zip(pl, keep, strict=True)],
    )


def _metrics_at(pb, ps, pl, gb, gl, conf: float) -> dict[str, float]:
    from bonecls.detection import metrics as dm

    fb, fs, _ = _filter(pb, ps, pl, conf)
    counts = dm.precision_recall_counts(fb, fs, gb, 0.5)
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    pos = [len(g) > 0 for g in gb]
    flagged = [len(b) > 0 for b in fb]
    n_pos, n_neg = sum(pos), len(pos) - sum(pos)
    sens = sum(p and f for p, f in zip(pos, flagged, strict=True)) / n_pos if n_pos else float("nan")
    spec = (
        sum((not p) and (not f) for p, f in zip(pos, flagged, strict=True)) / n_neg if n_neg else float("nan")
    )
    return {
        "rsna_score": dm.rsna_score(fb, fs, gb),
        "precision50": tp / (tp + fp) if tp + fp else float("nan"),
        "recall50": tp / (tp + fn) if tp + fn else float("nan"),
        "image_sensitivity": sens,
        "image_specificity": spec,
    }


def _clean(v):
    """Round floats for the card; NaN (undefined, e.g. precision with no box) becomes None."""
    if isinstance(v, (float, np.floating)):
        return None if not np.isfinite(v) else round(float(v), 6)
    return v


def evaluate_detector(
    detect: Callable[[Any], list[DetBox]] | Detector | OnnxDetector,
    data: str | os.PathLike | dict,
    split: str = "test",
    conf: float = DEFAULT_CONF,
    *,
    names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Our metrics on one split of a YOLO dataset (bonecls.detection_metrics).

    ``map50`` / ``map50_95``: COCO 101-point AP on all boxes with confidence > 0.001; ``rsna_score``,
    ``precision50``, ``recall50`` (IoU 0.5), ``image_sensitivity`` / ``image_specificity`` (image
    flagged when any box survives) on boxes with confidence > ``conf``.
    """
    from bonecls.detection import metrics as dm

    cfg = data if isinstance(data, dict) else _read_data_yaml(data)
    names = list(names or cfg["names"])
    images = _split_images(cfg, split)
    if not images:
        raise DataError(f"The dataset has no '{split}' images to evaluate on.")
    if isinstance(detect, (Detector, OnnxDetector)):
        fn = detect.detect
        detect = lambda rg: fn(rg, conf=0.001, max_det=100)  # noqa: E731
    pb, ps, pl, gb, gl = _collect(detect, images, names)
    out = {
        "map50": dm.mean_average_precision(pb, ps, gb, pred_labels=pl, gt_labels=gl, iou_thresholds=0.5),
        "map50_95": dm.mean_average_precision(
            pb, ps, gb, pred_labels=pl, gt_labels=gl, iou_thresholds=dm.COCO_IOU_THRESHOLDS
        ),
    }
    out.update(_metrics_at(pb, ps, pl, gb, gl, conf))
    out.update(
        conf_threshold=float(conf),
        n_images=len(images),
        n_boxes=int(sum(len(g) for g in gb)),
        n_positive_images=int(sum(len(g) > 0 for g in gb)),
    )
    return {k: _clean(v) for k, v in out.items()}


def choose_conf_threshold(
    detector: Detector, cfg: dict, split: str = "val", grid: Sequence[float] | None = None
) -> tuple[float, float]:
    """Confidence threshold maximising the RSNA score on ``split``.

    Boxes kept by NMS at a low threshold and then filtered at t are exactly those kept at t (NMS only
    lets higher-scoring boxes suppress lower ones), so one pass at 0.001 serves the whole grid.
    Ties (a plateau) go to the plateau's middle. Returns ``(threshold, rsna_score_at_threshold)``.
    """
    from bonecls.detection import metrics as dm

    images = _split_images(cfg, split)
    if not images:
        return DEFAULT_CONF, float("nan")
    grid = list(grid or np.round(np.arange(0.05, 0.951, 0.05), 2))
    pb, ps, pl, gb, _ = _collect(lambda rg: detector.detect(rg, conf=0.001), images, cfg["names"])
    scores = []
    for t in grid:
        fb, fs, _ = _filter(pb, ps, pl, t)
        s = dm.rsna_score(fb, fs, gb)
        scores.append(-1.0 if np.isnan(s) else s)
    best = max(scores)
    tied = [t for t, s in zip(grid, scores, strict=True) if s == best]
    return float(tied[len(tied) // 2]), best  # middle of the best plateau: least sensitive to drift


# --------------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------------

_BAD_AMP_GPU = r"(nvidia|geforce|quadro|tesla).*?(1660|1650|1630|t400|t550|t600|t1000|t1200|t2000|k40m)"


def _offline_check_amp(model) -> bool:
    """Ultralytics' check_amp without its yolo26n.pt download: AMP on CUDA except on GPUs known to fail."""
    import re

    import torch

    device = next(model.parameters()).device
    if device.type != "cuda":
        return False
    return not re.search(_BAD_AMP_GPU, torch.cuda.get_device_name(device), re.IGNORECASE)


def _trainer_class():
    """A DetectionTrainer whose AMP check never downloads. Defined in a function (ultralytics is imported
    lazily); DDP pickles it by value with cloudpickle, so it also applies in the worker processes."""
    _ultralytics()
    import ultralytics.engine.trainer as trainer_mod
    from ultralytics.models.yolo.detect import DetectionTrainer

    class OfflineDetectionTrainer(DetectionTrainer):
        def _setup_train(self, *args, **kwargs):
            original = trainer_mod.check_amp
            trainer_mod.check_amp = _offline_check_amp
            try:
                return super()._setup_train(*args, **kwargs)
            finally:
                trainer_mod.check_amp = original

    return OfflineDetectionTrainer


def _open_start_weights(weights: str | os.PathLike, weights_sha256: str | None):
    """A card (id, folder or card.json) or a bare .pt with its expected sha256 -> (verified YOLO, sha)."""
    p = Path(weights)
    if p.suffix == ".pt":
        if not weights_sha256:
            raise WeightsError(
                f"The starting weights {p.name} have no model card; give their sha256 (--weights-sha256) "
                f"so they can be verified before they are opened."
            )
        sha = weights_sha256.strip().lower()
        return _open_yolo(p, sha, "starting weights"), sha
    card, card_dir = _load_det_card(weights)
    return _open_yolo(card_dir / card.weights_file, card.sha256, "starting weights"), card.sha256


def train_detector(
    data: str | os.PathLike,
    output: str | os.PathLike,
    *,
    weights: str | os.PathLike | None = None,
    weights_sha256: str | None = None,
    arch: str = "yolov8n",
    epochs: int = 50,
    imgsz: int = DEFAULT_IMAGE_SIZE,
    batch: int = 16,
    device: str = "cpu",
    workers: int = 2,
    seed: int = 0,
    patience: int = 50,
    model_id: str | None = None,
    command: str = "",
    training_data: str | None = None,
    keep_run: bool = False,
    plots: bool = False,
    train_kwargs: dict | None = None,
) -> tuple[ModelCard, Path]:
    """Train YOLOv8 on a YOLO dataset, evaluate on its test split, write ``model.pt`` + ``card.json``.

    From ``{arch}.yaml`` (scratch, no download) unless ``weights`` (a card, or a .pt with its sha256) is
    given. Ultralytics' run directory is a temporary directory (``output/run`` with ``keep_run``). The
    confidence threshold is chosen on the validation split (best RSNA score) and stored as both
    ``thresholds.negative_below`` and ``thresholds.positive_at``; test metrics use it.
    """
    from bonecls.weights import ModelCard

    configure_offline()
    out = Path(output)
    model_id = model_id or out.name
    cfg = _read_data_yaml(data)
    counts = {s: len(_split_images(cfg, s)) for s in ("train", "val", "test")}
    if counts["test"] == 0:
        raise DataError("The dataset has no 'test' split; it is needed for the model card's metrics.")
    out.mkdir(parents=True, exist_ok=True)
    if plots and not fonts_available():
        plots = False

    run_parent = out / "run" if keep_run else Path(tempfile.mkdtemp(prefix="bonecls-yolo-"))
    t0 = time.time()
    try:
        run_parent.mkdir(parents=True, exist_ok=True)
        # Sanitised copy: absolute dataset root, no 'download' entry (it would run code or fetch data).
        import yaml

        data_yaml = run_parent / "data.yaml"
        data_yaml.write_text(yaml.safe_dump({**cfg, "path": cfg["path"]}), encoding="utf-8")

        ul = _ultralytics()
        if weights is not None:
            yolo, start_sha = _open_start_weights(weights, weights_sha256)
            start_desc = f"fine-tuned from weights sha256 {start_sha}"
        else:
            yolo = ul.YOLO(f"{arch}.yaml", task="detect")  # built from the packaged YAML; nothing fetched
            start_desc = "trained from scratch"
        kwargs = dict(
            data=str(data_yaml),
            epochs=int(epochs),
            imgsz=int(imgsz),
            batch=int(batch),
            device=device,
            workers=int(workers),
            seed=int(seed),
            deterministic=True,
            patience=int(patience),
            project=str(run_parent),
            name="train",
            exist_ok=True,
            plots=bool(plots),
            verbose=False,
            pretrained=False,
        )
        kwargs.update(train_kwargs or {})
        yolo.train(trainer=_trainer_class(), **kwargs)
        trainer = yolo.trainer
        wdir = Path(trainer.save_dir) / "weights"
        best = wdir / "best.pt" if (wdir / "best.pt").is_file() else wdir / "last.pt"
        if not best.is_file():
            raise DataError("Training finished without writing a checkpoint.")
        dst = out / WEIGHTS_FILE
        shutil.copyfile(best, dst)
        size = dst.stat().st_size
        if size > MAX_WEIGHTS_BYTES:
            raise WeightsError(f"The trained weights are {size / 2**20:.1f} MB, over the 25 MB limit.")
        sha = _sha256_file(dst)
        train_seconds = time.time() - t0
    finally:
        if not keep_run:
            shutil.rmtree(run_parent, ignore_errors=True)

    card = ModelCard(
        id=model_id,
        task=TASK,
        framework=FRAMEWORK,
        architecture=arch,
        class_names=list(cfg["names"]),
        positive_classes=list(cfg["names"]),
        input_size=int(imgsz),
        in_chans=3,
        normalization={"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
        temperature=1.0,
        thresholds={"negative_below": DEFAULT_CONF, "positive_at": DEFAULT_CONF},  # replaced below
        weights_file=WEIGHTS_FILE,
        sha256=sha,
        training_data=training_data
        or (
            f"YOLO dataset '{Path(cfg['path']).name}': {counts['train']} train / {counts['val']} val / "
            f"{counts['test']} test images, classes {list(cfg['names'])}"
        ),
        test_metrics={},
        command=command,
        intended_use=INTENDED_USE,
        limitations=LIMITATIONS,
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        extra={},
    )
    det = Detector(
        _open_yolo(dst, sha), card, out, device=device if device == "cpu" else str(device).split(",")[0]
    )
    conf, val_rsna = choose_conf_threshold(det, cfg, "val")
    metrics = evaluate_detector(det, cfg, "test", conf=conf)
    metrics["val_rsna_score"] = _clean(val_rsna) if val_rsna >= 0 else None
    metrics["map_interpolation"] = "coco101"
    card = _updated(
        card,
        thresholds={"negative_below": conf, "positive_at": conf},
        test_metrics=metrics,
        extra={
            "start": start_desc,
            "epochs": int(epochs),
            "batch": int(batch),
            "seed": int(seed),
            "device": str(device),
            "train_seconds": round(train_seconds, 1),
            "ultralytics_version": ul.__version__,
            "weights_bytes": size,
            "license_note": "Weights produced with Ultralytics (AGPL-3.0).",
        },
    )
    _write_card(card, out)
    return card, out


def describe_card(card: ModelCard) -> str:
    """The card's id, operating threshold and test metrics as indented JSON (CLI output)."""
    summary = {"id": card.id, "thresholds": card.thresholds.model_dump(), "test_metrics": card.test_metrics}
    return json.dumps(summary, indent=2, default=str)
