"""Radiograph loading (transitional: the module is being split by job; see the next commit)."""

from bonecls.imaging.dicom import *  # noqa: F403
from bonecls.imaging.dicom import (  # noqa: F401
    WARN_BAD_WINDOW,
    WARN_TRANSPARENT,
    PngImagePlugin,
    __all__,
)
