"""``bonecls listen``: a DICOM node (pynetdicom) that reads what a modality or PACS sends it.

The C-STORE handler makes each received instance durable in :class:`~bonecls.pacs.queue.DurableQueue`
before it answers success; a worker thread reads queued instances with the chosen models and sends an SR
(and Secondary Captures) per instance to the configured destination (C-STORE or STOW-RS), then marks the
instance done. Results carry UIDs derived from the source instance and the model, so an instance whose
results were sent just before a crash (but not yet marked done) is sent again as the same objects and the
destination keeps one copy: a SIGKILL at any moment loses nothing and stores nothing twice.

Malformed DICOM gets a DICOM error status (0xC210 "cannot understand") and one log line, never a crash.
Logs name instances by SOPInstanceUID only.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import pydicom
from pydicom.filewriter import write_file_meta_info

from bonecls.errors import BoneclsError
from bonecls.pacs.errors import DicomContentError, PacsError
from bonecls.pacs.models import ModelReader
from bonecls.pacs.queue import DurableQueue, QueueItem
from bonecls.pacs.reader import read_instance
from bonecls.pacs.safety import check_destination
from bonecls.pacs.send import DEFAULT_CALLING_AET, send_instance_results

log = logging.getLogger(__name__)

__all__ = ["Node"]

STATUS_SUCCESS = 0x0000
STATUS_CANNOT_UNDERSTAND = 0xC210
STATUS_OUT_OF_RESOURCES = 0xA700


@dataclass
class Node:
    """A C-STORE SCP on ``host:port`` feeding ``queue``, and a worker sending results to ``destination``."""

    queue: DurableQueue
    readers: Sequence[ModelReader]
    destination: str
    port: int = 11112
    host: str = "127.0.0.1"
    aet: str = "BONECLS-NODE"
    calling_aet: str = DEFAULT_CALLING_AET
    secondary_captures: bool = True
    research: bool = False
    _server: object = field(default=None, init=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _wake: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _worker: threading.Thread | None = field(default=None, init=False, repr=False)

    # -- receiving --------------------------------------------------------------------------------

    def handle_store(self, event) -> int:
        """C-STORE: durable first, success after; malformed -> 0xC210 and a log line."""
        try:
            ds = event.dataset
            sop_uid = str(ds.SOPInstanceUID)
            study_uid = str(ds.StudyInstanceUID)
            if not sop_uid or not study_uid:
                raise ValueError("no SOPInstanceUID or StudyInstanceUID")
        except Exception as exc:
            log.warning("C-STORE refused: the dataset cannot be decoded (%s)", type(exc).__name__)
            return STATUS_CANNOT_UNDERSTAND
        meta = event.file_meta
        raw = event.request.DataSet.getvalue()

        def write(handle) -> None:
            handle.write(b"\x00" * 128 + b"DICM")
            write_file_meta_info(handle, meta, enforce_standard=True)
            handle.write(raw)

        try:
            new = self.queue.receive(sop_uid, study_uid, write)
        except OSError as exc:
            log.error("C-STORE of %s not accepted: the queue cannot be written (%s)", sop_uid, exc.strerror)
            return STATUS_OUT_OF_RESOURCES
        log.info("received %s%s", sop_uid, "" if new else " (already queued)")
        self._wake.set()
        return STATUS_SUCCESS

    def start(self, *, block: bool = False) -> Node:
        """Check the destination, start the worker and the SCP (``block``: serve until stopped)."""
        from pynetdicom import AE, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        check_destination(self.destination, [r.info for r in self.readers], research=self.research)
        ae = AE(ae_title=self.aet)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        ae.maximum_associations = 8
        ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = 30  # a silent peer cannot hold a stop
        self._worker = threading.Thread(target=self._work, name="bonecls-node-worker", daemon=True)
        self._worker.start()
        handlers = [(evt.EVT_C_STORE, self.handle_store)]
        log.info("listening as %s on %s:%d", self.aet, self.host, self.port)
        self._server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers)
        if block:
            self._stop.wait()
            self.stop()
        return self

    def stop(self) -> None:
        """Stop accepting, let the worker finish its current instance, return."""
        self._stop.set()
        self._wake.set()
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=60)

    # -- working ----------------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            item = self.queue.next_pending()
            if item is None:
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            try:
                self.process(item)
            except Exception as exc:
                state = self.queue.mark_retry(item.sop_instance_uid, f"internal error {type(exc).__name__}")
                log.error(
                    "instance %s: internal error %s (%s)", item.sop_instance_uid, type(exc).__name__, state
                )

    def process(self, item: QueueItem) -> str:
        """Read one queued instance, send its results, record the outcome; returns the new state."""
        try:
            ds = pydicom.dcmread(item.path)
            results, overlays = read_instance(ds, self.readers, overlays=self.secondary_captures)
        except (DicomContentError, pydicom.errors.InvalidDicomError, OSError, ValueError) as exc:
            self.queue.mark_skipped(item.sop_instance_uid, str(exc))
            log.warning("instance %s not read: %s", item.sop_instance_uid, exc)
            return "skipped"
        try:
            stored = send_instance_results(
                ds,
                results,
                overlays,
                [r.info for r in self.readers],
                self.destination,
                secondary_captures=self.secondary_captures,
                research=self.research,
                calling_aet=self.calling_aet,
            )
        except (PacsError, BoneclsError) as exc:
            state = self.queue.mark_retry(item.sop_instance_uid, str(exc))
            log.warning("results of %s not sent (%s): %s", item.sop_instance_uid, state, exc)
            return state
        self.queue.mark_done(item.sop_instance_uid, stored)
        log.info("results of %s sent: %d object(s)", item.sop_instance_uid, len(stored))
        return "done"


def serve(node: Node) -> int:
    """Run until SIGTERM or SIGINT (the current instance is finished first)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: node._stop.set())
    node.start(block=True)
    return 0
