"""`edgeresnet bench`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..bench.latency import PLAN
from .common import HostOpt, RemotePythonOpt, SshConfigOpt, command, engines_help, err, int_list, out, threads_option


def device_rows(export_dir: Path) -> list:
    """The bench rows `edgeresnet report` merged from devices into bench.json: a bench here
    replaces this machine's rows only (a malformed bench.json is replaced whole, as before)."""
    from ..errors import InputError
    from ..bundle.publish import read_bench
    from ..report.table import ran_on

    try:
        return [r for r in read_bench(export_dir)[0] if ran_on(r)]
    except InputError:
        return []


def _names(text: str | None) -> tuple[str, ...] | None:
    return tuple(v.strip() for v in text.split(",") if v.strip()) if text else None


@command
def bench(
    source: Annotated[Path, typer.Argument(help="An export directory (every artifact in its report) or one model file (.onnx, .xml, .engine).")],
    batch: Annotated[str, typer.Option(help="Batch sizes to sweep, comma-separated.")] = "1",
    mode: Annotated[str, typer.Option(help="latency (one request at a time), throughput (several in flight: OpenVINO's THROUGHPUT hint, parallel ORT requests), or both: latency,throughput.")] = "latency",
    target: Annotated[str | None, typer.Option(help=engines_help("Only these engines, comma-separated"))] = None,
    precision: Annotated[str | None, typer.Option(help="Only these precisions (fp32, bf16, fp16, int8).")] = None,
    threads: Annotated[int | None, threads_option("CPU threads per engine (default: the runtime's own choice).")] = None,
    warmup: Annotated[int, typer.Option(help="Untimed runs before timing.")] = 10,
    min_runs: Annotated[int, typer.Option(help="Timed runs per block: at least this many ...")] = PLAN.min_runs,
    min_seconds: Annotated[float | None, typer.Option(help=f"... and at least this long (default: {PLAN.min_seconds:g} s a latency block, {PLAN.throughput_seconds:g} s a throughput block).", show_default=False)] = None,
    rounds: Annotated[int | None, typer.Option(help=f"Rounds of blocks, interleaved (each round times every artifact once); the median round is kept, the spread and each speed-up's interval reported. Default: {PLAN.min_rounds}, more while a speed-up's interval is wider than +-{PLAN.target_pct:g}% (up to {PLAN.max_rounds}, {PLAN.budget_seconds:g} s), as the export times its table.", show_default=False)] = None,
    requests: Annotated[int | None, typer.Option(help="Requests in flight in throughput mode (default: OpenVINO's optimum, 2 for ORT).")] = None,
    device: Annotated[str, typer.Option(help="OpenVINO device.")] = "CPU",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write {machine, results} to this file.")] = None,
    host: HostOpt = None,
    ssh_config: SshConfigOpt = None,
    remote_python: RemotePythonOpt = "python3",
) -> None:
    """Time every engine like trtexec and benchmark_app: warm-up, then runs until both a minimum
    count and duration; p50/p90/p99/mean/min/max with the sample count, throughput, peak memory.
    Each engine and batch runs in its own process per round, and rounds go round-robin over them;
    the speed-ups carry their interval, and each is checked against the export's.

    Example: edgeresnet bench exports/default --batch 1,8,32 --threads 2

    On a device over SSH: edgeresnet bench exports/default --host jetson
    """
    from .common import remote_host

    remote = remote_host(host, ssh_config, remote_python)
    if remote is not None:
        from .common import local_only

        local_only(remote, **{"--mode": (mode, "latency"), "--warmup": (warmup, 10), "--min-runs": (min_runs, 100),
                              "--requests": (requests, None), "--device": (device, "CPU"), "--json": (json_out, None)})
        given = {"--target": target, "--precision": precision, "--threads": threads, "--rounds": rounds,
                 "--time-seconds": min_seconds}
        return bench_on_host(source, remote, batch, {k: str(v) for k, v in given.items() if v is not None})
    from ..bench.run import BenchConfig

    cfg = BenchConfig(source=source, targets=_names(target), precisions=_names(precision), batches=int_list(batch, "--batch"),
                      modes=_names(mode) or ("latency",), threads=threads, warmup=warmup, min_runs=min_runs,
                      min_seconds=min_seconds, rounds=rounds, requests=requests, device=device)
    _bench_here(cfg, json_out)


def _bench_here(cfg, json_out: Path | None) -> None:
    """Time here, show the table and notes, write --json, update the bundle's reports."""
    from ..bench.run import bench as run
    from ..core.outdir import atomic_write
    from ..errors import InputError
    from ..backends.installed import describe
    from ..report import bench_table

    rows, report = run(cfg)
    machine = describe()
    payload = {"machine": machine, "results": [r.to_dict() for r in rows]}
    out.print(bench_table(rows, f"bench: {cfg.source}"))
    for r in rows:
        if r.status != "ok":
            out.print(f"{r.target} {r.precision} batch {r.batch} {r.status}: {r.reason}", style="yellow", markup=False)
    for r in rows:
        vs = r.details.get("vs_export")
        if vs:
            out.print(vs["note"], style=None if vs["agrees"] else "yellow", markup=False, soft_wrap=True)
    if json_out:
        atomic_write(json_out, lambda p: p.write_text(json.dumps(payload, indent=1)))
        out.print(f"wrote {json_out}", markup=False)
    if report is not None:
        _update_reports(cfg.source, report, rows, machine, json_out)
    if not any(r.status == "ok" for r in rows):
        first = next((r for r in rows if r.status == "failed"), rows[0])
        raise InputError(f"nothing could be benchmarked: {first.target} {first.precision}: {first.reason}",
                         hint="see the reasons above")


def _update_reports(source: Path, report: dict, rows: list, machine: dict, json_out: Path | None) -> None:
    """bench.json, report.md and report.html with these rows (report.json stays as the export
    wrote it); a read-only bundle is a warning, the results are already shown."""
    from ..report import Report
    from ..bundle.publish import publish

    try:
        written = publish(source, Report.from_dict(report), rows + device_rows(source), machine,
                          rewrite_report=False)
        out.print(f"wrote {', '.join(str(p) for p in written)}", markup=False)
    except OSError as exc:  # a bundle on a read-only mount can still be timed
        err.print(f"warning: could not update the reports in {source} ({exc.strerror or exc}); the results are "
                  "above" + (f" and in {json_out}" if json_out else ": pass --json FILE to keep them"),
                  style="yellow", markup=False, soft_wrap=True)


def bench_on_host(source: Path, host, batch: str, options: dict[str, str]) -> None:
    """`bench DIR --host ALIAS`: device.py bench there (each engine in its own process, rounds
    interleaved; --min-seconds is its --time-seconds per round), its rows merged into bench.json."""
    from ..remote.commands import rows_action
    from .common import say
    from .report import show_devices

    args = ["--batch", ",".join(map(str, int_list(batch, "--batch")))]
    merged = rows_action(source, host, "bench", args + [w for kv in options.items() for w in kv], say)
    show_devices(merged.report, merged.bench, f"bench on {host.alias}", device=host.alias)
    out.print(f"merged the rows of {host.alias} into {merged.root}/bench.json, report.md, report.html", markup=False)
