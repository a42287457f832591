"""The app's error policy, for every page and the server: what an error shows, and where it is logged.

A :class:`~bonecls.errors.BoneclsError` is a sentence written for the reader and is
shown as is; anything else is a bug, logged server-side with a short id, and the page only shows
that id. No stack trace ever reaches the page.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import streamlit as st

from bonecls.errors import BoneclsError

log = logging.getLogger("bonecls.ui")


def error_box(message: str) -> None:
    """A sentence the reader can act on, as a red box (never a traceback)."""
    st.error(message, icon=":material/error:")


def new_error_id() -> str:
    """A short id that ties the page's message to the server log's traceback."""
    return uuid.uuid4().hex[:8]


def unexpected_error_message(error_id: str) -> str:
    """What the page says about a bug: its id and that nothing else is affected."""
    return (
        f"Something went wrong on our side (error id {error_id}). It has been logged for the support team; "
        "the other images and pages are not affected."
    )


def report_exception(exc: BaseException, where: str) -> str:
    """Log an unexpected exception with its traceback server-side; return the user-facing sentence."""
    error_id = new_error_id()
    log.error("unexpected error %s in %s", error_id, where, exc_info=(type(exc), exc, exc.__traceback__))
    return unexpected_error_message(error_id)


@contextmanager
def guarded(where: str) -> Iterator[None]:
    """Run a block of page code; show BoneclsError sentences, log anything else with an id.

    Streamlit's own control flow (``st.rerun``, ``st.stop``) derives from BaseException and passes.
    """
    try:
        yield
    except BoneclsError as exc:
        error_box(str(exc))
    except Exception as exc:
        error_box(report_exception(exc, where))


def setup_logging() -> None:
    """Send bonecls' server-side logs (with tracebacks) to stderr once per process."""
    logger = logging.getLogger("bonecls")
    if not any(getattr(h, "_bonecls", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._bonecls = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def run_page(page: Any) -> None:
    """Run the navigation's current page; a bug in it shows an error id, never a traceback."""
    try:
        page.run()
    except BoneclsError as exc:
        error_box(str(exc))
    except Exception as exc:
        error_box(report_exception(exc, f"page {getattr(page, 'title', '?')}"))
