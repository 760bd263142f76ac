"""`edgeresnet build`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .common import HostOpt, RemotePythonOpt, SshConfigOpt, command, out
from .engine_flags import device_flags


@command
@device_flags
def build(
    export_dir: Annotated[Path, typer.Argument(help="An export directory made with --target trt (it holds trt/), or its trt/ folder.")],
    eval_spec: Annotated[str | None, typer.Option("--eval", help="Evaluation data spec (default: the one the export used).")] = None,
    eval_limit: Annotated[int | None, typer.Option(help="Evaluate on the first N test images only.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan (engines, precisions, flags, profile, DLA, expected float layers, trtexec lines) and build nothing; needs no TensorRT.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="With --dry-run: the plan as JSON.")] = False,
    host: HostOpt = None,
    ssh_config: SshConfigOpt = None,
    remote_python: RemotePythonOpt = "python3",
    engine_options: dict | None = None,
) -> None:
    """On the Jetson or GPU host: build TensorRT engines (int8, fp16, fp32) from an export's
    bundle, warn about layers left in float or reformats, and add trt rows to its report.

    Example (after `edgeresnet export model.pt --target trt --prepare-only --out exp` elsewhere):
    edgeresnet build exp

    From the workstation, on the Jetson over SSH (its rows come back into exp's report):
    edgeresnet build exp --host jetson
    """
    from ..bundle import export_root
    from ..export.device_build import build_on_device
    from ..report import terminal_table
    from .common import remote_host

    remote = remote_host(host, ssh_config, remote_python)
    options = device_options(engine_options or {}, remote, dry_run, json_out, eval_spec=eval_spec, eval_limit=eval_limit)
    if remote is not None:
        return build_on_host(export_dir, remote)
    if dry_run:
        print_plan(export_dir, options, json_out)
        return
    # the engine whose device bundle the export holds (registry: capabilities.device_build)
    report = build_on_device(export_dir, eval_spec, eval_limit, options)
    out.print(terminal_table(report))
    for row in report.results:
        for warning in row.details.get("warnings", []):
            out.print(escape(f"warning: {row.target} {row.precision}: {warning}"), style="yellow")
    out.print(f"updated {export_root(export_dir)}/report.json", markup=False)


def device_options(given: dict, remote, dry_run: bool, json_out: bool, **local) -> dict:
    """The engine flags' values for the device build (parsed; None: the bundle's), after the
    checks every engine shares: none applies with --host (the device plans with its own
    TensorRT), and those that say what to plan for (``plan_only``) need --dry-run."""
    from ..backends.registry import device_option_specs
    from ..errors import UsageError
    from .common import local_only

    specs = device_option_specs()
    if remote is not None:
        local_only(remote, **{"--eval": (local["eval_spec"], None), "--eval-limit": (local["eval_limit"], None),
                              "--dry-run": (dry_run, False), "--json": (json_out, False),
                              **{s.flag: (given.get(s.key), None) for s in specs}})
        return {}
    plan_only = [s.flag for s in specs if s.plan_only and given.get(s.key) is not None] + (["--json"] if json_out else [])
    if plan_only and not dry_run:
        raise UsageError(f"{' and '.join(plan_only)} {'goes' if len(plan_only) == 1 else 'go'} with --dry-run",
                         hint="add --dry-run")
    return {s.key: s.device_value(given.get(s.key)) for s in specs}


def build_on_host(export_dir: Path, host) -> None:
    """`build DIR --host ALIAS`: the bundle's trt/trt_device.py build on the device (its TensorRT,
    the plan the export wrote for that line), the build rows merged into report.json here."""
    from ..remote.commands import build_on_host as run
    from .common import say
    from .report import show_devices

    merged = run(export_dir, host, [], say)
    show_devices(merged.report, [], f"TensorRT engines built on {host.alias}", device=host.alias)
    out.print(f"merged the build rows of {host.alias} into {merged.root}/report.json, report.md, report.html "
              "(the engines stay on the device)", markup=False)


def print_plan(export_dir: Path, options: dict, as_json: bool) -> None:
    from rich.table import Table

    from ..export.device_build import plan_on_device
    from .common import json_text

    plan = plan_on_device(export_dir, options)
    if as_json:
        out.print(json_text(plan), markup=False, highlight=False, soft_wrap=True)
        return
    out.print(f"plan for {plan['trt_label']} {plan['trt_version']} ({plan['version_source']}); "
              f"bundle written for {plan['bundle_written_for']}", markup=False)
    table = Table("engine", "onnx", "typing", "flags", "TF32", "profile (min/opt/max)", "device", "INT8 from",
                  "float layers in")
    for name, e in plan["engines"].items():
        p = e["profile"]
        table.add_row(name, e["onnx"], "strong" if e["strongly_typed"] else "weak", ",".join(e["builder_flags"]) or "-",
                      "on" if e["tf32"] else "off", f"{p['min']}/{p['opt']}/{p['max']}", e["device"],
                      {"none": "-"}.get(e["quantization"], e["quantization"]), e["float_layers_run_in"])
    out.print(table)
    if plan.get("dla_note"):
        out.print(f"DLA: {plan['dla_note']}; the GPU engines only", markup=False)
    for name, e in plan["engines"].items():
        if e["expected_float_layers"]:
            out.print(f"expected float layers in the {name} engine: {', '.join(e['expected_float_layers'])}",
                      markup=False)
    if not any(e["expected_float_layers"] for e in plan["engines"].values()):
        out.print("expected float layers in the int8 engine: none", markup=False)
    if plan["cache_header"]:
        out.print(f"calibration cache header: {plan['cache_header']}", markup=False)
    for name, e in plan["engines"].items():
        out.print(e["trtexec"], markup=False, highlight=False, soft_wrap=True)
    out.print("implicit INT8: " + (plan["implicit_int8"] or "not on this TensorRT line"), markup=False,
              highlight=False, soft_wrap=True)
