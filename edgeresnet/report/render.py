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


def _stage_text(stage: dict) -> str:
    name = stage["stage"].replace("_", " ")
    if stage.get("skipped"):
        return f"{name}: skipped ({stage['skipped']})"
    return f"{name}: {stage['drop_pp']:+.2f} pp, output SQNR {stage['output_sqnr_db']:.1f} dB" + \
        ("" if stage["kept"] else " (not kept)")


def _price_text(entry: dict) -> str:
    prices = entry.get("price_ms") or {}
    return ", ".join(f"{t} {ms:+.3f} ms" for t, ms in prices.items()) or "not priced"


def tuning_lines(report: Report) -> list[str]:
    """The accuracy-aware INT8 outcome, one fact per line (terminal and report.md)."""
    t = report.tuning or {}
    if not t:
        return []
    val, final = t["validation"], t["final"]
    budget = t.get("max_drop_pp")
    head = "no budget (sensitivity only)" if budget is None else \
        f"budget {budget:g} pp {'met' if t['met'] else 'NOT met'}"
    lines = [f"accuracy-aware INT8: {head}; validation drop {final['drop_pp']:+.2f} pp on {val['images']} "
             f"calibration-split images (labels: {val['labels']}; 1 image = {val['resolution_pp']:g} pp)",
             "stages: " + "; ".join(_stage_text(s) for s in t["stages"])]
    fallback = t.get("fallback_layers", [])
    by_layer = {e["layer"]: e for e in report.sensitivity or []}
    lines.append(f"layers in float: {len(fallback)} of {t['quantized_layers']}")
    for layer in fallback:
        e = by_layer.get(layer, {})
        lines.append(f"  {layer}: rank {e.get('rank')}, output SQNR {e.get('output_sqnr_db')} dB alone; "
                     f"price {_price_text(e)}")
    if report.sensitivity:
        top = report.sensitivity[:3]
        lines.append("most sensitive: " + ", ".join(f"{e['layer']} ({e['output_sqnr_db']} dB)" for e in top))
    return lines


def tuning_summary(report: Report) -> str:
    from rich.markup import escape

    return escape("\n".join(tuning_lines(report)))


def kernel_line(report: Report) -> str | None:
    """Which CPU the numbers were measured on and which INT8 kernels ran: INT8 accuracy and
    speed depend on both (VNNI, AMX, AVX2-only and ARM differ)."""
    cpu = (report.machine or {}).get("cpu") or {}
    kernels = [f"{r.target} {r.kernel}" for r in report.results if r.kernel]
    if not cpu and not kernels:
        return None
    where = f"{cpu.get('model')} [{cpu.get('class')}: {', '.join(cpu.get('isa', [])) or 'no INT8 ISA'}]" if cpu else "?"
    return f"measured on {where}" + (f"; INT8 kernels: {', '.join(kernels)}" if kernels else "")


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
    if kernel_line(report):
        lines.append(f"- {kernel_line(report)}")
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(report, r)) + " |" for r in report.results]
    drops = [r for r in report.results if r.per_class_drop_pp and r.precision != "fp32"]
    if drops:
        classes = list(drops[0].per_class_drop_pp)
        lines += ["", "## Per-class top-1 drop (pp)", "",
                  "| class | " + " | ".join(f"{r.target} {r.precision}" for r in drops) + " |",
                  "|---|" + "---|" * len(drops)]
        lines += [f"| {c} | " + " | ".join(f"{r.per_class_drop_pp.get(c, 0.0):+.2f}" for r in drops) + " |" for c in classes]
    if report.tuning:
        lines += ["", "## Accuracy budget", ""] + [f"- {ln.strip()}" for ln in tuning_lines(report)]
    if report.sensitivity:
        lines += ["", "## Per-layer sensitivity (only that layer quantized; most harmful first)", "",
                  "| rank | layer | op | layer SQNR dB | output SQNR dB | top-1 delta pp | in float | price |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {e['rank']} | `{e['layer']}` | {e['op']} | {e['sqnr_db']} | {e['output_sqnr_db']} | "
                  f"{e['top1_delta_pp']:+.2f} | {'yes' if e['fallback'] else ''} | "
                  f"{_price_text(e) if e['fallback'] else ''} |" for e in report.sensitivity]
    for r in report.results:
        if r.details.get("qdq_profile"):
            p = r.details["qdq_profile"]
            lines.append(f"\n{r.target} {r.precision}: QDQ profile `{p['name']}`: activations {p['activations']}, "
                         f"weights {p['weights']}, bias {p['bias']}")
    lines += ["", f"Command: `{report.command}`", ""]
    return "\n".join(lines)
