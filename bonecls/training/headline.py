"""The card's believable numbers: headline metrics with 95% intervals, by image and by study, and what
the data checks found (how the split was made, what leaked).

Both trainers (through :mod:`.card`) and ``train/evaluate.py --external`` call :func:`headline_block`
on one split of a prepared dataset in dataset order, so an internal test block and an external one
carry the same keys and can sit side by side on a card and on the Models page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bonecls.training.metrics import STUDY_RULES, headline_metrics, study_level

STUDY_RULE = "max"


def split_items(index: dict, split: str) -> list[dict]:
    """The index entries of ``split`` in dataset order (the order :class:`ShardDataset` reads)."""
    return [it for it in index["items"] if it["split"] == split]


def headline_block(
    index: dict,
    split: str,
    labels: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    positive: Sequence[str],
    thresholds: dict[str, float],
    *,
    n_bootstrap: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """``{"image": headline metrics with CIs, "study": the same per study or None, "study_rule"}``.

    ``labels``/``probs`` are the split's, in dataset order. The image-level bootstrap resamples whole
    patients when the dataset was split by patient (views of one patient are not independent); the
    study-level block appears when every image has a study key (MURA, GRAZPEDWRI-DX, DICOM) and uses
    :data:`STUDY_RULE`, named on the card.
    """
    items = split_items(index, split)
    kw: dict[str, Any] = {"seed": seed}
    if n_bootstrap is not None:
        kw["n_bootstrap"] = n_bootstrap
    by_patient = (index.get("grouping") or {}).get("by") == "patient"
    aligned = len(items) == len(labels) and all(
        int(it["label"]) == int(y) for it, y in zip(items, labels, strict=False)
    )
    groups = [it.get("group") for it in items] if aligned and by_patient else None
    if groups is not None and any(g is None for g in groups):
        groups = None
    image = headline_metrics(labels, probs, class_names, positive, thresholds, groups=groups, **kw)
    studies = [it.get("study") for it in items] if aligned else []
    study = None
    if studies and all(studies):
        s_labels, s_probs, keys = study_level(labels, probs, studies, class_names, positive, STUDY_RULE)
        s_groups = None
        if groups is not None:
            first = {s: g for s, g in zip(studies, groups, strict=True)}
            s_groups = [first[k] for k in keys]
        study = headline_metrics(s_labels, s_probs, class_names, positive, thresholds, groups=s_groups, **kw)
    return {
        "split": split,
        "image": image,
        "study": study,
        "study_rule": f"{STUDY_RULE}: {STUDY_RULES[STUDY_RULE]}" if study is not None else None,
    }


def data_checks(index: dict) -> dict[str, Any]:
    """What the card says about the data: the split's grouping and the leakage report's summary."""
    leakage = index.get("leakage")
    grouping = index.get("grouping") or {
        "by": "unknown",
        "source": "none",
        "note": "Prepared before bonecls recorded how splits were made; re-run train/prepare.py.",
    }
    checks: dict[str, Any] = {"grouping": grouping}
    if leakage is None:
        checks["leakage"] = None
        checks["leakage_note"] = (
            "No leakage check: the set was prepared before bonecls checked for copies; re-run "
            "train/prepare.py to check it."
        )
    else:
        checks["leakage"] = {
            k: leakage[k]
            for k in (
                "pairs",
                "patients_shared",
                "within_split_exact",
                "leaks_into_test",
                "allowed",
                "method",
            )
            if k in leakage
        }
        checks["leakage"]["examples"] = leakage.get("examples", [])[:5]
    return checks


def thresholds_of(negative_below: float, positive_at: float) -> dict[str, float]:
    """The card's two cuts under the operating-point names of :func:`headline_metrics`."""
    return {"doubt": float(negative_below), "positive": float(positive_at)}
