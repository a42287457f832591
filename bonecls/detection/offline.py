"""Ultralytics made fully offline: no font, weight or dataset download, hub, analytics or update check.

Ultralytics reads its environment when it is first imported, so :func:`configure_offline` must run
before that import. :func:`import_ultralytics` does both, in that order; this package calls it (inside
functions, never at module import) before any other ``ultralytics`` import. Ultralytics is AGPL-3.0
and only ``bonecls.detection`` may import it (tests/test_architecture.py checks this).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

from bonecls.paths import cache_root

__all__ = ["configure_offline", "fonts_available", "import_ultralytics"]

log = logging.getLogger(__name__)

_OFFLINE_LOCK = threading.RLock()
_CONFIGURED: Path | None = None

# Settings that would make Ultralytics talk to a server or load an integration that may (each False/"").
_OFFLINE_SETTINGS: dict[str, Any] = {
    "sync": False,  # anonymous usage analytics (events) and Sentry crash reports
    "hub": False,  # Ultralytics HUB callbacks (key only exists in some versions)
    "api_key": "",  # Ultralytics Platform uploads (training callbacks start only with a key)
    "openai_api_key": "",
    "clearml": False,  # experiment-tracker integrations: each imports its client and may log remotely
    "comet": False,
    "dvc": False,
    "mlflow": False,
    "raytune": False,
    "tensorboard": False,
    "wandb": False,
    "vscode_msg": False,  # console hints only
    "openvino_msg": False,
}


def _font_source() -> Path | None:
    """DejaVuSans.ttf from matplotlib's package data (matplotlib is a hard dependency of ultralytics)."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    return path if path.is_file() else None


def _place_fonts(config_dir: Path) -> bool:
    """Put Arial.ttf / Arial.Unicode.ttf (copies of DejaVuSans) where ``check_font`` looks first."""
    src = _font_source()
    ok = True
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        dst = config_dir / name
        if dst.is_file() and dst.stat().st_size > 0:
            continue
        if src is None:
            ok = False
            continue
        tmp = dst.with_suffix(f".tmp{os.getpid()}")
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        except OSError:
            ok = False
    return ok


def configure_offline() -> Path:
    """Make Ultralytics fully offline in this process; safe to call many times. Returns its settings dir.

    Environment (set before ``ultralytics`` is first imported, because it reads them at import):

    * ``YOLO_OFFLINE=1``: ``ultralytics.utils.ONLINE`` is False without a DNS probe, which disables the
      analytics events, the Sentry crash reporter, the PyPI update check and retries of failed downloads.
    * ``ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS=1``: ``check_requirements`` never runs ``pip``/``uv install``
      (export, DDP and integrations call it).
    * ``YOLO_CONFIG_DIR`` (if unset): ``$BONECLS_CACHE/ultralytics`` (or ``~/.cache/bonecls/ultralytics``) —
      settings.json, fonts and DDP temp files go there, never to the user's home config.
    * ``ULTRALYTICS_SAFE_LOAD=1`` (if unset): checkpoints are unpickled with ``torch.load(weights_only=True)``
      against Ultralytics' allow-list — a second line of defence after our sha256 check.
    * ``ULTRALYTICS_API_KEY`` is removed so the Platform upload callbacks never start.

    Settings: ``sync`` off and every integration off (see ``_OFFLINE_SETTINGS``); ``runs_dir``,
    ``weights_dir`` and ``datasets_dir`` point into the cache dir, so a bare model name never resolves to
    some stray file and nothing lands in the working directory.

    Fonts: ``check_font`` (called by every dataset check and by plotting) returns a file found in the
    settings dir and otherwise downloads Arial.ttf; DejaVuSans.ttf from matplotlib is copied there as
    Arial.ttf and Arial.Unicode.ttf.
    """
    global _CONFIGURED
    with _OFFLINE_LOCK:
        if _CONFIGURED is not None:
            return _CONFIGURED
        already_imported = "ultralytics" in sys.modules
        base = Path(os.environ.setdefault("YOLO_CONFIG_DIR", str(cache_root() / "ultralytics"))).expanduser()
        with contextlib.suppress(OSError):
            base.mkdir(parents=True, exist_ok=True)
        os.environ["YOLO_OFFLINE"] = "1"
        os.environ["ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS"] = "1"
        os.environ.setdefault("ULTRALYTICS_SAFE_LOAD", "1")
        os.environ.pop("ULTRALYTICS_API_KEY", None)

        import ultralytics.utils as uutils
        import ultralytics.utils.patches as upatches

        # Ultralytics replaces PIL.Image.open process-wide with a wrapper that, on any unidentified
        # image, tries to install and import pi_heif (ModuleNotFoundError here). That would turn every
        # unreadable upload into a crash instead of an ImageError: put PIL's own opener back.
        original_open = getattr(upatches, "_image_open", None)
        if original_open is not None:
            import PIL.Image

            PIL.Image.open = original_open

        if already_imported:
            # ultralytics was imported before us: its import-time constants are stale, fix what matters.
            log.warning(
                "ultralytics was imported before bonecls.detection.offline.configure_offline(); patching it."
            )
            for name, mod in list(sys.modules.items()):
                if name.startswith("ultralytics") and getattr(mod, "ONLINE", None) is True:
                    mod.ONLINE = False
            events = getattr(sys.modules.get("ultralytics.utils.events"), "events", None)
            if events is not None:
                events.enabled = False
        config_dir = Path(uutils.USER_CONFIG_DIR)
        settings = uutils.SETTINGS
        work = base / "work"
        wanted = dict(_OFFLINE_SETTINGS)
        wanted.update(
            runs_dir=str(work / "runs"),
            weights_dir=str(work / "weights"),
            datasets_dir=str(work / "datasets"),
        )
        update = {k: v for k, v in wanted.items() if k in settings and settings[k] != v}
        if update:
            settings.update(update)
        if not _place_fonts(config_dir):
            # No font to ship: make check_font a no-op so it cannot download (plots must then stay off).
            log.warning("No DejaVuSans.ttf found; Ultralytics font look-ups disabled (plots unavailable).")
            import ultralytics.data.utils as udata

            udata.check_font = lambda *a, **k: None
        _CONFIGURED = config_dir
        return config_dir


def import_ultralytics() -> Any:
    """The ``ultralytics`` module, imported only after :func:`configure_offline` (it reads the offline
    environment at import time). Every other ultralytics import in this package comes after a call here."""
    configure_offline()
    import ultralytics

    return ultralytics


def fonts_available() -> bool:
    """Whether Ultralytics plotting can run without a download (fonts in its settings dir)."""
    d = configure_offline()
    return (d / "Arial.ttf").is_file() and (d / "Arial.Unicode.ttf").is_file()
