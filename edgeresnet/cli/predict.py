"""`edgeresnet predict`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .common import command, engines_help, err, json_text, out, printable, threads_option


@command
def predict(
    bundle: Annotated[Path, typer.Argument(help="An export directory (it holds edgeresnet.json).")],
    images: Annotated[list[str], typer.Argument(help="Image files, folders or glob patterns ('imgs/*.png').")],
    target: Annotated[str | None, typer.Option(help=engines_help(
        "Engine (default: the fastest that passed `edgeresnet verify` on this device; before any "
        "verification, the first the bundle has and this machine runs)"))] = None,
    precision: Annotated[str | None, typer.Option(help="fp32, fp16, bf16 or int8 (default: as --target; "
                                                       "int8 before any verification).")] = None,
    top_k: Annotated[int, typer.Option(help="Classes listed per image.")] = 5,
    threads: Annotated[int | None, threads_option("CPU threads.")] = None,
    strict: Annotated[bool, typer.Option(help="Stop at the first unreadable image instead of skipping it with a count.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"predictions": [{image, class_index, class_name, score, top_k}]}.')] = False,
) -> None:
    """Classify images with an exported bundle: numpy, Pillow and one runtime, no torch.

    The engine is the fastest that passed `edgeresnet verify BUNDLE` on this device, unless
    --target/--precision say otherwise; an engine that failed verification runs only when both
    name it.

    Example: edgeresnet predict exports/default shoe.png bags/ 'more/*.jpg' --top-k 3
    """
    from ..data.sources import readable_images
    from ..errors import InputError
    from ..core.progress import progress
    from ..runtime import expand_images, load

    from ..core.limits import MAX_CLASSES, check_flag

    check_flag("--top-k", top_k, least=1, most=MAX_CLASSES, integer=True)
    model = load(bundle, target=target, precision=precision, threads=threads)
    paths, bad = readable_images(expand_images(images), strict)
    for path, reason in bad:
        err.print(f"skipped: {reason}", markup=False, soft_wrap=True)
    if bad:
        err.print(f"warning: skipped {len(bad)} unreadable image(s) of {len(paths) + len(bad)}", markup=False)
    if not paths:
        raise InputError("none of the images can be decoded", hint="check the files")
    preds = []
    with progress(enabled=None if len(paths) > 64 else False) as bar:
        task = bar.add_task("predict", total=len(paths))
        for i in range(0, len(paths), 64):
            chunk = paths[i:i + 64]
            preds += model.predict(chunk, top_k=top_k, names=[str(p) for p in chunk])
            bar.update(task, advance=len(chunk))
    if as_json:
        print(json_text({"target": model.target, "precision": model.precision, "kernel": model.kernel,
                         "chosen_by": model.chosen_by,
                         "predictions": [p.to_dict() for p in preds],
                         "skipped": [{"image": str(p), "reason": r} for p, r in bad]}))
        return
    table = Table(title=f"{bundle} ({model.target} {model.precision})")
    for col in ("image", "class", "score", f"top-{top_k}"):
        table.add_column(col)
    for p in preds:
        rest = ", ".join(f"{t['class_name']} {t['score']:.2f}" for t in p.top_k[1:])
        table.add_row(escape(printable(p.image)), escape(printable(p.class_name)), f"{p.score:.3f}",
                      escape(printable(rest)))
    out.print(table)
