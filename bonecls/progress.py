"""Progress bars for long work (training epochs, preparation, phantom rendering) that suit the terminal.

On a terminal the bar redraws every second. Written to a file or a CI log (no TTY), every redraw is a new
line, so the bar then updates at most every 30 s: progress stays visible without flooding the log.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TextIO

TTY_INTERVAL_S = 1.0
LOG_INTERVAL_S = 30.0


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    leave: bool = True,
    file: TextIO | None = None,
) -> Any:
    """A ``tqdm`` bar (disabled when ``enabled`` is false), throttled when the output is not a terminal."""
    from tqdm.auto import tqdm

    out = file if file is not None else sys.stderr
    tty = bool(getattr(out, "isatty", lambda: False)())
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=not enabled,
        leave=leave,
        file=out,
        dynamic_ncols=tty,
        mininterval=TTY_INTERVAL_S if tty else LOG_INTERVAL_S,
    )
