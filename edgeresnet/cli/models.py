"""`edgeresnet models`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from .common import command, out


@command
def models(
    num_classes: Annotated[int | None, typer.Option(help="Class count for the parameter column (default: each family's own: 1000 for ImageNet nets, 10 for CIFAR nets).")] = None,
) -> None:
    """List the registered architectures with depth, block type and parameter count."""
    from ..core.limits import MAX_CLASSES, check_flag
    from ..models.registry import get_arch, list_models

    check_flag("--num-classes", num_classes, least=1, most=MAX_CLASSES, integer=True)
    table = Table(title="ResNets (parameters with 3 input channels)")
    for col in ("name", "family", "block", "stages", "classes", "params"):
        table.add_column(col, justify="right" if col in ("classes", "params") else "left")
    for name in list_models():
        spec = get_arch(name)
        classes = num_classes or FAMILY_CLASSES.get(spec.family, 1000)
        table.add_row(name, spec.family + (" v2" if spec.preact else ""), spec.block,
                      "/".join(map(str, spec.layers)), str(classes), f"{_count(name, classes):,}")
    out.print(table)


FAMILY_CLASSES = {"imagenet": 1000, "cifar": 10}  # the datasets each family was designed for


def _count(name: str, num_classes: int) -> int:
    """Parameters from the architecture alone, without torch (the runtime install has none)."""
    from ..models.registry import get_arch

    spec = get_arch(name)
    expansion = 4 if spec.block == "bottleneck" else 1
    stem_c = spec.widths[0]
    total = (3 * 49 if spec.family == "imagenet" else 3 * 9) * stem_c
    total += 0 if spec.preact else 2 * stem_c
    in_c = stem_c
    for i, (planes, blocks) in enumerate(zip(spec.widths, spec.layers)):
        for b in range(blocks):
            stride = 2 if i > 0 and b == 0 else 1
            if spec.block == "basic":
                convs = [(in_c, planes, 9), (planes, planes, 9)]
            else:
                convs = [(in_c, planes, 1), (planes, planes, 9), (planes, planes * 4, 1)]
            total += sum(ci * co * k for ci, co, k in convs)
            bn_channels = [co for _, co, _ in convs] if not spec.preact else [in_c] + [co for _, co, _ in convs[:-1]]
            total += 2 * sum(bn_channels)
            out_c = planes * expansion
            if stride != 1 or in_c != out_c:
                total += in_c * out_c + (0 if spec.preact else 2 * out_c)
            in_c = out_c
    if spec.preact:
        total += 2 * in_c
    return total + in_c * num_classes + num_classes
