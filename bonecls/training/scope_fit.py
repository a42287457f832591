"""Fit a freshly trained classifier's scope gate from its own prepared shards (issue 21).

``train/classify.py`` calls :func:`fit_scope_from_shards` after it has saved the weights and the
card: the statistics are fitted on the model's own pooled features of (a deterministic sample of) the
``train`` split, the threshold is the score that ``in_scope_rate`` of the ``val`` split stays under,
and the in-scope rate on the ``test`` split (which neither step saw) goes on the card. The shards
hold uint8 images at the prepared size, which :func:`bonecls.scope.features.preprocess_pixels`
prepares exactly as the predictor prepares an image of that size, so the statistics describe what
the model sees at answer time. The work is the same as :mod:`bonecls.scope.fit` (``python -m
bonecls.scope.fit``), which refits or retrofits a model from image folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bonecls.errors import DataError
from bonecls.scope.declared import DECLARED_SCOPES
from bonecls.scope.extract import ModelFeatures
from bonecls.scope.features import PENULTIMATE
from bonecls.scope.fit import DEFAULT_IN_SCOPE_RATE, _write_scope_on_card
from bonecls.scope.stats import choose_threshold, fit_stats, save_stats
from bonecls.training.shards import ShardDataset
from bonecls.weights import DeclaredScope, ModelCard, ScopeSection

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

    Returns ``(updated card or None, a line for the log)``.

    None when the training split is too small for the statistics (fewer images than feature
    dimensions): the card then has no learned scope, every answer says so, and the line tells how to
    fit it later with more images.
    """
    out_dir, data_dir = Path(out_dir), Path(data_dir)
    features = ModelFeatures.from_card(out_dir, (PENULTIMATE,))  # the weights as saved (and verified)
    card = features.card
    fit_images = _split_images(data_dir, "train", index, limit, seed=0)
    fit_features, labels, _ = features(fit_images)
    if len(fit_images) <= fit_features.shape[1]:
        return None, (
            f"scope: not fitted ({len(fit_images)} training images for {fit_features.shape[1]} features); "
            "fit it with python -m bonecls.scope.fit and more images of the training distribution"
        )
    stats = fit_stats(fit_features, labels, features.layers)
    threshold_scores = stats.score(features(_split_images(data_dir, "val", index, limit, seed=1))[0])
    threshold = choose_threshold(threshold_scores, in_scope_rate)
    metrics: dict[str, Any] = {
        "n_fit": len(fit_images),
        "n_threshold": int(threshold_scores.size),
        "feature_dim": stats.dim,
        "classes_fitted": int(stats.means.shape[0]),
    }
    try:
        test_scores = stats.score(features(_split_images(data_dir, "test", index, limit, seed=2))[0])
        metrics.update(
            n_eval=int(test_scores.size), heldout_in_scope_rate=float(np.mean(test_scores <= threshold))
        )
    except DataError:  # a dataset without a test split: the held-out rate is simply not known
        pass
    section = ScopeSection(
        sha256=save_stats(stats, out_dir / "scope.safetensors"),
        threshold=threshold,
        in_scope_rate=in_scope_rate,
        declared=DECLARED_SCOPES.get(card.task) or DeclaredScope(description=f"Images like {data_dir.name}."),
        fitted_on=f"{len(fit_images)} images of the training split of {data_dir.name}; threshold on its "
        f"{threshold_scores.size} validation images",
        metrics=metrics,
    )
    updated = _write_scope_on_card(out_dir, section)
    rate = metrics.get("heldout_in_scope_rate")
    held = f", {rate:.1%} of the test split in scope" if rate is not None else ""
    return (
        updated,
        f"scope: fitted on {len(fit_images)} images, threshold {threshold:.4g} at {in_scope_rate:.1%}{held}",
    )
