"""Sending results to a PACS: STOW-RS (DICOMweb) or C-STORE (DICOM network), after the safety check.

A destination is a URL: ``http(s)://host:port/dicom-web`` (STOW-RS; credentials from the same
environment variables as :mod:`bonecls.pacs.dicomweb`) or ``dicom://AET@host:port`` (C-STORE to that
called AE title). Every send first passes :func:`bonecls.pacs.safety.check_destination`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from bonecls.pacs.errors import PacsError
from bonecls.pacs.reader import StudyRead
from bonecls.pacs.results import ImageResult, ModelInfo, StudyReading
from bonecls.pacs.safety import check_destination

log = logging.getLogger(__name__)

__all__ = ["c_store", "result_objects", "send_instance_results", "send_objects"]

DEFAULT_CALLING_AET = "BONECLS"
#: C-STORE statuses that mean "stored" (success, and the coercion/elements-discarded warnings).
STORED_STATUSES = {0x0000, 0xB000, 0xB006, 0xB007}


def result_objects(
    study: StudyRead, evidence: Sequence[Dataset], *, secondary_captures: bool = True
) -> list[Dataset]:
    """The SR of a reading, then (when asked) one Secondary Capture per overlay drawn."""
    from bonecls.pacs.sc import build_sc
    from bonecls.pacs.sr import build_sr

    objects = [build_sr(study.reading, evidence)]
    if secondary_captures:
        by_uid = {str(ds.SOPInstanceUID): ds for ds in evidence}
        drawn = sorted(study.overlays.items(), key=lambda item: item[0])
        for number, ((sop_uid, model_id), overlay) in enumerate(drawn, 1):
            model = study.reading.model(model_id)
            objects.append(build_sc(by_uid[sop_uid], overlay, model, instance_number=number))
    return objects


def send_instance_results(
    ds: Dataset,
    results: Sequence[ImageResult],
    overlays: dict,
    models: Sequence[ModelInfo],
    destination: str,
    *,
    secondary_captures: bool = True,
    research: bool = False,
    calling_aet: str = DEFAULT_CALLING_AET,
) -> list[str]:
    """Send one instance's SR (numbered like its source) and Secondary Captures: what the node and the
    sweep send per image. The objects' UIDs derive from the image and the models, so a resend after a
    crash stores nothing twice."""
    reading = StudyReading.of(str(ds.StudyInstanceUID), models, results)
    try:
        number = int(getattr(ds, "InstanceNumber", 1) or 1)
    except (TypeError, ValueError):
        number = 1
    objects = result_objects(StudyRead(reading, overlays), [ds], secondary_captures=secondary_captures)
    objects[0].InstanceNumber = number
    return send_objects(objects, destination, reading.models, research=research, calling_aet=calling_aet)


def send_objects(
    objects: Sequence[Dataset],
    destination: str,
    models: Sequence[ModelInfo],
    *,
    research: bool = False,
    calling_aet: str = DEFAULT_CALLING_AET,
) -> list[str]:
    """Store ``objects`` at ``destination``; returns the SOP Instance UIDs stored. Raises
    :class:`~bonecls.pacs.errors.DestinationRefused` before sending anything the safety rule forbids."""
    check_destination(destination, models, research=research, objects=len(objects))
    scheme = urlsplit(destination).scheme
    if scheme in ("http", "https"):
        from bonecls.pacs.dicomweb import connect, store

        return store(connect(destination), objects)
    if scheme == "dicom":
        parts = urlsplit(destination)
        if not parts.username or not parts.hostname or not parts.port:
            raise PacsError(f"A DICOM destination is written dicom://AET@host:port; got {destination!r}.")
        return c_store(objects, parts.hostname, parts.port, unquote(parts.username), calling_aet=calling_aet)
    raise PacsError(
        f"Unknown destination {destination!r}: use http(s)://host:port/dicom-web (STOW-RS) or "
        "dicom://AET@host:port (C-STORE)."
    )


def c_store(
    objects: Sequence[Dataset],
    host: str,
    port: int,
    called_aet: str,
    *,
    calling_aet: str = DEFAULT_CALLING_AET,
    timeout: float = 30.0,
) -> list[str]:
    """C-STORE every object over one association; raises :class:`PacsError` unless each one is stored."""
    from pynetdicom import AE

    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for sop_class in sorted({str(ds.SOPClassUID) for ds in objects}):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(host, int(port), ae_title=called_aet)
    if not assoc.is_established:
        raise PacsError(
            f"The DICOM node {called_aet} at {host}:{port} refused the association (or cannot be reached); "
            f"check that it knows this node's AE title {calling_aet}."
        )
    stored: list[str] = []
    try:
        for ds in objects:
            status = assoc.send_c_store(ds)
            code = int(getattr(status, "Status", -1)) if status else -1
            if code not in STORED_STATUSES:
                raise PacsError(
                    f"The DICOM node {called_aet} did not store a result object "
                    f"(status 0x{code & 0xFFFF:04X})."
                )
            stored.append(str(ds.SOPInstanceUID))
    finally:
        if assoc.is_established:
            assoc.release()
    return stored
