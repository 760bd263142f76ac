"""`edgeresnet eval`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import InputError
from .common import (
    HostOpt,
    InterpOpt,
    MeanOpt,
    PreFileOpt,
    RemotePythonOpt,
    ResizeOpt,
    SizeOpt,
    SshConfigOpt,
    StdOpt,
    command,
    engines_help,
    json_text,
    out,
    preprocess_overrides,
    printable,
    threads_option,
)


@command
def eval_cmd(
    model: Annotated[str, typer.Argument(help="Checkpoint (.pt/.pth/.safetensors), `default` (the shipped model), or an export directory (torch-free).")],
    data: Annotated[str, typer.Option(help="Data spec: fashion-mnist[:DIR], default, cifar10:DIR, npz:FILE or an ImageFolder directory.")] = "fashion-mnist",
    split: Annotated[str, typer.Option(help="Split to score: test, val or train.")] = "test",
    arch: Annotated[str | None, typer.Option(help="Architecture of a plain state_dict (torchvision checkpoints).")] = None,
    limit: Annotated[int | None, typer.Option(help="Score only the first N images.")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 256,
    threads: Annotated[int | None, threads_option("CPU threads (default: all cores).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (top1, top5, images, per_class, ...).")] = False,
    target: Annotated[str | None, typer.Option(help=engines_help("Export directories: the engine"))] = None,
    precision: Annotated[str | None, typer.Option(help="Export directories: fp32, fp16, bf16 or int8 (default int8; with --host: every precision).", show_default=False)] = None,
    strict: Annotated[bool, typer.Option(help="Stop at the first unreadable image instead of skipping it with a count.")] = False,
    mean: MeanOpt = None,
    std: StdOpt = None,
    size: SizeOpt = None,
    resize: ResizeOpt = None,
    interpolation: InterpOpt = None,
    preprocess_file: PreFileOpt = None,
    host: HostOpt = None,
    ssh_config: SshConfigOpt = None,
    remote_python: RemotePythonOpt = "python3",
) -> None:
    """Score a model on a data split: top-1, top-5 and per-class accuracy.

    Example: edgeresnet eval default --data fashion-mnist --split test --json

    On a device over SSH, every engine of an export on its golden set:
    edgeresnet eval exports/default --host jetson
    """
    from .common import local_only, remote_host

    remote = remote_host(host, ssh_config, remote_python)
    if remote is not None:
        local_only(remote, **{"--data": (data, "fashion-mnist"), "--split": (split, "test"), "--arch": (arch, None),
                              "--limit": (limit, None), "--batch-size": (batch_size, 256), "--strict": (strict, False),
                              **{f"--{k}": (v, None) for k, v in (("mean", mean), ("std", std), ("size", size),
                                 ("resize", resize), ("interpolation", interpolation), ("preprocess", preprocess_file))}})
        return eval_on_host(model, remote, target, precision, threads, as_json)
    precision = precision or "int8"
    import os
    from pathlib import Path

    import numpy as np

    from ..data import load_split
    from ..bench.accuracy import evaluate
    from ..data.checks import warn_skipped

    from ..core.limits import check_flag

    check_flag("--limit", limit, least=1, integer=True)
    check_flag("--batch-size", batch_size, least=1, most=65_536, integer=True)
    overrides = preprocess_overrides(mean, std, size, resize, interpolation, preprocess_file)
    dataset = load_split(data, split, strict)
    dataset.require_labels("eval")
    warn_skipped(dataset, "evaluation")
    if Path(model).is_dir():  # an export bundle: numpy + Pillow + one runtime, no torch
        from ..runtime import load

        if overrides:
            raise InputError(f"{model} is an export bundle: its preprocessing is fixed at export",
                             hint="pass the preprocessing flags to `export`, or evaluate the checkpoint")
        bundle = load(model, target=target, precision=precision, threads=threads, verified=False)
        run, pre, classes = bundle.logits, bundle.preprocess, bundle.classes
        name, arch = f"{model} ({bundle.target} {bundle.precision})", bundle.manifest.get("arch")
    else:
        from ..models.checkpoint import load_checkpoint
        from ..errors import require
        from ..bench.accuracy import torch_predictor

        torch = require("torch", "torch")
        torch.set_num_threads(threads or os.cpu_count() or 1)
        ckpt = load_checkpoint(model, arch=arch)
        pre = ckpt.meta.preprocess.with_overrides(overrides, channels=ckpt.meta.in_channels)
        run, classes = torch_predictor(ckpt.model), ckpt.meta.classes
        name, arch = str(ckpt.path), ckpt.meta.arch
    if len(dataset.classes) != len(classes):
        raise InputError(f"{model} has {len(classes)} classes but {data} has {len(dataset.classes)}",
                         hint="evaluate on the data the model was trained for")
    indices = np.arange(len(dataset) if limit is None else min(limit, len(dataset)))
    acc = evaluate(run, dataset, pre, indices, batch_size)
    result = {"model": name, "arch": arch, "data": dataset.source, "split": split, **acc.to_dict()}
    reference = None
    if Path(model).is_dir():
        from ..host.machine import cpu

        reference = _report_fp32(Path(model), bundle.target)
        result.update(kernel=bundle.kernel, cpu=cpu())
        if reference is not None and bundle.precision != "fp32":
            same = reference["source"] == dataset.source and reference["images"] == acc.images
            result.update(reference_fp32=reference, same_images_as_report=same,
                          drop_vs_report_fp32_pp=round((reference["top1"] - acc.top1) * 100, 4))
    if as_json:
        print(json_text(result))
        return
    table = Table(title=escape(f"{arch} on {dataset.source}"))
    table.add_column("class")
    table.add_column("top-1", justify="right")
    for name, value in acc.per_class.items():
        table.add_row(escape(printable(name)), f"{value:.2%}")
    out.print(table)
    out.print(f"top-1 [bold]{acc.top1:.2%}[/]  top-5 {acc.top5:.2%}  on {acc.images} images")
    if "drop_vs_report_fp32_pp" in result:
        ref = result["reference_fp32"]
        caveat = "" if result["same_images_as_report"] else \
            f" [yellow](the export scored {ref['images']} images of {escape(ref['source'])}: pass the same data and --limit for an exact drop)[/]"
        out.print(f"drop vs the export's {bundle.target} fp32 row ({ref['top1']:.2%}): "
                  f"[bold]{result['drop_vs_report_fp32_pp']:+.2f} pp[/] on this CPU "
                  f"({result['cpu']['class']}, kernel {result.get('kernel')}){caveat}")


def _report_fp32(bundle: "Path", target: str) -> dict | None:
    """The export's FP32 row for ``target`` (its top-1 and the images it was scored on)."""
    from ..bundle import Bundle
    from ..bundle.report import read_report

    try:
        report = read_report(Bundle(bundle))  # typed, and never a FIFO read that blocks for good
        row = next(r for r in report["results"] if r["target"] == target and r["precision"] == "fp32" and r.get("top1") is not None)
        ev = report["evaluation"]
        return {"target": target, "top1": float(row["top1"]), "images": int(ev["images"]), "source": str(ev["source"])}
    except (InputError, OSError, ValueError, KeyError, TypeError, StopIteration):
        return None


def eval_on_host(model: str, host, target: str | None, precision: str | None, threads: int | None, as_json: bool) -> None:
    """`eval DIR --host ALIAS`: device.py eval there (every runnable engine on the bundle's golden
    set, its verdict against the export's figures), the rows merged into report.json here."""
    from pathlib import Path

    from ..host.commands import rows_action
    from ..report.table import ran_on
    from .common import say
    from .report import show_devices

    if not Path(model).is_dir():
        raise InputError(f"{model} is not an export directory; --host runs an export's bundle on the device",
                         hint="pass the folder `edgeresnet export` wrote")
    given = {"--target": target, "--precision": precision, "--threads": threads}
    merged = rows_action(Path(model), host, "eval", [w for k, v in given.items() if v is not None for w in (k, str(v))], say)
    rows = [r for r in merged.report.results if (ran_on(r) or {}).get("device") == host.alias]
    if as_json:
        print(json_text({"host": host.alias, "device": ran_on(rows[0]) if rows else None,
                         "results": [r.to_dict() for r in rows]}))
        return
    show_devices(merged.report, [], f"eval on {host.alias} (the bundle's golden set)", device=host.alias)
    for r in rows:
        if r.status != "ok":
            out.print(escape(f"{r.target} {r.precision} {r.status}: {r.reason}"), style="yellow")
    out.print(f"merged the rows of {host.alias} into {merged.root}/report.json, report.md, report.html", markup=False)
