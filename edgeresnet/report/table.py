"""One row renderer: named columns, each rendered the same way for the terminal (rich),
report.md and report.html. A table is a list of column names; the export table, the bench
table and their terminal versions differ only in which names they list.

Speed-up has one definition (:func:`speedup`, :func:`speedup_of` with its interval; the statistics
are report/speedup.py's): this row against the FP32 row of the same engine, batch and mode (and
device, for rows merged from a device) in the same table, round by round. Its cell carries the
interval, and an INT8 row slower than FP32 beyond it says so in every rendering alike.

Rows merged from a device by `edgeresnet report` (``details["ran_on"]``) have their own columns:
the device, GPU compute against wall time, the latency per image of the batch the engine ran, and
the power and clock columns; a telemetry value the device could not read is "n/a" in its cell,
and the reason goes under the table (``render.device_notes``).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass

from rich import box
from rich.table import Table

from .schema import ResultRow
from .speedup import Speedup, of_rows, round_values, spread_pct


def ran_on(r: ResultRow) -> dict | None:
    """The device a row was merged from (``details["ran_on"]``), or None for this machine's rows."""
    tag = r.details.get("ran_on") if isinstance(r.details, dict) else None
    return tag if isinstance(tag, dict) else None


def device_label(r: ResultRow, short: bool = False) -> str:
    """The device's name and TensorRT ("orin-nano (TRT 10.3.0.30)"; short: the name alone, or
    "TRT 10.3.0.30" for a device without one), "-" for this machine's rows."""
    tag = ran_on(r)
    if tag is None:
        return "-"
    if tag.get("device"):  # a device reached over SSH may have no TensorRT: its name alone
        trt = f" (TRT {tag['tensorrt']})" if tag.get("tensorrt") else ""
        return str(tag["device"]) if short else f"{tag['device']}{trt}"
    return f"TRT {tag.get('tensorrt')}" if short else f"TensorRT {tag.get('tensorrt')}"


def speedup(rows: list[ResultRow], row: ResultRow) -> float | None:
    """How much faster than FP32 on the same engine, batch, mode and device (p50, or throughput)."""
    found = speedup_of(rows, row)
    return None if found is None else found.value


def speedup_of(rows: list[ResultRow], row: ResultRow) -> Speedup | None:
    """:func:`speedup` with its interval from the rounds (report/speedup.py)."""
    return of_rows(rows, row, key=lambda r: (r.target, r.batch, r.mode, device_label(r)))


SLOWER = "slower than fp32 here"


def speedup_text(rows: list[ResultRow], row: ResultRow) -> str:
    """"1.75x (1.70-1.80)"; a row slower than FP32 beyond its interval says so."""
    found = speedup_of(rows, row)
    if found is None:
        return "-"
    return found.text() + (f" {SLOWER}" if found.slower else "")


def spread(row: ResultRow) -> float | None:
    """How far apart the rounds' p50s (or images/s) landed, in percent of their median."""
    return spread_pct(round_values(row))


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _pct(value, compact: bool) -> str:
    if value is None:
        return "-"
    return f"{value * 100:.2f}" if compact else f"{value * 100:.2f}%"


def _lat(key: str) -> Callable:
    return lambda r, rows, compact: _fmt((r.latency_ms or {}).get(key), ".3f")


def _measured(value, spec: str = "") -> str:
    """A telemetry cell: a number formatted, yes/no, a power mode's name, or "n/a" (its reason
    is listed under the table); "-" when the row has no such column."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return format(value, spec)
    if isinstance(value, dict):
        return str(value.get("name", "n/a"))
    return str(value)


def _layers_on(r: ResultRow) -> str:
    on = r.details.get("layers_on") if isinstance(r.details, dict) else None
    if isinstance(on, dict):
        return f"{on.get('dla', 0)}/{on.get('gpu', 0)}"
    return "n/a" if r.details.get("audit") == "n/a" else "-"


@dataclass(frozen=True)
class Column:
    name: str  # markdown / HTML header
    short: str  # terminal header
    cell: Callable[[ResultRow, list[ResultRow], bool], str]  # (row, all rows, compact) -> text
    left: bool = False


COLUMNS = {c.name: c for c in (
    Column("engine", "engine", lambda r, rows, c: r.target, left=True),
    Column("precision", "prec", lambda r, rows, c: r.precision, left=True),
    Column("batch", "b", lambda r, rows, c: str(r.batch)),
    Column("mode", "mode", lambda r, rows, c: {"latency": "lat", "throughput": "thr"}.get(r.mode, r.mode) if c else r.mode,
           left=True),
    Column("size MB", "MB", lambda r, rows, c: _fmt(r.size_bytes / 1e6 if r.size_bytes else None, ".2f")),
    Column("top-1", "top-1%", lambda r, rows, c: _pct(r.top1, c)),
    Column("drop pp", "drop pp", lambda r, rows, c: _fmt(r.top1_drop_pp, ".2f")),
    Column("agreement", "agree%", lambda r, rows, c: _pct(r.agreement, c)),
    Column("p50 ms", "p50 ms", _lat("p50")),
    Column("p90 ms", "p90 ms", _lat("p90")),
    Column("p99 ms", "p99 ms", _lat("p99")),
    Column("mean ms", "mean ms", _lat("mean")),
    Column("img/s", "img/s", lambda r, rows, c: _fmt(r.throughput_ips, ".0f")),
    Column("peak MB", "peak MB", lambda r, rows, c: _fmt(r.peak_memory_mb, ".0f")),
    Column("spread %", "spread%", lambda r, rows, c: _fmt(spread(r), ".1f")),
    Column("speedup", "vs fp32", lambda r, rows, c: speedup_text(rows, r)),
)}
COLUMNS.update({c.name: c for c in (
    Column("device", "device", lambda r, rows, c: device_label(r, short=c), left=True),
    Column("engine batch", "eng b", lambda r, rows, c: _fmt(r.engine_batch, "d")),
    Column("wall ms", "wall ms", _lat("p50")),
    Column("GPU ms", "GPU ms", lambda r, rows, c: _fmt((r.gpu_compute_ms or {}).get("p50"), ".3f")),
    Column("ms/image", "ms/img", lambda r, rows, c: _fmt(r.per_image_ms, ".3f")),
    Column("W", "W", lambda r, rows, c: _measured(r.avg_w, ".2f")),
    Column("mJ/image", "mJ/img", lambda r, rows, c: _measured(r.mj_per_image, ".2f")),
    Column("power mode", "pmode", lambda r, rows, c: _measured(r.power_mode), left=True),
    Column("clocks locked", "locked", lambda r, rows, c: _measured(r.clocks_locked)),
    Column("throttled", "throttled", lambda r, rows, c: _measured(r.throttled)),
    Column("DLA/GPU layers", "DLA/GPU", lambda r, rows, c: _layers_on(r)),
)})
IDENTITY = ("engine", "precision", "batch", "mode", "device")  # columns a failed or skipped row still fills
ACCURACY = ("size MB", "top-1", "drop pp", "agreement")
EXPORT = ("engine", "precision", *ACCURACY, "p50 ms", "spread %", "p99 ms", "img/s", "speedup")
EXPORT_ACCURACY = ("engine", "precision", *ACCURACY, "status")  # when a bench table carries the speed
BENCH = ("engine", "precision", "batch", "mode", *ACCURACY, "p50 ms", "spread %", "p90 ms", "p99 ms", "mean ms",
         "img/s", "peak MB", "speedup")
# The terminal's 80 columns: the speed-up's interval needs its room, so the terminal drops what
# report.md keeps beside it (p99, and the size and agreement of bench rows); the numbers it shows are report.md's.
EXPORT_TERMINAL = ("engine", "precision", *ACCURACY, "p50 ms", "spread %", "speedup")
BENCH_TERMINAL = ("engine", "precision", "batch", "mode", "top-1", "drop pp", "p50 ms", "spread %", "img/s", "speedup")
COLUMNS["status"] = Column("status", "status", lambda r, rows, c: r.status, left=True)
# Rows merged from a device (`edgeresnet report`): its engines, then its bench with GPU compute
# against wall time (p50), the latency per image of the batch the engine ran, and the energy columns.
# A device reached over SSH (--host) runs every engine its runtimes allow, so the engine is a column.
DEVICE_ENGINES = ("device", "engine", "precision", "size MB", "top-1", "drop pp", "agreement", "DLA/GPU layers",
                  "status")
DEVICE_BENCH = ("device", "engine", "precision", "batch", "mode", "engine batch", "wall ms", "GPU ms", "ms/image",
                "img/s", "W", "mJ/image", "power mode", "clocks locked", "throttled")
DEVICE_TERMINAL = (DEVICE_BENCH[:10], DEVICE_BENCH[:5] + DEVICE_BENCH[10:])  # timing, then energy: 80 columns each
# A device's CPU engines (device.py over SSH): accuracy without engine sizes or DLA layers, and
# host-clock latency as `bench` here prints it.
DEVICE_CPU_ENGINES = ("device", "engine", "precision", "top-1", "drop pp", "agreement", "status")
DEVICE_CPU_BENCH = ("device", "engine", "precision", "batch", "mode", "p50 ms", "p90 ms", "p99 ms", "img/s", "speedup")


def _trt_device(r: ResultRow) -> bool:
    """A row the TensorRT device file made (timed as trtexec times: GPU compute, the engine's
    batch, power), as opposed to a CPU runtime's on a device reached over SSH."""
    return r.target == "trt" or r.gpu_compute_ms is not None or r.engine_batch is not None or r.avg_w is not None


def device_groups(rows: list[ResultRow], bench: bool) -> list[tuple[list[ResultRow], tuple[str, ...]]]:
    """Device rows (engines, or ``bench`` rows) split by who made them, each group with its
    columns: TensorRT's in DEVICE_ENGINES / DEVICE_BENCH, CPU runtimes' in DEVICE_CPU_ENGINES /
    DEVICE_CPU_BENCH; empty groups left out."""
    trt, cpu = (DEVICE_BENCH, DEVICE_CPU_BENCH) if bench else (DEVICE_ENGINES, DEVICE_CPU_ENGINES)
    groups = [([r for r in rows if _trt_device(r)], trt), ([r for r in rows if not _trt_device(r)], cpu)]
    return [(g, names) for g, names in groups if g]


def cells(rows: list[ResultRow], r: ResultRow, names: tuple[str, ...], compact: bool = False) -> list[str]:
    """One row's texts for the named columns. A row that did not run keeps its identity columns
    and puts its status (and, unless compact, its reason) in the last one."""
    if r.status == "ok":
        return [COLUMNS[n].cell(r, rows, compact) for n in names]
    texts = [COLUMNS[n].cell(r, rows, compact) if n in IDENTITY else "-" for n in names]
    texts[-1] = r.status if compact else f"{r.status}: {r.reason or ''}".rstrip(": ")
    return texts


def terminal(rows: list[ResultRow], names: tuple[str, ...], title: str, caption: str | None = None) -> Table:
    """A rich table (short headers, compact cells; reasons go under the table)."""
    table = Table(title=title, caption=caption, caption_justify="left", box=box.SIMPLE_HEAD, padding=0, pad_edge=False)
    for n in names:
        col = COLUMNS[n]
        table.add_column(col.short, justify="left" if col.left else "right", no_wrap=n != names[-1])
    for r in rows:
        table.add_row(*cells(rows, r, names, compact=True))
    return table


def markdown_table(rows: list[ResultRow], names: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(cells(rows, r, names)) + " |" for r in rows]
    return "\n".join(lines)


def html_table(rows: list[ResultRow], names: tuple[str, ...]) -> str:
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells(rows, r, names)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def export_columns(has_bench: bool, has_device: bool = False) -> tuple[str, ...]:
    """The export table's columns: with a bench in the same report, speed is the bench
    table's alone (one measurement, one speed-up per engine and batch); with rows merged from
    a device, which device each ran on."""
    names = EXPORT_ACCURACY if has_bench else EXPORT
    return (names[0], "device", *names[1:]) if has_device else names
