"""Progress bars: redrawn each second on a terminal, at most every 30 s in a log file."""

from __future__ import annotations

import io

from bonecls.progress import LOG_INTERVAL_S, TTY_INTERVAL_S, progress_bar


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_are_throttled_off_a_terminal() -> None:
    log = io.StringIO()
    bar = progress_bar(range(3), total=3, desc="x", file=log)
    assert bar.mininterval == LOG_INTERVAL_S and list(bar) == [0, 1, 2]
    assert progress_bar(range(3), total=3, file=_Tty()).mininterval == TTY_INTERVAL_S
    assert progress_bar(range(3), enabled=False, file=log).disable
