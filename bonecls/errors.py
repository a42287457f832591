"""Typed errors for bonecls.

Every error raised on purpose by bonecls derives from :class:`BoneclsError` and its message is a
complete sentence that a clinician or an operator can act on (what is wrong and what to do). The
app shows these messages in place; anything else is treated as a bug and logged with an id.
"""

from __future__ import annotations


class BoneclsError(Exception):
    """Base class: the message is a user-facing sentence, never a stack trace."""


class ImageError(BoneclsError, ValueError):
    """An uploaded or given image cannot be read as a radiograph."""


class WeightsError(BoneclsError):
    """A model card or weight file is missing, malformed, or fails its integrity check."""


class DataError(BoneclsError):
    """A training dataset or phantom source is missing or malformed."""


class ExplainError(BoneclsError, ValueError):
    """A CAM cannot be computed as asked (unknown method or colour map, bad target, too large)."""


class LeakageError(DataError):
    """The test split copies training images or shares their patients (see :mod:`bonecls.leakage`)."""
