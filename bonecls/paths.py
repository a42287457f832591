"""Where bonecls keeps files it makes for itself (caches), defined once.

Both the ONNX export cache (inference) and the phantom volume cache (phantom) and ultralytics'
config folder (detection) live under this root, so a deployment moves all of them with one
variable. Importing this module costs nothing (stdlib only), which keeps the AGPL wall intact:
nobody needs to import `bonecls.detection` just to find the cache.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$BONECLS_CACHE`` or ``~/.cache/bonecls``."""
    env = os.environ.get("BONECLS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bonecls"
