"""`edgeresnet report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .common import command, out


@command
def report(
    export_dir: Annotated[Path, typer.Argument(help="An export directory made with --target trt (it holds trt/), or its trt/ folder.")],
    rows: Annotated[list[Path] | None, typer.Argument(help="Rows files the device wrote (default: trt/device.build.json, device.eval.json and device.bench.json, those present).", show_default=False)] = None,
    device: Annotated[str | None, typer.Option(help="Name the device these rows ran on (default: the host name the rows file records). Rows of the same device, TensorRT, engine, batch and mode replace earlier ones; another name adds a device.", show_default=False)] = None,
) -> None:
    """Back on the workstation: merge the rows the device wrote (`python3 trt/trt_device.py
    build`, `eval`, `bench` on the Jetson) into the export's report.json, report.md, report.html,
    bench.json and edgeresnet.json, each tagged with the device it ran on, and print them: engines
    with accuracy and DLA/GPU layers, then latency (wall and GPU compute), ms per image, W,
    mJ/image, power mode, clocks locked and throttling, "n/a" with the reason where the device
    could not read them.

    Example (after the device session; without the rsync, scp trt/device.*.json back):
    rsync -a jetson:~/exports/r20/trt/ exports/r20/trt/ && edgeresnet report exports/r20
    """
    from ..bundle.device_rows import merge_device_rows, publish_merged

    merged = merge_device_rows(export_dir, rows or None, device)
    show_devices(merged.report, merged.bench, "TensorRT engines on the device")
    written = publish_merged(merged)
    read = ", ".join(str(f.path) for f in merged.files)
    out.print(f"merged {read}; wrote {', '.join(p.name for p in written)} in {merged.root}", markup=False)


def show_devices(report, bench, title: str, device: str | None = None) -> None:
    """The rows merged from devices (``device``: that one's only): engines, bench time, and the
    power and clocks table when any row has them; then the notes."""
    from ..report.render import DEVICE_LEGEND, device_notes, device_tables
    from ..report.table import DEVICE_BENCH, DEVICE_TERMINAL, device_groups, ran_on, terminal

    engines, rows = device_tables(report, bench or [])
    if device is not None:
        engines, rows = ([r for r in x if ran_on(r).get("device") == device] for x in (engines, rows))
    for group, names in device_groups(engines, bench=False):
        out.print(terminal(group, names, title))
    for group, names in device_groups(rows, bench=True):
        if names != DEVICE_BENCH:
            out.print(terminal(group, names, "bench on the device"))
            continue
        out.print(terminal(group, DEVICE_TERMINAL[0], "bench on the device: time"))
        out.print(terminal(group, DEVICE_TERMINAL[1], "bench on the device: power and clocks"))
        out.print(DEVICE_LEGEND, markup=False, style="dim")
    for note in device_notes(engines, rows):
        out.print(escape(note), style="yellow" if "warning" in note else None)
