"""Rendering a Report: the terminal table (rich) and report.md."""

from __future__ import annotations

from rich import box
from rich.table import Table

from .schema import Report, ResultRow


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.2f}%"


def _num(v: float | None, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def _speedup(report: Report, row: ResultRow) -> str:
    base = report.row(row.target, "fp32")
    if row.precision == "fp32" or not base or not base.latency_ms or not row.latency_ms:
        return "-"
    return f"{base.latency_ms['p50'] / row.latency_ms['p50']:.2f}x"


COLUMNS = ("engine", "precision", "size MB", "top-1", "drop pp", "agreement", "p50 ms", "p99 ms", "img/s", "speedup")
SHORT = ("engine", "prec", "MB", "top-1%", "drop pp", "agree%", "p50 ms", "p99 ms", "img/s", "vs fp32")


def _cells(report: Report, r: ResultRow, compact: bool = False) -> list[str]:
    if r.status != "ok":
        reason = "" if compact else f": {r.reason or ''}"  # the terminal lists reasons under the table
        return [r.target, r.precision, "-", "-", "-", "-", "-", "-", "-", f"{r.status}{reason}"]
    lat = r.latency_ms or {}
    pct = (lambda v: _num(None if v is None else v * 100)) if compact else _pct
    return [r.target, r.precision, _num(r.size_bytes / 1e6 if r.size_bytes else None, ".2f"), pct(r.top1),
            _num(r.top1_drop_pp), pct(r.agreement), _num(lat.get("p50"), ".3f"), _num(lat.get("p99"), ".3f"),
            _num(r.throughput_ips, ".0f"), _speedup(report, r)]


def terminal_table(report: Report) -> Table:
    table = Table(title=f"{report.model.get('arch')}: FP32 vs INT8", box=box.SIMPLE_HEAD, padding=0,
                  pad_edge=False)
    for col in SHORT:
        table.add_column(col, justify="left" if col in ("engine", "prec") else "right", no_wrap=col != "vs fp32")
    for r in report.results:
        table.add_row(*_cells(report, r, compact=True))
    return table


def markdown(report: Report) -> str:
    m, cal, ev = report.model, report.calibration, report.evaluation
    lines = [f"# edgeresnet export: {m.get('arch')}", "",
             f"- model: `{m.get('source')}` ({m.get('params'):,} parameters, input {m.get('input_shape')})"]
    if report.fold:
        f = report.fold
        lines.append(f"- BN folding: {f['folded']} folded into convs, {f['kept_as_scale_shift']} kept as scale+shift; "
                     f"max relative error vs the original {f['max_rel_error']:.2e} on {f['images']} real images")
    if report.onnx:
        lines.append(f"- FP32 ONNX: opset {report.onnx['opset']}, max relative error vs PyTorch "
                     f"{report.onnx['max_rel_error_vs_torch']:.2e}")
    if cal:
        lines.append(f"- calibration: {cal['method']} on {cal['images']} images from `{cal['source']}` "
                     f"({cal['seconds']:.1f} s); table `{cal.get('table')}`")
    lines.append(f"- evaluation: {ev['images']} images from `{ev['source']}`" if ev else "- evaluation: skipped")
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(report, r)) + " |" for r in report.results]
    drops = [r for r in report.results if r.per_class_drop_pp and r.precision != "fp32"]
    if drops:
        classes = list(drops[0].per_class_drop_pp)
        lines += ["", "## Per-class top-1 drop (pp)", "",
                  "| class | " + " | ".join(f"{r.target} {r.precision}" for r in drops) + " |",
                  "|---|" + "---|" * len(drops)]
        lines += [f"| {c} | " + " | ".join(f"{r.per_class_drop_pp.get(c, 0.0):+.2f}" for r in drops) + " |" for c in classes]
    for r in report.results:
        if r.details.get("qdq_profile"):
            p = r.details["qdq_profile"]
            lines.append(f"\n{r.target} {r.precision}: QDQ profile `{p['name']}`: activations {p['activations']}, "
                         f"weights {p['weights']}, bias {p['bias']}")
    lines += ["", f"Command: `{report.command}`", ""]
    return "\n".join(lines)
