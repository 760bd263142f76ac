"""Rendering a Report: the terminal tables (rich) and report.md; every table through
report.table's named columns."""

from __future__ import annotations

from rich.table import Table

from .schema import Report, ResultRow
from .speedup import round_values
from .table import (
    BENCH,
    BENCH_TERMINAL,
    DEVICE_BENCH,
    EXPORT_TERMINAL,
    device_groups,
    device_label,
    export_columns,
    markdown_table,
    ran_on,
    speedup_of,
    terminal,
)

DEVICE_LEGEND = ("wall ms: p50 of the whole call (copies in, the engine, copies out, sync); GPU ms: p50 of the "
                 "engine alone (CUDA events); ms/image: wall p50 / the batch the engine ran (a static DLA engine "
                 "always runs its full batch, padding included); W and mJ/image: the board's meter over the timed "
                 "run; n/a: not readable on that device, the reason below")


def terminal_table(report: Report) -> Table:
    rows = report.results
    return terminal(rows, EXPORT_TERMINAL, f"{report.model.get('arch')}: FP32 vs INT8", _caption(rows))


def bench_table(rows: list[ResultRow], title: str) -> Table:
    return terminal(rows, BENCH_TERMINAL, title, _caption(rows))


def _caption(rows: list[ResultRow]) -> str | None:
    from rich.markup import escape

    return escape("\n".join(timing_notes(rows))) or None


def timing_notes(rows: list[ResultRow]) -> list[str]:
    """Under every table with timed rounds (terminal, report.md, report.html alike): what the
    spread and the speed-up's interval are, and whether the machine was busy while timing."""
    timed = [r for r in rows if r.status == "ok" and len(round_values(r)) > 1]
    if not timed:
        return []
    counts = sorted({len(round_values(r)) for r in timed})
    found = [s for s in (speedup_of(rows, r) for r in rows) if s is not None and s.coverage is not None]
    rounds = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    lines = [f"spread: (max - min) / median of the p50s of {rounds} interleaved rounds; vs fp32: the median of the "
             "per-round ratios (fp32 p50 / this p50, the same round)" +
             (f" and the interval that holds it with {min(s.coverage for s in found):.0%} confidence" if found else "")]
    loads = [v for r in timed for v in r.details.get("load_1min") or []]
    cpus = next((r.details["cpus"] for r in timed if r.details.get("cpus")), None)
    if loads and cpus and max(loads) > 1.5 * cpus:
        lines.append(f"the machine was busy while timing (1-min load average up to {max(loads):.1f} on {cpus} CPUs, "
                     "the timing's own threads included): wide intervals are that noise; time again when it is quiet")
    return lines


def row_label(r: ResultRow) -> str:
    """"trt int8-dla", and the device for a row merged from one."""
    return f"{r.target} {r.precision}" + (f" on {device_label(r)}" if ran_on(r) else "")


def split_bench(bench: list[ResultRow] | None) -> tuple[list[ResultRow], list[ResultRow]]:
    """(this machine's bench rows, rows merged from devices)."""
    bench = bench or []
    return [r for r in bench if not ran_on(r)], [r for r in bench if ran_on(r)]


def device_notes(results: list[ResultRow], bench: list[ResultRow]) -> list[str]:
    """What the device tables cannot hold, one fact per line, each once: each engine's layer audit
    (DLA/GPU layers, warnings), padded DLA batches, and why a power or clock column is n/a."""
    lines: list[str] = []
    for r in (r for r in results if ran_on(r)):
        d = r.details
        if d.get("audit") == "n/a":
            lines.append(f"{row_label(r)}: layer audit n/a: {d.get('audit_na_reason')}")
        elif d.get("audit"):
            lines.append(f"{row_label(r)}, {d.get('device') or 'GPU'}: {d['audit']}")
        lines += [f"{row_label(r)}: warning: {w}" for w in d.get("warnings") or []]
        if d.get("eval_failed"):
            lines.append(f"{row_label(r)}: eval failed: {d['eval_failed']}")
    for r in (r for r in bench if ran_on(r) and r.status == "ok"):
        lines += _telemetry_notes(r)
    return list(dict.fromkeys(lines))


def _part(block: dict, key: str) -> dict:
    value = block.get(key)
    return value if isinstance(value, dict) else {}


def _telemetry_notes(r: ResultRow) -> list[str]:
    where, d = device_label(r), r.details
    telemetry = d.get("telemetry") if isinstance(d.get("telemetry"), dict) else {}
    why, total = _part(_part(telemetry, "before"), "why"), _part(telemetry, "summary").get("total_rail")
    lines = []
    if r.avg_w == "n/a":
        lines.append(f"{where}: W and mJ/image n/a: {r.energy_na_reason or 'no power meter readable'}")
    elif r.energy_source and r.energy_source != "n/a":
        lines.append(f"{where}: energy from {r.energy_source}" + (f" ({total})" if isinstance(total, str) else ""))
    if r.power_mode == "n/a":
        lines.append(f"{where}: power mode n/a: {why.get('power_mode') or 'not readable'}")
    if r.clocks_locked == "n/a":
        lines.append(f"{where}: clocks locked n/a: {why.get('gpu') or 'no GPU clock readable'}")
    if r.clocks_warning:
        lines.append(f"{where}: {r.clocks_warning}")
    if r.throttled is True or r.throttled == "n/a":
        lines.append(f"{row_label(r)}, batch {r.batch} {r.mode}: throttled: {r.throttled_why}" if r.throttled is True
                     else f"{where}: throttling n/a: {r.throttled_why or 'no clock or trip point readable'}")
    if d.get("ran"):
        lines.append(f"{row_label(r)}, batch {r.batch}: ran {d['ran']}")
    if d.get("timing_warnings"):
        lines.append(f"{row_label(r)}, batch {r.batch} {r.mode}: " + "; ".join(d["timing_warnings"]))
    return lines


def device_tables(report: Report, bench: list[ResultRow]) -> tuple[list[ResultRow], list[ResultRow]]:
    """(the engines merged from devices, their bench rows)."""
    return [r for r in report.results if ran_on(r)], [r for r in bench or [] if ran_on(r)]


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


TERMINAL_FACTS = ("calibration", "evaluation", "kernel", "float_layers")  # the rest is in the table or the files


def facts(report: Report, bench: list[ResultRow] | None = None, machine: dict | None = None) -> dict[str, str]:
    """The export's facts, one plain line each, by name: the one wording the terminal, report.md
    and report.html format (as text, list items); each picks which it shows. ``bench``: this
    machine's bench rows (the latency line then points to their table)."""
    m, cal, ev = report.model, report.calibration, report.evaluation
    lines = {"model": f"model: {m.get('source')} ({m.get('params'):,} parameters, input {m.get('input_shape')})"}
    if report.fold:
        f = report.fold
        lines["fold"] = (f"BN folding: {f['folded']} folded into convs, {f['kept_as_scale_shift']} kept as scale+shift; "
                         f"max relative error vs the original {f['max_rel_error']:.2e} on {f['images']} real images")
    if report.onnx:
        lines["onnx"] = (f"FP32 ONNX: opset {report.onnx['opset']}, max relative error vs PyTorch "
                         f"{report.onnx['max_rel_error_vs_torch']:.2e}")
    if cal:
        speed = f", {cal['images_per_s']:.0f} images/s, peak {cal['peak_mb']:.0f} MB" if cal.get("peak_mb") else ""
        table = f"; table {cal['table']}" if cal.get("table") else ""
        lines["calibration"] = f"calibration: {cal['method']} on {cal['images']} images from {cal['source']} " \
                               f"({cal['seconds']:.1f} s{speed}){table}"
    lines["evaluation"] = f"evaluation: {ev['images']} images from {ev['source']}" if ev else "evaluation: skipped"
    cpu = (machine or report.machine or {}).get("cpu") or {}
    if cpu:
        lines["machine"] = f"machine: {cpu.get('model')} ({cpu.get('cores')} cores; {', '.join(cpu.get('isa', []))})"
    if kernel_line(report):
        lines["kernel"] = kernel_line(report)
    if report.float_layers:
        lines["float_layers"] = (f"kept in float (--float-layers {','.join(report.float_layers['requested'])}): "
                                 + ", ".join(report.float_layers["modules"]))
    if report.results and any(r.latency_ms for r in report.results):
        lines["latency"] = f"latency: {latency_note(report, bench)}"
    return lines


def markdown(report: Report, bench: list[ResultRow] | None = None) -> str:
    """report.md: the export's facts and table, then the bench table when there is one
    (and then speed appears only there), then what ran on devices (`edgeresnet report`)."""
    bench, on_device = split_bench(bench)
    lines = [f"# edgeresnet export: {report.model.get('arch')}", ""]
    lines += [f"- {line}" for line in facts(report, bench).values()]
    lines += ["", markdown_table(report.results, export_columns(bool(bench), any(map(ran_on, report.results))))]
    notes = [] if bench else timing_notes(report.results)
    lines += [""] + [f"- {n}" for n in notes] if notes else []
    drops = [r for r in report.results if r.per_class_drop_pp and r.precision != "fp32"]
    if drops:
        classes = list(drops[0].per_class_drop_pp)
        lines += ["", "## Per-class top-1 drop (pp)", "",
                  "| class | " + " | ".join(row_label(r) for r in drops) + " |",
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
    if bench:
        lines += ["", "## Benchmark", "", markdown_table(bench, BENCH)]
        notes = timing_notes(bench) + [r.details["vs_export"]["note"] for r in bench if r.details.get("vs_export")]
        lines += [""] + [f"- {n}" for n in notes] if notes else []
    lines += device_markdown(report, on_device)
    lines += ["", f"Command: `{report.command}`", ""]
    return "\n".join(lines)


def device_markdown(report: Report, bench: list[ResultRow]) -> list[str]:
    """report.md's section for rows merged from devices: their engines, their bench with the
    energy columns, and the notes (audit, padding, why a column is n/a)."""
    engines, bench = device_tables(report, bench)
    if not engines and not bench:
        return []
    lines = ["", "## On the device", ""]
    for rows, names in device_groups(engines, bench=False):
        lines += [markdown_table(rows, names), ""]
    for rows, names in device_groups(bench, bench=True):
        lines += [markdown_table(rows, names), ""] + ([DEVICE_LEGEND, ""] if names == DEVICE_BENCH else [])
    return lines + [f"- {n}" for n in device_notes(engines, bench)]


def latency_note(report: Report, bench: list[ResultRow] | None) -> str:
    """How the export table's latencies were taken, or where the speed figures are instead."""
    if bench:
        return ("see the benchmark table; the export timed the same artifacts the same way, earlier (report.json), and "
                "the lines under the benchmark table say whether the two agree")
    methods = {r.details.get("latency_method") for r in report.results if r.latency_ms and r.target != "torch"}
    return (next(iter(methods)) if len(methods) == 1 and None not in methods else "quick timing during export") + \
        "; `edgeresnet bench` for batches, throughput and rounds"
