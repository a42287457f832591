"""What the scope gate adds to the time to answer, end to end, per shipped model and engine (issue 21).

    .venv/bin/python bench/bench_scope_wiring.py [--runs 30]

Each model is loaded twice, with the gate (``scope=True``, the default) and without (``scope=False``:
raw research answers), and ``predict`` (classifiers: PyTorch and ONNX Runtime) or ``detect_scoped``
(the detector) is timed on the same image, the two alternating call by call so that load on a shared
machine hits both alike. The image is a real film that every gate answers in full (the learned score
is computed, not skipped by a header refusal): RG1 (adult chest PA) as a header-less 8-bit PNG, at
its own size (2,140 x 1,760) and shrunk to 512 px. The difference of the p50s is the gate's cost: the
header rules, ``bonecls.ood``'s heuristics and the learned score on features the forward pass
recorded anyway.

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
    for _ in range(runs):
        for fn, out in ((on, t_on), (off, t_off)):
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


if __name__ == "__main__":
    main()
