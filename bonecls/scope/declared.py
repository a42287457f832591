"""Declared scope: what a model saw in training, checked against the DICOM header before anything else.

A leg film offered to a chest model is out of scope whatever its pixels look like, and the header
says so for free: BodyPartExamined, ViewPosition and Modality (``Radiograph.body_part``, ``.view``,
``.modality``). A header attribute that is absent (PNG, JPEG, an anonymised DICOM) proves nothing
either way; then the learned score decides (:mod:`bonecls.scope.gate`).

DICOM body-part terms vary between vendors (CHEST or THORAX, RIB or RIBS); :data:`BODY_PART_SYNONYMS`
folds the common variants onto one term before comparing.
"""

from __future__ import annotations

from typing import Any

from bonecls.weights import DeclaredScope

__all__ = ["BODY_PART_SYNONYMS", "DECLARED_SCOPES", "header_reasons", "normalise_body_part"]

#: Vendor variants of BodyPartExamined folded onto one term.
BODY_PART_SYNONYMS = {
    "THORAX": "CHEST",
    "LUNG": "CHEST",
    "LUNGS": "CHEST",
    "RIBS": "RIB",
    "CHEST_LAT": "CHEST",
    "SHOULDERS": "SHOULDER",
    "CLAVICLES": "CLAVICLE",
}

_FRONTAL = ["PA", "AP"]
_PROJECTION = ["CR", "DX", "DR", "RG"]

#: The declared scope of each shipped task, from the phantoms it was trained on (bonecls.phantom):
#: frontal DRRs of one adult chest CT; fracture tasks on hemithorax and shoulder fields, pneumonia on
#: whole chest PA films.
DECLARED_SCOPES: dict[str, DeclaredScope] = {
    "fracture": DeclaredScope(
        body_parts=["CHEST", "RIB", "SHOULDER", "CLAVICLE", "SCAPULA"],
        views=_FRONTAL,
        modalities=_PROJECTION,
        age_group="adult",
        description="Frontal (PA/AP) radiographs of an adult hemithorax or shoulder (ribs, clavicle, "
        "scapula, proximal humerus).",
    ),
    "pneumonia": DeclaredScope(
        body_parts=["CHEST"],
        views=_FRONTAL,
        modalities=_PROJECTION,
        age_group="adult",
        description="Frontal (PA/AP) radiographs of an adult chest.",
    ),
}
DECLARED_SCOPES["threeclass"] = DECLARED_SCOPES["fracture"]
DECLARED_SCOPES["pneumonia-det"] = DECLARED_SCOPES["pneumonia"]
DECLARED_SCOPES["fracture-det"] = DECLARED_SCOPES["threeclass"]


def normalise_body_part(value: str) -> str:
    """Upper case, spaces as underscores, vendor variants folded (``"Thorax"`` -> ``"CHEST"``)."""
    term = value.strip().upper().replace(" ", "_")
    return BODY_PART_SYNONYMS.get(term, term)


def _listing(codes: list[str]) -> str:
    return ", ".join(codes[:-1]) + f" or {codes[-1]}" if len(codes) > 1 else codes[0]


def _header_text(image: Any, name: str) -> str:
    """The header attribute ``name`` of ``image`` upper-cased, or "" when absent or not text (a numpy
    array has a ``view`` method: it is not a ViewPosition)."""
    value = getattr(image, name, None)
    return value.strip().upper() if isinstance(value, str) else ""


def header_reasons(declared: DeclaredScope, image: Any) -> tuple[str, ...]:
    """Sentences for every header attribute of ``image`` that contradicts ``declared`` (empty: none do).

    ``image`` is a :class:`bonecls.imaging.Radiograph` or anything with ``body_part``, ``view`` and
    ``modality`` attributes (``None`` or absent: not known).
    """
    reasons: list[str] = []
    modality = _header_text(image, "modality")
    if modality and declared.modalities and modality not in declared.modalities:
        reasons.append(
            f"The DICOM header gives the modality as {modality}; this model was trained only on "
            f"projection radiographs ({_listing(declared.modalities)}), so it cannot read this image."
        )
    body_part = normalise_body_part(_header_text(image, "body_part"))
    allowed = {normalise_body_part(b) for b in declared.body_parts}
    if body_part and allowed and body_part not in allowed:
        reasons.append(
            f"The DICOM header says this is a {body_part} image (BodyPartExamined); this model was "
            f"trained only on {_listing(sorted(allowed))} images, so it cannot read it."
        )
    view = _header_text(image, "view")
    if view and declared.views and view not in declared.views:
        reasons.append(
            f"The DICOM header gives the view as {view} (ViewPosition); this model was trained only on "
            f"{_listing(declared.views)} views, so it cannot read this projection."
        )
    return tuple(reasons)
