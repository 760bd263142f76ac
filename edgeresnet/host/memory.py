"""This process's memory: its peak over its life, and over one stage (sampled)."""

from __future__ import annotations

import os
import threading


def peak_rss_mb() -> float:
    """This process's peak resident memory, in MB.

    Linux: ``VmHWM`` of /proc/self/status, the high-water mark of this process's own memory
    map, which exec starts afresh. Not ``ru_maxrss``: Linux carries a parent's peak into a
    forked child across exec, so every bench worker reported its parent's 534 MB. Elsewhere
    (macOS) ``ru_maxrss``, which there is bytes and per process."""
    import re
    import resource
    import sys

    try:
        with open("/proc/self/status") as f:
            found = re.search(r"^VmHWM:\s+(\d+) kB", f.read(), re.M)
        if found:
            return int(found.group(1)) / 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0


def rss_mb() -> float | None:
    """Resident memory now, in MB (Linux); None where /proc is not there."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


class StagePeak:
    """The highest resident memory while a stage runs, sampled every ``interval`` s in a daemon
    thread (the process's high-water mark would include the stages before it; resetting it would
    falsify what `time -v` reports for the whole run). ``with StagePeak() as p: ...; p.mb``."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval, self.mb = interval, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            now = rss_mb()
            if now is not None:
                self.mb = now if self.mb is None else max(self.mb, now)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> "StagePeak":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.mb = None if self.mb is None else round(self.mb, 1)
