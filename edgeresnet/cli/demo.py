"""`edgeresnet demo`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from .common import command, command_line, out, threads_option


@command
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Where the demo export goes (a previous demo there is replaced).")] = Path("edgeresnet-demo"),
    threads: Annotated[int | None, threads_option("CPU threads for every engine, in accuracy and timing alike (default: each runtime's own choice).")] = None,
) -> None:
    """The shipped default end to end: the ResNet-20 Fashion-MNIST model, calibrated on the
    shipped train-split images, exported to every engine available here, evaluated on the 10,000
    shipped test images, benchmarked, with the FP32 vs INT8 report printed and written."""
    from ..errors import InputError
    from ..bundle.manifest import NAME
    from ..export.pipeline import ExportConfig, run_export
    from ..report import terminal_table
    from .bench import bench

    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / NAME).exists():
        raise InputError(f"--out {out_dir} is not empty and holds no earlier demo", hint="pass another --out")
    start = time.perf_counter()
    cfg = ExportConfig(model="default", out=out_dir, targets=("all",), calib="default", eval="default",
                       threads=threads, force=True, command=command_line())
    report = run_export(cfg)
    out.print(terminal_table(report))
    for row in report.results:
        if row.status != "ok":
            out.print(f"{row.target} {row.precision} {row.status}: {row.reason}", style="yellow", markup=False)
    bench(out_dir, threads=threads)
    out.print(f"demo finished in {time.perf_counter() - start:.0f} s: open {out_dir}/report.html; "
              f"try `edgeresnet predict {out_dir} IMAGE`", markup=False)
