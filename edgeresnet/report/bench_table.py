"""Bench rows rendered: the terminal table and the markdown table, FP32 vs INT8 at a glance."""

from __future__ import annotations

from rich import box
from rich.table import Table

from .schema import ResultRow

HEAD = ("engine", "precision", "batch", "mode", "size MB", "top-1%", "drop pp", "agree%", "p50 ms", "p90 ms", "p99 ms",
        "mean ms", "img/s", "peak MB", "vs fp32")
# The terminal keeps what the eye compares: FP32 against INT8 per engine.
TERMINAL = ("engine", "prec", "b", "mode", "MB", "top-1%", "drop", "agree%", "p50 ms", "p99 ms", "img/s", "vs fp32")
TERMINAL_INDEX = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14)


def speedup(rows: list[ResultRow], row: ResultRow) -> float | None:
    """How much faster than FP32 on the same engine, batch and mode (p50, or throughput)."""
    base = next((r for r in rows if (r.target, r.batch, r.mode, r.precision, r.status) ==
                 (row.target, row.batch, row.mode, "fp32", "ok")), None)
    if base is None or row.status != "ok" or row.precision == "fp32":
        return None
    if row.mode == "throughput":
        return row.throughput_ips / base.throughput_ips if base.throughput_ips else None
    return base.latency_ms["p50"] / row.latency_ms["p50"] if row.latency_ms else None


def cells(rows: list[ResultRow], r: ResultRow) -> list[str]:
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    if r.status != "ok":
        return [r.target, r.precision, str(r.batch), r.mode] + ["-"] * 10 + [r.status]
    lat = r.latency_ms or {}
    up = speedup(rows, r)
    pct = (lambda v: f(None if v is None else v * 100, ".2f"))
    return [r.target, r.precision, str(r.batch), r.mode, f(r.size_bytes / 1e6 if r.size_bytes else None, ".2f"),
            pct(r.top1), f(r.top1_drop_pp, ".2f"), pct(r.agreement), f(lat.get("p50"), ".3f"), f(lat.get("p90"), ".3f"),
            f(lat.get("p99"), ".3f"), f(lat.get("mean"), ".3f"), f(r.throughput_ips, ".0f"), f(r.peak_memory_mb, ".0f"),
            "-" if up is None else f"{up:.2f}x"]


def bench_table(rows: list[ResultRow], title: str) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=0, pad_edge=False)
    for col in TERMINAL:
        table.add_column(col, justify="left" if col in ("engine", "prec", "mode") else "right", no_wrap=True)
    for r in rows:
        full = cells(rows, r)
        full[3] = {"latency": "lat", "throughput": "thr"}.get(full[3], full[3])
        table.add_row(*(full[i] for i in TERMINAL_INDEX))
    return table


def bench_markdown(rows: list[ResultRow]) -> str:
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    lines += ["| " + " | ".join(cells(rows, r)) + " |" for r in rows]
    return "\n".join(lines)
