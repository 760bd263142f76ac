"""The one speed-up: a row against the FP32 row of the same engine, batch, mode and device, from
the rounds both were timed in, with the interval those rounds allow.

Rounds are interleaved (round i times every artifact once, one after the other), so the p50s of
the same round share the machine's load: the speed-up of round i is fp32's p50 / this row's p50
in that round (throughput: this row's / fp32's), and the figure is the median of those ratios.
Its interval is the distribution-free one for a median: the k-th smallest to the k-th largest
ratio, k the largest whose coverage (1 - 2 P[Binomial(n, 1/2) < k]) is at least 90%; with 5 to 7
rounds that is the whole range of the ratios (94-98%), with fewer it is the range and says its
lower coverage. A row timed once has no interval and no verdict.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from math import comb

LEVEL = 0.90


@dataclass(frozen=True)
class Speedup:
    value: float
    low: float | None = None
    high: float | None = None
    rounds: int = 1
    coverage: float | None = None  # probability that [low, high] holds the median per-round ratio

    @property
    def slower(self) -> bool:
        """Slower than FP32 beyond the spread: the whole interval is below 1."""
        return self.high is not None and self.high < 1.0

    @property
    def half_width_pct(self) -> float | None:
        if self.low is None or self.high is None or not self.value:
            return None
        return 100 * (self.high - self.low) / 2 / self.value

    def agrees(self, other: Speedup) -> bool | None:
        """Whether two measurements of the same speed-up overlap within their intervals (None
        when either has none)."""
        if None in (self.low, self.high, other.low, other.high):
            return None
        return self.low <= other.high and other.low <= self.high

    def text(self) -> str:
        """"1.75x (1.70-1.80)", or "1.75x" without an interval."""
        if self.low is None or self.high is None:
            return f"{self.value:.2f}x"
        return f"{self.value:.2f}x ({self.low:.2f}-{self.high:.2f})"

    def to_dict(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high, "rounds": self.rounds,
                "coverage": self.coverage}


def spread_pct(values: list[float]) -> float | None:
    """(max - min) / median, in percent: how far apart the rounds landed (None for one round)."""
    if len(values) < 2 or not statistics.median(values):
        return None
    return 100 * (max(values) - min(values)) / statistics.median(values)


def median_interval(values: list[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(low, high, coverage): the order-statistic interval for the median of ``values``' population."""
    xs, n = sorted(values), len(values)
    best = 1
    for k in range(1, n // 2 + 1):
        if _coverage(n, k) >= level:
            best = k
    return xs[best - 1], xs[n - best], _coverage(n, best)


def _coverage(n: int, k: int) -> float:
    return 1 - 2 * sum(comb(n, i) for i in range(k)) / 2 ** n


def paired(base: list[float], values: list[float], higher_is_faster: bool = False) -> Speedup | None:
    """The speed-up from per-round figures of FP32 (``base``) and this row, round i with round i."""
    pairs = [(b, v) for b, v in zip(base, values) if b and v]
    if not pairs:
        return None
    ratios = [v / b if higher_is_faster else b / v for b, v in pairs]
    value = statistics.median(ratios)
    if len(ratios) < 2:
        return Speedup(value)
    low, high, coverage = median_interval(ratios)
    return Speedup(value, low, high, len(ratios), coverage)


def _single(row) -> list[float]:
    value = row.throughput_ips if row.mode == "throughput" else (row.latency_ms or {}).get("p50")
    return [value] if value else []


def round_values(row) -> list[float]:
    """A row's per-round figures: p50s (latency) or images/s (throughput); one value when it was
    timed once or before rounds were recorded."""
    if row.mode == "throughput":
        rounds = (row.details or {}).get("throughput_rounds")
        return list(rounds) if rounds else ([row.throughput_ips] if row.throughput_ips else [])
    lat = row.latency_ms or {}
    return list(lat.get("p50_rounds") or ([lat["p50"]] if lat.get("p50") else []))


def of_rows(rows: list, row, key=None) -> Speedup | None:
    """The speed-up of ``row`` against the FP32 row that ``key`` (identity: engine, batch, mode,
    device) matches in ``rows``; None for FP32 rows, rows that did not run, or no baseline."""
    key = key or (lambda r: (r.target, r.batch, r.mode))
    if row.status != "ok" or row.precision == "fp32":
        return None
    base = next((r for r in rows if r.precision == "fp32" and r.status == "ok" and key(r) == key(row)), None)
    if base is None:
        return None
    b, v = round_values(base), round_values(row)
    if len(b) != len(v):  # rows timed apart (one of them before rounds were recorded): no pairing
        b, v = _single(base), _single(row)
    return paired(b, v, higher_is_faster=row.mode == "throughput")
