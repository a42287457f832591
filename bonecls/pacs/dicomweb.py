"""DICOMweb in and out (``dicomweb-client``): QIDO-RS search, WADO-RS retrieve, STOW-RS store.

The server is named by its DICOMweb base URL (``--url`` or ``$BONECLS_DICOMWEB_URL``); credentials come
only from the environment (``$BONECLS_DICOMWEB_USER`` + ``$BONECLS_DICOMWEB_PASSWORD`` for HTTP basic,
or ``$BONECLS_DICOMWEB_TOKEN`` for a bearer token), so they never appear in a command line, a shell
history or a log. Search results carry study-level facts only: no patient name, ID or birth date ever
leaves this module.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from urllib.parse import urlsplit

import requests
from pydicom.dataset import Dataset

from bonecls.pacs.errors import PacsError

__all__ = [
    "StudyMatch",
    "connect",
    "retrieve_instance",
    "retrieve_study",
    "search_studies",
    "server_url",
    "store",
]

URL_ENV = "BONECLS_DICOMWEB_URL"
USER_ENV = "BONECLS_DICOMWEB_USER"
PASSWORD_ENV = "BONECLS_DICOMWEB_PASSWORD"
TOKEN_ENV = "BONECLS_DICOMWEB_TOKEN"

# DICOM JSON tags (PS3.18 F.2) of the search fields read here.
_STUDY_UID, _SERIES_UID = "0020000D", "0020000E"
_STUDY_DATE, _MODALITY, _BODY_PART = "00080020", "00080060", "00180015"
_SERIES_INSTANCES = "00201209"


@dataclass(frozen=True)
class StudyMatch:
    """One study found by a search: its UID, date, modalities, body parts and size; no patient data."""

    study_instance_uid: str
    study_date: str
    modalities: tuple[str, ...]
    body_parts: tuple[str, ...]
    series: int
    instances: int | None


def server_url(url: str | None = None) -> str:
    """The DICOMweb base URL: ``url`` or ``$BONECLS_DICOMWEB_URL`` (a sentence when neither is set)."""
    found = (url or os.environ.get(URL_ENV) or "").strip().rstrip("/")
    if not found:
        raise PacsError(
            f"No DICOMweb server given: pass --url or set {URL_ENV} (e.g. http://pacs:8042/dicom-web)."
        )
    parts = urlsplit(found)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PacsError(
            f"The DICOMweb URL must start with http:// or https:// and name a host; got {found!r}."
        )
    if parts.username or parts.password:
        raise PacsError(
            f"Put no credentials in the DICOMweb URL; set {USER_ENV} and {PASSWORD_ENV} "
            f"(or {TOKEN_ENV}) instead."
        )
    return found


def connect(url: str | None = None, *, timeout: float = 60.0):
    """A ``DICOMwebClient`` for the server, authenticated from the environment when credentials are set."""
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()
    token = os.environ.get(TOKEN_ENV)
    user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    elif user:
        session.auth = (user, password or "")
    return DICOMwebClient(url=server_url(url), session=session, timeout=timeout)


def _value(item: dict, tag: str) -> list:
    return list((item.get(tag) or {}).get("Value") or [])


def _first(item: dict, tag: str) -> str:
    values = _value(item, tag)
    return str(values[0]) if values else ""


def date_range(start: date | str | None, end: date | str | None) -> str | None:
    """A DICOM date range (``YYYYMMDD-YYYYMMDD``, either side open) or None when both are open."""

    def text(d: date | str | None) -> str:
        if d is None or d == "":
            return ""
        if isinstance(d, date):
            return d.strftime("%Y%m%d")
        digits = str(d).replace("-", "")
        if len(digits) != 8 or not digits.isdigit():
            raise PacsError(f"Dates are written YYYY-MM-DD or YYYYMMDD; got {d!r}.")
        return digits

    lo, hi = text(start), text(end)
    if not lo and not hi:
        return None
    if lo and hi and lo > hi:
        raise PacsError(f"The date range starts after it ends ({lo} > {hi}).")
    return f"{lo}-{hi}"


def search_studies(
    client,
    *,
    date_from: date | str | None = None,
    date_to: date | str | None = None,
    modality: str | None = None,
    body_part: str | None = None,
    accession: str | None = None,
    limit: int = 100,
) -> list[StudyMatch]:
    """Studies matching every given filter (QIDO-RS), newest first.

    The search runs at series level, where BodyPartExamined and Modality live (a study-level search on
    them is optional in the standard and many servers ignore it), and groups the series by study.
    """
    filters: dict[str, str] = {}
    dates = date_range(date_from, date_to)
    if dates:
        filters["StudyDate"] = dates
    if modality:
        filters["Modality"] = modality.strip().upper()
    if body_part:
        filters["BodyPartExamined"] = body_part.strip().upper()
    if accession:
        filters["AccessionNumber"] = accession.strip()
    fields = (
        "StudyInstanceUID",
        "StudyDate",
        "Modality",
        "BodyPartExamined",
        "NumberOfSeriesRelatedInstances",
    )
    try:
        found = client.search_for_series(search_filters=filters, fields=fields, get_remaining=True)
    except (requests.RequestException, OSError) as exc:
        raise PacsError(f"The DICOMweb search failed: {_describe(exc)}") from exc
    studies: dict[str, dict] = {}
    for item in found:
        uid = _first(item, _STUDY_UID)
        if not uid:
            continue
        entry = studies.setdefault(
            uid,
            {
                "date": _first(item, _STUDY_DATE),
                "mod": set(),
                "part": set(),
                "series": set(),
                "instances": 0,
                "counted": True,
            },
        )
        entry["series"].add(_first(item, _SERIES_UID))
        entry["mod"].update(str(v) for v in _value(item, _MODALITY))
        entry["part"].update(str(v) for v in _value(item, _BODY_PART))
        counts = _value(item, _SERIES_INSTANCES)
        if counts:
            entry["instances"] += int(counts[0])
        else:
            entry["counted"] = False
    matches = [
        StudyMatch(
            uid,
            e["date"],
            tuple(sorted(e["mod"])),
            tuple(sorted(e["part"])),
            len(e["series"]),
            e["instances"] if e["counted"] else None,
        )
        for uid, e in studies.items()
    ]
    matches.sort(key=lambda m: (m.study_date, m.study_instance_uid), reverse=True)
    return matches[: max(1, int(limit))]


def retrieve_study(client, study_instance_uid: str) -> list[Dataset]:
    """Every instance of a study (WADO-RS), as pydicom datasets."""
    try:
        return list(client.retrieve_study(study_instance_uid))
    except (requests.RequestException, OSError) as exc:
        raise PacsError(f"Retrieving the study failed: {_describe(exc)}") from exc


def retrieve_instance(
    client, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str
) -> Dataset:
    """One instance (WADO-RS), as a pydicom dataset."""
    try:
        return client.retrieve_instance(study_instance_uid, series_instance_uid, sop_instance_uid)
    except (requests.RequestException, OSError) as exc:
        raise PacsError(f"Retrieving an instance failed: {_describe(exc)}") from exc


def store(client, datasets: Sequence[Dataset]) -> list[str]:
    """Store instances (STOW-RS); returns the SOP Instance UIDs the server accepted; raises when any
    failed."""
    try:
        response = client.store_instances(list(datasets))
    except (requests.RequestException, OSError) as exc:
        raise PacsError(f"Storing the results (STOW-RS) failed: {_describe(exc)}") from exc
    failed = list(getattr(response, "FailedSOPSequence", []) or [])
    if failed:
        reasons = sorted({str(getattr(item, "FailureReason", "?")) for item in failed})
        raise PacsError(
            f"The server refused {len(failed)} of {len(datasets)} result objects "
            f"(failure reasons {', '.join(reasons)})."
        )
    return [str(item.ReferencedSOPInstanceUID) for item in getattr(response, "ReferencedSOPSequence", [])]


def _describe(exc: BaseException) -> str:
    """An error sentence without URLs' credentials or response bodies (which may echo patient data)."""
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        code = exc.response.status_code
        hint = " Check $BONECLS_DICOMWEB_USER / _PASSWORD / _TOKEN." if code in (401, 403) else ""
        return f"the server answered HTTP {code} {exc.response.reason or ''}.".replace(" .", ".") + hint
    if isinstance(exc, requests.ConnectionError):
        return "the server cannot be reached; check the URL and that it is running."
    if isinstance(exc, requests.Timeout):
        return "the server did not answer in time."
    return f"{type(exc).__name__}."
