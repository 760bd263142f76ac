"""A self-contained report.html: tables plus plots embedded as PNG (matplotlib):
accuracy against latency per engine and precision, the latency distribution, throughput
against batch size, and the per-class accuracy drop."""

from __future__ import annotations

import base64
import html
import io

from .render import (
    DEVICE_LEGEND,
    device_notes,
    device_tables,
    facts,
    row_label,
    split_bench,
    timing_notes,
    tuning_lines,
)
from .schema import Report, ResultRow
from .table import BENCH, DEVICE_BENCH, device_groups, export_columns, html_table, ran_on

CSS = """body{font-family:system-ui,sans-serif;margin:2rem;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1rem 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
td:first-child,th:first-child,td:nth-child(2){text-align:left}th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}
.note{color:#666;font-size:13px}"""


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _label(r: ResultRow) -> str:
    return row_label(r)


def plots(report: Report, bench: list[ResultRow]) -> list[tuple[str, str]]:
    """(title, data URI) per plot; empty when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return []
    out = []
    timed = [r for r in (bench or report.results) if r.status == "ok" and r.latency_ms and r.mode == "latency"]
    lat1 = [r for r in timed if r.batch == min(x.batch for x in timed)] if timed else []
    acc = [r for r in lat1 if r.top1 is not None]
    if acc:
        out.append(("Accuracy against latency", _accuracy_png(plt, acc)))
    with_samples = [r for r in lat1 if r.samples_ms]
    if with_samples:
        out.append(("Latency distribution", _latency_png(plt, matplotlib.ticker, with_samples)))
    series: dict[str, list[ResultRow]] = {}
    for r in bench:
        if r.status == "ok" and r.throughput_ips:
            series.setdefault(f"{_label(r)} ({r.mode})", []).append(r)
    if any(len({r.batch for r in rs}) > 1 for rs in series.values()):
        out.append(("Throughput against batch size", _throughput_png(plt, series)))
    drops = [r for r in report.results if r.per_class_drop_pp and r.precision != "fp32"]
    if drops:
        out.append(("Per-class accuracy drop", _drop_png(plt, drops)))
    if report.sensitivity:
        out.append(("Per-layer sensitivity", _sensitivity_png(plt, report.sensitivity)))
    return out


def _close(plt, fig) -> str:
    uri = _png(fig)
    plt.close(fig)
    return uri


def _accuracy_png(plt, acc: list[ResultRow]) -> str:
    """Top-1 against p50 latency at the smallest batch, one point per engine and precision."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in acc:
        ax.scatter(r.latency_ms["p50"], r.top1 * 100, s=60, marker="o" if r.precision == "fp32" else "s")
        ax.annotate(_label(r), (r.latency_ms["p50"], r.top1 * 100), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel(f"p50 latency, batch {acc[0].batch} (ms)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("Accuracy against latency")
    ax.grid(alpha=0.3)
    return _close(plt, fig)


def _latency_png(plt, ticker, rows: list[ResultRow]) -> str:
    """Each row's latency samples as a box plot, log scale."""
    fig, ax = plt.subplots(figsize=(6.5, 0.5 + 0.45 * len(rows)))
    ax.boxplot([r.samples_ms for r in rows], vert=False, showfliers=True,
               tick_labels=[_label(r) for r in rows], flierprops={"markersize": 2})
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())  # minor labels overlap
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_title(f"Latency distribution, batch {rows[0].batch}")
    return _close(plt, fig)


def _throughput_png(plt, series: dict[str, list[ResultRow]]) -> str:
    """Images per second against batch size, one line per engine, precision and mode."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, rs in series.items():
        rs = sorted(rs, key=lambda r: r.batch)
        ax.plot([r.batch for r in rs], [r.throughput_ips for r in rs], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s")
    ax.set_title("Throughput against batch size")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _close(plt, fig)


def _drop_png(plt, drops: list[ResultRow]) -> str:
    """Per-class top-1 drop against FP32, grouped bars per class."""
    classes = list(drops[0].per_class_drop_pp)
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(drops)
    for k, r in enumerate(drops):
        ax.bar([i + k * width for i in range(len(classes))], [r.per_class_drop_pp.get(c, 0) for c in classes],
               width=width, label=_label(r))
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(classes))], classes, rotation=45, ha="right", fontsize=8)
    ax.axhline(0, color="#444", linewidth=0.8)
    ax.set_ylabel("top-1 drop vs fp32 (pp)")
    ax.set_title("Per-class accuracy drop")
    ax.legend(fontsize=7)
    return _close(plt, fig)


def _sensitivity_png(plt, sensitivity: list[dict]) -> str:
    """Output SQNR with only that layer quantized, lowest (most harmful) at the top; layers
    kept in float in orange."""
    rows = sensitivity[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.24 * len(rows)))
    colors = ["#e07020" if r["fallback"] else "#3070b0" for r in rows]
    values = [min(r["output_sqnr_db"], 99.0) for r in rows]
    ax.barh(range(len(rows)), values, color=colors)
    ax.set_yticks(range(len(rows)), [r["layer"] for r in rows], fontsize=6)
    ax.set_xlabel("output SQNR (dB) with only this layer in INT8: lower hurts more")
    ax.set_title("Per-layer sensitivity (orange: kept in float)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    uri = _png(fig)
    plt.close(fig)
    return uri


def _notes(lines: list[str]) -> list[str]:
    return [f"<p class='note'>{html.escape(n)}</p>" for n in lines]


def _device_html(report: Report, bench: list[ResultRow]) -> list[str]:
    """The rows merged from devices (`edgeresnet report`): as report.md's "On the device"."""
    engines, bench = device_tables(report, bench)
    if not engines and not bench:
        return []
    parts = ["<h2>On the device</h2>"]
    for rows, names in device_groups(engines, bench=False):
        parts.append(html_table(rows, names))
    for rows, names in device_groups(bench, bench=True):
        legend = f"<p class='note'>{html.escape(DEVICE_LEGEND)}</p>" if names == DEVICE_BENCH else ""
        parts.append(html_table(rows, names) + legend)
    notes = device_notes(engines, bench)
    if notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    return parts


def render_html(report: Report, bench: list[ResultRow] | None = None, machine: dict | None = None) -> str:
    bench, on_device = split_bench(bench)
    m = report.model
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>edgeresnet: {html.escape(str(m.get('arch')))}</title>",
             f"<style>{CSS}</style></head><body><h1>edgeresnet report: {html.escape(str(m.get('arch')))}</h1>"]
    parts.append("<ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in facts(report, bench, machine).values()) + "</ul>")
    parts.append("<h2>Export: FP32 vs INT8</h2>" + html_table(report.results, export_columns(
        bool(bench), any(map(ran_on, report.results)))))
    if not bench:
        parts += _notes(timing_notes(report.results))
    if report.tuning:
        parts.append("<h2>Accuracy budget</h2><ul>" + "".join(
            f"<li>{html.escape(line.strip())}</li>" for line in tuning_lines(report)) + "</ul>")
    if bench:
        parts.append("<h2>Benchmark</h2>" + html_table(bench, BENCH))
        parts += _notes(timing_notes(bench) + [r.details["vs_export"]["note"] for r in bench if r.details.get("vs_export")])
    parts += _device_html(report, on_device)
    figures = plots(report, bench)
    if not figures:
        parts.append("<p class='note'>Plots need matplotlib: pip install 'edgeresnet[report]'.</p>")
    for title, uri in figures:
        parts.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='{uri}'>")
    parts.append(f"<p class='note'>Command: {html.escape(report.command)}</p></body></html>")
    return "\n".join(parts)
