"""Declared scope: what a model saw in training, checked against the DICOM header before anything else.

A leg film offered to a chest model is out of scope whatever its pixels look like, and the header
says so for free: BodyPartExamined, ViewPosition, Modality and PatientAge (``Radiograph.body_part``,
``.view``, ``.modality`` and ``.age_group``, the coarse group the decoder keeps instead of the age).
A header attribute that is absent (PNG, JPEG, an anonymised DICOM) proves nothing either way; then
the learned score decides (:mod:`bonecls.scope.gate`).

Each trained card declares what its own training set's labels name (:func:`declared_from_labels`);
:data:`DECLARED_SCOPES`, the shipped tasks' phantom recipe, is the fallback for data without labels.

DICOM body-part terms vary between vendors (CHEST or THORAX, RIB or RIBS); :data:`BODY_PART_SYNONYMS`
folds the common variants onto one term before comparing.
"""

from __future__ import annotations

from typing import Any

from bonecls.weights import DeclaredScope

__all__ = [
    "BODY_PART_SYNONYMS",
    "DECLARED_SCOPES",
    "FROM_LABELS",
    "FROM_RECIPE",
    "declared_from_labels",
    "header_reasons",
    "normalise_body_part",
]

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


#: ``DeclaredScope.derived_from`` of a scope read from the training set's own labels.
FROM_LABELS = "declared from the training set's labels"
#: ``DeclaredScope.derived_from`` of a scope taken from :data:`DECLARED_SCOPES` (the data has no labels).
FROM_RECIPE = (
    "from the task's phantom recipe (the training set has no body-part, view, modality or age labels)"
)

_AGE_WORDS = {"adult": "adults", "paediatric": "children", "any": "patients of any age"}


def declared_from_labels(index: dict[str, Any], task: str) -> DeclaredScope:
    """The declared scope of a model trained on the prepared data set ``index``: the body parts, views,
    modalities and age group its training split's labels name (``index["scope_labels"]["train"]``,
    written by ``train/prepare.py`` from DICOM headers, phantom manifests, MURA folders, FracAtlas and
    GRAZPEDWRI-DX columns; :mod:`bonecls.data.scope_labels`).

    When no training image carries a label (plain class folders of PNGs, an index prepared before the
    labels were recorded), the task's entry of :data:`DECLARED_SCOPES` is used, and ``derived_from``
    says so; a task without one declares nothing.
    """
    train = ((index.get("scope_labels") or {}).get("train")) or {}
    if not train.get("labelled"):
        table = DECLARED_SCOPES.get(task)
        if table is None:
            return DeclaredScope(
                description=f"What the '{task}' model was trained on is not labelled in its data.",
                derived_from="nothing declared: the training set has no labels and the task no recipe",
            )
        return table.model_copy(update={"derived_from": FROM_RECIPE})
    ages = train.get("age_groups") or []
    age = ages[0] if len(ages) == 1 else "any"
    parts, views, modalities = (list(train.get(k) or []) for k in ("body_parts", "views", "modalities"))
    if set(modalities) & set(_PROJECTION):  # CR or DX is the detector, not the image: accept the family
        modalities = sorted(set(modalities) | set(_PROJECTION))
    what = _listing(parts) if parts else "any body part"
    how = f" ({_listing(views)} views)" if views else ""
    return DeclaredScope(
        body_parts=parts,
        views=views,
        modalities=modalities,
        age_group=age,
        description=f"Radiographs of {what}{how} of {_AGE_WORDS[age]}, as its training images were labelled.",
        derived_from=f"{FROM_LABELS} ({train['labelled']} of {train.get('n', train['labelled'])} "
        "training images labelled)",
    )


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

    ``image`` is a :class:`bonecls.imaging.Radiograph` or anything with ``body_part``, ``view``,
    ``modality`` and ``age_group`` attributes (``None`` or absent: not known).
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
    reasons.extend(_age_reasons(declared, getattr(image, "age_group", None)))
    return tuple(reasons)


#: What the age rule says, by (declared age group, the image's age group): the age itself is never
#: named (the decoder keeps only the group, ``bonecls.imaging.dicom.age_group``).
_AGE_SENTENCES = {
    ("adult", "paediatric"): (
        "The DICOM header gives the patient's age as under 18 years (PatientAge); this model was trained "
        "only on adults' radiographs, and children's bones (growth plates, unfused ossification centres) "
        "differ, so it cannot read this image."
    ),
    ("paediatric", "adult"): (
        "The DICOM header gives the patient's age as 18 years or over (PatientAge); this model was "
        "trained only on children's radiographs, so it cannot read an adult's image."
    ),
}


def _age_reasons(declared: DeclaredScope, image_age_group: Any) -> list[str]:
    """The age rule: an adult-only model refuses a child's film and a paediatric-only model an adult's
    (``age_group`` ``any`` or an unknown age: no rule)."""
    sentence = _AGE_SENTENCES.get((declared.age_group, image_age_group))
    return [sentence] if sentence else []
