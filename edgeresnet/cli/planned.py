"""Commands whose issues have not landed yet: they exist, explain themselves, and refuse."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import EdgeResNetError
from .common import command

PLANNED = {
    "export": ("fold BN, calibrate once and build INT8 engines for ONNX Runtime, OpenVINO and TensorRT",
               "edgeresnet export model.pt --int8 --target ort --out exports/model"),
    "bench": ("time every engine of an export (p50/p90/p99, throughput, batch sweeps) like trtexec",
              "edgeresnet bench exports/model --batch 1,8,32"),
    "predict": ("classify images with an exported bundle, torch-free",
                "edgeresnet predict exports/model shoe.png --top-k 5"),
    "demo": ("the shipped default model end to end: export to every engine here, bench, report",
             "edgeresnet demo --out demo-out"),
}


def planned(name: str):
    what, example = PLANNED[name]

    @command
    def stub(args: Annotated[list[str] | None, typer.Argument(help="(not used yet)")] = None) -> None:
        raise EdgeResNetError(f"`edgeresnet {name}` is not available in this version yet",
                              hint=f"it will {what}; e.g. `{example}`")

    stub.__doc__ = f"(Not yet available.) Will {what}.\n\nExample, once available: {example}"
    return stub
