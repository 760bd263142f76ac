"""`edgeresnet doctor`."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .common import command, out

CORE_EXTRAS = {"torch": "torch", "onnx": "torch"}  # the engines' own come from the registry


@command
def doctor(as_json: Annotated[bool, typer.Option("--json", help="Print the facts as one JSON object.")] = False,
           root: Annotated[str, typer.Option(hidden=True, help="Read the Jetson's files under this root.")] = "/",
           ) -> None:
    """What this machine can run: Python, torch / ONNX Runtime / OpenVINO / TensorRT, the CPU's
    INT8-relevant ISA (AVX2, AVX-512 VNNI, AMX, ARM dot-product) and the GPUs; on a Jetson, its
    L4T and JetPack, the TensorRT line they ship and how that TensorRT installs (apt or pip)."""
    from ..backends.installed import describe
    from ..calibrate import native

    from ..backends import backends, get_backend, names
    from ..backends.registry import library_extras

    facts = describe()
    board = next(((cls.libraries, f) for cls in backends() for f in [cls.board_facts(root)] if f), ((), None))
    board_libraries, jetson = board
    if jetson is not None:
        facts["jetson"] = jetson
    kernels = {}
    for name in names():
        kernel, meaning = get_backend(name).int8_kernel()
        kernels[name] = {"kernel": kernel or None, "meaning": meaning}
    facts["int8_kernels"] = kernels
    facts["calibration_histogram"] = native.status()
    if as_json:
        print(json.dumps(facts, indent=2))
        return
    table = Table(title="edgeresnet doctor", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("python", facts["python"])
    table.add_row("os", facts["os"])
    for name, version in facts["libraries"].items():
        extra = {**CORE_EXTRAS, **library_extras()}.get(name)
        install = f"pip install 'edgeresnet[{extra}]'" if extra else None
        if name in board_libraries:  # a Jetson's TensorRT comes with JetPack (5/6: apt, never pip)
            install = jetson["install"]
        hint = "  [dim]" + escape(f"({install})") + "[/]" if install and not version else ""
        table.add_row(name, f"[green]{version}[/]" if version else f"[yellow]absent[/]{hint}")
    cpu = facts["cpu"]
    table.add_row("cpu", f"{cpu['model']} ({cpu['arch']}, {cpu['cores']} cores)")
    table.add_row("isa", ", ".join(cpu["isa"]) or "none of the INT8-relevant extensions")
    exact = cpu["class"] in ("x86-amx", "x86-vnni", "arm-i8mm", "arm-dot")
    table.add_row("cpu class", cpu["class"] if exact else f"[yellow]{cpu['class']}[/]: no int8 dot-product "
                  "instructions, INT8 gains are smaller (about 2x, not 3-4x)")
    for name, k in kernels.items():
        table.add_row(f"{name} int8", escape(f"{k['kernel']}: {k['meaning']}" if k["kernel"] else k["meaning"]))
    table.add_row("calibration histogram", escape(facts["calibration_histogram"]))
    for label, value in runtime_rows(facts):
        table.add_row(label, escape(value))
    if jetson is not None:
        add_jetson_rows(table, jetson)
    gpus = facts["gpus"]
    table.add_row("gpus", "; ".join(g["name"] for g in gpus) if gpus else "none found (TensorRT builds need an NVIDIA GPU)")
    out.print(table)


# The machine's own facts; every other key of describe() is an engine's runtime fact.
MACHINE_FACTS = ("python", "os", "cpu", "libraries", "gpus", "jetson", "int8_kernels", "calibration_histogram")


def runtime_rows(facts: dict) -> list[tuple[str, str]]:
    """(label, text) of every engine's runtime facts in ``facts`` (Backend.runtime_facts, labelled
    by runtime_labels or the key itself): a list joined with commas, a string (why its import failed) as it is."""
    from ..backends import backends

    labels = {k: v for cls in backends() for k, v in cls.runtime_labels().items()}
    return [(labels.get(key, key.replace("_", " ")), ", ".join(map(str, value)) if isinstance(value, list) else str(value))
            for key, value in facts.items() if key not in MACHINE_FACTS]


def add_jetson_rows(table: Table, j: dict) -> None:
    """The Jetson's own facts: board, L4T -> JetPack -> TensorRT line, install path, DLA, cuda-python pin."""
    table.add_row("jetson", escape(f"{j['model'] or 'unknown board'}, L4T {j['l4t'] or 'unknown'} "
                                   f"({j['l4t_source']}), JetPack {j['jetpack'] or 'unknown'}"))
    if not j["supported"]:
        table.add_row("jetson trt", f"[yellow]{escape(j['why'])}[/]")
        return
    table.add_row("jetson trt", escape(f"JetPack ships TensorRT {j['tensorrt']}: line {j['trt_line']} "
                                       f"({j['trt_label']}); CUDA {j['cuda']}, Ubuntu {j['ubuntu']}, Python {j['python']}"))
    installed = j.get("installed_tensorrt")
    if installed:
        same = j.get("installed_line") == j["trt_line"]
        table.add_row("installed trt", (f"[green]{installed}[/]" if same else f"[yellow]{installed}[/]")
                      + escape(f" (line {j.get('installed_line') or 'none'})"))
    table.add_row("jetson install", escape(f"{j['install_path']}: {j['install']}"))
    table.add_row("jetson dla", escape(j["dla"]))
    table.add_row("cuda-python", escape(j["cuda_python"]))
    table.add_row("device file", escape(f"python3 trt/trt_device.py build|eval|bench runs on the system python3 "
                                        f"({j['python']}) with numpy and TensorRT only"))
