"""Small trees in the real layouts of MURA v1.1 and GRAZPEDWRI-DX, and DICOM files with patient tags.

Shared by tests/test_data_studies.py (readers, splits) and tests/test_realdata_train.py (one epoch end to
end). Images are tiny PNGs whose brightness follows the label, so one epoch has something to learn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

GRAZ_COLUMNS = (
    "filestem,patient_id,study_number,timehash,gender,age,laterality,projection,initial_exam,"
    "ao_classification,cast,diagnosis_uncertain,osteopenia,fracture_visible,metal,pixel_spacing,"
    "device_manufacturer"
)
GRAZ_NAMES = (
    "boneanomaly",
    "bonelesion",
    "foreignbody",
    "fracture",
    "metal",
    "periostealreaction",
    "pronatorsign",
    "softtissue",
    "text",
)


def write_image(path: Path, positive: bool, seed: int, size: tuple[int, int] = (40, 32)) -> Path:
    """A textured 8-bit PNG; positives are brighter with a dark line (a 'fracture')."""
    rng = np.random.default_rng(seed)
    h, w = size
    arr = rng.normal(150 if positive else 90, 20, (h, w))
    if positive:
        arr[h // 2, w // 4 : 3 * w // 4] = 10
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path)
    return path


def make_mura(base: Path, patients: int = 8, valid_patients: int = 4) -> Path:
    """``base/MURA-v1.1`` with train and valid, two regions, 1-2 studies a patient, 2 views a study, and
    the four CSVs exactly as Stanford ships them (no header, paths from ``MURA-v1.1/``)."""
    root = base / "MURA-v1.1"
    seed = 0
    for folder, n_patients, first in (("train", patients, 1), ("valid", valid_patients, 900)):
        image_rows, study_rows = [], []
        for p in range(first, first + n_patients):
            region = ("XR_WRIST", "XR_HAND")[p % 2]
            for s in range(1, 2 + p % 2):
                positive = (p + s) % 2 == 0
                study = f"{folder}/{region}/patient{p:05d}/study{s}_{'positive' if positive else 'negative'}"
                study_rows.append(f"MURA-v1.1/{study}/,{int(positive)}")
                for k in (1, 2):
                    seed += 1
                    write_image(root / study / f"image{k}.png", positive, seed)
                    image_rows.append(f"MURA-v1.1/{study}/image{k}.png")
        (root / f"{folder}_image_paths.csv").write_text("\n".join(image_rows) + "\n")
        (root / f"{folder}_labeled_studies.csv").write_text("\n".join(study_rows) + "\n")
    return root


def make_grazpedwri(root: Path, patients: int = 10) -> Path:
    """A GRAZPEDWRI-DX folder as unzipped from figshare: dataset.csv, images_part1/, and
    folder_structure/yolov5/{labels/, meta.yaml}; every image has a 'text' box, positives a fracture."""
    labels = root / "folder_structure" / "yolov5" / "labels"
    labels.mkdir(parents=True)
    (labels.parent / "meta.yaml").write_text("nc: 9\nnames: [" + ", ".join(GRAZ_NAMES) + "]\n")
    rows = [GRAZ_COLUMNS]
    seed = 100
    for p in range(1, patients + 1):
        for study in (1, 2) if p % 3 == 0 else (1,):
            positive = (p + study) % 2 == 1
            for projection in (1, 2):
                seed += 1
                stem = f"{p:04d}_{1000000 + seed:010d}_{study:02d}_WRI-L{projection}_M010"
                write_image(root / "images_part1" / f"{stem}.png", positive, seed)
                boxes = ["8 0.1 0.1 0.1 0.05"]
                if positive:
                    boxes.append("3 0.5 0.5 0.5 0.1")
                (labels / f"{stem}.txt").write_text("\n".join(boxes) + "\n")
                visible = "1.0" if positive else ""
                rows.append(
                    f"{stem},{p},{study},{1000000 + seed},M,10.0,L,{projection},1.0,23r-M/2.1,,,,"
                    f"{visible},,0.144,Siemens"
                )
    (root / "dataset.csv").write_text("\n".join(rows) + "\n")
    return root


def write_cr_dicom(path: Path, pixels: np.ndarray, **attributes: str) -> Path:
    """A small 12-bit MONOCHROME2 CR DICOM of ``pixels`` (uint16 values), with extra header
    ``attributes`` (e.g. ``PatientID``, ``StudyInstanceUID``), written to ``path``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_patient_dicom(path: Path, patient_id: str, study_uid: str, value: int = 1000) -> Path:
    """A small MONOCHROME2 DICOM carrying PatientID and StudyInstanceUID."""
    pixels = np.full((16, 16), value, dtype=np.uint16)
    return write_cr_dicom(path, pixels, PatientID=patient_id, StudyInstanceUID=study_uid)
