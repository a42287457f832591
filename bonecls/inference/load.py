"""The one place that decides which class serves a classifier card: :func:`load_classifier`.

A card names its framework (``pytorch`` or ``keras``); a caller names an engine. :data:`BACKENDS`, one
table {(framework, engine) -> loader} in the manner of ultralytics' ``AutoBackend``, turns the pair
into a predictor, so the CLI, the app and its worklist never test a card's framework themselves and
a new engine or framework is one row here. Engines:

* ``"native"``: the card's own framework (:class:`~bonecls.inference.predictor.Predictor` or
  :class:`~bonecls.inference.keras_predictor.KerasPredictor`); every CAM method works on it;
* ``"pytorch"`` / ``"keras"``: that framework, which must be the card's;
* ``"onnx"``: the ONNX Runtime twin of a PyTorch classifier (predict-only; ``explain`` is delegated to
  PyTorch), or :class:`~bonecls.inference.onnx.FastPathError` when it cannot be built;
* ``"auto"``: the fastest engine for predict-only work: ONNX Runtime where the table has it for the
  framework, it builds, passes its parity check and ``BONECLS_ONNX`` is not 0; the native one otherwise.

Each loader imports its framework only when called: loading a PyTorch card never imports TensorFlow.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from bonecls.errors import WeightsError
from bonecls.inference.results import Explanation, Prediction
from bonecls.weights import ModelCard, load_card

__all__ = ["BACKENDS", "ENGINES", "Classifier", "Engine", "engines_for", "load_classifier"]

Engine = Literal["auto", "native", "pytorch", "keras", "onnx"]
ENGINES: tuple[str, ...] = ("auto", "native", "pytorch", "keras", "onnx")


class Classifier(Protocol):
    """What every engine's predictor answers (PyTorch, Keras and ONNX Runtime alike)."""

    card: ModelCard
    batch_size: int

    def predict(self, rg: Any) -> Prediction: ...

    def predict_batch(self, rgs: Sequence[Any]) -> list[Prediction]: ...

    def explain(
        self,
        rg: Any,
        method: str = "gradcam",
        target_class: str | int | None = None,
        colormap: str = "jet",
        opacity: float = 0.45,
    ) -> Explanation: ...


Loader = Callable[..., Classifier]


def _pytorch(
    card_dir: Path, *, device: str, native: Classifier | None, threads: int | None, scope: bool
) -> Classifier:
    from bonecls.inference.predictor import Predictor

    return native if native is not None else Predictor.from_card(card_dir, device=device, scope=scope)


def _keras(
    card_dir: Path, *, device: str, native: Classifier | None, threads: int | None, scope: bool
) -> Classifier:
    from bonecls.inference.keras_predictor import KerasPredictor

    return native if native is not None else KerasPredictor.from_card(card_dir, device=device, scope=scope)


def _onnx(
    card_dir: Path, *, device: str, native: Classifier | None, threads: int | None, scope: bool
) -> Classifier:
    from bonecls.inference.onnx import OnnxPredictor

    torch_predictor = _pytorch(card_dir, device=device, native=native, threads=threads, scope=scope)
    return OnnxPredictor.from_predictor(torch_predictor, threads=threads)


#: (card framework, engine) -> loader. The native engine of a framework is the row whose engine is
#: the framework's own name.
BACKENDS: dict[tuple[str, str], Loader] = {
    ("pytorch", "pytorch"): _pytorch,
    ("pytorch", "onnx"): _onnx,
    ("keras", "keras"): _keras,
}


def engines_for(framework: str) -> list[str]:
    """The engines that serve cards of ``framework`` (empty for a framework that is not a classifier's)."""
    served = [engine for fw, engine in BACKENDS if fw == framework]
    return ["auto", "native", *served] if served else []


def load_classifier(
    card_or_id: str | os.PathLike,
    engine: Engine = "auto",
    *,
    device: str = "cpu",
    native: Classifier | None = None,
    threads: int | None = None,
    scope: bool = True,
) -> Classifier:
    """Load a classifier from its folder, card.json or id on ``engine`` (see the module docstring).

    Weights are sha256-verified before they are deserialised, whatever the engine. ``native`` is an
    already loaded native predictor of this card: engines that build on it (ONNX Runtime) wrap it
    instead of loading the weights a second time. ``device`` places a PyTorch model; ``threads``
    sizes ONNX Runtime's pool (default: torch's). ``scope`` (default on) puts every answer through the
    model's scope gate (:mod:`bonecls.inference.scoping`): an image outside what the model was trained
    on gets ``in_scope=False`` and status "out of scope"; ``scope=False`` gives the raw answers, marked
    ``scope_checked=False`` (research output). ``native`` keeps the gate it was built with. Raises
    :class:`~bonecls.errors.WeightsError` when the card is not a classifier's or the engine does not
    serve its framework.
    """
    if engine not in ENGINES:
        raise ValueError(f"Unknown engine {engine!r}; engines are: {', '.join(ENGINES)}.")
    card, card_dir = load_card(card_or_id, verify=False)  # JSON only: the loaders verify the weights
    framework = card.framework
    if not engines_for(framework):
        raise WeightsError(
            f"Model '{card.id}' is a {framework} model, not a classifier; it cannot be loaded as one."
        )
    if native is not None and native.card.sha256 != card.sha256:
        raise WeightsError(
            f"The loaded model '{native.card.id}' is not the one of card '{card.id}' (different weights)."
        )
    options = {"device": device, "native": native, "threads": threads, "scope": scope}
    if engine in ("auto", "native"):
        model = BACKENDS[(framework, framework)](card_dir, **options)
        if engine == "auto" and (framework, "onnx") in BACKENDS:
            from bonecls.inference.onnx import fast_predictor

            return fast_predictor(model, threads=threads)
        return model
    loader = BACKENDS.get((framework, engine))
    if loader is None:
        raise WeightsError(
            f"Model '{card.id}' is a {framework} model; the '{engine}' engine does not run it "
            f"(engines for it: {', '.join(engines_for(framework))})."
        )
    return loader(card_dir, **options)
