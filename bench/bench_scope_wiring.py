"""What the scope gate adds to the time to answer, end to end, per shipped model and engine (issue 21).

    .venv/bin/python bench/bench_scope_wiring.py [--runs 30]

Each model is loaded twice, with the gate (``scope=True``, the default) and without (``scope=False``:
raw research answers), and ``predict`` (classifiers: PyTorch and ONNX Runtime) or ``detect_scoped``
(the detector) is timed on the same image, the two alternating call by call (and which goes first
alternating too) so that load on a shared machine hits both alike. The image is a real film that every
gate answers in full (the learned score is computed, not skipped by a header refusal): RG1 (adult
chest PA) as a header-less 8-bit PNG, at its own size and shrunk to 512 px. The difference of the
p50s is the gate's cost: the header rules, ``bonecls.ood``'s heuristics and the learned score on
features the forward pass recorded anyway. A second table times the gate's own work alone.

Not a test; prints Markdown with the machine line.
"""

from __future__ import annotations

import argparse
import time

import cv2
from _common import add_repo_to_path, machine, pct

add_repo_to_path(tests=True)

from scope_corpus import png_bytes, real_film_paths  # noqa: E402

from bonecls.imaging import load_radiograph  # noqa: E402
from bonecls.weights import weights_root  # noqa: E402


def _alternating(on, off, runs: int) -> tuple[list[float], list[float]]:
    on(), off()  # warm-up
    t_on, t_off = [], []
    for i in range(runs):
        pairs = ((on, t_on), (off, t_off))
        for fn, out in pairs if i % 2 == 0 else pairs[::-1]:  # alternate who goes first: no order bias
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return t_on, t_off


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    from bonecls.detection.detector import Detector
    from bonecls.inference import load_classifier

    film = load_radiograph(real_film_paths()["RG1 adult chest PA"])
    pixels8 = film.to_uint8()
    small = cv2.resize(
        pixels8, (512, round(512 * pixels8.shape[0] / pixels8.shape[1])), interpolation=cv2.INTER_AREA
    )
    images = {
        f"RG1 PNG {pixels8.shape[1]}x{pixels8.shape[0]}": load_radiograph(png_bytes(pixels8)),
        f"RG1 PNG {small.shape[1]}x{small.shape[0]}": load_radiograph(png_bytes(small)),
    }
    root = weights_root()
    print(machine())
    print("\n| model | engine | image | p50 with gate (ms) | p50 without (ms) | added p50 (ms) |")
    print("|---|---|---|---:|---:|---:|")
    for model_id in ("fracture", "threeclass", "pneumonia-cls", "pneumonia-det"):
        if model_id == "pneumonia-det":
            gated = Detector.from_card(root / model_id)
            raw = Detector.from_card(root / model_id, scope=False)
            engines = {"pytorch": (gated.detect_scoped, raw.detect_scoped)}
        else:
            engines = {}
            for engine in ("pytorch", "onnx"):
                gated = load_classifier(root / model_id, engine=engine)
                raw = load_classifier(root / model_id, engine=engine, scope=False)
                engines[engine] = (gated.predict, raw.predict)
        for engine, (on, off) in engines.items():
            for name, image in images.items():
                t_on, t_off = _alternating(
                    lambda on=on, im=image: on(im), lambda off=off, im=image: off(im), args.runs
                )
                p_on, p_off = pct(t_on, 50), pct(t_off, 50)
                print(f"| {model_id} | {engine} | {name} | {p_on:.1f} | {p_off:.1f} | {p_on - p_off:+.1f} |")
    _own_work(root, images, args.runs)


def _own_work(root, images: dict, runs: int) -> None:
    """The gate's own work, timed alone (the end-to-end difference above is at the mercy of the load):
    the header rules and image heuristics (precheck), then the learned score and the verdict on the
    features one forward pass recorded, on a fresh copy of the image each call (nothing cached)."""
    import copy

    import torch
    from _common import time_calls

    from bonecls.inference import load_classifier

    print("\n| model | image | gate's own work p50 (ms) | of which precheck p50 (ms) |")
    print("|---|---|---:|---:|")
    for model_id in ("fracture", "threeclass", "pneumonia-cls"):
        clf = load_classifier(root / model_id, engine="pytorch")
        guard = clf.scope_guard
        raw = clf.prediction_from_logits(torch.zeros(len(clf.card.class_names)))
        for name, image in images.items():
            features = clf.logits_and_features(clf.preprocess(image))[1]

            def gate(image=image, features=features, guard=guard, raw=raw):
                guard.precheck(copy.copy(image))
                guard.judge(raw, float(guard.scores(features)[0]))

            total = time_calls(gate, runs)
            pre = time_calls(lambda image=image, guard=guard: guard.precheck(copy.copy(image)), runs)
            print(f"| {model_id} | {name} | {pct(total, 50):.2f} | {pct(pre, 50):.2f} |")


if __name__ == "__main__":
    main()
