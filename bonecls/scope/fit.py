"""Fit a model's learned scope and write it beside its weights: ``python -m bonecls.scope.fit``.

Examples (scripts/train_shipped.sh retrofits the shipped models this way, without retraining them)::

    python -m bonecls.phantom --task fracture --layout kaggle --n 1500 --size 256 --seed 201 --paired \\
        --split 1 0 0 data/scope/frac-fit
    python -m bonecls.phantom --task fracture --layout kaggle --n 500 --size 256 --seed 2201 --paired \\
        --split 1 0 0 data/scope/frac-thr
    python -m bonecls.scope.fit --card weights/fracture --fit-images data/scope/frac-fit \\
        --threshold-images data/scope/frac-thr --eval-images data/scope/frac-eval

The statistics are fitted on images from the model's training distribution (``--fit-images``: its own
recipe and seed), the threshold is the score that ``--in-scope-rate`` of other in-distribution images
(``--threshold-images``: another seed) stay under, and ``--eval-images`` (a third seed) measures the
in-scope rate on images neither step saw. A classifier's card also gets one threshold per answer
(the model's argmax class), each keeping ``--in-scope-rate`` of the threshold images given that
answer: with one pooled threshold, images with a finding (farther from the training images) were
refused more often than images without. The card gets a ``scope`` section (statistics file, its
sha256, thresholds, rates, declared scope); the weights and their sha256 are untouched.

``--keep-stats`` chooses new thresholds for the card's present statistics (same file, same sha256)::

    python -m bonecls.scope.fit --card weights/fracture --keep-stats \\
        --threshold-images data/frac-scope-thr --eval-images data/frac-varied-311/test
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bonecls.card_limitations import real_films_current, refresh_limitations
from bonecls.errors import BoneclsError
from bonecls.scope.declared import DECLARED_SCOPES, FROM_RECIPE
from bonecls.scope.extract import ModelFeatures, image_files, load_images
from bonecls.scope.stats import (
    ScopeStats,
    choose_threshold,
    choose_thresholds_by_answer,
    fit_stats,
    load_stats,
    save_stats,
    within_thresholds,
)
from bonecls.weights import (
    CARD_FILE,
    DeclaredScope,
    ModelCard,
    ScopeSection,
    _atomic_write,
    load_card,
    write_card,
)

__all__ = ["fit_scope", "fit_scope_on", "main", "record_real_films", "rethreshold"]

DEFAULT_IN_SCOPE_RATE = 0.975


def _folder_images(folder: str, limit: int | None) -> list:
    paths = image_files(folder, limit)
    if not paths:
        raise BoneclsError(f"No images (.png, .jpg, .dcm ...) under {folder}.")
    return load_images(paths)


def fit_scope(
    card_path: str,
    fit_images: str,
    threshold_images: str,
    *,
    eval_images: str | None = None,
    in_scope_rate: float = DEFAULT_IN_SCOPE_RATE,
    layers: Sequence[str] | None = None,
    limit: int | None = None,
    fitted_on: str = "",
    by_answer: bool = True,
) -> ModelCard:
    """Fit from image folders, choose the thresholds, save ``scope.safetensors`` and the card; returns the
    updated card (see :func:`fit_scope_on`)."""
    fit = _folder_images(fit_images, limit)
    return fit_scope_on(
        card_path,
        fit,
        _folder_images(threshold_images, limit),
        _folder_images(eval_images, limit) if eval_images else None,
        in_scope_rate=in_scope_rate,
        layers=layers,
        fitted_on=fitted_on or f"{len(fit)} images from {fit_images}; threshold on {threshold_images}",
        by_answer=by_answer,
    )


def fit_scope_on(
    card_path: str | Path,
    fit_images: Sequence[Any],
    threshold_images: Sequence[Any],
    eval_images: Sequence[Any] | None = None,
    *,
    in_scope_rate: float = DEFAULT_IN_SCOPE_RATE,
    layers: Sequence[str] | None = None,
    fitted_on: str = "",
    declared: DeclaredScope | None = None,
    by_answer: bool = True,
) -> ModelCard:
    """Fit on ``fit_images`` (Radiographs or pixel arrays of the training distribution), threshold on
    ``threshold_images`` (held-out, same distribution), in-scope rate on ``eval_images``; save the
    statistics beside the weights and the ``scope`` section on the card. The trainers call this at the
    end of training (``bonecls.training.scope_fit``, ``bonecls.detection.train``).

    ``declared``: the declared scope to write (the trainers derive it from their training set's labels,
    :func:`bonecls.scope.declared.declared_from_labels`); None keeps the card's own (a refit changes the
    statistics, not what the model was trained on) or, on a card without one, takes the task's recipe.
    ``by_answer``: a classifier also gets one threshold per answer (:func:`choose_thresholds_by_answer`).

    Raises :class:`BoneclsError` when there are not more fit images than feature dimensions.
    """
    card, card_dir = load_card(card_path)
    features = ModelFeatures.from_card(card_dir, layers)
    fit_features, labels, _ = features(list(fit_images))
    if fit_features.shape[0] <= fit_features.shape[1]:
        raise BoneclsError(
            f"The scope of '{card.id}' needs more training images ({fit_features.shape[0]}) than feature "
            f"dimensions ({fit_features.shape[1]}); fit it with python -m bonecls.scope.fit and more images."
        )
    stats = fit_stats(fit_features, labels, features.layers)
    metrics: dict[str, Any] = {
        "n_fit": int(fit_features.shape[0]),
        "feature_dim": stats.dim,
        "classes_fitted": int(stats.means.shape[0]),
    }
    threshold, by_class, metrics = _thresholds(
        stats, features, threshold_images, eval_images, in_scope_rate, by_answer, metrics
    )
    section = ScopeSection(
        sha256=save_stats(stats, card_dir / "scope.safetensors"),
        threshold=threshold,
        in_scope_rate=in_scope_rate,
        answer_thresholds=by_class,
        declared=declared or _current_declared(card),
        fitted_on=fitted_on,
        metrics=metrics,
    )
    return _write_scope_on_card(card_dir, section)


def rethreshold(
    card_path: str | Path,
    threshold_images: Sequence[Any],
    eval_images: Sequence[Any] | None = None,
    *,
    in_scope_rate: float | None = None,
    by_answer: bool = True,
    fitted_on: str = "",
) -> ModelCard:
    """New thresholds for the card's present statistics (the same file and sha256), chosen on
    ``threshold_images``, with the in-scope rate on ``eval_images``: how a gate fitted before answer
    thresholds gets them without refitting (``python -m bonecls.scope.fit --keep-stats``).
    ``in_scope_rate`` None keeps the card's; ``fitted_on`` "" keeps the card's sentence."""
    card, card_dir = load_card(card_path)
    if card.scope is None:
        raise BoneclsError(f"'{card.id}' has no scope gate to re-threshold; fit one first.")
    stats = load_stats(card_dir / card.scope.stats_file, card.scope.sha256, card.id)
    features = ModelFeatures.from_card(card_dir, stats.layers)
    keep = {
        k: card.scope.metrics[k]
        for k in ("n_fit", "feature_dim", "classes_fitted")
        if k in card.scope.metrics
    }
    rate = card.scope.in_scope_rate if in_scope_rate is None else in_scope_rate
    threshold, by_class, metrics = _thresholds(
        stats, features, threshold_images, eval_images, rate, by_answer, keep
    )
    section = card.scope.model_copy(
        update={
            "threshold": threshold,
            "in_scope_rate": rate,
            "answer_thresholds": by_class,
            "fitted_on": fitted_on or card.scope.fitted_on,
            "metrics": metrics,
        }
    )
    return _write_scope_on_card(card_dir, section)


def _thresholds(
    stats: ScopeStats,
    features: ModelFeatures,
    threshold_images: Sequence[Any],
    eval_images: Sequence[Any] | None,
    in_scope_rate: float,
    by_answer: bool,
    metrics: dict[str, Any],
) -> tuple[float, list[float] | None, dict[str, Any]]:
    """(pooled threshold, the answers' own or None, ``metrics`` with the rates they give): the
    thresholds of ``stats`` on ``threshold_images``, one per answer for a classifier with
    ``by_answer``, and the in-scope rates on ``eval_images``."""
    threshold_features, answers, _ = features(list(threshold_images))
    threshold_scores = stats.score(threshold_features)
    threshold = choose_threshold(threshold_scores, in_scope_rate)
    names = features.card.class_names
    by_class = None
    if by_answer and len(names) >= 2 and features.card.framework != "ultralytics":
        by_class = choose_thresholds_by_answer(threshold_scores, answers, len(names), in_scope_rate)
    metrics = {**metrics, "n_threshold": int(threshold_scores.size)}
    if by_class is not None:
        metrics["n_threshold_by_answer"] = {n: int((answers == k).sum()) for k, n in enumerate(names)}
    if eval_images:
        eval_features, eval_answers, _ = features(list(eval_images))
        eval_scores = stats.score(eval_features)
        kept = within_thresholds(eval_scores, threshold, by_class, eval_answers)
        metrics.update(n_eval=int(eval_scores.size), heldout_in_scope_rate=float(np.mean(kept)))
        if by_class is not None:
            metrics["heldout_in_scope_by_answer"] = {
                n: float(np.mean(kept[eval_answers == k]))
                for k, n in enumerate(names)
                if (eval_answers == k).any()
            }
    return threshold, by_class, metrics


def _current_declared(card: ModelCard) -> DeclaredScope:
    """The card's declared scope, else the task's recipe (:data:`DECLARED_SCOPES`), else an empty one."""
    if card.scope is not None:
        return card.scope.declared
    table = DECLARED_SCOPES.get(card.task)
    if table is not None:
        return table.model_copy(update={"derived_from": FROM_RECIPE})
    return DeclaredScope(description=f"What '{card.id}' was trained on.")


def _write_scope_on_card(card_dir: Path, section: ScopeSection) -> ModelCard:
    """Add (or replace) the card's ``scope`` section and nothing else: the card is rewritten in the style
    it was written in (``json.dumps`` by some trainers, pydantic's by ``write_card``), so the diff of a
    retrofit is the scope alone. The result is validated as a :class:`ModelCard` before it is written."""
    path = card_dir / CARD_FILE
    original = path.read_text(encoding="utf-8")
    data = json.loads(original)
    dumps_style = json.dumps(data, indent=2) + "\n" == original
    previous = ((data.get("scope") or {}).get("metrics") or {}).get("real_films")
    if previous and "real_films" not in section.metrics:
        # kept, not dropped: bonecls.card_limitations reads it as out of date once the gate changed
        section = section.model_copy(update={"metrics": {**section.metrics, "real_films": previous}})
    data["scope"] = section.model_dump(mode="json")
    updated = refresh_limitations(ModelCard.model_validate(data))
    data["limitations"] = updated.limitations
    if dumps_style:
        _atomic_write(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))
    else:
        write_card(updated, card_dir)
    return updated


def record_real_films(card_path: str | Path, entry: dict[str, Any]) -> ModelCard:
    """Write ``entry`` (bench/bench_scope.py --write-card: the real films tried, how many were refused,
    the answers given) as ``scope.metrics.real_films``, stamped with the gate it was measured with (its
    statistics sha256 and thresholds, so a later refit marks it out of date), and recompose the card's
    limitations from it. Raises :class:`BoneclsError` on a card without a scope gate."""
    card, card_dir = load_card(card_path)
    if card.scope is None:
        raise BoneclsError(f"'{card.id}' has no scope gate; fit one (python -m bonecls.scope.fit) first.")
    stamped = {**entry, "scope_sha256": card.scope.sha256, "threshold": card.scope.threshold}
    if card.scope.answer_thresholds is not None:
        stamped["answer_thresholds"] = card.scope.answer_thresholds
    section = card.scope.model_copy(update={"metrics": {**card.scope.metrics, "real_films": stamped}})
    return _write_scope_on_card(card_dir, section)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bonecls.scope.fit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--card", required=True, help="model folder, its card.json, or a model id")
    parser.add_argument("--fit-images", help="folder of the model's own training images")
    parser.add_argument("--threshold-images", required=True, help="folder of held-out in-distribution images")
    parser.add_argument("--eval-images", help="a third folder: in-scope rate on images no step saw")
    parser.add_argument(
        "--in-scope-rate",
        type=float,
        default=None,
        help=f"share of threshold images kept in scope (default {DEFAULT_IN_SCOPE_RATE}; the card's own "
        "with --keep-stats)",
    )
    parser.add_argument("--layers", nargs="+", help="feature layers (default: the head's pooled input)")
    parser.add_argument("--limit", type=int, help="use at most this many images from each folder")
    parser.add_argument("--fitted-on", default="", help="sentence for the card: what the images were")
    parser.add_argument(
        "--keep-stats",
        action="store_true",
        help="keep the card's statistics (same file and sha256) and choose new thresholds only",
    )
    parser.add_argument(
        "--pooled",
        action="store_true",
        help="one threshold for every answer (default for classifiers: one per answer, class-conditional)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.in_scope_rate is not None and not 0.5 <= args.in_scope_rate <= 1.0:
        print("error: --in-scope-rate must be between 0.5 and 1", file=sys.stderr)
        return 2
    if args.keep_stats == bool(args.fit_images):
        print("error: give --fit-images, or --keep-stats to re-threshold the statistics", file=sys.stderr)
        return 2
    if args.keep_stats and args.layers:
        print("error: --keep-stats keeps the statistics' layers; refit to change them", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        if args.keep_stats:
            card = rethreshold(
                args.card,
                _folder_images(args.threshold_images, args.limit),
                _folder_images(args.eval_images, args.limit) if args.eval_images else None,
                in_scope_rate=args.in_scope_rate,
                by_answer=not args.pooled,
                fitted_on=args.fitted_on,
            )
        else:
            card = fit_scope(
                args.card,
                args.fit_images,
                args.threshold_images,
                eval_images=args.eval_images,
                in_scope_rate=args.in_scope_rate or DEFAULT_IN_SCOPE_RATE,
                layers=args.layers,
                limit=args.limit,
                fitted_on=args.fitted_on,
                by_answer=not args.pooled,
            )
    except BoneclsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    scope = card.scope
    assert scope is not None
    print(
        f"{card.id}: scope fitted in {time.perf_counter() - t0:.1f} s; threshold {scope.threshold:.6g} "
        f"at {scope.in_scope_rate:.1%} in scope; n_fit {scope.metrics.get('n_fit')}, "
        f"held-out in scope {scope.metrics.get('heldout_in_scope_rate', 'not measured')}"
    )
    if scope.answer_thresholds is not None:
        by = scope.metrics.get("heldout_in_scope_by_answer", {})
        print(
            "by answer: "
            + ", ".join(
                f"{n} {t:.6g}" + (f" ({by[n]:.1%} of its held-out images kept)" if n in by else "")
                for n, t in zip(card.class_names, scope.answer_thresholds, strict=True)
            )
        )
    if "real_films" in scope.metrics and not real_films_current(card):
        print(
            f"note: the card's real-film results are out of date now; re-measure them with "
            f"bench/bench_scope.py --models {card.id} --write-card"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
