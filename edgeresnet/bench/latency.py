"""One latency method for `export` and `bench`: interleaved rounds of time-based blocks.

A round times every artifact once, one after the other (round-robin), each block in a fresh
process (bench_worker: its own warm-up, then at least ``min_runs`` runs and ``min_seconds``),
so no two engines' thread pools ever share the cores and a change in the machine's load hits
every artifact of a round alike. Rounds repeat: at least ``min_rounds``, then more while any
speed-up's interval is wider than ``target_pct`` (a sub-millisecond model's blocks are cheap,
so it gets more of them), until ``max_rounds`` or ``budget_seconds``. A row is its median
round, with every round's p50 (``p50_rounds``) and their spread (``p50_spread_pct``); its
speed-up and interval come from the rounds (report/speedup.py). A figure from one round has no
interval, and the reports say so rather than guess.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field

from ..core.progress import progress
from ..report.speedup import paired, spread_pct


@dataclass(frozen=True)
class Plan:
    """How long each block runs and how many rounds; the export and bench defaults are one."""

    warmup: int = 10
    min_runs: int = 100
    min_seconds: float = 0.3
    throughput_seconds: float = 1.0  # a throughput block: a batch-32 call can take 100 ms, and requests overlap
    rounds: int | None = None  # a fixed count; None: min_rounds, then more while an interval is wide
    min_rounds: int = 5  # the fewest whose range of per-round ratios is a >= 90% interval (93.75%)
    max_rounds: int = 11
    target_pct: float = 5.0  # +- half-width of a speed-up's interval that needs no more rounds
    budget_seconds: float = 30.0  # no round starts after this (slow models stop at min_rounds)

    def block(self, mode: str = "latency") -> dict:
        """The block fields of bench_worker.block_spec."""
        seconds = self.throughput_seconds if mode == "throughput" else self.min_seconds
        return {"warmup": self.warmup, "min_runs": self.min_runs, "min_seconds": seconds}

    def rounds_text(self) -> str:
        return f"{self.rounds} rounds" if self.rounds else f"{self.min_rounds} rounds or more"

    def describe(self) -> str:
        rounds = f"{self.rounds} rounds" if self.rounds else \
            f"{self.min_rounds}-{self.max_rounds} rounds (more while a speed-up's interval is over +-{self.target_pct:g}%)"
        return (f"{rounds}, interleaved: each round times every artifact once, each in its own process, "
                f"after {self.warmup} warm-up runs, for at least {self.min_runs} runs and {self.min_seconds:g} s; "
                "p50 from the median round, spread = (max - min) / median of the rounds' p50s")


PLAN = Plan()


@dataclass
class Timed:
    """One artifact's blocks, in round order, or why it stopped."""

    rounds: list[dict] = field(default_factory=list)
    error: str | None = None


def baselines(specs: list[dict]) -> dict[int, int]:
    """Index of each non-FP32 spec -> the FP32 spec of the same engine, batch, mode and device."""
    key = [(s["target"], s.get("batch", 1), s.get("mode", "latency"), s.get("device", "CPU")) for s in specs]
    fp32 = {key[i]: i for i, s in enumerate(specs) if s["precision"] == "fp32"}
    return {i: fp32[key[i]] for i, s in enumerate(specs) if s["precision"] != "fp32" and key[i] in fp32}


def _figures(timed: Timed, mode: str) -> list[float]:
    if mode == "throughput":
        return [r["throughput_ips"] for r in timed.rounds]
    return [r["latency_ms"]["p50"] for r in timed.rounds]


def widest_pct(specs: list[dict], timed: list[Timed]) -> float | None:
    """The widest speed-up interval (+- percent) among the pairs timed so far."""
    widths = []
    for i, j in baselines(specs).items():
        if timed[i].error or timed[j].error:
            continue
        mode = specs[i].get("mode", "latency")
        found = paired(_figures(timed[j], mode), _figures(timed[i], mode), higher_is_faster=mode == "throughput")
        if found is not None and found.half_width_pct is not None:
            widths.append(found.half_width_pct)
    return max(widths) if widths else None


def _more(plan: Plan, done: int, started: float, specs: list[dict], timed: list[Timed]) -> bool:
    if plan.rounds is not None:
        return done < plan.rounds
    if done < plan.min_rounds:
        return True
    if done >= plan.max_rounds or time.perf_counter() - started >= plan.budget_seconds:
        return False
    widest = widest_pct(specs, timed)
    return widest is not None and widest > plan.target_pct


def run_rounds(specs: list[dict], plan: Plan = PLAN, timeout: float = 600) -> list[Timed]:
    """Time every spec (bench_worker.block_spec) in interleaved rounds, with a progress bar; a
    block that fails ends that artifact's rounds (its error kept) and the others go on."""
    from .worker import spawn  # numpy and the engine registry: not for `--help`

    timed = [Timed() for _ in specs]
    started, done = time.perf_counter(), 0
    planned = plan.rounds or plan.min_rounds
    with progress() as bar:
        task = bar.add_task("timing", total=len(specs) * planned)
        while _more(plan, done, started, specs, timed) and any(t.error is None for t in timed):
            if done >= planned:  # a round more: a speed-up's interval is still wide
                bar.update(task, total=len(specs) * (done + 1))
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
            for spec, t in zip(specs, timed):
                bar.update(task, description=f"{spec['target']} {spec['precision']} b{spec.get('batch', 1)} "
                                             f"{spec.get('mode', 'latency')} round {done + 1}")
                if t.error is None:
                    try:
                        t.rounds.append({**spawn(spec, timeout=timeout), "load_1min": load})
                    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
                        t.error = str(exc)
                bar.advance(task)
            done += 1
    return timed


def merge(rounds: list[dict], mode: str) -> dict:
    """The round with the median p50 (latency) or median throughput, plus every round's figure,
    their spread and the machine's load average when each round began."""
    loads = [r.get("load_1min") for r in rounds]
    if mode == "throughput":
        values = [r["throughput_ips"] for r in rounds]
        pick = sorted(rounds, key=lambda r: r["throughput_ips"])[len(rounds) // 2]
        out = {**pick, "throughput_rounds": values}
        if len(values) > 1:
            out["throughput_spread_pct"] = spread_pct(values)
    else:
        p50s = [r["latency_ms"]["p50"] for r in rounds]
        pick = sorted(rounds, key=lambda r: r["latency_ms"]["p50"])[len(rounds) // 2]
        out = {**pick, "latency_ms": {**pick["latency_ms"], "p50_rounds": p50s, "rounds": len(p50s)}}
        if len(p50s) > 1:
            out["latency_ms"]["p50_spread_pct"] = spread_pct(p50s)
    out["rounds"] = len(rounds)
    out["load_1min"] = [round(v, 2) for v in loads if v is not None]
    out["cpus"] = os.cpu_count()
    return out
