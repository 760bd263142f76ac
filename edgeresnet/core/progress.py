"""Rich progress bars shared by the long-running stages (training, calibration, evaluation)."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

stderr = Console(stderr=True)


def eta_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


class RunClock:
    """Progress over a whole run (all epochs): the fraction done and an ETA from the rate so far.
    When stderr is not a terminal (``| tee``, nohup, CI logs) it also prints one plain line every
    ``every_s`` seconds, since the bars are off there."""

    def __init__(self, total: int, every_s: float = 30.0, enabled: bool | None = None, clock=None) -> None:
        import time

        self.clock = clock or time.perf_counter
        self.total, self.done, self.every_s = max(1, total), 0, every_s
        self.start = self.last = self.clock()
        self.lines = not sys.stderr.isatty() if enabled is None else enabled

    def eta_s(self) -> float | None:
        elapsed = self.clock() - self.start
        return None if self.done == 0 else elapsed / self.done * (self.total - self.done)

    def step(self, n: int = 1, text: str = "") -> str | None:
        """Count ``n`` units done; returns (and prints, in line mode) a status line when one is due."""
        self.done += n
        now = self.clock()
        if not self.lines or (now - self.last < self.every_s and self.done < self.total):
            return None
        self.last = now
        eta = self.eta_s()
        line = f"{text}  {100 * self.done / self.total:.0f}% of the run, ETA {'-' if eta is None else eta_text(eta)}"
        stderr.print(line, markup=False, highlight=False, soft_wrap=True)
        return line


def progress(*extra_fields: str, transient: bool = False, enabled: bool | None = None) -> Progress:
    """A progress bar on stderr with M/N, elapsed, ETA and optional ``{task.fields[...]}`` text.

    Disabled (silent) when stderr is not a terminal and ``enabled`` is not forced, so logs and
    CI output stay clean.
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn(f"{{task.fields[{f}]}}") for f in extra_fields]
    columns += [TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    return Progress(*columns, console=stderr, transient=transient, disable=not enabled)
