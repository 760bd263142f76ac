"""`edgeresnet verify`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .common import HostOpt, RemotePythonOpt, SshConfigOpt, command, engines_help, err, json_text, out, threads_option


def _names(text: str | None) -> tuple[str, ...] | None:
    return tuple(v.strip() for v in text.split(",") if v.strip()) if text else None


@command
def verify(
    export_dir: Annotated[Path, typer.Argument(help="An export directory (made by `edgeresnet export` with an evaluation set).")],
    target: Annotated[str | None, typer.Option(help=engines_help("Only these engines, comma-separated"))] = None,
    precision: Annotated[str | None, typer.Option(help="Only these precisions, comma-separated (fp32, bf16, fp16, int8).")] = None,
    time_seconds: Annotated[float, typer.Option(help="Timed seconds per engine and round (3 rounds, interleaved, each engine in its own process); 0: no timing and no choice.")] = 0.3,
    threads: Annotated[int | None, threads_option("CPU threads per engine (default: the runtime's own choice).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print this device's verify entry as JSON.")] = False,
    host: HostOpt = None,
    ssh_config: SshConfigOpt = None,
    remote_python: RemotePythonOpt = "python3",
) -> None:
    """Run every engine this machine can run on the bundle's golden set and judge it against the
    export's own figures (a binomial tolerance for the sample size); time those that pass and
    record the fastest as this device's choice in verify.json. Exit 1 when an engine failed.

    Example: edgeresnet verify exports/default

    On a device over SSH (its entry lands in verify.json here, "via": "ssh jetson"):
    edgeresnet verify exports/default --host jetson
    """
    from ..bundle import export_root
    from ..bundle.verify import verify_bundle
    from ..errors import EdgeResNetError
    from ..core.limits import check_flag
    from .common import remote_host, say

    check_flag("--time-seconds", time_seconds, least=0, most=60)
    root = export_root(export_dir)
    remote = remote_host(host, ssh_config, remote_python)
    if remote is None:
        entry = verify_bundle(root, targets=_names(target), precisions=_names(precision), time_seconds=time_seconds,
                              threads=threads)
    else:
        from ..remote.commands import verify_on_host

        given = {"--target": target, "--precision": precision, "--time-seconds": time_seconds, "--threads": threads}
        entry = verify_on_host(root, remote, [w for k, v in given.items() if v is not None for w in (k, str(v))], say)
    if as_json:
        print(json_text(entry))
    else:
        show(entry, root, "here" if remote is None else f"on {remote.alias}")
    failed = [f"{r['target']} {r['precision']}" for r in entry["engines"] if r["status"] == "failed"]
    if failed:
        where = f"on {remote.alias}" if remote is not None else "on this device"
        raise EdgeResNetError(f"verification failed {where} for {', '.join(failed)}",
                              hint="those engines are never chosen here; see the reasons above (or in verify.json)")


def show(entry: dict, root: Path, place: str = "here") -> None:
    """The verify table (one row per engine), then the flags and the choice."""
    from rich import box

    table = Table(title=escape(f"verify: {root} on {entry['device']['device_key']}"), box=box.SIMPLE_HEAD,
                  padding=0, pad_edge=False)
    for name in ("engine", "prec", "top-1%", "agree%", "max|Δlogit|", "verdict", "p50 ms", "chosen", "kernel path"):
        table.add_column(name, justify="right" if name.endswith(("%", "ms", "|")) else "left",
                         no_wrap=name != "kernel path", overflow="fold")
    chosen = entry.get("chosen") or {}
    for r in entry["engines"]:
        lat = r.get("latency_ms") or {}
        verdict = {"passed": "[green]passed[/]", "failed": "[bold red]FAILED[/]"}.get(r["status"], "[dim]skipped[/]")
        is_chosen = (chosen.get("target"), chosen.get("precision")) == (r["target"], r["precision"])
        table.add_row(
            escape(r["target"]) + " ", escape(r["precision"]),
            "-" if r.get("top1") is None else f" {r['top1'] * 100:.2f}",
            "-" if r.get("agreement") is None else f" {r['agreement'] * 100:.2f}",
            "-" if r.get("max_abs_logit_diff") is None else f" {r['max_abs_logit_diff']:.3g}", " " + verdict,
            "-" if lat.get("p50") is None else f" {lat['p50']:.3f} ±{lat['spread_pct']:.0f}%",
            "   [bold]*[/]" if is_chosen else "", " " + escape(r.get("path") or "-"))
    out.print(table)
    golden = entry["golden"]
    out.print(f"golden set: {golden['images']} images; tolerance: {escape(_rule(entry))}")
    for r in entry["engines"]:
        if r["status"] != "passed" and r.get("reason"):
            out.print(f"{escape(r['target'])} {escape(r['precision'])} {r['status']}: {escape(r['reason'])}",
                      style="yellow" if r["status"] == "skipped" else "red", soft_wrap=True)
    for flag in entry["flags"]:
        err.print(f"[yellow]flag:[/] {escape(flag)}", soft_wrap=True)
    if chosen:
        out.print(f"* chosen {escape(place)}: [bold]{escape(chosen['target'])} {escape(chosen['precision'])}[/] "
                  f"(the fastest that passed, p50 {chosen['latency_ms']:.3f} ms), recorded in verify.json",
                  soft_wrap=True)
    elif any(r["status"] == "passed" for r in entry["engines"]):
        out.print("no engine chosen (no timing: pass --time-seconds above 0)", soft_wrap=True)


def _rule(entry: dict) -> str:
    """The tolerance in one line: the rule, then each judged engine's limits (verify.json states
    each engine's rule in full)."""
    judged = [r for r in entry["engines"] if r.get("tolerance")]
    if not judged:
        return "none judged"
    limits = ", ".join(f"{r['target']} {r['precision']} <= {r['tolerance']['max_disagreements']}"
                       + ("" if r["tolerance"]["max_errors"] is None else f" ({r['tolerance']['max_errors']})")
                       for r in judged)
    return (f"disagreements with FP32 (top-1 errors) within the 99.9% quantile of Binomial(n={entry['golden']['images']}, "
            f"q), q the export's own rate for the artifact, at least 0.5/n: {limits}")
