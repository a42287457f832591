"""A card's ``limitations``, composed from the evidence written on the card itself.

Why: the limitations sentence is what a radiologist reads on the Model cards page, and it used to be
typed by hand. When a retrained model's card replaced the old one, the hand-written sentences about
its held-out figures and real films were lost, or kept while the figures under them changed. Here
the sentence is a function of the card: its training data, ``evaluation.held_out_variants`` (train/
evaluate.py --held-out --write-card) and the repeat exams beside it (``evaluation.held_out_repeats``,
--seed S --write-repeat), the issue-22 targets it meets or misses on every exam, and
``scope.metrics.real_films`` (bench/bench_scope.py --write-card), which counts only while the gate
it was measured with (statistics sha256 and threshold) is still the card's gate. Every writer of
those sections calls :func:`refresh_limitations`; tests/test_card_limitations.py checks that each
shipped card's sentence is the composed one.
"""

from __future__ import annotations

from typing import Any

from bonecls.weights import ModelCard

PHANTOM_BASE = (
    "Trained on synthetic phantoms (radiographs rendered from CT with simulated lesions), not on patient "
    "images - not for clinical use."
)
REAL_DATA_BASE = (
    "Not a medical device and not for clinical use. Its metrics come from held-out images of its "
    "training source; they may not transfer to other hospitals, devices, populations or views."
)
CLOSING = "A reading aid for research, never a diagnosis."

# Issue 22's held-out targets: (key in the pooled figures, minimum, how a reader says it).
TARGETS: dict[str, list[tuple[str, float, str]]] = {
    "fracture": [
        ("roc_auc_mean", 0.93, "ROC-AUC ≥ 0.93"),
        ("lift", 0.90, "lift ≥ 90%"),
        ("pointing", 0.70, "pointing ≥ 0.70"),
    ],
    "threeclass": [
        ("f1_macro_mean", 0.85, "macro-F1 ≥ 0.85"),
        ("lift", 0.90, "lift ≥ 90%"),
        ("pointing", 0.70, "pointing ≥ 0.70"),
    ],
    "pneumonia": [("pointing", 0.60, "pointing ≥ 0.60")],
    "pneumonia-det": [("map50", 0.85, "mAP@0.5 ≥ 0.85")],
    "fracture-det": [("froc_sensitivity_at_0.5_fp", 0.85, "sensitivity ≥ 0.85 at 0.5 false positives/image")],
}
LESION = {"fracture": "fracture", "threeclass": "fracture", "fracture-det": "fracture"}
LOW_SPECIFICITY = 0.80
#: ``evaluation`` key of the repeat exams: the same held-out variants rendered again from other seeds
REPEATS_KEY = "held_out_repeats"
#: what a repeat exam must share with the card's main exam to count beside it
EXAM_BASIS = ("held_out", "recipe", "set_format", "render_size")
SET_WORDS = {"ct": "the other CT", "chain": "the unseen processing chain", "style": "the unseen lesion style"}


def compose_limitations(card: ModelCard) -> str:
    """The card's limitations sentence from its own evidence (see the module docstring)."""
    phantom = "phantom" in card.training_data.lower()
    parts = [PHANTOM_BASE if phantom else REAL_DATA_BASE]
    held_out = card.evaluation.get("held_out_variants")
    if held_out:
        parts.append(_held_out_sentence(card, held_out))
    elif phantom:
        parts.append(
            "Not yet scored on held-out rendering variants (train/evaluate.py --held-out): its test metrics "
            "come from its own phantom generator, which shows little about other images."
        )
    parts.append(_real_film_sentence(card))
    parts.append(CLOSING)
    return " ".join(parts)


def current_repeats(card: ModelCard) -> list[dict[str, Any]]:
    """The card's repeat exams (``evaluation.held_out_repeats``, by seed) that still count: scored on
    these very weights (their sha256) and on the same variants, set format and size as the main exam.

    Why: one exam of 300 pairs moves by 0.01-0.03 between render seeds (BENCHMARKS.md section 11, "A
    second exam"), about the distance between some figures and their targets; a target is met only
    when every current exam meets it."""
    main = card.evaluation.get("held_out_variants")
    repeats = card.evaluation.get(REPEATS_KEY) or {}
    if not main:
        return []
    return [
        r
        for _, r in sorted(repeats.items(), key=lambda kv: int(kv[0]))
        if r.get("model_sha256") == card.sha256 and all(r.get(k) == main.get(k) for k in EXAM_BASIS)
    ]


def refresh_limitations(card: ModelCard) -> ModelCard:
    """A copy of ``card`` whose ``limitations`` is :func:`compose_limitations` of it."""
    return card.model_copy(update={"limitations": compose_limitations(card)})


def real_films_current(card: ModelCard) -> bool:
    """True when ``scope.metrics.real_films`` was measured with the card's present gate."""
    entry = _real_films(card)
    return bool(
        entry
        and card.scope is not None
        and entry.get("scope_sha256") == card.scope.sha256
        and entry.get("threshold") == card.scope.threshold
        and entry.get("answer_thresholds") == card.scope.answer_thresholds
    )


def _real_films(card: ModelCard) -> dict[str, Any] | None:
    return (card.scope.metrics.get("real_films") if card.scope is not None else None) or None


def _lesion(card: ModelCard) -> str:
    return LESION.get(card.task, "opacity")


def pct(v: float) -> str:
    """A share to one decimal: whole percents would print a pointing of 0.697 as "70%" beside "misses
    pointing >= 0.70"."""
    return f"{100 * v:.1f}%"


def headline_key(card: ModelCard, pooled: dict[str, Any]) -> tuple[str, str, str]:
    """(pooled key, per-set key, words) of the figure a card's held-out sentence leads with."""
    key = "map50" if "map50" in pooled else ("f1_macro_mean" if card.task == "threeclass" else "roc_auc_mean")
    set_key = {"map50": "map50", "f1_macro_mean": "f1_macro", "roc_auc_mean": "roc_auc"}[key]
    label = {"map50": "mAP@0.5", "f1_macro_mean": "macro-F1", "roc_auc_mean": "ROC-AUC"}[key]
    return key, set_key, label


def _headline_value(pooled: dict[str, Any], key: str) -> str:
    """The pooled headline figure to three decimals, or "not measured"."""
    return "not measured" if pooled.get(key) is None else f"{pooled[key]:.3f}"


def _repeat_sentence(card: ModelCard, repeats: list[dict[str, Any]]) -> str:
    """The repeat exams' pooled headline, lift and pointing (or boxes found), each with its seed."""
    parts = []
    for r in repeats:
        pooled = r.get("pooled", {})
        key, _, label = headline_key(card, pooled)
        figs = [f"{label} {_headline_value(pooled, key)}"]
        if pooled.get("froc_sensitivity_at_0.5_fp") is not None:
            figs.append(
                f"{pct(pooled['froc_sensitivity_at_0.5_fp'])} of the boxes found at 0.5 false positives"
            )
        figs += [f"{k} {pct(pooled[k])}" for k in ("lift", "pointing") if pooled.get(k) is not None]
        parts.append((r.get("seed"), ", ".join(figs)))
    where = f"(evaluation.{REPEATS_KEY})"
    if len(parts) == 1:
        seed, figs = parts[0]
        return f"A repeat exam on fresh renders of the same variants (seed {seed}) gives {figs} {where}."
    listed = "; ".join(f"{figs} (seed {seed})" for seed, figs in parts)
    return f"Repeat exams on fresh renders of the same variants give {listed} {where}."


def _gate_sentence(scope: dict[str, Any], sets: dict[str, dict], lesion: str) -> str:
    """How many of the held-out images the scope gate answers (the figures above are the raw model's on
    all of them), on the other CT, and with and without a lesion: what a reader of the app would get."""
    ct = next(((f.get("scope") or {}) for name, f in sets.items() if name.startswith("ct=")), {})
    other_ct = f" ({pct(ct['answered'])} on the other CT)" if ct.get("answered") is not None else ""
    text = f"Its scope gate answers {pct(scope['answered'])} of these images{other_ct}"
    if scope.get("answered_lesion") is not None and scope.get("answered_lesion_free") is not None:
        article = "an" if lesion[0] in "aeiou" else "a"
        text += (
            f": {pct(scope['answered_lesion'])} of those with {article} {lesion}, "
            f"{pct(scope['answered_lesion_free'])} of those without"
        )
    return text + "; it refuses the rest."


def _held_out_sentence(card: ModelCard, report: dict[str, Any]) -> str:
    pooled, sets = report.get("pooled", {}), report.get("sets", {})
    lesion = _lesion(card)
    detector = "map50" in pooled
    key, set_key, label = headline_key(card, pooled)
    ct = next((f for name, f in sets.items() if name.startswith("ct=")), None)
    notes = []
    interval = (pooled.get("ci95") or {}).get(key)
    if interval:
        notes.append(f"95% interval {interval[0]:.3f}–{interval[1]:.3f}")
    if ct and ct.get(set_key) is not None:
        notes.append(f"{ct[set_key]:.3f} on the other CT")
    value = _headline_value(pooled, key)
    head = (
        f"On rendering variants it never saw (another CT, another processing chain, another {lesion} style) "
        f"it reaches {label} {value} pooled" + (f" ({'; '.join(notes)})" if notes else "")
    )
    if detector:
        found = pooled.get("froc_sensitivity_at_0.5_fp")
        if found is not None:
            head += f" and finds {pct(found)} of the {lesion} boxes at 0.5 false-positive boxes per image"
        if pooled.get("lift") is not None:
            head += f"; the {lesion} raises its top box score in {pct(pooled['lift'])} of with/without pairs"
    else:
        if pooled.get("lift") is not None:
            head += f", the {lesion} raises its suspicion in {pct(pooled['lift'])} of with/without pairs"
        if pooled.get("pointing") is not None:
            head += f" and its heat-map peak lands on the {lesion} in {pct(pooled['pointing'])}"
    head += " (evaluation.held_out_variants)."
    if pooled.get("scope"):
        head += " " + _gate_sentence(pooled["scope"], sets, lesion)
    repeats = current_repeats(card)
    if repeats:
        head += " " + _repeat_sentence(card, repeats)
    exams = [pooled, *(r.get("pooled", {}) for r in repeats)]
    return f"{head} {_verdict(card.task, exams, sets, set_key)}"


def _verdict(task: str, exams: list[dict[str, Any]], sets: dict[str, dict], set_key: str) -> str:
    """Which of the issue-22 targets the pooled figures miss (on every exam, or on how many of them),
    the main exam's weakest held-out set, and its specificity at the card's positive cut when that is
    low (what a reader meets as false alarms)."""
    targets = TARGETS.get(task, [])
    missed = []
    for key, floor, words in targets:
        short = [pooled for pooled in exams if pooled.get(key) is None or pooled[key] < floor]
        if short:
            missed.append(
                (words if len(short) == len(exams) else f"{words} on {len(short)} of {len(exams)} exams")
                + _within_interval(key, floor, short, len(exams))
            )
    scored = sorted((f[set_key], name) for name, f in sets.items() if f.get(set_key) is not None)
    weakest = ""
    if scored:
        name = scored[0][1]
        weakest = SET_WORDS.get(name.split("=")[0], name)
        spec = (sets[name].get("at_positive_at") or {}).get("specificity")
        if spec is not None and spec < LOW_SPECIFICITY:
            weakest += f", where its specificity at the card's positive cut is {spec:.2f}"
    if not missed:
        met = "It meets its held-out targets" if targets else "It has no held-out targets"
        return met + (f"; weakest on {weakest}." if weakest else ".")
    return f"It misses its held-out targets ({', '.join(missed)})" + (
        f" and is weakest on {weakest}." if weakest else "."
    )


def _within_interval(key: str, floor: float, short: list[dict[str, Any]], n_exams: int) -> str:
    """ ", within ... 95% interval" when the target lies inside the interval of exams that miss it: a
    miss the exam cannot tell from a pass (bonecls.training.held_out_intervals)."""
    near = sum(1 for pooled in short if ((pooled.get("ci95") or {}).get(key) or [0.0, -1.0])[1] >= floor)
    if not near:
        return ""
    if near < len(short):
        return f", within the 95% interval on {near} of the {len(short)} exams that miss it"
    if n_exams == 1:
        return ", within its 95% interval"
    return ", within that exam's 95% interval" if near == 1 else ", within the 95% interval of each exam"


def _real_film_sentence(card: ModelCard) -> str:
    entry = _real_films(card)
    if card.scope is None:
        return "It has no scope gate: it answers every image, real radiographs included."
    if entry is None:
        return "Its scope gate has not been tried on real radiographs yet (bench_scope.py --write-card)."
    if not real_films_current(card):
        return (
            "Its scope gate changed after real radiographs were last tried; the real-film results on this "
            "card are out of date."
        )
    n, answered = int(entry.get("n", 0)), entry.get("answered") or {}
    films = len(entry.get("score_over_threshold") or {}) or "several"
    tried = f"{films} real films as {n} images (scope.metrics.real_films)"
    raw = entry.get("raw_positive")
    ungated = f" Without the gate it would call {raw} of those {n} images positive." if raw else ""
    if not answered:
        return f"Its scope gate refuses every real radiograph it was tried on: {tried}.{ungated}"
    return (
        f"Its scope gate answers {len(answered)} of {tried}; those answers come from a model trained on "
        f"phantoms.{ungated}"
    )
