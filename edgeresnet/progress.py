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
