"""Patient and study keys from DICOM headers, hashed with a salt so no identifier is stored in clear.

A hospital's export carries PatientID and StudyInstanceUID in every file. Splitting by patient needs them
and the prepared index keeps them (so a trainer can check the split), but an index or a model card must
never hold a patient identifier: each key is ``sha256(salt + tag + value)``, truncated to 16 hex digits.
The salt is ``$BONECLS_GROUP_SALT`` or a random one made once and kept (mode 0600) in bonecls' cache
folder, so keys are stable on one site and cannot be reversed by hashing a list of known MRNs elsewhere.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from dataclasses import replace
from pathlib import Path

from bonecls.data.records import Grouping, Record

log = logging.getLogger(__name__)

SALT_ENV = "BONECLS_GROUP_SALT"
DICOM_SUFFIXES = (".dcm", ".dicom")


def group_salt() -> bytes:
    """The site's salt: ``$BONECLS_GROUP_SALT``, else ``<cache>/group_salt`` (made on first use)."""
    env = os.environ.get(SALT_ENV)
    if env:
        return env.encode()
    from bonecls.paths import cache_root

    path = cache_root() / "group_salt"
    try:
        return path.read_bytes().strip() or _new_salt(path)
    except FileNotFoundError:
        return _new_salt(path)


def _new_salt(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    salt = secrets.token_hex(32).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(salt)
    return salt


def hashed_key(tag: str, value: str, salt: bytes | None = None) -> str:
    """``sha256(salt | tag | value)`` as 16 hex digits: the same identifier gives the same key on a site."""
    salt = group_salt() if salt is None else salt
    return hashlib.sha256(salt + b"|" + tag.encode() + b"|" + value.encode()).hexdigest()[:16]


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def dicom_identity(path: Path, salt: bytes) -> tuple[str | None, str | None]:
    """(patient key, study key) of a DICOM file, hashed; ``None`` for a tag that is absent or empty."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID", "StudyInstanceUID"])
    except Exception as exc:  # pydicom raises many types; an unreadable file is skipped later, not here
        log.debug("No DICOM identity for %s: %s", path, exc)
        return None, None
    patient = str(ds.get("PatientID", "") or "").strip()
    study = str(ds.get("StudyInstanceUID", "") or "").strip()
    return (
        hashed_key("PatientID", patient, salt) if patient else None,
        hashed_key("StudyInstanceUID", study, salt) if study else None,
    )


def with_dicom_groups(records: list[Record]) -> tuple[list[Record], Grouping | None]:
    """Records with hashed DICOM patient/study keys, and the grouping -- ``None`` unless every record is a
    DICOM file with a PatientID (a set mixing keyed and unkeyed images cannot promise a patient split)."""
    dicoms = [r for r in records if _is_dicom(r.path)]
    if not dicoms:
        return records, None
    salt = group_salt()
    out = []
    for rec in records:
        patient, study = dicom_identity(rec.path, salt) if _is_dicom(rec.path) else (None, None)
        out.append(replace(rec, group=patient, study=study) if patient or study else rec)
    keyed = sum(r.group is not None for r in out)
    if keyed < len(out):
        log.warning(
            "%d of %d image(s) carry no DICOM PatientID; the split is by image for those.",
            len(out) - keyed,
            len(out),
        )
        return out, None
    return out, Grouping(
        "patient",
        "DICOM PatientID (salted sha256)",
        "Split by patient: DICOM PatientID, hashed with this site's salt (never stored in clear); "
        "no patient has images in two splits.",
    )
