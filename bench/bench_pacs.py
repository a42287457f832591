"""PACS benchmarks (issue 24): the warm round trip per image; `bonecls sweep` throughput on 1 and 2 workers.

    .venv/bin/python bench/bench_pacs.py [--images 4] [--rounds 3] [--size 512] [--model pneumonia-cls ...]
                                         [--sweep-images 40] [--workers 1 2]

(a) Round trip, warm: a loopback Orthanc (bonecls.pacs.orthanc_server) gets one phantom study per round
    (``--images`` chest films, DX) by STOW-RS; then, timed: WADO-RS retrieval of the study, the reading
    with every chosen model (heat maps / boxes drawn for the Secondary Captures), the SR and SC built,
    and STOW-RS back into the same study. One untimed round first (models load, connections open).
    Printed per image: the whole trip and each stage. Target: <= 2 s per image.
(b) Sweep throughput: one folder of ``--sweep-images`` phantom DICOM files swept by `bonecls sweep`'s
    run_sweep on a LocalCluster of 1 and of 2 worker processes (a fresh result table each time, no
    results sent). Printed: the wall time including the cluster's start and the models' load, the time
    to the first image written (that start), and images/s with the start and after it.

Models default to every installed one. Not a test; prints Markdown with the machine line (the load
average matters: the build machine is 2 shared cores).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import ROOT, add_repo_to_path, load_average, machine

add_repo_to_path(tests=True)

from pacs_data import phantom_study  # noqa: E402

from bonecls.pacs import dicomweb  # noqa: E402
from bonecls.pacs.models import load_readers  # noqa: E402
from bonecls.pacs.orthanc_server import OrthancServer  # noqa: E402
from bonecls.pacs.reader import read_study  # noqa: E402
from bonecls.pacs.send import result_objects, send_objects  # noqa: E402


def round_trip(args: argparse.Namespace, work: Path) -> None:
    readers = load_readers(args.model)
    print(f"models: {', '.join(r.info.model_id for r in readers)}")
    with OrthancServer(work / "orthanc").start() as server:
        os.environ["BONECLS_DICOMWEB_USER"], os.environ["BONECLS_DICOMWEB_PASSWORD"] = server.auth
        client = dicomweb.connect(server.dicomweb_url)
        stages: dict[str, list[float]] = {"retrieve": [], "read": [], "build": [], "store": [], "push": []}
        for r in range(args.rounds + 1):
            study = phantom_study(work / f"study{r}", args.images, seed=100 + r, size=args.size)
            t0 = time.perf_counter()
            dicomweb.store(client, study)
            t1 = time.perf_counter()
            instances = dicomweb.retrieve_study(client, str(study[0].StudyInstanceUID))
            t2 = time.perf_counter()
            reading = read_study(instances, readers, overlays=True)
            t3 = time.perf_counter()
            objects = result_objects(reading, instances)
            t4 = time.perf_counter()
            send_objects(objects, server.dicomweb_url, reading.reading.models)
            t5 = time.perf_counter()
            series = client.search_for_series(study_instance_uid=str(study[0].StudyInstanceUID))
            assert len(series) == 3, "the SR and SC series must be back in the study"
            if r == 0:
                continue  # warm-up round
            for name, seconds in zip(
                ("push", "retrieve", "read", "build", "store"),
                (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4),
                strict=True,
            ):
                stages[name].append(seconds / args.images)
    trip = [sum(v) for v in zip(*(stages[s] for s in ("retrieve", "read", "build", "store")), strict=True)]
    print(
        f"\n(a) round trip, warm: {args.rounds} studies of {args.images} images ({args.size} px), "
        f"{len(objects)} result objects per study"
    )
    print(f"    per image: median {np.median(trip):.3f} s, max {max(trip):.3f} s (target <= 2 s)")
    for name, values in stages.items():
        print(f"      {name:8s} median {np.median(values) * 1000:7.1f} ms per image")
    print("    (push = the study arriving by STOW-RS, not part of the trip)")


def sweep_throughput(args: argparse.Namespace, work: Path) -> None:
    from bonecls.pacs import sweep
    from bonecls.pacs.sweep_table import ResultTable

    folder = work / "sweep"
    per_study = 10
    for s in range(0, args.sweep_images, per_study):
        phantom_study(folder / f"s{s}", min(per_study, args.sweep_images - s), seed=500 + s, size=args.size)
    for render in folder.glob("s*/render"):
        subprocess.run(["rm", "-rf", str(render)], check=True)  # only the study's own files are swept
    files = sweep.folder_files(folder)
    models = sweep.selected_models(args.model)
    names = ", ".join(info.model_id for _, info in models)
    print(f"\n(b) sweep: {len(files)} DICOM files ({args.size} px), models {names}")
    for workers in args.workers:
        table = ResultTable(work / f"sweep-{workers}.sqlite")
        kwargs = dict(workers=workers, processes=True, progress=False)
        load = load_average()
        full = sweep.run_sweep(sweep.folder_items(files), table, models, sweep.SweepTarget(), **kwargs)
        assert full.scored == len(files)
        print(
            f"    {workers} worker(s): {full.seconds:6.1f} s wall, {full.images_per_second:5.2f} images/s "
            f"with the start; first image after {full.first_image_s:4.1f} s (cluster start + model load); "
            f"{full.steady_images_per_second:5.2f} images/s after it (load average before: {load})"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4, help="images per study in the round trip")
    parser.add_argument("--rounds", type=int, default=3, help="timed studies (after one warm-up)")
    parser.add_argument("--size", type=int, default=512, help="phantom size in pixels")
    parser.add_argument("--model", action="append", default=[], help="card id (repeatable; default all)")
    parser.add_argument("--sweep-images", type=int, default=40)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--skip", choices=("trip", "sweep"), action="append", default=[])
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    print(f"commit {commit.stdout.strip()}; {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"machine: {machine(versions=('torch', 'distributed', 'dicomweb_client'))}")
    with tempfile.TemporaryDirectory(prefix="bench-pacs-") as tmp:
        if "trip" not in args.skip:
            round_trip(args, Path(tmp))
        if "sweep" not in args.skip:
            sweep_throughput(args, Path(tmp))
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
