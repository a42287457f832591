"""Model cards (pydantic), safetensors save/load with sha256 verification, and the weights root.

A model is a folder ``<weights_root>/<id>/`` holding ``card.json`` and the weight file named on
the card (``model.safetensors`` for PyTorch models). The card's ``sha256`` is checked before a
single byte of the weight file is deserialised; PyTorch weights are only ever read with
safetensors (never pickle). Ultralytics cards are validated here too; ``bonecls.detection`` calls
:func:`verify_weights` before it opens their ``.pt`` file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bonecls.card_sections import (
    TILE_WHEN_FIELD_OVER,
    DeclaredScope,
    Normalization,
    OperatingPoint,
    OperatingPoints,
    ScopeSection,
    Thresholds,
    TrainingScale,
)
from bonecls.errors import WeightsError

__all__ = [
    "CARD_FILE",
    "PYTORCH_ARCHITECTURES",
    "CardEntry",
    "DeclaredScope",
    "ModelCard",
    "Normalization",
    "OperatingPoint",
    "OperatingPoints",
    "ScopeSection",
    "Thresholds",
    "TrainingScale",
    "card_schema",
    "list_cards",
    "load_card",
    "load_pytorch",
    "read_weights",
    "save_pytorch",
    "scan_cards",
    "sha256_bytes",
    "sha256_file",
    "verify_weights",
    "weights_root",
    "write_card",
]

CARD_FILE = "card.json"
MAX_CARD_BYTES = 1 * 2**20
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# The names of bonecls.models.list_models(), here so that reading cards does not import torch
# (tests/test_models.py keeps the two equal).
PYTORCH_ARCHITECTURES = (
    "simple_cnn",
    "custom_v2",
    "custom_v2_max",
    "custom_v2_lse",
    "custom_v2_lse_os8",
    "custom_v2_lse_lcn",
    "custom_v2w_lse_lcn",
    "resnet18",
    "resnet50",
    "densenet121",
    *(f"efficientnet_b{i}" for i in range(7)),
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "inception_v3",
    "xception",
)
_WEIGHT_SUFFIXES = {
    "pytorch": (".safetensors",),
    "ultralytics": (".pt", ".safetensors"),
    "keras": (".keras", ".h5"),
}


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


class ModelCard(BaseModel):
    """Everything needed to run, interpret and audit one model (``card.json``).

    ``sha256`` is the checksum of the weight file; it is empty only on a card that has not been
    saved yet (``save_pytorch`` fills it in); loading refuses a card without it.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    schema_version: Literal[1] = 1
    id: str = Field(
        pattern=_ID_RE.pattern,
        description="Model id (usually its folder name): letters, digits, '.', '_', '-'; no leading '.'.",
    )
    task: Literal["fracture", "threeclass", "pneumonia", "pneumonia-det", "fracture-det", "abnormality"]
    framework: Literal["pytorch", "ultralytics", "keras"] = "pytorch"
    architecture: str = Field(min_length=1)
    head: Literal["linear", "dense_bn"] = "linear"
    class_names: list[str] = Field(min_length=1)
    positive_classes: list[str] = Field(min_length=1)
    input_size: int = Field(ge=8, le=4096)
    in_chans: Literal[1, 3] = 1
    normalization: Normalization
    temperature: float = Field(default=1.0, gt=0.0, allow_inf_nan=False)
    thresholds: Thresholds = Field(default_factory=lambda: Thresholds(negative_below=0.3, positive_at=0.7))
    operating_points: OperatingPoints | None = None
    weights_file: str = "model.safetensors"
    sha256: str = Field(default="", pattern=r"^([0-9a-f]{64})?$")
    training_data: str = ""
    test_metrics: dict[str, Any] = Field(default_factory=dict)
    command: str = ""
    intended_use: str = "Research and demonstration of a reading aid. Not a diagnosis; not for clinical use."
    limitations: str = ""
    created: str = Field(default_factory=_now)
    evaluation: dict[str, Any] = Field(
        default_factory=dict,
        description="Figures measured after training by train/evaluate.py, e.g. held_out_variants: the "
        "model on phantoms of a CT, a processing chain and a lesion style it never saw (metrics, paired "
        "lift, pointing game); see bonecls.training.held_out.",
    )
    extra: dict[str, Any] = Field(default_factory=dict)
    scope: ScopeSection | None = None
    scale: TrainingScale | None = Field(
        default=None,
        description="The mm per pixel of the model's input in training (bonecls.phantom.scale for phantom "
        "recipes); None: unknown, and every film is read in one squashed pass.",
    )
    input_transform: Literal["rank"] | None = Field(
        default=None,
        description="A grey-level transform applied to every image before the network, in training and in "
        "reading (bonecls.detection.boxes.INPUT_TRANSFORMS); 'rank': each pixel's mid-rank among the "
        "image's pixels. Detectors only; None: the image as it is.",
    )

    @field_validator("sha256", mode="before")
    @classmethod
    def _sha_lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("class_names", "positive_classes")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        if any(not name.strip() for name in v):
            raise ValueError("class names must be non-empty strings")
        if len(set(v)) != len(v):
            raise ValueError("class names must be unique")
        return v

    @field_validator("weights_file")
    @classmethod
    def _weights_file(cls, v: str) -> str:
        if not v or v in (".", "..") or "/" in v or "\\" in v or "\x00" in v or v != v.strip():
            raise ValueError("weights_file must be a plain file name inside the model folder")
        return v

    @property
    def scale_summary(self) -> str:
        """The training scale in one line for people (the Models page)."""
        if self.scale is None:
            return "not recorded: every film is read whole, squashed to the model's input"
        s = self.scale
        how = (
            "the detector reads the whole film"
            if self.framework == "ultralytics"
            else f"films over {TILE_WHEN_FIELD_OVER:g} fields are read in tiles"
        )
        return (
            f"{s.mm_per_pixel:.2f} mm per pixel ({s.p5_mm_per_pixel:.2f}–{s.p95_mm_per_pixel:.2f}), a "
            f"{s.mm_per_pixel * self.input_size:.0f} mm field; {how}"
        )

    @model_validator(mode="after")
    def _consistency(self) -> ModelCard:
        missing = [c for c in self.positive_classes if c not in self.class_names]
        if missing:
            raise ValueError(f"positive_classes {missing} are not in class_names {self.class_names}")
        if len(self.normalization.mean) != self.in_chans:
            raise ValueError(
                f"normalization has {len(self.normalization.mean)} channel(s) but in_chans is {self.in_chans}"
            )
        op = self.operating_points
        if op is not None and (
            abs(op.doubt.threshold - self.thresholds.negative_below) > 1e-9
            or abs(op.positive.threshold - self.thresholds.positive_at) > 1e-9
        ):
            raise ValueError(
                "operating_points must be measured at the card's thresholds "
                "(doubt at negative_below, positive at positive_at)"
            )
        if self.input_transform is not None and self.framework != "ultralytics":
            raise ValueError(
                f"input_transform '{self.input_transform}' is applied by the detector only; "
                f"a {self.framework} model's card cannot carry it"
            )
        suffixes = _WEIGHT_SUFFIXES[self.framework]
        if not self.weights_file.lower().endswith(suffixes):
            raise ValueError(
                f"a {self.framework} model's weights_file must end with {' or '.join(suffixes)} "
                f"(got '{self.weights_file}'); PyTorch weights are only loaded from safetensors, never pickle"
            )
        if self.framework == "pytorch" and self.architecture not in PYTORCH_ARCHITECTURES:
            raise ValueError(
                f"unknown architecture '{self.architecture}'; available: {', '.join(PYTORCH_ARCHITECTURES)}"
            )
        return self


def card_schema() -> dict[str, Any]:
    """JSON Schema of ``card.json`` (generated from :class:`ModelCard`)."""
    schema = ModelCard.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema.setdefault("title", "bonecls model card")
    return schema


# --------------------------------------------------------------------------------------------------
# Files


def weights_root() -> Path:
    """``$BONECLS_WEIGHTS`` if set, else the ``weights/`` folder beside the ``bonecls`` package."""
    env = os.environ.get("BONECLS_WEIGHTS", "").strip()
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent.parent / "weights"


def sha256_bytes(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file, streamed in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600; published weights and cards are world-readable like any other file
        # (a container's non-root user must read them), honouring the umask.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_card(card: ModelCard, out_dir: str | os.PathLike) -> Path:
    """Write ``card.json`` atomically; returns its path."""
    path = Path(out_dir) / CARD_FILE
    _atomic_write(path, (card.model_dump_json(indent=2) + "\n").encode("utf-8"))
    return path


def _validation_summary(exc: pydantic.ValidationError, limit: int = 5) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "card"
        parts.append(f"{loc}: {err.get('msg', '')}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def _read_card_file(card_path: Path) -> ModelCard:
    where = str(card_path)
    try:
        if card_path.stat().st_size > MAX_CARD_BYTES:
            raise WeightsError(f"The model card {where} is larger than 1 MiB; it is not a model card.")
        text = card_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WeightsError(f"The model card {where} does not exist.") from None
    except UnicodeDecodeError:
        raise WeightsError(f"The model card {where} is not UTF-8 text; reinstall the model.") from None
    except OSError as exc:
        raise WeightsError(f"The model card {where} cannot be read ({exc.strerror or exc}).") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WeightsError(
            f"The model card {where} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "reinstall the model."
        ) from None
    if not isinstance(data, dict):
        raise WeightsError(f"The model card {where} must be a JSON object; reinstall the model.")
    try:
        return ModelCard.model_validate(data)
    except pydantic.ValidationError as exc:
        raise WeightsError(
            f"The model card {where} is invalid ({_validation_summary(exc)}); "
            "fix the card or reinstall the model."
        ) from None


def _resolve(path_or_id: str | os.PathLike) -> Path:
    """Path of a card.json from a model folder, a card.json path, or an id under the weights root."""
    p = Path(path_or_id).expanduser()
    if p.is_dir():
        return p / CARD_FILE
    if p.is_file():
        return p
    text = os.fspath(path_or_id)
    if _ID_RE.match(text) and "/" not in text and "\\" not in text:
        root = weights_root()
        candidate = root / text / CARD_FILE
        if candidate.is_file():
            return candidate
        for entry in scan_cards(root):  # folder named differently from the card id
            if entry.card is not None and entry.card.id == text:
                return entry.path
        available = [e.card.id for e in scan_cards(root) if e.card is not None]
        listing = ", ".join(available) if available else "none installed"
        raise WeightsError(f"No model named '{text}' in {root} (available: {listing}).")
    raise WeightsError(f"No model card at {p}: give a model folder, its card.json, or a model id.")


def verify_weights(card: ModelCard, card_dir: str | os.PathLike) -> Path:
    """Check that the card's weight file exists and matches its sha256; returns the file's path.

    Callers that deserialise the file afterwards should prefer reading the bytes once and checking
    them with :func:`sha256_bytes` (as :func:`load_pytorch` does), so the bytes checked are the
    bytes loaded.
    """
    path = _weights_path(card, Path(card_dir))
    if sha256_file(path) != card.sha256:
        raise _checksum_error(card)
    return path


def _weights_path(card: ModelCard, card_dir: Path) -> Path:
    if not card.sha256:
        raise WeightsError(
            f"The card of model '{card.id}' has no sha256 checksum for its weight file; "
            "weights without a checksum are not loaded. Re-save or reinstall the model."
        )
    path = card_dir / card.weights_file
    if not path.is_file():
        raise WeightsError(
            f"The weight file '{card.weights_file}' of model '{card.id}' is missing from {card_dir}; "
            "reinstall the model."
        )
    return path


def _checksum_error(card: ModelCard) -> WeightsError:
    return WeightsError(
        f"The weight file for model '{card.id}' does not match the checksum on its card; "
        "it may be corrupted or tampered with. Reinstall the model."
    )


def read_weights(card: ModelCard, card_dir: str | os.PathLike) -> bytes:
    """The card's weight file, read once and checked against its sha256 before anything parses it.

    For loaders that deserialise from memory (Keras): the bytes checked are the bytes loaded.
    """
    data = _weights_path(card, Path(card_dir)).read_bytes()
    if sha256_bytes(data) != card.sha256:
        raise _checksum_error(card)
    return data


def load_card(path_or_id: str | os.PathLike, *, verify: bool = True) -> tuple[ModelCard, Path]:
    """Read and validate a card; returns ``(card, model_folder)``.

    ``path_or_id`` is a model folder, a ``card.json`` path, or a model id under
    :func:`weights_root`. With ``verify`` the weight file must exist and match the card's sha256.
    Every problem raises ``WeightsError`` with a sentence saying what to do.
    """
    card_path = _resolve(path_or_id)
    card = _read_card_file(card_path)
    card_dir = card_path.parent
    if verify:
        verify_weights(card, card_dir)
    else:
        _weights_path(card, card_dir)
    return card, card_dir


@dataclass(frozen=True)
class CardEntry:
    """One folder found by :func:`scan_cards`: a valid ``card`` or an ``error`` sentence."""

    card: ModelCard | None
    path: Path  # the card.json
    error: str | None = None

    @property
    def directory(self) -> Path:
        return self.path.parent


def scan_cards(root: str | os.PathLike | None = None, *, verify_checksums: bool = False) -> list[CardEntry]:
    """Every ``<root>/*/card.json``, valid or not (for the Models page), sorted by folder name.

    Checks the schema and that the weight file exists; hashing every weight file is opt-in
    (``verify_checksums``) because loading always verifies anyway.
    """
    root = Path(root) if root is not None else weights_root()
    if not root.is_dir():
        return []
    entries: list[CardEntry] = []
    seen: dict[str, Path] = {}
    for card_path in sorted(root.glob(f"*/{CARD_FILE}")):
        try:
            card = _read_card_file(card_path)
            if verify_checksums:
                verify_weights(card, card_path.parent)
            else:
                _weights_path(card, card_path.parent)
            if card.id in seen:
                raise WeightsError(
                    f"Model id '{card.id}' is used by both {seen[card.id]} and {card_path.parent}; "
                    "remove one of them."
                )
            seen[card.id] = card_path.parent
            entries.append(CardEntry(card, card_path))
        except WeightsError as exc:
            entries.append(CardEntry(None, card_path, str(exc)))
    return entries


def list_cards(root: str | os.PathLike | None = None) -> list[tuple[ModelCard, Path]]:
    """Valid cards under ``root`` as ``(card, model_folder)``; invalid ones are skipped with a warning."""
    out = []
    for entry in scan_cards(root):
        if entry.card is None:
            warnings.warn(entry.error or f"Invalid model card {entry.path}.", RuntimeWarning, stacklevel=2)
        else:
            out.append((entry.card, entry.directory))
    return out


# --------------------------------------------------------------------------------------------------
# PyTorch weights (safetensors only)


def _state_for_saving(model, fp16: bool) -> dict:
    import torch

    params = {name for name, _ in model.named_parameters()}
    state = {}
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu")
        if fp16 and name in params and t.is_floating_point() and t.dtype != torch.float16:
            half = t.to(torch.float16)
            # keep float32 where fp16 would overflow (a weight beyond +-65504)
            if bool(torch.isfinite(half).all()) or not bool(torch.isfinite(t).all()):
                t = half
        state[name] = t.contiguous().clone()
    return state


def _check_architecture(state: dict, card: ModelCard) -> None:
    """Refuse to save weights that ``load_pytorch`` could not load into ``card.architecture``."""
    import torch

    from bonecls.models import create_model

    with torch.device("meta"):
        skeleton = create_model(card.architecture, len(card.class_names), card.in_chans, head=card.head)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        missing = sorted(set(expected) - set(got))[:3]
        unexpected = sorted(set(got) - set(expected))[:3]
        shapes = [k for k in set(expected) & set(got) if expected[k] != got[k]][:3]
        raise WeightsError(
            f"The model does not match the card (architecture '{card.architecture}', head '{card.head}', "
            f"{len(card.class_names)} classes, {card.in_chans} channel(s)): missing {missing}, "
            f"unexpected {unexpected}, different shapes {shapes}."
        )


def save_pytorch(model, card: ModelCard, out_dir: str | os.PathLike, *, fp16: bool = True) -> ModelCard:
    """Save ``model`` as ``model.safetensors`` + ``card.json`` in ``out_dir``; returns the saved card.

    With ``fp16`` floating-point parameters are stored as float16 (BatchNorm running statistics and
    integer buffers keep their dtype). Both files are written atomically (temp file + rename); the
    card gets the weight file's sha256.
    """
    import safetensors.torch as st

    if card.framework != "pytorch":
        raise WeightsError(f"save_pytorch saves PyTorch models; the card says framework '{card.framework}'.")
    out = Path(out_dir)
    state = _state_for_saving(model, fp16)
    _check_architecture(state, card)
    weights_file = card.weights_file if card.weights_file.endswith(".safetensors") else "model.safetensors"
    data = st.save(state, metadata={"format": "pt", "bonecls_id": card.id, "architecture": card.architecture})
    saved = card.model_copy(update={"weights_file": weights_file, "sha256": sha256_bytes(data)})
    saved = ModelCard.model_validate(saved.model_dump())
    _atomic_write(out / weights_file, data)
    write_card(saved, out)
    return saved


def load_pytorch(path_or_id: str | os.PathLike, *, device: str = "cpu"):
    """Load a PyTorch model from its folder or id; returns ``(model, card)`` in eval mode, float32.

    The weight file is read once; its sha256 is checked against the card before the bytes are
    handed to safetensors. Pickle (``torch.load``) is never used.
    """
    import safetensors.torch as st

    from bonecls.models import create_model

    card, card_dir = load_card(path_or_id, verify=False)
    if card.framework != "pytorch":
        raise WeightsError(
            f"Model '{card.id}' is a {card.framework} model; "
            "it is loaded by bonecls.detection, not as a classifier."
        )
    path = _weights_path(card, card_dir)
    data = path.read_bytes()
    if sha256_bytes(data) != card.sha256:
        raise _checksum_error(card)
    try:
        state = st.load(data)
    except Exception as exc:
        raise WeightsError(
            f"The weight file of model '{card.id}' is not a readable safetensors file ({exc}); "
            "reinstall the model."
        ) from exc
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    model = create_model(card.architecture, len(card.class_names), card.in_chans, head=card.head)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(
            f"The weights of model '{card.id}' do not fit architecture '{card.architecture}' "
            f"(head '{card.head}', {len(card.class_names)} classes, {card.in_chans} channel(s)); "
            f"the card and the weight file disagree. Details: {str(exc)[:300]}"
        ) from exc
    model.eval()
    return model.to(device), card


if __name__ == "__main__":  # python -m bonecls.weights > card.schema.json
    print(json.dumps(card_schema(), indent=2))
