"""A reading as a DICOM Comprehensive SR (TID 1500 Measurement Report, written with ``highdicom``), and back.

Layout of the report:

* one TID 1501 measurement group per (image, model): the finding (SNOMED CT), the model as the algorithm
  (name = card id, version, parameters ``weights-sha256=...`` and ``task=...``), the source image, the
  status (positive / doubt / negative / not assessed), the predicted class, the suspicion and every class
  probability; an out-of-scope image gets the status "not assessed" and nothing else;
* one TID 1411 planar-ROI group per detected box: the box as a closed POLYLINE SCOORD on the source
  image, its label and confidence;
* one TID 1501 group per model for the study: the status and suspicion of the deciding image (the most
  suspicious in-scope one), which is referenced, and how many images were read and in scope;
* TEXT items at the root: "RESEARCH USE ONLY — NOT FOR DIAGNOSTIC USE", each model's training-data
  sentence, and why each "not assessed" image was not assessed.

UIDs are derived from what was read (study, images, model sha256), so the same reading sent twice is
the same object: a PACS keeps one copy. :func:`parse_sr` reads a report back into the same
:class:`~bonecls.pacs.results.StudyReading` (without ``skipped``), which the tests compare.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from bonecls import __version__
from bonecls.pacs import RESEARCH_NOTICE
from bonecls.pacs.errors import DicomContentError
from bonecls.pacs.reader import MANUFACTURER, with_type2_attributes
from bonecls.pacs.results import (
    OUT_OF_SCOPE,
    Box,
    ImageResult,
    ModelInfo,
    StudyReading,
    StudySummary,
    rounded_coordinate,
    rounded_probability,
)

__all__ = ["SR_SERIES_NUMBER", "build_sr", "parse_sr", "result_uid"]

SCHEME = "99BONECLS"  # private coding scheme (PS3.16 8.2: "99" prefix)
SR_SERIES_NUMBER = 9901
SR_SERIES_DESCRIPTION = f"bonecls SR: {RESEARCH_NOTICE}"

FINDING_CODES = {
    "fracture": hd.sr.CodedConcept("125605004", "SCT", "Fracture of bone"),
    "pneumonia": hd.sr.CodedConcept("233604007", "SCT", "Pneumonia"),
}
PROCEDURE = hd.sr.CodedConcept("363680008", "SCT", "Radiographic imaging procedure")
STATUS_NAME = hd.sr.CodedConcept("STATUS", SCHEME, "Reading-aid status")
STATUS_CODES = {
    "positive": hd.sr.CodedConcept("POS", SCHEME, "Positive"),
    "uncertain": hd.sr.CodedConcept("DOUBT", SCHEME, "Doubt - review"),
    "negative": hd.sr.CodedConcept("NEG", SCHEME, "Negative"),
    OUT_OF_SCOPE: hd.sr.CodedConcept("NA", SCHEME, "Not assessed"),
}
LABEL_NAME = hd.sr.CodedConcept("LABEL", SCHEME, "Predicted class")
BOX_LABEL_NAME = hd.sr.CodedConcept("BOXLABEL", SCHEME, "Region label")
SUSPICION = hd.sr.CodedConcept("SUSPICION", SCHEME, "Suspicion score")
CONFIDENCE = hd.sr.CodedConcept("CONFIDENCE", SCHEME, "Detection confidence")
IMAGES_READ = hd.sr.CodedConcept("NIMAGES", SCHEME, "Images read")
IMAGES_IN_SCOPE = hd.sr.CodedConcept("NINSCOPE", SCHEME, "Images in scope")
NOTICE_NAME = hd.sr.CodedConcept("NOTICE", SCHEME, "Use notice")
TRAINING_NAME = hd.sr.CodedConcept("TRAINING", SCHEME, "Model training data")
REASONS_NAME = hd.sr.CodedConcept("NOTASSESSED", SCHEME, "Reasons not assessed")
PROBABILITY_PREFIX = "Probability of "
NO_UNIT = hd.sr.CodedConcept("1", "UCUM", "no units")
IMAGE_UNIT = hd.sr.CodedConcept("{images}", "UCUM", "images")
SEPARATOR = " | "
# Tracking identifiers say what a group is: "image:<model>", "box:<model>:<n>", "study:<model>".
_IMAGE, _BOX, _STUDY = "image", "box", "study"


def result_uid(kind: str, *parts: str) -> str:
    """A UID derived from what it names (same inputs, same UID): resending creates no duplicate.

    A ``2.25.`` UID (PS3.5 B.2) whose integer is the first 128 bits of a SHA-256 of the inputs.
    """
    digest = hashlib.sha256("\x1f".join(("bonecls", kind, *parts)).encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def _code_of(value: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value[:16], SCHEME, meaning[:64])


def _algorithm(model: ModelInfo) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=model.model_id,
        version=model.version,
        parameters=[f"weights-sha256={model.sha256}", f"task={model.task}"],
        manufacturer="bonecls",
    )


def _source(result: ImageResult) -> hd.sr.SourceImageForMeasurementGroup:
    return hd.sr.SourceImageForMeasurementGroup(result.sop_class_uid, result.sop_instance_uid)


def _finding(name: str) -> hd.sr.CodedConcept:
    return FINDING_CODES.get(name) or _code_of(name.upper(), name)


def _image_group(
    result: ImageResult, model: ModelInfo, index: int
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    evaluations = [hd.sr.QualitativeEvaluation(STATUS_NAME, STATUS_CODES[result.status])]
    measurements = []
    if result.in_scope:
        evaluations.append(hd.sr.QualitativeEvaluation(LABEL_NAME, _code_of(f"C{index}", result.label)))
        if result.suspicion is not None:
            measurements.append(hd.sr.Measurement(SUSPICION, result.suspicion, NO_UNIT))
        for i, (name, p) in enumerate(result.probabilities):
            concept = _code_of(f"P{i}", f"{PROBABILITY_PREFIX}{name}")
            measurements.append(hd.sr.Measurement(concept, p, NO_UNIT))
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=result_uid("group", result.sop_instance_uid, model.sha256),
            identifier=f"{_IMAGE}:{model.model_id}",
        ),
        finding_type=_finding(result.finding),
        algorithm_id=_algorithm(model),
        source_images=[_source(result)],
        qualitative_evaluations=evaluations,
        measurements=measurements or None,
    )


def _box_group(
    result: ImageResult, model: ModelInfo, box: Box, n: int
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    corners = [(box.x0, box.y0), (box.x1, box.y0), (box.x1, box.y1), (box.x0, box.y1), (box.x0, box.y0)]
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.asarray(corners, dtype=np.float32),
        source_image=hd.sr.SourceImageForRegion(result.sop_class_uid, result.sop_instance_uid),
    )
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=result_uid("box", result.sop_instance_uid, model.sha256, str(n)),
            identifier=f"{_BOX}:{model.model_id}:{n}",
        ),
        referenced_region=region,
        finding_type=_finding(result.finding),
        algorithm_id=_algorithm(model),
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(BOX_LABEL_NAME, _code_of("L", box.label))],
        measurements=[hd.sr.Measurement(CONFIDENCE, box.confidence, NO_UNIT)],
    )


def _study_group(
    summary: StudySummary, model: ModelInfo, results: Sequence[ImageResult], study_uid: str
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    measurements = [
        hd.sr.Measurement(IMAGES_READ, summary.images, IMAGE_UNIT),
        hd.sr.Measurement(IMAGES_IN_SCOPE, summary.images_in_scope, IMAGE_UNIT),
    ]
    if summary.suspicion is not None:
        measurements.insert(0, hd.sr.Measurement(SUSPICION, summary.suspicion, NO_UNIT))
    deciding = [r for r in results if r.sop_instance_uid == summary.deciding_sop_instance_uid]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=result_uid("study-group", study_uid, model.sha256), identifier=f"{_STUDY}:{model.model_id}"
        ),
        finding_type=_finding(summary.finding),
        algorithm_id=_algorithm(model),
        source_images=[_source(deciding[0])] if deciding else None,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(STATUS_NAME, STATUS_CODES[summary.status])],
        measurements=measurements,
    )


def _text(name: hd.sr.CodedConcept, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(
        name=name, value=value, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )


def build_sr(reading: StudyReading, evidence: Sequence[Dataset], *, instance_number: int = 1) -> Dataset:
    """The Comprehensive SR of a reading, in the reading's study, as a new series.

    ``evidence``: the source images' datasets (headers suffice); they give the patient and study
    modules (DICOM requires them in the SR) and the evidence list.
    """
    used = {r.sop_instance_uid for r in reading.results}
    evidence = [with_type2_attributes(ds) for ds in evidence if str(ds.SOPInstanceUID) in used]
    if not evidence or not reading.results:
        raise DicomContentError("There is nothing to report: no image of the study was read.")
    groups: list = []
    for index, result in enumerate(reading.results):
        model = reading.model(result.model_id)
        groups.append(_image_group(result, model, index))
        groups.extend(_box_group(result, model, box, n) for n, box in enumerate(result.boxes, 1))
    for summary in reading.summaries:
        model = reading.model(summary.model_id)
        groups.append(_study_group(summary, model, reading.results, reading.study_instance_uid))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=result_uid("device", "bonecls"),
            name="bonecls",
            manufacturer_name="bonecls",
            model_name=f"bonecls {__version__} (research software)",
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=PROCEDURE,
        imaging_measurements=groups,
    )
    texts = [_text(NOTICE_NAME, RESEARCH_NOTICE)]
    texts += [
        _text(TRAINING_NAME, f"{m.model_id}: {m.training_data or 'not stated on the card'}")
        for m in reading.models
    ]
    texts += [
        _text(REASONS_NAME, SEPARATOR.join((r.model_id, r.sop_instance_uid, *r.scope_reasons)))
        for r in reading.results
        if not r.in_scope
    ]
    report[0].ContentSequence.extend(texts)
    keys = sorted(f"{r.sop_instance_uid}:{r.model_sha256}" for r in reading.results)
    sr = hd.sr.ComprehensiveSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=result_uid("sr-series", reading.study_instance_uid),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=result_uid("sr", reading.study_instance_uid, *keys),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=SR_SERIES_DESCRIPTION,
    )
    sr.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: the notice has an em dash
    scheme = Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = "bonecls research reading-aid codes"
    scheme.CodingSchemeResponsibleOrganization = "bonecls project"
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


# --------------------------------------------------------------------------------------------------
# Reading back
# --------------------------------------------------------------------------------------------------


def _concept_key(concept) -> tuple[str, str]:
    return (str(concept.value), str(concept.scheme_designator))


_STATUS_BY_CODE = {_concept_key(c): status for status, c in STATUS_CODES.items()}
_FINDING_BY_CODE = {_concept_key(c): name for name, c in FINDING_CODES.items()}


def _items(group) -> list[Dataset]:
    return list(getattr(group[0], "ContentSequence", []) or [])


def _algorithm_of(group) -> tuple[str, str, dict[str, str]]:
    name = version = ""
    parameters: dict[str, str] = {}
    for item in _items(group):
        concept = item.ConceptNameCodeSequence[0].CodeValue
        if concept == "111001":
            name = str(item.TextValue)
        elif concept == "111003":
            version = str(item.TextValue)
        elif concept == "111002":
            key, _, value = str(item.TextValue).partition("=")
            parameters[key] = value
    return name, version, parameters


def _evaluations(group) -> dict[tuple[str, str], hd.sr.CodedConcept]:
    return {_concept_key(e.name): e.value for e in group.get_qualitative_evaluations()}


def _measurements(group) -> list[tuple[hd.sr.CodedConcept, float]]:
    return [(m.name, float(m.value)) for m in group.get_measurements()]


def _finding_name(group) -> str:
    concept = group.finding_type
    return _FINDING_BY_CODE.get(_concept_key(concept), str(concept.meaning).lower())


def _root_texts(ds: Dataset) -> tuple[dict[tuple[str, str], tuple[str, ...]], dict[str, str]]:
    """Reasons "not assessed" by (model id, SOP UID), and training-data sentences by model id."""
    reasons: dict[tuple[str, str], tuple[str, ...]] = {}
    training: dict[str, str] = {}
    for item in ds.ContentSequence:
        code = item.ConceptNameCodeSequence[0].CodeValue
        if code == REASONS_NAME.value:
            model_id, sop, *why = str(item.TextValue).split(SEPARATOR)
            reasons[(model_id, sop)] = tuple(why)
        elif code == TRAINING_NAME.value:
            model_id, _, sentence = str(item.TextValue).partition(": ")
            training[model_id] = sentence
    return reasons, training


def _boxes(box_groups) -> dict[tuple[str, str], list[Box]]:
    """Boxes by (model id, SOP UID), in the order written."""
    boxes: dict[tuple[str, str], list[Box]] = {}
    for group in box_groups:
        model_id = str(group.tracking_identifier).split(":")[1]
        roi = group.roi
        xy = np.asarray(roi.value, dtype=np.float64)
        (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
        label = str(_evaluations(group)[_concept_key(BOX_LABEL_NAME)].meaning)
        confidence = {_concept_key(n): v for n, v in _measurements(group)}[_concept_key(CONFIDENCE)]
        sop = str(roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        corners = (rounded_coordinate(v) for v in (x0, y0, x1, y1))
        boxes.setdefault((model_id, sop), []).append(Box(*corners, rounded_probability(confidence), label))
    return boxes


def _optional_probability(value: float | None) -> float | None:
    return None if value is None else rounded_probability(value)


def _summary_of(group, model_id: str, status) -> StudySummary:
    numbers = {_concept_key(n): v for n, v in _measurements(group)}
    sources = [str(s.referenced_sop_instance_uid) for s in group.source_images]
    return StudySummary(
        model_id=model_id,
        finding=_finding_name(group),
        status=status,
        suspicion=_optional_probability(numbers.get(_concept_key(SUSPICION))),
        deciding_sop_instance_uid=sources[0] if sources else None,
        images=int(numbers[_concept_key(IMAGES_READ)]),
        images_in_scope=int(numbers[_concept_key(IMAGES_IN_SCOPE)]),
    )


def parse_sr(ds: Dataset) -> StudyReading:
    """A report written by :func:`build_sr` read back into a :class:`StudyReading` (``skipped`` empty)."""
    try:
        content = hd.sr.ComprehensiveSR.from_dataset(ds, copy=True).content
        image_groups = content.get_image_measurement_groups()
        boxes = _boxes(content.get_planar_roi_measurement_groups())
    except (AttributeError, KeyError, ValueError, TypeError, IndexError) as exc:
        raise DicomContentError(f"The structured report cannot be read as a bonecls report ({exc}).") from exc
    series_of = {
        str(sop.ReferencedSOPInstanceUID): str(series.SeriesInstanceUID)
        for study in getattr(ds, "CurrentRequestedProcedureEvidenceSequence", [])
        for series in study.ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }
    reasons, training = _root_texts(ds)
    models: dict[str, ModelInfo] = {}
    results: list[ImageResult] = []
    summaries: list[StudySummary] = []
    for group in image_groups:
        kind, model_id = str(group.tracking_identifier).split(":", 1)
        name, version, parameters = _algorithm_of(group)
        sha = parameters.get("weights-sha256", "")
        task = parameters.get("task", "")
        models.setdefault(name, ModelInfo(name, version, sha, task, training.get(name, "")))
        evaluations = _evaluations(group)
        status = _STATUS_BY_CODE[_concept_key(evaluations[_concept_key(STATUS_NAME)])]
        if kind == _STUDY:
            summaries.append(_summary_of(group, model_id, status))
            continue
        source = group.source_images[0]
        sop = str(source.referenced_sop_instance_uid)
        label = evaluations.get(_concept_key(LABEL_NAME))
        numbers = {_concept_key(n): v for n, v in _measurements(group)}
        probabilities = tuple(
            (str(n.meaning)[len(PROBABILITY_PREFIX) :], rounded_probability(v))
            for n, v in _measurements(group)
            if str(n.meaning).startswith(PROBABILITY_PREFIX)
        )
        results.append(
            ImageResult(
                study_instance_uid=str(ds.StudyInstanceUID),
                series_instance_uid=series_of.get(sop, ""),
                sop_instance_uid=sop,
                sop_class_uid=str(source.referenced_sop_class_uid),
                model_id=model_id,
                model_sha256=models[model_id].sha256,
                finding=_finding_name(group),
                status=status,
                label=str(label.meaning) if label is not None else "",
                suspicion=_optional_probability(numbers.get(_concept_key(SUSPICION))),
                probabilities=probabilities,
                boxes=tuple(boxes.get((model_id, sop), ())),
                scope_reasons=reasons.get((model_id, sop), ()),
            )
        )
    return StudyReading(str(ds.StudyInstanceUID), tuple(models.values()), tuple(results), tuple(summaries))
