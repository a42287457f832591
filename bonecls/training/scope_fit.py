"""Fit a freshly trained classifier's scope gate from its own prepared shards (issue 21).

``train/classify.py`` calls :func:`fit_scope_from_shards` after it has saved the weights and the
card: the statistics are fitted on the model's own pooled features of (a deterministic sample of) the
``train`` split, the threshold is the score that ``in_scope_rate`` of the ``val`` split stays under,
and the in-scope rate on the ``test`` split (which neither step saw) goes on the card, with the declared
scope its training split's labels name (:func:`bonecls.scope.declared.declared_from_labels`). The shards
hold uint8 images at the prepared size, which :func:`bonecls.scope.features.preprocess_pixels`
prepares exactly as the predictor prepares an image of that size, so the statistics describe what
the model sees at answer time. The work is the same as :mod:`bonecls.scope.fit` (``python -m
bonecls.scope.fit``), which refits or retrofits a model from image folders.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bonecls.errors import BoneclsError, DataError
from bonecls.scope.declared import declared_from_labels
from bonecls.scope.fit import DEFAULT_IN_SCOPE_RATE, fit_scope_on
from bonecls.training.shards import ShardDataset
from bonecls.weights import ModelCard, load_card

__all__ = ["MAX_FIT_IMAGES", "fit_scope_from_shards"]

#: At most this many training images are read for the fit (a deterministic sample; features are cheap,
#: reading and running a large training set once more is not).
MAX_FIT_IMAGES = 4000


def _split_images(data_dir: Path, split: str, index: dict, limit: int, seed: int) -> list[np.ndarray]:
    """(S, S) uint8 images of ``split`` (a deterministic sample of at most ``limit``)."""
    dataset = ShardDataset(data_dir, split, index)
    picks = np.arange(len(dataset))
    if len(picks) > limit:
        picks = np.sort(np.random.default_rng(seed).choice(picks, size=limit, replace=False))
    return [dataset[int(i)][0][0].numpy() for i in picks]


def fit_scope_from_shards(
    out_dir: str | Path,
    data_dir: str | Path,
    index: dict,
    *,
    in_scope_rate: float = DEFAULT_IN_SCOPE_RATE,
    limit: int = MAX_FIT_IMAGES,
) -> tuple[ModelCard | None, str]:
    """Fit and write the scope of the model saved (weights and card) in ``out_dir``.

    Returns ``(updated card or None, a line for the log)``: None when the training split is too small
    for the statistics (not more images than feature dimensions); the card then has no learned scope,
    every answer says so, and the line tells how to fit it later.
    """
    data_dir = Path(data_dir)
    fit = _split_images(data_dir, "train", index, limit, seed=0)
    threshold = _split_images(data_dir, "val", index, limit, seed=1)
    try:
        held_out = _split_images(data_dir, "test", index, limit, seed=2)
    except DataError:  # a dataset without a test split: the held-out rate is simply not known
        held_out = None
    declared = declared_from_labels(index, load_card(out_dir, verify=False)[0].task)
    fitted_on = (
        f"{len(fit)} images of the training split of {data_dir.name}; threshold on its "
        f"{len(threshold)} validation images; held-out rate on its test split"
    )
    try:
        card = fit_scope_on(
            out_dir,
            fit,
            threshold,
            held_out,
            in_scope_rate=in_scope_rate,
            fitted_on=fitted_on,
            declared=declared,
        )
    except BoneclsError as exc:
        return None, f"scope: not fitted. {exc}"
    scope = card.scope
    assert scope is not None
    rate = scope.metrics.get("heldout_in_scope_rate")
    held = f", {rate:.1%} of the test split in scope" if rate is not None else ""
    by_answer = ""
    if scope.answer_thresholds is not None:
        names = card.class_names
        by_answer = "; by answer " + ", ".join(
            f"{n} {t:.4g}" for n, t in zip(names, scope.answer_thresholds, strict=True)
        )
    return (
        card,
        f"scope: fitted on {len(fit)} images, threshold {scope.threshold:.4g} at {in_scope_rate:.1%}{held}"
        f"{by_answer}",
    )
