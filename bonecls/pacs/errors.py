"""Typed errors of the PACS side; each message is a sentence an operator can act on."""

from __future__ import annotations

from bonecls.errors import BoneclsError


class PacsError(BoneclsError):
    """A PACS, DICOMweb server or DICOM node could not be used as asked."""


class OrthancNotAvailable(PacsError):
    """The development Orthanc (Debian packages ``orthanc`` and ``orthanc-dicomweb``) cannot be started."""


class DestinationRefused(PacsError):
    """Results may not be sent to this destination (synthetic-data model, non-loopback, no research flag)."""


class DicomContentError(PacsError):
    """A received or retrieved DICOM object is not what a reading needs (no image, malformed)."""
