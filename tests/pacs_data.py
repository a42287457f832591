"""Test data for the PACS tests: small phantom studies (rendered by `bonecls phantom`, so real DICOM from
the project's own writer) and tiny models. Not a test module itself."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

FAKE_NAME = "PHANTOM^SYNTHETIC"


def phantom_study(
    out: Path,
    n: int = 2,
    *,
    seed: int = 0,
    study_date: str = "20240315",
    accession: str = "ACC0001",
    body_part: str = "CHEST",
    size: int = 256,
) -> list[Dataset]:
    """``n`` phantom chest films (``size`` px, DX) made into one study (one series), saved in ``out``.

    The UIDs follow from ``seed`` and ``n``: tests sharing the session's Orthanc use distinct seeds (a
    study stored twice keeps its first instances, and so its first accession number)."""
    from bonecls.phantom.writers import write_dataset

    root = write_dataset("pneumonia", "rsna", out / "render", n, size=size, seed=seed, progress=False)
    study_uid = generate_uid(entropy_srcs=["pacs-test-study", str(seed), str(n)])
    series_uid = generate_uid(entropy_srcs=["pacs-test-series", str(seed), str(n)])
    datasets = []
    for index, path in enumerate(sorted(root.rglob("*.dcm")), 1):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.InstanceNumber = index
        ds.StudyDate = study_date
        ds.StudyTime = "101500"
        ds.AccessionNumber = accession
        ds.BodyPartExamined = body_part
        ds.PatientID = "PHANTOM-0001"
        ds.PatientName = FAKE_NAME
        ds.PatientBirthDate = "19700101"
        dest = out / f"image{index}.dcm"
        ds.save_as(dest, enforce_file_format=True)
        datasets.append(pydicom.dcmread(dest))
    return datasets
