"""Score an installed classifier card on a split of a prepared dataset, as training scored it.

Training writes held-out test metrics into each card, but only for the split of the dataset it was
trained on. Comparing two models (the shipped one and a retrained one, say) on the same images needs
the same arithmetic run on a split of one's choosing: :func:`evaluate_card` loads the card (sha256
checked), feeds the split through the card's own preprocessing (its input size, channels and
normalisation) and applies the card's temperature and thresholds, so the figures are exactly those
the app and the CLI would produce on these images. ``train/evaluate.py`` is its command line
(:func:`main`).

``--external DATA`` is external validation: another site's prepared images (all of them; none was
trained on) are scored the same way and the headline metrics with their 95% intervals are written
into the card's ``test_metrics["external"][name]``, beside the internal test figures, with the data's
name, size and dates (:func:`record_external`). Only ``card.json`` changes; the Models page shows
internal and external figures side by side.

Those figures still come from the generator that trained the model. ``--held-out`` scores the card
instead on phantoms of a CT, a processing chain and a lesion style that training never used, with
the paired lift and the pointing game (:mod:`bonecls.training.held_out`); ``--write-card`` records
them on the card as ``evaluation.held_out_variants`` (the weights and their sha256 are untouched).
One exam of 100 pairs per set moves by 0.01-0.03 between render seeds, so ``--seed S --write-repeat``
adds a repeat exam on fresh renders of the same variants (``evaluation.held_out_repeats``, by seed)
beside that main exam; the card's limitations then judge each target on every exam
(:func:`record_exam`, :mod:`bonecls.card_limitations`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bonecls.errors import BoneclsError, DataError
from bonecls.training.shards import ALL_SPLITS

DESCRIPTION = (
    "Score installed model cards on a split of a prepared dataset (see bonecls/training/evaluation.py)."
)


def evaluate_card(
    card: str | os.PathLike,
    data_dir: str | os.PathLike,
    *,
    split: str = "test",
    batch_size: int = 64,
    threads: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Metrics of ``card`` (a card folder or installed id) on ``split`` of the prepared ``data_dir``
    (``split="all"``: every image of it).

    Returns the card's id and sha256, the split and the dataset fingerprint, the classification metrics
    of training's test report (accuracy, macro-F1, per class, confusion matrix, ROC-AUC, suspicion AUC),
    the ECE, the sensitivity/specificity at the card's two thresholds, and ``headline``: every headline
    metric with its 95% bootstrap interval, per image and per study where the data has studies
    (:func:`bonecls.training.headline.headline_block`, as on the card). Raises ``DataError`` when the
    dataset's classes are not the card's (in name and order): scoring would be meaningless.
    """
    from torch.utils.data import DataLoader

    from bonecls.training.augment import DevicePreprocess
    from bonecls.training.calibration import reliability
    from bonecls.training.engine import evaluate
    from bonecls.training.headline import headline_block, thresholds_of
    from bonecls.training.metrics import (
        binary_rates,
        classification_metrics,
        is_positive,
        softmax_np,
        suspicion,
    )
    from bonecls.training.shards import ShardDataset
    from bonecls.weights import load_pytorch

    if threads:
        torch.set_num_threads(threads)
    model, c = load_pytorch(card)
    ds = ShardDataset(data_dir, split)
    if ds.class_names != list(c.class_names):
        raise DataError(
            f"The prepared dataset {Path(data_dir)} has classes {ds.class_names}, but model '{c.id}' "
            f"answers {list(c.class_names)}; score it on a dataset of its own task."
        )
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)
    prep = DevicePreprocess("cpu", c.input_size, c.in_chans, c.normalization.mean, c.normalization.std)
    with torch.inference_mode():
        out = evaluate(model, loader, prep, torch.device("cpu"), progress=progress, desc=f"{c.id} {split}")
    probs = softmax_np(out.logits, c.temperature)
    metrics = classification_metrics(out.labels, probs, c.class_names, c.positive_classes)
    metrics["ece"] = reliability(probs, out.labels)["ece"]
    score = suspicion(probs, c.class_names, c.positive_classes)
    pos = is_positive(out.labels, c.class_names, c.positive_classes)
    metrics["at_negative_below"] = binary_rates(pos, score, c.thresholds.negative_below)
    metrics["at_positive_at"] = binary_rates(pos, score, c.thresholds.positive_at)
    cuts = thresholds_of(c.thresholds.negative_below, c.thresholds.positive_at)
    return {
        "model": c.id,
        "sha256": c.sha256,
        "data": str(data_dir),
        "split": split,
        "dataset_fingerprint": ds.index.get("fingerprint"),
        "metrics": metrics,
        "headline": headline_block(
            ds.index, split, out.labels, probs, c.class_names, c.positive_classes, cuts
        ),
    }


def external_entry(result: dict[str, Any], name: str) -> dict[str, Any]:
    """What a card keeps of one external validation: which data (name, size, date prepared, fingerprint),
    when it was scored, and the headline metrics with 95% intervals beside a few plain ones."""
    from bonecls.prepare import load_index
    from bonecls.training.headline import split_items

    index = load_index(result["data"])
    items = split_items(index, result["split"])
    studies = {it.get("study") for it in items}
    m = result["metrics"]
    return {
        "data": {
            "name": name,
            "path": str(Path(result["data"]).resolve()),
            "source": index.get("source"),
            "layout": index.get("layout"),
            "images": len(items),
            "positives": result["headline"]["image"]["n_positive"],
            "studies": len(studies) if None not in studies else None,
            "prepared": index.get("created"),
            "fingerprint": result["dataset_fingerprint"],
        },
        "split": result["split"],
        "scored": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "model_sha256": result["sha256"],
        "headline": result["headline"],
        "metrics": {k: m.get(k) for k in ("accuracy", "f1_macro", "roc_auc", "suspicion_auc", "ece")},
    }


def record_external(card: str | os.PathLike, result: dict[str, Any], name: str) -> Path:
    """Write ``result`` into the card's ``test_metrics["external"][name]`` (replacing an earlier run on
    data of that name) and return the ``card.json`` path. Only ``card.json`` changes: the weight file
    and its sha256 are checked first and left as they are. Refuses the card's own training data, whose
    figures are internal ones."""
    from bonecls.weights import load_card, write_card

    c, card_dir = load_card(card)
    if c.sha256 != result["sha256"]:
        raise DataError(f"Model '{c.id}' changed while it was being scored; score it again.")
    trained_on = (c.extra or {}).get("dataset_fingerprint")
    if trained_on and trained_on == result["dataset_fingerprint"]:
        raise DataError(
            f"{result['data']} is the dataset model '{c.id}' was trained on; external validation needs "
            "another site's images (prepare them with train/prepare.py and pass that folder)."
        )
    metrics = dict(c.test_metrics or {})
    external = dict(metrics.get("external") or {})
    external[name] = external_entry(result, name)
    metrics["external"] = external
    c.test_metrics = metrics
    return write_card(c, card_dir)


def summary_line(result: dict[str, Any]) -> str:
    """One line a reader compares across models: n, accuracy, macro-F1, ROC-AUC, ECE."""
    m = result["metrics"]

    def f(key: str) -> str:
        v = m.get(key)
        return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"

    return (
        f"{result['model']} on {result['split']} of {result['data']}: n {m['n']}, "
        f"accuracy {f('accuracy')}, macro-F1 {f('f1_macro')}, ROC-AUC {f('roc_auc')}, "
        f"suspicion AUC {f('suspicion_auc')}, ECE {f('ece')}"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=DESCRIPTION, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--data", help="prepared dataset folder (train/prepare.py output)")
    where.add_argument(
        "--external",
        metavar="DATA",
        help="another site's prepared dataset: score every image of it and write the metrics, with 95%% "
        "intervals, into each card's card.json as external validation (weights untouched)",
    )
    where.add_argument(
        "--held-out",
        action="store_true",
        help="score on paired phantoms of a CT, a chain and a lesion style never used in training",
    )
    p.add_argument("--name", help="--external: the data's name on the card; default: the folder name")
    p.add_argument("--card", required=True, nargs="+", help="card folder(s) or installed model id(s)")
    p.add_argument(
        "--split",
        default=None,
        choices=["train", "val", "test", ALL_SPLITS],
        help="split to score; default test (--data) or all (--external)",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--json", help="write every metric of every card to this file")
    p.add_argument("--no-progress", action="store_true")
    g = p.add_argument_group("held-out rendering variants (bonecls.training.held_out)")
    g.add_argument("--pairs", type=int, default=100, help="with/without pairs per held-out set")
    g.add_argument("--held-out-ct", default="lung1")
    g.add_argument("--held-out-chain", default="log")
    g.add_argument(
        "--held-out-style", default=None, help="default: buckle (fracture tasks), bronchogram (pneumonia)"
    )
    g.add_argument("--seed", type=int, default=None, help="render seed (default: held_out.EVAL_SEED)")
    g.add_argument("--cams", type=int, default=None, help="lesion images explained per set (default: all)")
    g.add_argument("--sets-dir", default=None, help="keep the rendered sets here (default: <cache>/held-out)")
    g.add_argument(
        "--compare",
        action="store_true",
        help="two or more classifier cards: each card's pooled figures against the first card's on the same "
        "images, as paired differences with 95%% intervals",
    )
    write = g.add_mutually_exclusive_group()
    write.add_argument(
        "--write-card", action="store_true", help="record the figures on each card (evaluation section)"
    )
    write.add_argument(
        "--write-repeat",
        action="store_true",
        help="record them as a repeat exam (evaluation.held_out_repeats, by --seed) beside the card's main "
        "exam, which stays: fresh renders of the same variants, another seed",
    )
    return p


def record_exam(card: Any, report: dict[str, Any], *, repeat: bool = False) -> Any:
    """A copy of ``card`` (a :class:`bonecls.weights.ModelCard`) with the held-out ``report`` recorded.

    The main exam replaces ``evaluation.held_out_variants`` and keeps only the repeat exams that
    still count beside it (same weights and variants: :func:`bonecls.card_limitations.current_repeats`).
    A repeat exam (``repeat=True``) goes into ``evaluation.held_out_repeats`` under its seed; it must
    render the main exam's variants from another seed, or it would repeat nothing (``DataError``)."""
    from bonecls.card_limitations import EXAM_BASIS, REPEATS_KEY, current_repeats

    report = {**report, "model_sha256": card.sha256}
    evaluation = dict(card.evaluation)
    main = evaluation.get("held_out_variants")
    if repeat:
        if not main:
            raise DataError(
                f"'{card.id}' has no main held-out exam to repeat: record one first (--write-card)."
            )
        if report.get("seed") == main.get("seed"):
            raise DataError(
                f"A repeat exam must be rendered from another seed than the main exam's ({main.get('seed')})."
            )
        differs = [k for k in EXAM_BASIS if report.get(k) != main.get(k)]
        if differs:
            raise DataError(
                f"A repeat exam must score the main exam's variants; it differs in {', '.join(differs)}. "
                "Score the main exam again (--write-card) or repeat it with the same settings."
            )
        evaluation[REPEATS_KEY] = {**(evaluation.get(REPEATS_KEY) or {}), str(report["seed"]): report}
        return card.model_copy(update={"evaluation": evaluation})
    evaluation["held_out_variants"] = report
    kept = current_repeats(card.model_copy(update={"evaluation": evaluation}))
    evaluation.pop(REPEATS_KEY, None)
    if kept:
        evaluation[REPEATS_KEY] = {str(r["seed"]): r for r in kept if r.get("seed") != report.get("seed")}
    return card.model_copy(update={"evaluation": evaluation})


def held_out_for_card(
    card: str | os.PathLike, args: argparse.Namespace, outputs: list[Any] | None = None
) -> dict[str, Any]:
    """``--held-out`` for one card: the figures, printed per set and pooled, optionally on the card.
    A detector card (Ultralytics) is scored on the same sets by its boxes
    (:mod:`bonecls.detection.held_out`: FROC, mAP@0.5, top-box ROC-AUC, lift). ``outputs`` receives a
    classifier's per-set outputs (``--compare``)."""
    from bonecls.card_limitations import refresh_limitations
    from bonecls.paths import cache_root
    from bonecls.training.held_out import EVAL_SEED, HeldOut, figure_line, held_out_report
    from bonecls.weights import load_card, write_card

    if args.threads:
        torch.set_num_threads(args.threads)
    c, _ = load_card(card)
    sets_dir = Path(args.sets_dir) if args.sets_dir else cache_root() / "held-out"
    log = (lambda m: None) if args.no_progress else (lambda m: print(m, file=sys.stderr, flush=True))
    seed = EVAL_SEED if args.seed is None else args.seed
    try:
        if c.framework == "ultralytics":
            from bonecls.detection.detector import Detector
            from bonecls.detection.held_out import PAIR_TASK, detector_figure_line, detector_held_out_report

            held_out = HeldOut.for_task(
                PAIR_TASK[c.task], args.held_out_ct, args.held_out_chain, args.held_out_style
            )
            detector = Detector.from_card(card)  # its gate: the figures say what it answers (scope)
            report = detector_held_out_report(
                detector, held_out, args.pairs, seed=seed, cache_dir=sets_dir, log=log
            )
            figure_line = detector_figure_line
        else:
            from bonecls.inference.predictor import Predictor

            predictor = Predictor.from_card(card)
            c = predictor.card
            held_out = HeldOut.for_task(c.task, args.held_out_ct, args.held_out_chain, args.held_out_style)
            report = held_out_report(
                predictor,
                held_out,
                args.pairs,
                seed=seed,
                cache_dir=sets_dir,
                cams=args.cams,
                log=log,
                outputs=outputs,
            )
    except ValueError as exc:
        raise DataError(f"Cannot score '{c.id}' on held-out variants: {exc}") from exc
    for name, figures in report["sets"].items():
        print(f"{c.id} held out {name}: {figure_line(figures)}", flush=True)
    print(f"{c.id} held out, pooled: {figure_line(report['pooled'])}", flush=True)
    if args.write_card or args.write_repeat:
        saved, card_dir = load_card(card)
        saved = record_exam(saved, report, repeat=args.write_repeat)
        write_card(refresh_limitations(saved), card_dir)  # the sentence follows the new figures
    return {"model": c.id, "sha256": c.sha256, "held_out_variants": report}


def compare_with_first(results: list[dict[str, Any]], outputs: list[list[Any]]) -> None:
    """``--compare``: each card after the first against the first on the same held-out images (paired
    differences with 95% intervals, :func:`bonecls.training.held_out_intervals.paired_differences`),
    printed and added to its result as ``paired_with_first``."""
    from bonecls.training.held_out_intervals import paired_differences

    if any(not o for o in outputs):
        raise DataError("--compare takes classifier cards only (a detector's boxes are not resampled).")
    words = {"roc_auc_mean": "ROC-AUC", "f1_macro_mean": "macro-F1", "lift": "lift", "pointing": "pointing"}

    def name(r: dict[str, Any]) -> str:  # two versions of one model share its id
        return f"{r['model']} ({r['sha256'][:8]})"

    base = name(results[0])
    for result, other in zip(results[1:], outputs[1:], strict=True):
        try:
            diffs = paired_differences(outputs[0], other)
        except ValueError as exc:
            raise DataError(f"Cannot compare {name(result)} with {base}: {exc}.") from exc
        result["paired_with_first"] = {"base": base, **diffs}
        parts = [
            f"{words[k]} {d['difference']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}] "
            f"(higher in {d['other_higher']:.0%} of draws)"
            for k, d in diffs.items()
            if d["difference"] is not None
        ]
        print(f"{name(result)} - {base}, paired on the same images: " + "; ".join(parts), flush=True)


def main(argv: list[str] | None = None) -> int:
    """``train/evaluate.py``: one :func:`summary_line` per card and its headline with 95% intervals;
    ``--external`` also records them on each card; ``--held-out`` prints one line per held-out set and
    one pooled. 2 when a card or the data is refused."""
    from bonecls.training.metrics import format_headline

    args = build_parser().parse_args(argv)
    data = args.external or args.data
    split = args.split or (ALL_SPLITS if args.external else "test")
    name = (args.name or Path(data).resolve().name) if data else None
    results = []
    if args.compare and not (args.held_out and len(args.card) >= 2):
        print("evaluate: --compare needs --held-out and two or more cards", file=sys.stderr)
        return 2
    compared: list[list[Any]] = []
    try:
        for card in args.card:
            if args.held_out:
                compared.append([])
                results.append(held_out_for_card(card, args, compared[-1] if args.compare else None))
                continue
            r = evaluate_card(
                card,
                data,
                split=split,
                batch_size=args.batch_size,
                threads=args.threads,
                progress=not args.no_progress,
            )
            print(summary_line(r), flush=True)
            block = r["headline"]
            print(f"  95% CI: {format_headline(block['image'])}")
            if block.get("study"):
                print(f"  per study ({block['study_rule']}): {format_headline(block['study'])}")
            if args.external:
                path = record_external(card, r, name)
                print(f"  Recorded external validation '{name}' in {path} (weights and sha256 unchanged).")
            results.append(r)
        if args.compare:
            compare_with_first(results, compared)
    except BoneclsError as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2)
    return 0
