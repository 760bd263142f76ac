"""`edgeresnet eval`."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from ..errors import InputError
from .common import command, out


@command
def eval_cmd(
    model: Annotated[str, typer.Argument(help="Checkpoint (.pt/.pth/.safetensors) or `default` (the shipped model).")],
    data: Annotated[str, typer.Option(help="Data spec: fashion-mnist[:DIR], default, cifar10:DIR, npz:FILE or an ImageFolder directory.")] = "fashion-mnist",
    split: Annotated[str, typer.Option(help="Split to score: test, val or train.")] = "test",
    arch: Annotated[str | None, typer.Option(help="Architecture of a plain state_dict (torchvision checkpoints).")] = None,
    limit: Annotated[int | None, typer.Option(help="Score only the first N images.")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 256,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: all cores).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (top1, top5, images, per_class, ...).")] = False,
) -> None:
    """Score a model on a data split: top-1, top-5 and per-class accuracy.

    Example: edgeresnet eval default --data fashion-mnist --split test --json
    """
    import os

    import numpy as np

    from ..checkpoint import load_checkpoint
    from ..data import load_split
    from ..errors import require
    from ..evaluate import evaluate, torch_predictor

    torch = require("torch", "torch")
    torch.set_num_threads(threads or os.cpu_count() or 1)
    ckpt = load_checkpoint(model, arch=arch)
    dataset = load_split(data, split)
    if len(dataset.classes) != ckpt.meta.num_classes:
        raise InputError(f"{model} has {ckpt.meta.num_classes} classes but {data} has {len(dataset.classes)}",
                         hint="evaluate on the data the model was trained for")
    indices = np.arange(len(dataset) if limit is None else min(limit, len(dataset)))
    acc = evaluate(torch_predictor(ckpt.model), dataset, ckpt.meta.preprocess, indices, batch_size)
    result = {"model": str(ckpt.path), "arch": ckpt.meta.arch, "data": dataset.source, "split": split,
              **acc.to_dict()}
    if as_json:
        print(json.dumps(result))
        return
    table = Table(title=f"{ckpt.meta.arch} on {dataset.source}")
    table.add_column("class")
    table.add_column("top-1", justify="right")
    for name, value in acc.per_class.items():
        table.add_row(name, f"{value:.2%}")
    out.print(table)
    out.print(f"top-1 [bold]{acc.top1:.2%}[/]  top-5 {acc.top5:.2%}  on {acc.images} images")
