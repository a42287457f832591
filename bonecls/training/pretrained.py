"""Start a backbone from pretrained weights: downloaded (``--pretrained imagenet``) or a file on disk
(``--pretrained PATH``), for clusters that cannot reach the internet.

A file is a timm or torchvision checkpoint: ``.safetensors``, or a pickle (``.pth``/``.pt``/``.bin``)
read with ``torch.load(weights_only=True)`` so it cannot run code. Its sha256 is computed, checked
against ``--pretrained-sha256`` when given, and recorded on the card with how many of the model's
tensors it filled. Tensors are matched by name (a ``module.`` / ``model.`` prefix is dropped, our
``fc.fc`` head wrapper is looked up as ``fc``) and shape; a 3-channel first convolution is folded
for a 1-channel model with timm's ``adapt_input_conv``. The classifier head never matches a different
class count and starts fresh. A file that fills fewer than half of the backbone's tensors is refused:
it is for another architecture.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bonecls.training import TrainingError

IMAGENET = "imagenet"
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
MIN_FILLED = 0.5


def pretrained_arg(value: str) -> str | None:
    """``--pretrained`` values: ``imagenet`` (download), ``none``, or a path to a checkpoint file."""
    low = value.strip().lower()
    if low in ("imagenet", "true", "yes"):
        return IMAGENET
    if low in ("none", "false", "no", ""):
        return None
    return value


def add_pretrained_args(group: argparse._ArgumentGroup) -> None:
    """``--pretrained [imagenet|PATH]``, ``--no-pretrained`` and ``--pretrained-sha256`` (both trainers)."""
    group.add_argument(
        "--pretrained",
        nargs="?",
        const=IMAGENET,
        default=None,
        type=pretrained_arg,
        metavar="imagenet|PATH",
        help="start from pretrained weights: 'imagenet' downloads them (internet needed); a path loads a "
        "timm/torchvision checkpoint (.safetensors, or .pth read with weights_only=True), sha256 on the card",
    )
    group.add_argument("--no-pretrained", dest="pretrained", action="store_const", const=None)
    group.add_argument(
        "--pretrained-sha256",
        default=None,
        metavar="HEX",
        help="refuse a --pretrained file with another sha256",
    )


def normalize_pretrained(value: Any) -> str | None:
    """Presets say ``True``/``False``; the command line says ``imagenet``/a path/None."""
    if value is True:
        return IMAGENET
    if value in (False, None):
        return None
    return str(value)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, never unpickling code; a nested ``state_dict``/``model`` is
    unwrapped."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        elif suffix in PICKLE_SUFFIXES:
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise TrainingError(
                f"--pretrained {path}: expected a .safetensors or .pth/.pt checkpoint file, not '{suffix}'."
            )
    except TrainingError:
        raise
    except Exception as exc:  # safetensors and torch raise many types for a damaged or unsafe file
        raise TrainingError(
            f"--pretrained {path} cannot be read as weights ({type(exc).__name__}: {exc}); a pickle that "
            "holds code is refused on purpose."
        ) from None
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TrainingError(f"--pretrained {path} holds no state dict of tensors.")
    return state


def _candidates(name: str) -> list[str]:
    """Checkpoint names that may hold our tensor ``name``."""
    out = [name]
    if ".fc.fc." in f".{name}" or name.startswith("fc.fc."):
        out.append(name.replace("fc.fc.", "fc.", 1))
    return out


def load_pretrained_file(
    model: nn.Module, path: str | Path, in_chans: int, expected_sha256: str | None
) -> dict:
    """Fill ``model`` from the checkpoint at ``path`` (see the module docstring); returns what the card
    records: file name, sha256, tensors filled / model tensors, and the ones left as initialized."""
    from timm.models import adapt_input_conv

    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"--pretrained {path} does not exist; give a checkpoint file or 'imagenet'.")
    sha = file_sha256(path)
    if expected_sha256 and sha.lower() != expected_sha256.strip().lower():
        raise TrainingError(
            f"--pretrained {path} has sha256 {sha}, not the expected {expected_sha256}; the file is not "
            "the one you meant (or was damaged in transfer)."
        )
    raw = read_checkpoint(path)
    state = {}
    for k, v in raw.items():
        for prefix in ("module.", "model."):
            k = k.removeprefix(prefix)
        state[k] = v
    own = model.state_dict()
    filled: dict[str, torch.Tensor] = {}
    for name, tensor in own.items():
        src = next((state[c] for c in _candidates(name) if c in state), None)
        if src is None:
            continue
        if (
            src.ndim == 4
            and tensor.ndim == 4
            and src.shape[1] != tensor.shape[1]
            and src.shape[0] == tensor.shape[0]
        ):
            src = adapt_input_conv(in_chans, src)
        if tuple(src.shape) == tuple(tensor.shape):
            filled[name] = src.to(tensor.dtype)
    head = {n for n in own if n.startswith(("fc.", "head.", "classifier."))}
    backbone = [n for n in own if n not in head and not n.endswith("num_batches_tracked")]
    share = sum(n in filled for n in backbone) / max(1, len(backbone))
    if share < MIN_FILLED:
        raise TrainingError(
            f"--pretrained {path.name} fills only {share:.0%} of this model's backbone tensors; it is a "
            "checkpoint of another architecture (give the matching --model)."
        )
    model.load_state_dict(filled, strict=False)
    return {
        "source": "file",
        "file": path.name,
        "sha256": sha,
        "tensors_filled": len(filled),
        "tensors_total": len(own),
        "backbone_filled": round(share, 4),
        "not_filled": sorted(set(own) - set(filled))[:20],
    }


def pretrained_record(value: str | None) -> dict | None:
    """What the card says when the weights came from a download (or from nowhere)."""
    if value == IMAGENET:
        return {"source": "imagenet", "note": "downloaded by timm/torchvision at training time"}
    return None
