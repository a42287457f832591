"""Read DICOM instances with every chosen model: one result per (image, model), a summary per study.

A study pulled from a PACS holds more than radiographs: reports, presentation states, key-object
notes, and (after a first reading) this project's own SR and Secondary Captures. Those are skipped with a
reason; only images are read. An image that cannot be decoded is skipped with the loader's sentence, so
that one damaged instance never stops a study.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from bonecls.errors import BoneclsError
from bonecls.pacs.errors import DicomContentError
from bonecls.pacs.models import ModelReader, image_result
from bonecls.pacs.results import ImageResult, StudyReading

log = logging.getLogger(__name__)

__all__ = ["StudyRead", "dataset_bytes", "is_bonecls_output", "radiograph_of", "read_instance", "read_study"]

#: Manufacturer written on every object this package creates (so a later reading skips them).
MANUFACTURER = "bonecls (research software)"


@dataclass
class StudyRead:
    """A :class:`StudyReading` plus the overlays drawn for Secondary Captures, by (SOP UID, model id)."""

    reading: StudyReading
    overlays: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)


def dataset_bytes(ds: Dataset) -> bytes:
    """A dataset as DICOM Part 10 bytes (what the image loader reads)."""
    buf = io.BytesIO()
    if getattr(ds, "file_meta", None) is None or "TransferSyntaxUID" not in ds.file_meta:
        ds = _with_meta(ds)
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _with_meta(ds: Dataset) -> Dataset:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    copy = Dataset(ds)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    copy.file_meta = meta
    return copy


#: Patient and study attributes of type 2 (present, possibly empty) that derived objects copy from their
#: source; many archives omit some of them, and the SR/SC writers need each one present.
TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def with_type2_attributes(ds: Dataset) -> Dataset:
    """A shallow copy of ``ds`` with every :data:`TYPE2_COPIED` attribute present (empty when missing)."""
    copy = Dataset(ds)
    if hasattr(ds, "file_meta"):
        copy.file_meta = ds.file_meta
    for keyword in TYPE2_COPIED:
        if keyword not in copy:
            setattr(copy, keyword, "")
    return copy


def is_bonecls_output(ds: Dataset) -> bool:
    return str(getattr(ds, "Manufacturer", "")) == MANUFACTURER


def skip_reason(ds: Dataset) -> str | None:
    """Why an instance is not read (None when it is an image to read)."""
    if is_bonecls_output(ds):
        return "a result written by bonecls"
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return f"not an image ({getattr(ds, 'Modality', '?')} object)"
    return None


def radiograph_of(ds: Dataset):
    """The :class:`bonecls.imaging.Radiograph` of a DICOM image (the project's loader: windows, VOI LUT,
    MONOCHROME1, compressed syntaxes, size limits)."""
    from bonecls.imaging import load_radiograph

    return load_radiograph(dataset_bytes(ds))


def read_instance(
    ds: Dataset, readers: Sequence[ModelReader], *, overlays: bool = False
) -> tuple[list[ImageResult], dict[tuple[str, str], np.ndarray]]:
    """Every model's result on one image instance; :class:`DicomContentError` when it cannot be read."""
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        if not str(getattr(ds, keyword, "") or ""):
            raise DicomContentError(f"The DICOM instance has no {keyword}; it cannot be tied to a study.")
    reason = skip_reason(ds)
    if reason is not None:
        raise DicomContentError(f"The instance is {reason}; only images are read.")
    try:
        rg = radiograph_of(ds)
    except BoneclsError as exc:
        raise DicomContentError(str(exc)) from exc
    uids = {
        "study_instance_uid": str(ds.StudyInstanceUID),
        "series_instance_uid": str(ds.SeriesInstanceUID),
        "sop_instance_uid": str(ds.SOPInstanceUID),
        "sop_class_uid": str(ds.SOPClassUID),
    }
    results: list[ImageResult] = []
    pictures: dict[tuple[str, str], np.ndarray] = {}
    for reader in readers:
        out = reader.read(rg, overlay=overlays)
        results.append(image_result(reader.info, out, **uids))
        if out.overlay is not None:
            pictures[(str(ds.SOPInstanceUID), reader.info.model_id)] = out.overlay
    return results, pictures


def read_study(
    datasets: Iterable[Dataset], readers: Sequence[ModelReader], *, overlays: bool = False
) -> StudyRead:
    """Read one study's instances (one StudyInstanceUID); non-images are skipped with a reason."""
    datasets = sorted(datasets, key=_study_order)
    studies = {str(getattr(ds, "StudyInstanceUID", "")) for ds in datasets}
    if len(studies) != 1 or not next(iter(studies)):
        raise DicomContentError(
            f"A reading covers one study; these instances belong to {len(studies)} studies."
        )
    results: list[ImageResult] = []
    pictures: dict[tuple[str, str], np.ndarray] = {}
    skipped: list[str] = []
    for index, ds in enumerate(datasets, 1):
        reason = skip_reason(ds)
        if reason is not None:
            skipped.append(f"instance {index}: {reason}")
            continue
        try:
            found, drawn = read_instance(ds, readers, overlays=overlays)
        except DicomContentError as exc:
            skipped.append(f"instance {index}: {exc}")
            log.warning("instance %d of a study was not read: %s", index, exc)
            continue
        results.extend(found)
        pictures.update(drawn)
    reading = StudyReading.of(studies.pop(), [r.info for r in readers], results, skipped)
    return StudyRead(reading, pictures)


def _study_order(ds: Dataset) -> tuple:
    def number(keyword: str) -> int:
        try:
            return int(getattr(ds, keyword, 0) or 0)
        except (TypeError, ValueError):
            return 0

    return (
        number("SeriesNumber"),
        str(getattr(ds, "SeriesInstanceUID", "")),
        number("InstanceNumber"),
        str(getattr(ds, "SOPInstanceUID", "")),
    )


def read_file(path) -> Dataset:
    """A DICOM file as a dataset (header and pixels), refusing non-DICOM with a sentence."""
    try:
        return pydicom.dcmread(path)
    except (pydicom.errors.InvalidDicomError, OSError, ValueError) as exc:
        raise DicomContentError(
            f"{getattr(path, 'name', path)} is not a readable DICOM file ({exc})."
        ) from exc
