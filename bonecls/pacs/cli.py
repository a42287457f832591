"""``bonecls pacs search|read``, ``bonecls listen`` and ``bonecls sweep``: the PACS commands.

Registered on the main parser by :func:`add_parsers`. Output names studies and images by their DICOM UIDs
only; patient names, IDs and birth dates never appear (the objects sent back to the PACS carry them,
because DICOM requires it, and nothing else does).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from urllib.parse import urlsplit

from bonecls.errors import BoneclsError

__all__ = ["add_parsers"]


def add_parsers(subparsers) -> None:
    """Register ``pacs``, ``listen`` and ``sweep`` on the ``bonecls`` sub-parsers object."""
    pacs = subparsers.add_parser(
        "pacs",
        help="search a PACS over DICOMweb and read studies (results back as DICOM SR + Secondary Capture)",
        description="DICOMweb: --url or $BONECLS_DICOMWEB_URL; credentials only from "
        "$BONECLS_DICOMWEB_USER / $BONECLS_DICOMWEB_PASSWORD or $BONECLS_DICOMWEB_TOKEN. "
        "Research use only, not for diagnostic use.",
    )
    actions = pacs.add_subparsers(dest="pacs_command", required=True)

    search = actions.add_parser("search", help="find studies (QIDO-RS)")
    _url_option(search)
    _search_options(search, limit=100)
    search.add_argument("--json", action="store_true", help="one JSON object per study")
    search.set_defaults(func=_cmd_search)

    read = actions.add_parser("read", help="retrieve a study (WADO-RS) and read it with every fitting model")
    _url_option(read)
    read.add_argument("study", help="StudyInstanceUID (from `bonecls pacs search`)")
    _model_options(read)
    read.add_argument("--json", action="store_true", help="print the reading as one JSON object")
    _send_options(read, store_back=True)
    read.set_defaults(func=_cmd_read)

    listen = subparsers.add_parser(
        "listen",
        help="a DICOM node: accept C-STORE, queue durably, read, send SR/SC to a destination",
        description="Every received instance is on disk (SQLite + files, fsynced) before success is "
        "answered; results go to --send. Research use only, not for diagnostic use.",
    )
    listen.add_argument("--port", type=int, default=11112, help="TCP port (default 11112)")
    listen.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    listen.add_argument("--aet", default="BONECLS-NODE", help="this node's AE title (default BONECLS-NODE)")
    listen.add_argument("--queue", required=True, help="queue folder (created; keep it across restarts)")
    _model_options(listen)
    _send_options(listen, store_back=False)
    listen.set_defaults(func=_cmd_listen)

    sweep = subparsers.add_parser(
        "sweep",
        help="score a folder or a DICOMweb search on a Dask cluster into a resumable result table",
        description="One row per image and model in --out (SQLite; rerun the same command to resume: "
        "rows already there are skipped). No patient data in the table. Research use only, not for "
        "diagnostic use.",
    )
    sweep.add_argument("folder", nargs="?", help="a folder of DICOM / PNG / JPEG files (recursive)")
    sweep.add_argument(
        "--dicomweb", action="store_true", help="sweep what a DICOMweb search finds instead of a folder"
    )
    _url_option(sweep)
    _search_options(sweep, limit=1_000_000)
    sweep.add_argument("--out", required=True, help="the result table (SQLite), created or resumed")
    sweep.add_argument("--csv", metavar="FILE", help="also export the whole table as CSV at the end")
    sweep.add_argument("--workers", type=int, default=2, help="LocalCluster workers (default 2)")
    sweep.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler, tcp://HOST:8786")
    sweep.add_argument(
        "--in-process", action="store_true", help="LocalCluster workers as threads of this process"
    )
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")
    _model_options(sweep)
    _send_options(sweep, store_back=True)
    sweep.set_defaults(func=_cmd_sweep)


def _cmd_listen(args: argparse.Namespace) -> int:
    import logging

    from bonecls.pacs.models import load_readers
    from bonecls.pacs.node import Node, serve
    from bonecls.pacs.queue import DurableQueue

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    if not args.send:
        print("error: bonecls listen needs --send DEST (where the results go).", file=sys.stderr)
        return 2
    try:
        node = Node(
            queue=DurableQueue(args.queue),
            readers=load_readers(args.model, args.task),
            destination=args.send,
            port=args.port,
            host=args.host,
            aet=args.aet,
            calling_aet=args.calling_aet,
            secondary_captures=not args.no_sc,
            research=args.research_destination,
        )
        return serve(node)
    except BoneclsError as exc:
        return _fail(exc)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bonecls.pacs import sweep
    from bonecls.pacs.dicomweb import server_url
    from bonecls.pacs.sweep_table import ResultTable

    if bool(args.folder) == bool(args.dicomweb):
        print(
            "error: give a folder to sweep, or --dicomweb (with search filters), not both.", file=sys.stderr
        )
        return 2
    if args.store and args.send:
        print("error: a sweep sends its results to one place: --store or --send DEST.", file=sys.stderr)
        return 2
    try:
        destination = server_url(args.url) if args.store else args.send
        models = sweep.selected_models(args.model, args.task)
        table = ResultTable(args.out)
        url = server_url(args.url) if args.dicomweb else None
        if args.dicomweb:
            items, total = _dicomweb_sweep_items(args)
        else:
            journal = [Path(f"{table.path}{suffix}") for suffix in ("", "-wal", "-shm", "-journal")]
            files = sweep.folder_files(args.folder, exclude=journal)
            items, total = sweep.folder_items(files), len(files)
        target = sweep.SweepTarget(
            dicomweb_url=url,
            destination=destination,
            secondary_captures=not args.no_sc,
            research=args.research_destination,
            calling_aet=args.calling_aet,
        )
        report = sweep.run_sweep(
            items,
            table,
            models,
            target,
            total=total,
            scheduler=args.scheduler,
            workers=args.workers,
            processes=not args.in_process,
            progress=not args.no_progress,
        )
    except BoneclsError as exc:
        return _fail(exc)
    if args.csv:
        table.export_csv(args.csv)
    print(
        f"sweep: {report.scored} image(s) scored, {report.not_read} not read, {report.already_done} already "
        f"in the table, {report.duplicates} duplicate file(s), {report.failed} failed (retried next run); "
        f"{report.images_per_second:.2f} images/s; table {table.path} (RESEARCH USE ONLY)",
        flush=True,
    )
    return 1 if report.failed else 0


def _dicomweb_sweep_items(args: argparse.Namespace):
    """The instances of every study a search finds (lazily listed) and their count when the server says."""
    from bonecls.pacs.dicomweb import connect, search_studies
    from bonecls.pacs.sweep import dicomweb_items

    client = connect(args.url)
    matches = search_studies(
        client,
        date_from=args.date_from,
        date_to=args.date_to,
        modality=args.modality,
        body_part=args.body_part,
        accession=args.accession,
        limit=args.limit,
    )
    counts = [m.instances for m in matches]
    total = sum(c for c in counts if c is not None) if None not in counts else None
    return dicomweb_items(client, [m.study_instance_uid for m in matches]), total


def _search_options(parser: argparse.ArgumentParser, *, limit: int) -> None:
    parser.add_argument("--from", dest="date_from", metavar="DATE", help="study date from (YYYY-MM-DD)")
    parser.add_argument("--to", dest="date_to", metavar="DATE", help="study date to (YYYY-MM-DD)")
    parser.add_argument("--modality", help="e.g. CR, DX")
    parser.add_argument("--body-part", help="BodyPartExamined, e.g. CHEST")
    parser.add_argument("--accession", help="accession number")
    parser.add_argument(
        "--limit", type=int, default=limit, help=f"at most this many studies (default {limit})"
    )


def _url_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="DICOMweb base URL (default: $BONECLS_DICOMWEB_URL)")


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        help="card id or folder (repeatable; default: every installed model)",
    )
    parser.add_argument(
        "--task",
        action="append",
        default=[],
        help="only models of this task (repeatable: fracture, pneumonia ...)",
    )


def _send_options(parser: argparse.ArgumentParser, *, store_back: bool) -> None:
    if store_back:
        parser.add_argument(
            "--store",
            action="store_true",
            help="store the SR and Secondary Captures back into the study (STOW-RS)",
        )
    parser.add_argument(
        "--send",
        metavar="DEST",
        help="send the SR/SC to http(s)://host:port/dicom-web or dicom://AET@host:port",
    )
    parser.add_argument(
        "--no-sc", action="store_true", help="send the SR only (no Secondary Capture overlays)"
    )
    parser.add_argument(
        "--calling-aet", default="BONECLS", help="this node's AE title for C-STORE (default BONECLS)"
    )
    parser.add_argument(
        "--research-destination",
        action="store_true",
        help="allow results of synthetic-data models to leave this machine (recorded in the audit log)",
    )


def _fail(exc: BaseException) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 1


def _cmd_search(args: argparse.Namespace) -> int:
    from bonecls.pacs.dicomweb import connect, search_studies

    try:
        matches = search_studies(
            connect(args.url),
            date_from=args.date_from,
            date_to=args.date_to,
            modality=args.modality,
            body_part=args.body_part,
            accession=args.accession,
            limit=args.limit,
        )
    except BoneclsError as exc:
        return _fail(exc)
    for m in matches:
        if args.json:
            print(json.dumps(asdict(m)), flush=True)
        else:
            size = f"{m.instances} image(s)" if m.instances is not None else f"{m.series} series"
            print(
                f"{m.study_instance_uid}  {m.study_date or '--------'}  {'/'.join(m.modalities) or '?'}  "
                f"{'/'.join(m.body_parts) or '-'}  {size}",
                flush=True,
            )
    if not matches and not args.json:
        print("No study matches.")
    return 0


def _cmd_read(args: argparse.Namespace) -> int:
    from bonecls.pacs.dicomweb import connect, retrieve_study, server_url
    from bonecls.pacs.models import load_readers
    from bonecls.pacs.reader import read_study

    destinations = [d for d in (server_url(args.url) if args.store else None, args.send) if d]
    try:
        readers = load_readers(args.model, args.task)
        client = connect(args.url)
        instances = retrieve_study(client, args.study)
        study = read_study(instances, readers, overlays=bool(destinations) and not args.no_sc)
    except BoneclsError as exc:
        return _fail(exc)
    print_reading(study.reading, as_json=args.json)
    try:
        for destination in destinations:
            _send(study, instances, destination, args)
    except BoneclsError as exc:
        return _fail(exc)
    return 0


def _send(study, evidence, destination: str, args: argparse.Namespace) -> None:
    from bonecls.pacs.send import result_objects, send_objects

    objects = result_objects(study, evidence, secondary_captures=not args.no_sc)
    stored = send_objects(
        objects,
        destination,
        study.reading.models,
        research=args.research_destination,
        calling_aet=args.calling_aet,
    )
    where = urlsplit(destination)
    print(
        f"stored 1 SR and {len(stored) - 1} Secondary Capture(s) in study {study.reading.study_instance_uid} "
        f"at {where.scheme}://{where.hostname}:{where.port or ''} (RESEARCH USE ONLY)",
        file=sys.stderr if args.json else sys.stdout,
        flush=True,
    )


def print_reading(reading, *, as_json: bool) -> None:
    """A reading as one JSON object or as lines for a terminal (UIDs, statuses, numbers; no patient data)."""
    if as_json:
        print(
            json.dumps(
                {
                    "study_instance_uid": reading.study_instance_uid,
                    "summaries": [asdict(s) for s in reading.summaries],
                    "results": [r.row() for r in reading.results],
                    "skipped": list(reading.skipped),
                }
            ),
            flush=True,
        )
        return
    print(f"study {reading.study_instance_uid}")
    for s in reading.summaries:
        if s.suspicion is None:
            print(f"  {s.model_id}: not assessed ({s.images} image(s), none in the model's scope)")
        else:
            print(
                f"  {s.model_id}: {s.finding} {s.status} (suspicion {s.suspicion:.3f}; image "
                f"{s.deciding_sop_instance_uid} decides; {s.images_in_scope} of {s.images} in scope)"
            )
    for r in reading.results:
        if r.in_scope:
            detail = f"{r.label} {r.status} (suspicion {r.suspicion:.3f})"
            if r.boxes:
                detail += f", {len(r.boxes)} box(es)"
        else:
            detail = "not assessed: " + " ".join(r.scope_reasons)
        print(f"    image {r.sop_instance_uid} {r.model_id}: {detail}")
    for note in reading.skipped:
        print(f"  skipped {note}")
