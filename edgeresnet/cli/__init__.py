"""The typer app: one small module per command."""

from __future__ import annotations

from typing import Annotated

import typer

from . import common
from .bench import bench
from .build import build
from .demo import demo
from .doctor import doctor
from .evaluate import eval_cmd
from .export import export
from .models import models
from .predict import predict
from .report import report
from .train import train
from .verify import verify

app = typer.Typer(
    name="edgeresnet",
    help="ResNet -> folded, calibrated INT8 engines for TensorRT, OpenVINO and ONNX Runtime, "
    "with the FP32-vs-INT8 accuracy drop and latency of each.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False) -> None:
    common.DEBUG["on"] = debug


app.command()(train)
app.command("eval")(eval_cmd)
app.command()(doctor)
app.command()(models)
app.command()(export)
app.command()(build)
app.command()(bench)
app.command()(predict)
app.command()(report)
app.command()(demo)
app.command()(verify)
