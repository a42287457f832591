#!/usr/bin/env bash
# A development Orthanc (DICOMweb on) on loopback, with its own configuration and storage folder.
#
#   bash scripts/orthanc.sh start [--dir DIR]    start it (or find it running); prints the URLs and user
#   bash scripts/orthanc.sh status [--dir DIR]
#   bash scripts/orthanc.sh stop [--dir DIR]
#
# DIR defaults to $BONECLS_CACHE/orthanc (~/.cache/bonecls/orthanc). Needs the Debian packages orthanc and
# orthanc-dicomweb (bash scripts/setup.sh --dev installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${BONECLS_PYTHON:-.venv/bin/python}
exec "$PY" -m bonecls.pacs.orthanc_server "$@"
