"""A model's overlay (heat map or boxes) as a DICOM Secondary Capture, "NOT FOR DIAGNOSTIC USE" burned in.

The overlay is drawn under a black band that carries the notice and the model's id, so the notice is part
of the pixels: a viewer that shows no header still shows it. The image goes into the source image's study
as a new series (``highdicom``'s ``SCImage.from_ref_dataset`` copies the patient and study modules),
references its source image, and its UID is derived from the source image and the model's sha256, so
sending it twice stores it once.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from bonecls.pacs import BURNED_IN_NOTICE, RESEARCH_NOTICE
from bonecls.pacs.reader import MANUFACTURER, with_type2_attributes
from bonecls.pacs.results import ModelInfo
from bonecls.pacs.sr import result_uid

__all__ = ["SC_SERIES_NUMBER", "build_sc", "burn_in_notice"]

SC_SERIES_NUMBER = 9902
SC_SERIES_DESCRIPTION = f"bonecls overlays: {RESEARCH_NOTICE}"


def burn_in_notice(rgb: np.ndarray, model_id: str) -> np.ndarray:
    """``rgb`` (uint8 H x W x 3) under a black band reading "NOT FOR DIAGNOSTIC USE" and the model id."""
    import cv2

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    width = rgb.shape[1]
    scale = max(0.3, width / 700.0)
    thickness = max(1, round(scale * 1.5))
    (_, text_h), base = cv2.getTextSize(BURNED_IN_NOTICE, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    line = text_h + base + 4
    band = np.zeros((2 * line + 4, width, 3), dtype=np.uint8)
    for row, text in enumerate((BURNED_IN_NOTICE, f"research model {model_id}")):
        origin = (4, (row + 1) * line)
        white = (255, 255, 255)
        cv2.putText(band, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, white, thickness, cv2.LINE_AA)
    return np.concatenate([band, rgb], axis=0)


def build_sc(source: Dataset, overlay: np.ndarray, model: ModelInfo, *, instance_number: int = 1) -> Dataset:
    """The Secondary Capture of one model's overlay on ``source`` (the image it was drawn on)."""
    pixels = burn_in_notice(overlay, model.model_id)
    source = with_type2_attributes(source)
    orientation = tuple(str(v) for v in getattr(source, "PatientOrientation", []) or []) or ("L", "F")
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=result_uid("sc-series", str(source.StudyInstanceUID)),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=result_uid("sc", str(source.SOPInstanceUID), model.sha256),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        patient_orientation=orientation[:2] if len(orientation) >= 2 else ("L", "F"),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        series_description=SC_SERIES_DESCRIPTION,
    )
    sc.SpecificCharacterSet = "ISO_IR 192"
    if "Laterality" not in sc:  # type 2C in General Series: empty when the source does not say
        sc.Laterality = str(getattr(source, "Laterality", "") or "")
    sc.BurnedInAnnotation = "YES"
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.ImageComments = (
        f"{RESEARCH_NOTICE}. Overlay of research model {model.model_id} (version {model.version}, weights "
        f"sha256 {model.sha256}). Training data: {model.training_data or 'not stated on the card'}"
    )[:10240]
    sc.DerivationDescription = f"Heat map or boxes of research model {model.model_id}; {RESEARCH_NOTICE}"[
        :1024
    ]
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = [reference]
    return sc
