"""Timing: warm-up, then timed runs until a minimum count and a minimum duration are both
reached, ``perf_counter_ns`` around each call, percentiles with the sample count."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..backends.base import Runner
from ..host.memory import peak_rss_mb  # noqa: F401 - re-exported: bench_worker and tests read it here


@dataclass
class Timing:
    samples: int
    batch: int
    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    max: float
    samples_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def throughput_ips(self) -> float:
        return self.batch * 1000.0 / self.mean if self.mean > 0 else float("nan")

    def latency_ms(self) -> dict[str, float | int]:
        return {"p50": self.p50, "p90": self.p90, "p99": self.p99, "mean": self.mean, "min": self.min,
                "max": self.max, "samples": self.samples}


def time_runner(run: Runner, x: np.ndarray, warmup: int = 10, min_runs: int = 50,
                min_seconds: float = 1.0, max_seconds: float = 30.0) -> Timing:
    """Latency of ``run(x)`` in milliseconds (one request at a time)."""
    for _ in range(warmup):
        run(x)
    times: list[int] = []
    start = time.perf_counter_ns()
    while True:
        t0 = time.perf_counter_ns()
        run(x)
        times.append(time.perf_counter_ns() - t0)
        elapsed = (time.perf_counter_ns() - start) / 1e9
        if (len(times) >= min_runs and elapsed >= min_seconds) or elapsed >= max_seconds:
            break
    ms = np.asarray(times, dtype=np.float64) / 1e6
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return Timing(len(ms), int(x.shape[0]), float(p50), float(p90), float(p99), float(ms.mean()),
                  float(ms.min()), float(ms.max()), ms.tolist())


def time_throughput(run, x: np.ndarray, requests: int, min_seconds: float = 2.0, warmup: int = 3) -> float:
    """Images per second with ``requests`` calls in flight at once (threads; the runtimes
    release the GIL while they compute)."""
    import threading

    for _ in range(warmup):
        run(x)
    counts = [0] * requests
    stop = time.perf_counter() + min_seconds

    def worker(i: int) -> None:
        while time.perf_counter() < stop:
            run(x)
            counts[i] += x.shape[0]

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)
