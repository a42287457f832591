"""Training report: confusion-matrix PNG, loss/accuracy curves PNG, reliability PNG, metrics JSON, and
the compact ``test_metrics`` dict that goes on the model card (kept well under the card's 1 MiB)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def confusion_png(
    cm: Sequence[Sequence[int]],
    class_names: Sequence[str],
    path: str | os.PathLike,
    title: str = "Test confusion matrix",
) -> Path:
    plt = _plt()
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * k, 1.2 + 1.1 * k), dpi=120)
    ax.imshow(cm, cmap="Blues")
    vmax = max((max(r) for r in cm), default=0)
    for i, row in enumerate(cm):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > vmax / 2 else "black")
    ax.set_xticks(range(k), class_names, rotation=30, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def curves_png(history: Sequence[dict], path: str | os.PathLike) -> Path:
    plt = _plt()
    ep = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=120)
    a1.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    a1.plot(ep, [h["val_loss"] for h in history], "o-", label="validation")
    a1.set_xlabel("epoch")
    a1.set_ylabel("loss")
    a1.legend()
    a2.plot(ep, [h["train_accuracy"] for h in history], "o-", label="train")
    a2.plot(ep, [h["val_accuracy"] for h in history], "o-", label="validation")
    a2.set_xlabel("epoch")
    a2.set_ylabel("accuracy")
    a2.set_ylim(0, 1.02)
    a2.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def reliability_png(rel: dict, path: str | os.PathLike, title: str = "Reliability (test)") -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4, 4), dpi=120)
    bins = [b for b in rel["bins"] if b["count"]]
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.bar(
        [(b["lower"] + b["upper"]) / 2 for b in bins],
        [b["accuracy"] for b in bins],
        width=1 / rel["n_bins"],
        edgecolor="black",
        alpha=0.7,
    )
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}, ECE {rel['ece']:.3f}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def card_test_metrics(
    test: dict, calibration: dict, reliability: dict, history: Sequence[dict], extra: dict | None = None
) -> dict:
    """The card's ``test_metrics``: headline scalars at the top level (what ``bonecls models`` prints),
    then the confusion matrix, per-class metrics, calibration, reliability bins and per-epoch curves."""
    keys = (
        "accuracy",
        "balanced_accuracy",
        "f1_macro",
        "roc_auc",
        "suspicion_auc",
        "precision",
        "recall",
        "f1",
    )
    out: dict[str, Any] = {k: test[k] for k in keys if test.get(k) is not None}
    out["ece"] = reliability["ece"]
    out["n"] = test["n"]
    out["split"] = "test"
    out["confusion_matrix"] = test["confusion_matrix"]
    out["class_names"] = test["class_names"]
    out["per_class"] = test["per_class"]
    if "roc_auc_per_class" in test:
        out["roc_auc_per_class"] = test["roc_auc_per_class"]
    out["reliability"] = reliability
    out["calibration"] = calibration
    out["curves"] = [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in h.items()} for h in history]
    if extra:
        out.update(extra)
    return out
