"""Timing: warm-up, then timed runs until a minimum count and a minimum duration are both
reached, ``perf_counter_ns`` around each call, percentiles with the sample count."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .backends.base import Runner


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
                  float(ms.min()), float(ms.max()))
