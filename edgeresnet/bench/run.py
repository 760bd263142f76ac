"""`edgeresnet bench`: every artifact of an export dir (or one model file), each engine and
batch size in its own process and block, in interleaved rounds (latency.py, the method the
export's table uses too); results in the report.json row schema with the machine they ran on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..backends import engine_options, expand_targets, get_backend
from ..backends.base import Artifact, artifact_size
from ..backends.registry import for_suffix, suffixes_help
from .worker import block_spec
from ..errors import InputError, UsageError
from .latency import PLAN, Plan, merge, run_rounds
from ..core.limits import check_flag
from ..report import Report, ResultRow

@dataclass(frozen=True)
class BenchConfig:
    source: Path
    targets: tuple[str, ...] | None = None
    precisions: tuple[str, ...] | None = None
    batches: tuple[int, ...] = (1,)
    modes: tuple[str, ...] = ("latency",)
    threads: int | None = None
    warmup: int = PLAN.warmup
    min_runs: int = PLAN.min_runs
    min_seconds: float | None = None  # None: the plan's (0.3 s a latency block, 1 s a throughput block)
    rounds: int | None = None  # None: the export's plan (at least 5, more while a speed-up is unsettled)
    requests: int | None = None
    device: str = "CPU"


@dataclass
class Item:
    artifact: Artifact
    accuracy: dict  # the export's accuracy fields for this artifact, if any


def file_precision(target: str, path: Path) -> str:
    """The precision of a model file, as its engine tells it (fp32 when it cannot)."""
    return get_backend(target).precision_of(path) or "fp32"


def discover(source: Path) -> tuple[list[Item], dict | None]:
    """The artifacts to time: an export dir's report rows, or one model file."""
    if source.is_dir():
        from ..bundle import Bundle
        from ..bundle.report import read_report

        bundle = Bundle(source)
        report = read_report(bundle)
        entries = {}
        for entry in bundle.manifest["artifacts"]:  # each checked as `predict` and `eval` check theirs
            bundle.artifact(entry)
            entries[(entry["target"], entry["precision"])] = entry
        items = []
        for row in report["results"]:
            if row.get("status", "ok") != "ok" or not row.get("artifact") or row["target"] == "torch":
                continue
            entry = entries.get((row["target"], row["precision"]))
            if entry is None or entry["path"] != row["artifact"]:
                raise InputError(f"{row['artifact']} is in report.json but not in {source}'s edgeresnet.json",
                                 hint="re-export; a bundle's files must not be edited by hand")
            path = source / entry["path"]
            keep = {k: row.get(k) for k in ("top1", "top5", "top1_drop_pp", "agreement", "per_class_drop_pp")}
            # The per-CPU variants come from the manifest, whose hashes cover them, not from the report.
            details = {**(row.get("details") or {}), "variants": entry.get("variants") or {}}
            items.append(Item(Artifact(row["target"], row["precision"], path, details), keep))
        return items, report
    if not source.is_file():
        raise InputError(f"{source} does not exist", hint="pass an export directory or a .onnx / .xml / .engine file")
    target = for_suffix(source.suffix)
    if target is None:
        raise InputError(f"cannot benchmark {source.name}", hint=f"supported: {suffixes_help()}")
    if source.suffix.lower() == ".onnx":
        from ..onnxfile import check_onnx_file

        check_onnx_file(source)
    return [Item(Artifact(target, file_precision(target, source), source), {})], None


def bench(cfg: BenchConfig) -> tuple[list[ResultRow], dict | None]:
    check_flag("--rounds", cfg.rounds, least=1, most=1000, integer=True)
    check_flag("--min-runs", cfg.min_runs, least=1, most=10_000_000, integer=True)
    check_flag("--warmup", cfg.warmup, least=0, most=1_000_000, integer=True)
    check_flag("--min-seconds", cfg.min_seconds, least=0, most=3600)
    check_flag("--requests", cfg.requests, least=1, most=1024, integer=True)
    for b in cfg.batches:
        check_flag("--batch", b, least=1, most=65_536, integer=True)
    for m in cfg.modes:
        if m not in ("latency", "throughput"):
            raise UsageError(f"unknown --mode {m!r}", hint="latency or throughput")
    seconds = {} if cfg.min_seconds is None else {"min_seconds": cfg.min_seconds, "throughput_seconds": cfg.min_seconds}
    plan = Plan(warmup=cfg.warmup, min_runs=cfg.min_runs, rounds=cfg.rounds, **seconds)
    items, report = discover(cfg.source)
    if cfg.targets:
        wanted = expand_targets(cfg.targets)
        items = [i for i in items if i.artifact.target in wanted]
    if cfg.precisions:
        items = [i for i in items if i.artifact.precision in cfg.precisions]
    if not items:
        raise InputError(f"nothing to benchmark in {cfg.source} with these filters", hint="check --target / --precision")
    chw = tuple(report["model"]["input_shape"][1:]) if report else None
    blocks = [(item, b, m) for item in items for b in cfg.batches for m in cfg.modes]
    # bench's --device is the engines' option of that name (OpenVINO's today), as export passes it
    options = engine_options({"device": cfg.device}, known_only=True)
    reasons = {t: get_backend(t, options).unavailable_reason() for t in {i.artifact.target for i in items}}
    skipped = {i: reasons[item.artifact.target] for i, (item, _, _) in enumerate(blocks) if reasons[item.artifact.target]}
    runnable = [i for i in range(len(blocks)) if i not in skipped]
    specs = [block_spec(blocks[i][0].artifact, batch=blocks[i][1], chw=chw, threads=cfg.threads, mode=blocks[i][2],
                        requests=cfg.requests, options=options.get(blocks[i][0].artifact.target),
                        **plan.block(blocks[i][2])) for i in runnable]
    timed = dict(zip(runnable, run_rounds(specs, plan)))
    failures = {i: t.error for i, t in timed.items() if t.error is not None}
    collected = {i: t.rounds for i, t in timed.items()}
    rows = []
    for i, (item, batch, mode) in enumerate(blocks):
        art = item.artifact
        rel = str(art.path.relative_to(cfg.source)) if cfg.source.is_dir() else art.path.name
        if i in failures or i in skipped:
            rows.append(ResultRow(art.target, art.precision, artifact=rel, batch=batch, mode=mode,
                                  status="failed" if i in failures else "skipped", reason=failures.get(i) or skipped[i]))
            continue
        r = merge(collected[i], mode)
        rows.append(ResultRow(art.target, art.precision, artifact=rel, size_bytes=artifact_size(art.path), batch=batch, mode=mode,
                              threads=cfg.threads, latency_ms=r.get("latency_ms"), throughput_ips=r.get("throughput_ips"),
                              peak_memory_mb=r.get("peak_rss_mb"), samples_ms=r.get("samples_ms"),
                              details={**r.get("details", {}), "load_seconds": r.get("load_seconds"),
                                       "requests": r.get("requests"), "rounds": r["rounds"], "load_1min": r["load_1min"], "cpus": r["cpus"],
                                       "latency_method": plan.describe(),
                                       **{k: r[k] for k in ("throughput_rounds", "throughput_spread_pct") if k in r}},
                              kernel=r.get("details", {}).get("kernel"), **item.accuracy, **row_columns(r)))
    _warn_other_cpu(report)
    if report:
        against_export(rows, Report.from_dict(report).results)
    return rows, report


def against_export(rows: list[ResultRow], export: list[ResultRow]) -> None:
    """Each batch-1 latency speed-up measured here against the one the export recorded for the same
    artifact, into ``details["vs_export"]`` with one line for the terminal: they agree when their
    intervals overlap; when they do not, one of them is noise and the line says which, rather than
    leaving two contradicting figures side by side."""
    from ..report.table import ran_on, speedup_of

    export = [r for r in export if not ran_on(r)]
    for row in rows:
        here = speedup_of(rows, row) if row.batch == 1 and row.mode == "latency" else None
        then_row = next((r for r in export if (r.target, r.precision) == (row.target, row.precision)), None)
        then = speedup_of(export, then_row) if here and then_row else None
        if then is None:
            continue
        name = f"{row.target} {row.precision} vs fp32"
        agrees = here.agrees(then)
        if then_row.threads != row.threads:
            line = (f"{name}: {here.text()} here with {row.threads or 'default'} threads, {then.text()} in the export "
                    f"with {then_row.threads or 'default'}: not comparable")
        elif agrees:
            line = f"{name}: {here.text()} here agrees with the export's {then.text()} within their intervals"
        elif agrees is None:
            once = "this bench" if here.low is None else "the export"
            line = (f"{name}: {here.text()} here, {then.text()} in the export; {once} timed one round, so whether "
                    "they agree cannot be told" + ("" if here.low is None else ": this bench's figure stands"))
        else:
            line = f"{name}: {here.text()} here, {then.text()} in the export: " + _noise(here, then, row, then_row)
        row.details["vs_export"] = {"export": then.to_dict(), "here": here.to_dict(), "agrees": agrees, "note": line}


def _noise(here, then, row: ResultRow, then_row: ResultRow) -> str:
    """Why two interleaved measurements of one speed-up disagree beyond both intervals, and which to keep."""
    loads = [max(r.details.get("load_1min") or [0.0]) for r in (then_row, row)]
    busy = f"the 1-min load average reached {loads[0]:.1f} during the export and {loads[1]:.1f} during this bench"
    if here.half_width_pct <= then.half_width_pct:
        return (f"they disagree beyond both intervals, so the machine's load changed between the runs ({busy}); "
                f"the export's figure is the noisier (+-{then.half_width_pct:.0f}% against +-{here.half_width_pct:.0f}%) "
                "and is noise here: this bench's figure stands")
    return (f"they disagree beyond both intervals, so the machine's load changed between the runs ({busy}); this "
            f"bench is the noisier (+-{here.half_width_pct:.0f}% against +-{then.half_width_pct:.0f}%): run it again "
            "on a quieter machine, or with more --rounds")


def row_columns(block: dict) -> dict:
    """The row columns a self-timing engine's block adds (GPU compute, H2D, D2H, enqueue, engine
    batch, telemetry): only names ResultRow has, so a block cannot set anything else."""
    fields = set(ResultRow.__dataclass_fields__)
    return {k: v for k, v in (block.get("row") or {}).items() if k in fields}


def _warn_other_cpu(report: dict | None) -> None:
    """The accuracy columns come from the export: say so when it ran on another CPU class."""
    import warnings

    from ..errors import PortabilityWarning
    from ..host.machine import cpu_class

    measured = ((report or {}).get("machine") or {}).get("cpu") or {}
    if measured.get("class") and measured["class"] != cpu_class():
        warnings.warn(f"the accuracy columns were measured on {measured.get('model')} ({measured['class']}); this CPU is "
                      f"{cpu_class()}: run `edgeresnet eval BUNDLE` here for this CPU's INT8 drop", PortabilityWarning)
