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
    result = _score_locally(model, data, split, arch, limit, batch_size, threads, target, precision, strict,
                            (mean, std, size, resize, interpolation, preprocess_file))
    if as_json:
        print(json_text(result))
        return
    _show(result)


def _score_locally(model: str, data: str, split: str, arch: str | None, limit: int | None, batch_size: int,
                   threads: int | None, target: str | None, precision: str, strict: bool, pre_flags: tuple) -> dict:
    """Parse-side checks, then the library scores the bundle or the checkpoint (bench/scoring.py)."""
    from pathlib import Path

    from ..bench.scoring import bundle_scorer, checkpoint_scorer, refuse_overrides, score_model
    from ..core.limits import check_flag
    from ..data import load_split
    from ..data.checks import warn_skipped

    check_flag("--limit", limit, least=1, integer=True)
    check_flag("--batch-size", batch_size, least=1, most=65_536, integer=True)
    overrides = preprocess_overrides(*pre_flags)
    dataset = load_split(data, split, strict)
    dataset.require_labels("eval")
    warn_skipped(dataset, "evaluation")
    if Path(model).is_dir():
        from ..runtime import load

        refuse_overrides(model, overrides)
        scorer = bundle_scorer(model, load(model, target=target, precision=precision, threads=threads, verified=False))
    else:
        scorer = checkpoint_scorer(model, arch, threads, overrides)
    return score_model(model, scorer, dataset, data, split, limit, batch_size)


def _show(result: dict) -> None:
    """The per-class table, the top-1/top-5 line and, for a bundle, its drop against the export."""
    table = Table(title=escape(f"{result['arch']} on {result['data']}"))
    table.add_column("class")
    table.add_column("top-1", justify="right")
    for name, value in result["per_class"].items():
        table.add_row(escape(printable(name)), f"{value:.2%}")
    out.print(table)
    out.print(f"top-1 [bold]{result['top1']:.2%}[/]  top-5 {result['top5']:.2%}  on {result['images']} images")
    if "drop_vs_report_fp32_pp" in result:
        ref = result["reference_fp32"]
        caveat = "" if result["same_images_as_report"] else \
            f" [yellow](the export scored {ref['images']} images of {escape(ref['source'])}: pass the same data and --limit for an exact drop)[/]"
        out.print(f"drop vs the export's {ref['target']} fp32 row ({ref['top1']:.2%}): "
                  f"[bold]{result['drop_vs_report_fp32_pp']:+.2f} pp[/] on this CPU "
                  f"({result['cpu']['class']}, kernel {result.get('kernel')}){caveat}")


def eval_on_host(model: str, host, target: str | None, precision: str | None, threads: int | None, as_json: bool) -> None:
    """`eval DIR --host ALIAS`: device.py eval there (every runnable engine on the bundle's golden
    set, its verdict against the export's figures), the rows merged into report.json here."""
    from pathlib import Path

    from ..remote.commands import rows_action
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
