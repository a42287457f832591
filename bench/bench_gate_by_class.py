"""What each shipped model's scope gate answers, class by class, on fresh phantoms of its own recipe.

    .venv/bin/python bench/bench_gate_by_class.py [--n 600] [--seed 7777] [--models fracture threeclass]

Renders ``--n`` paired phantoms per model from the varied recipe it was trained on (its held-out variants
and the selection chain ``sigmoid_eq`` left out, as in its training), runs the model once per batch and
prints the share of each class's images the card's learned gate answers. A gate that answers fewer
lesion images than lesion-free ones turns findings into "no result" (BENCHMARKS.md section 11, "What the
scope gate does"). Not a test.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from _common import load_average

TASKS = {"fracture": "fracture", "threeclass": "threeclass", "pneumonia-cls": "pneumonia"}


def answered_by_class(model: str, n: int, seed: int, batch: int = 64) -> dict[str, dict[str, float | int]]:
    """{class: {"n", "answered"}} of ``model``'s gate on ``n`` fresh paired phantoms of its recipe."""
    from bonecls.inference.predictor import Predictor
    from bonecls.phantom import TASK_CLASSES, generate
    from bonecls.phantom.varied import Variants
    from bonecls.training.held_out import HeldOut, batch_logits_and_scope

    task = TASKS[model]
    predictor = Predictor.from_card(model)
    guard = predictor.scope_guard
    if guard.gate is None:
        raise SystemExit(f"{model} has no learned scope gate")
    pool = Variants.varied().narrowed(exclude=(*HeldOut.for_task(task).names, "sigmoid_eq"))
    classes = TASK_CLASSES[task]
    images, labels = [], []
    for sample in generate(task, n, 256, seed, paired=True, variants=pool):
        images.append(sample.to_uint8())
        labels.append(classes.index(sample.class_name))
    logits, scores = batch_logits_and_scope(predictor, np.stack(images), batch)
    answered = guard.gate.in_scope(scores, logits.argmax(axis=1))  # each answer's own threshold
    y = np.asarray(labels)
    return {
        c: {"n": int((y == i).sum()), "answered": float(answered[y == i].mean())}
        for i, c in enumerate(classes)
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=600, help="phantoms per model (paired)")
    parser.add_argument("--seed", type=int, default=7777, help="render seed (no training set uses it)")
    parser.add_argument("--models", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = {m: answered_by_class(m, args.n, args.seed) for m in args.models}
    for model, rows in out.items():
        print(model + ": " + ", ".join(f"{c} {r['answered']:.1%} of {r['n']}" for c, r in rows.items()))
    print(json.dumps({"load_average": load_average(), "seed": args.seed, "answered": out}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
