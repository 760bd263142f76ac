"""`edgeresnet bench`: every artifact of an export dir (or one model file), each engine and
batch size in its own process and block, repeated in rounds; results in the report.json row
schema with the machine they ran on."""

from __future__ import annotations

import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .backends import expand_targets, get_backend
from .backends.base import Artifact, artifact_size
from .backends.registry import for_suffix, suffixes_help
from .bench_worker import block_spec, spawn
from .errors import InputError, UsageError
from .limits import check_flag
from .progress import progress
from .report import ResultRow

@dataclass(frozen=True)
class BenchConfig:
    source: Path
    targets: tuple[str, ...] | None = None
    precisions: tuple[str, ...] | None = None
    batches: tuple[int, ...] = (1,)
    modes: tuple[str, ...] = ("latency",)
    threads: int | None = None
    warmup: int = 10
    min_runs: int = 100
    min_seconds: float = 2.0
    rounds: int = 1
    requests: int | None = None
    device: str = "CPU"


@dataclass
class Item:
    artifact: Artifact
    accuracy: dict  # the export's accuracy fields for this artifact, if any


def _file_precision(path: Path) -> str:
    name = path.name.lower()
    for p in ("int8", "fp16", "bf16", "fp32"):
        if p in name:
            return p
    head = path.read_bytes()[:4_000_000]
    return "int8" if any(m in head for m in (b"QuantizeLinear", b"QLinearConv", b"FakeQuantize", b'element_type="i8"')) else "fp32"


def discover(source: Path) -> tuple[list[Item], dict | None]:
    """The artifacts to time: an export dir's report rows, or one model file."""
    if source.is_dir():
        from .bundle import Bundle
        from .bundle.report import read_report

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
        from .onnxfile import check_onnx_file

        check_onnx_file(source)
    return [Item(Artifact(target, _file_precision(source), source), {})], None


def _merge(rounds: list[dict], mode: str) -> dict:
    """The round with the median p50 (latency) or median throughput, plus the spread."""
    if mode == "throughput":
        values = [r["throughput_ips"] for r in rounds]
        pick = sorted(rounds, key=lambda r: r["throughput_ips"])[len(rounds) // 2]
        return {**pick, "throughput_rounds": values}
    p50s = [r["latency_ms"]["p50"] for r in rounds]
    pick = sorted(rounds, key=lambda r: r["latency_ms"]["p50"])[len(rounds) // 2]
    pick = {**pick, "latency_ms": {**pick["latency_ms"], "p50_rounds": p50s}}
    if len(p50s) > 1:
        pick["latency_ms"]["p50_spread_pct"] = 100 * (max(p50s) - min(p50s)) / statistics.median(p50s)
    return pick


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
    collected: dict[int, list[dict]] = {i: [] for i in range(len(blocks))}
    failures: dict[int, str] = {}
    skipped: dict[int, str] = {}
    reasons = {t: get_backend(t, device=cfg.device).unavailable_reason() for t in {i.artifact.target for i in items}}
    for i, (item, _, _) in enumerate(blocks):
        if reasons[item.artifact.target]:
            skipped[i] = reasons[item.artifact.target]
    with progress() as bar:
        task = bar.add_task("bench", total=len(blocks) * cfg.rounds)
        for _ in range(cfg.rounds):
            for i, (item, batch, mode) in enumerate(blocks):
                art = item.artifact
                bar.update(task, description=f"{art.target} {art.precision} b{batch} {mode}")
                spec = block_spec(art, batch=batch, chw=chw, threads=cfg.threads, mode=mode, warmup=cfg.warmup,
                                  min_runs=cfg.min_runs, min_seconds=cfg.min_seconds, requests=cfg.requests,
                                  device=cfg.device)
                if i not in failures and i not in skipped:
                    try:
                        collected[i].append(spawn(spec, timeout=600))
                    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
                        failures[i] = str(exc)
                bar.advance(task)
    rows = []
    for i, (item, batch, mode) in enumerate(blocks):
        art = item.artifact
        rel = str(art.path.relative_to(cfg.source)) if cfg.source.is_dir() else art.path.name
        if i in failures or i in skipped:
            rows.append(ResultRow(art.target, art.precision, artifact=rel, batch=batch, mode=mode,
                                  status="failed" if i in failures else "skipped", reason=failures.get(i) or skipped[i]))
            continue
        r = _merge(collected[i], mode)
        rows.append(ResultRow(art.target, art.precision, artifact=rel, size_bytes=artifact_size(art.path), batch=batch, mode=mode,
                              threads=cfg.threads, latency_ms=r.get("latency_ms"), throughput_ips=r.get("throughput_ips"),
                              peak_memory_mb=r.get("peak_rss_mb"), samples_ms=r.get("samples_ms"),
                              details={**r.get("details", {}), "load_seconds": r.get("load_seconds"),
                                       "requests": r.get("requests"), "rounds": cfg.rounds,
                                       **({"throughput_rounds": r["throughput_rounds"]} if "throughput_rounds" in r else {})},
                              kernel=r.get("details", {}).get("kernel"), **item.accuracy, **row_columns(r)))
    _warn_other_cpu(report)
    return rows, report


def row_columns(block: dict) -> dict:
    """The row columns a self-timing engine's block adds (GPU compute, H2D, D2H, enqueue, engine
    batch, telemetry): only names ResultRow has, so a block cannot set anything else."""
    fields = set(ResultRow.__dataclass_fields__)
    return {k: v for k, v in (block.get("row") or {}).items() if k in fields}


def _warn_other_cpu(report: dict | None) -> None:
    """The accuracy columns come from the export: say so when it ran on another CPU class."""
    import warnings

    from .errors import PortabilityWarning
    from .machine import cpu_class

    measured = ((report or {}).get("machine") or {}).get("cpu") or {}
    if measured.get("class") and measured["class"] != cpu_class():
        warnings.warn(f"the accuracy columns were measured on {measured.get('model')} ({measured['class']}); this CPU is "
                      f"{cpu_class()}: run `edgeresnet eval BUNDLE` here for this CPU's INT8 drop", PortabilityWarning)
