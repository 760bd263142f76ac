"""`edgeresnet build`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .common import batch_range as parse_batch_range
from .common import command, out


@command
def build(
    export_dir: Annotated[Path, typer.Argument(help="An export directory made with --target trt (it holds trt/).")],
    eval_spec: Annotated[str | None, typer.Option("--eval", help="Evaluation data spec (default: the one the export used).")] = None,
    eval_limit: Annotated[int | None, typer.Option(help="Evaluate on the first N test images only.")] = None,
    batch_range: Annotated[str | None, typer.Option(help="Override the bundle's min,opt,max batch.")] = None,
    dla_core: Annotated[int | None, typer.Option(help="Build for this DLA core (Jetson), GPU fallback on.")] = None,
) -> None:
    """On the Jetson or GPU host: build TensorRT engines (int8, fp16, fp32) from an export's
    bundle, warn about layers left in float or reformats, and add trt rows to its report.

    Example (after `edgeresnet export model.pt --target trt --prepare-only --out exp` elsewhere):
    edgeresnet build exp
    """
    from ..build import build_on_device
    from ..report import terminal_table

    br = parse_batch_range(batch_range) if batch_range else None
    report = build_on_device(export_dir, eval_spec, eval_limit, br, dla_core)
    out.print(terminal_table(report))
    for row in report.results:
        for warning in row.details.get("warnings", []):
            out.print(escape(f"warning: {row.target} {row.precision}: {warning}"), style="yellow")
    out.print(f"updated {export_dir}/report.json")
