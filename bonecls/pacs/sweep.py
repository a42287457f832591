"""``bonecls sweep``: score a folder of any size, or what a DICOMweb search finds, on a Dask cluster.

Each image is one Dask task. The models load once per worker, in a worker plugin (:class:`ModelsOnWorker`),
never per task; the tasks only read, score and (when asked) send the SR and Secondary Captures of their
image back to a PACS with :func:`bonecls.pacs.send.send_instance_results`, whose derived UIDs make a
resend store nothing twice. The client writes each finished image's rows into the result table
(:class:`~bonecls.pacs.sweep_table.ResultTable`) in one transaction, and skips images the table already
holds, so a sweep killed at any moment resumes where it stopped: every image once, no duplicates.

A LocalCluster on loopback is the default (``workers`` processes, one thread each); ``scheduler`` names a
real one (``tcp://HOST:8786``), whose workers must see the same folder and weights paths (a shared file
system) and the same ``BONECLS_DICOMWEB_*`` environment. At most a few tasks per worker thread are in
flight, so an archive of millions of files never sits in the scheduler's memory at once.

Files are keyed by their sha256 (computed by the client, so a resumed sweep re-reads but never re-scores
them), DICOMweb instances by their SOPInstanceUID (a resumed sweep does not retrieve them again).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from bonecls.errors import BoneclsError, WeightsError
from bonecls.pacs.errors import DicomContentError, PacsError
from bonecls.pacs.models import SERVED_FRAMEWORKS, ModelReader, image_result, load_readers, model_info
from bonecls.pacs.results import ModelInfo
from bonecls.pacs.send import DEFAULT_CALLING_AET
from bonecls.pacs.sweep_table import NOT_READ, ResultTable

log = logging.getLogger(__name__)

__all__ = [
    "ModelsOnWorker",
    "SweepItem",
    "SweepReport",
    "SweepTarget",
    "dicomweb_items",
    "folder_files",
    "folder_items",
    "run_sweep",
    "score_item",
    "selected_models",
]

PLUGIN_NAME = "bonecls-sweep-models"
FILE_KEY, SOP_KEY = "sha256", "sop_instance_uid"
#: Tasks in flight per worker thread: enough to keep every worker busy, few enough to stream.
IN_FLIGHT_PER_THREAD = 4


@dataclass(frozen=True)
class SweepItem:
    """One image to score: its key (file sha256 or SOPInstanceUID) and where to find it (a path, or
    ``study/series/instance`` UIDs on the DICOMweb server)."""

    key: str
    key_kind: str
    location: str


@dataclass(frozen=True)
class SweepTarget:
    """What every task needs besides its image: the DICOMweb server, and where results go (if anywhere)."""

    dicomweb_url: str | None = None
    destination: str | None = None
    secondary_captures: bool = True
    research: bool = False
    calling_aet: str = DEFAULT_CALLING_AET


@dataclass
class SweepReport:
    """What one run did (images, not rows: an image read by two models is one image)."""

    scored: int = 0
    already_done: int = 0
    not_read: int = 0
    failed: int = 0
    duplicates: int = 0
    seconds: float = 0.0
    #: seconds from the start to the first image written (the cluster's start and the models' load)
    first_image_s: float | None = None

    @property
    def images_per_second(self) -> float:
        done = self.scored + self.not_read
        return done / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_images_per_second(self) -> float | None:
        """Images per second once the first was written: the rate without the cluster's start."""
        done = self.scored + self.not_read
        if self.first_image_s is None or done < 2 or self.seconds <= self.first_image_s:
            return None
        return (done - 1) / (self.seconds - self.first_image_s)


# -- the models, once per worker ------------------------------------------------------------------


def selected_models(models: Sequence[str] = (), tasks: Sequence[str] = ()) -> list[tuple[str, ModelInfo]]:
    """(card folder, identity) of the models a sweep uses, chosen like :func:`load_readers` but from the
    cards alone (the client loads no weights; the workers do)."""
    from bonecls.weights import load_card, scan_cards

    if models:
        found = [load_card(m, verify=False) for m in models]
    else:
        found = [
            (e.card, e.directory)
            for e in scan_cards()
            if e.card is not None and e.card.framework in SERVED_FRAMEWORKS
        ]
    chosen = [(str(folder), model_info(card)) for card, folder in found if not tasks or card.task in tasks]
    if not chosen:
        raise WeightsError(
            "No model fits this sweep: install a model card or name one with --model "
            f"(tasks asked: {', '.join(tasks) if tasks else 'any'})."
        )
    return chosen


class ModelsOnWorker(WorkerPlugin):
    """Loads the sweep's models when a worker starts (or joins later) and keeps them for every task."""

    name = PLUGIN_NAME

    def __init__(self, card_dirs: Sequence[str], sha256s: Sequence[str], torch_threads: int | None = None):
        self.card_dirs = list(card_dirs)
        self.sha256s = list(sha256s)
        self.torch_threads = torch_threads
        self.readers: list[ModelReader] = []
        self._dicomweb: dict[str, Any] = {}

    def setup(self, worker: Any) -> None:
        if self.torch_threads:
            import torch

            torch.set_num_threads(self.torch_threads)
        self.readers = load_readers(self.card_dirs)
        loaded = [r.info.sha256 for r in self.readers]
        if loaded != self.sha256s:
            raise WeightsError(
                "A sweep worker loaded other weights than the client chose (the card folders differ between "
                "machines); give every worker the same weights folder."
            )

    def dicomweb(self, url: str | None) -> Any:
        """One DICOMweb client per worker and server (credentials from the worker's environment)."""
        from bonecls.pacs.dicomweb import connect

        key = url or ""
        if key not in self._dicomweb:
            self._dicomweb[key] = connect(url)
        return self._dicomweb[key]


def _models_here() -> ModelsOnWorker:
    from distributed import get_worker

    return get_worker().plugins[PLUGIN_NAME]


# -- one task: one image -------------------------------------------------------------------------


def score_item(item: SweepItem, target: SweepTarget) -> list[dict[str, object]]:
    """Runs on a worker: the result rows of one image (one per model, or one ``not read`` row).

    Raises only when results could not be sent (or something unexpected broke): the image then gets no
    row, so a resumed sweep tries it again.
    """
    models = _models_here()
    if item.key_kind == SOP_KEY:
        from bonecls.pacs.dicomweb import retrieve_instance

        study, series, sop = item.location.split("/")
        ds = retrieve_instance(models.dicomweb(target.dicomweb_url), study, series, sop)
        return _score_dataset(item, ds, models.readers, target)
    from bonecls.imaging import load_radiograph, sniff_format

    try:
        data = Path(item.location).read_bytes()
    except OSError as exc:
        return [_not_read(item, "", f"The file cannot be read ({exc.strerror}).")]
    if hashlib.sha256(data).hexdigest() != item.key:
        return [_not_read(item, "", "The file changed while the sweep ran; the next sweep reads it anew.")]
    fmt = sniff_format(data) or ""
    if fmt == "dicom":
        import pydicom

        try:
            ds = pydicom.dcmread(io.BytesIO(data))
        except (pydicom.errors.InvalidDicomError, ValueError, EOFError) as exc:
            return [_not_read(item, fmt, f"The DICOM file cannot be parsed ({type(exc).__name__}).")]
        return _score_dataset(item, ds, models.readers, target)
    try:
        radiograph = load_radiograph(data)
    except BoneclsError as exc:
        return [_not_read(item, fmt, str(exc))]
    answers = [image_result(reader.info, reader.read(radiograph)) for reader in models.readers]
    return [_row(item, fmt, **answer.row()) for answer in answers]


def _score_dataset(item: SweepItem, ds: Any, readers: Sequence[ModelReader], target: SweepTarget) -> list:
    from bonecls.pacs.reader import read_instance

    uids = {
        "study_instance_uid": str(getattr(ds, "StudyInstanceUID", "") or ""),
        "series_instance_uid": str(getattr(ds, "SeriesInstanceUID", "") or ""),
        "sop_instance_uid": str(getattr(ds, "SOPInstanceUID", "") or ""),
    }
    sending = target.destination is not None
    try:
        results, overlays = read_instance(ds, readers, overlays=sending and target.secondary_captures)
    except DicomContentError as exc:
        return [_not_read(item, "dicom", str(exc), **uids)]
    stored = ""
    if sending:
        from bonecls.pacs.send import send_instance_results

        stored = " ".join(
            send_instance_results(
                ds,
                results,
                overlays,
                [r.info for r in readers],
                str(target.destination),
                secondary_captures=target.secondary_captures,
                research=target.research,
                calling_aet=target.calling_aet,
            )
        )
    return [_row(item, "dicom", **r.row(), results_stored=stored) for r in results]


def _row(item: SweepItem, fmt: str, **values: object) -> dict[str, object]:
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {
        "instance_key": item.key,
        "key_kind": item.key_kind,
        "source_format": fmt,
        "time_utc": now,
        **values,
    }


def _not_read(item: SweepItem, fmt: str, note: str, **uids: str) -> dict[str, object]:
    return _row(item, fmt, status=NOT_READ, note=note, model_sha256="", **uids)


# -- what to sweep ---------------------------------------------------------------------------------


def folder_files(folder: str | os.PathLike, *, exclude: Sequence[Path] = ()) -> list[Path]:
    """Every regular, non-hidden file under ``folder`` (recursively, in a stable order), without
    ``exclude`` (the result table and its journal when it lies inside the folder)."""
    root = Path(folder)
    if not root.is_dir():
        raise PacsError(f"{root} is not a folder; `bonecls sweep` reads a folder of images.")
    excluded = {p.resolve() for p in exclude}
    found: list[Path] = []
    for here, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(here) / name
            if name.startswith(".") or not path.is_file() or path.resolve() in excluded:
                continue
            found.append(path)
    return found


def folder_items(files: Iterable[Path]) -> Iterator[SweepItem]:
    """One item per file, keyed by the sha256 of its bytes (computed here, lazily: one file at a time)."""
    for path in files:
        try:
            with open(path, "rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError as exc:
            log.warning("a file of the sweep cannot be read (%s); it is left out", exc.strerror)
            continue
        yield SweepItem(digest, FILE_KEY, str(path))


def dicomweb_items(client: Any, study_uids: Iterable[str]) -> Iterator[SweepItem]:
    """One item per instance of each study (QIDO-RS at instance level; nothing is retrieved here)."""
    import requests

    for study in study_uids:
        try:
            found = client.search_for_instances(
                study_instance_uid=study, fields=["SeriesInstanceUID", "SOPInstanceUID"], get_remaining=True
            )
        except (requests.RequestException, OSError) as exc:
            raise PacsError(f"Listing the instances of a study failed ({type(exc).__name__}).") from exc
        for instance in found:
            series = ((instance.get("0020000E") or {}).get("Value") or [""])[0]
            sop = ((instance.get("00080018") or {}).get("Value") or [""])[0]
            if series and sop:
                yield SweepItem(str(sop), SOP_KEY, f"{study}/{series}/{sop}")


# -- the driver -------------------------------------------------------------------------------------


@contextmanager
def dask_client(scheduler: str | None, workers: int, *, processes: bool = True) -> Iterator[Any]:
    """A client of ``scheduler``, or of a LocalCluster on loopback with ``workers`` single-thread workers
    (``processes=False``: threads of this process, for tests and small sweeps)."""
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=max(1, workers),
            threads_per_worker=1,
            processes=processes,
            # every listening socket on loopback (the health/dashboard servers too); in-process workers
            # talk over inproc://, which takes no host
            dashboard_address="127.0.0.1:0",
            worker_dashboard_address="127.0.0.1:0",
            **({"host": "127.0.0.1"} if processes else {}),
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def run_sweep(
    items: Iterable[SweepItem],
    table: ResultTable,
    models: Sequence[tuple[str, ModelInfo]],
    target: SweepTarget,
    *,
    total: int | None = None,
    scheduler: str | None = None,
    workers: int = 2,
    processes: bool = True,
    progress: bool = True,
) -> SweepReport:
    """Score every item not yet in ``table`` on a Dask cluster, writing rows as images finish."""
    from distributed import as_completed

    from bonecls.progress import progress_bar

    if target.destination and not target.research:
        from bonecls.pacs.safety import check_destination

        check_destination(target.destination, [info for _, info in models])  # refuse before any work
    done = table.done_keys([info.sha256 for _, info in models])
    report = SweepReport()
    started = time.perf_counter()
    threads = None if scheduler else max(1, (os.cpu_count() or 1) // max(1, workers))
    plugin = ModelsOnWorker([d for d, _ in models], [i.sha256 for _, i in models], torch_threads=threads)
    with (
        dask_client(scheduler, workers, processes=processes) as client,
        progress_bar(total=total, desc="sweep", unit="image", enabled=progress) as bar,
    ):
        client.register_plugin(plugin, name=PLUGIN_NAME)
        limit = IN_FLIGHT_PER_THREAD * max(1, sum(client.nthreads().values()))
        running = as_completed()
        in_flight = 0
        submitted: set[str] = set()
        for item in items:
            if item.key in done or item.key in submitted:
                if item.key in done:
                    report.already_done += 1
                else:
                    report.duplicates += 1
                bar.update(1)
                continue
            submitted.add(item.key)
            running.add(client.submit(score_item, item, target, pure=False))
            in_flight += 1
            while in_flight >= limit:
                _collect(next(running), table, report, bar, started)
                in_flight -= 1
        for future in running:
            _collect(future, table, report, bar, started)
    report.seconds = time.perf_counter() - started
    return report


def _collect(future: Any, table: ResultTable, report: SweepReport, bar: Any, started: float) -> None:
    """Write one finished image's rows (or count its failure: no row, so a resumed sweep retries it)."""
    bar.update(1)
    if report.first_image_s is None:
        report.first_image_s = time.perf_counter() - started
    if future.status != "finished":
        exc = future.exception()
        report.failed += 1
        log.warning("an image of the sweep failed and will be retried next time: %s", _sentence(exc))
        return
    rows = future.result()
    table.write(rows)
    if rows and rows[0].get("status") == NOT_READ:
        report.not_read += 1
    else:
        report.scored += 1


def _sentence(exc: BaseException | None) -> str:
    return str(exc) if isinstance(exc, BoneclsError) else type(exc).__name__
