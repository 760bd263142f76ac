"""Everything of the TensorRT path that needs no GPU: the calibration cache in TensorRT's own
text format, the trtexec command lines, the engine-inspector checks, and the bundle that
`edgeresnet build` turns into engines on the Jetson or GPU host."""

from __future__ import annotations

import json
import shlex
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, UsageError

from .tensorrt_recipes import DEFAULT_LINE, RECIPES, Recipe, datatype, implicit_int8_command, plan, recipe_for
from .tensorrt_recipes import trtexec_command, version_code

BUNDLE = "trt"
DEFAULT_TRT_VERSION = RECIPES[DEFAULT_LINE].default_version  # JetPack 6.1/6.2


trt_version_code = version_code  # the name this module had before the recipes (tests and callers use it)


def calibration_cache(scales: dict[str, float], version: str = DEFAULT_TRT_VERSION) -> str:
    """``TRT-<version>-EntropyCalibration2`` then ``tensor: <big-endian float32 bits of the scale>``."""
    lines = [f"TRT-{trt_version_code(version)}-EntropyCalibration2"]
    lines += [f"{name}: {struct.pack('>f', float(scale)).hex()}" for name, scale in scales.items()]
    return "\n".join(lines) + "\n"


def parse_calibration_cache(text: str) -> tuple[str, dict[str, float]]:
    """(header, tensor -> scale) from a cache file's text."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("TRT-"):
        raise ValueError("not a TensorRT calibration cache (no TRT-... header)")
    scales = {}
    for ln in lines[1:]:
        name, _, hexval = ln.rpartition(": ")
        scales[name] = struct.unpack(">f", bytes.fromhex(hexval.strip()))[0]
    return lines[0], scales


def trtexec_commands(input_name: str, chw: tuple[int, int, int], batch_range: tuple[int, int, int],
                     dla_core: int | None = None, recipe: Recipe | None = None) -> dict[str, list[str]]:
    """trtexec invocations for the int8 (explicit QDQ), fp16 and fp32 engines of one TensorRT line."""
    recipe = recipe or RECIPES[DEFAULT_LINE]
    return {p: trtexec_command(recipe, p, input_name, chw, batch_range, dla_core) for p in ("int8", "fp16", "fp32")}


def layer_warnings(info: dict, precision: str, float_layers: tuple[str, ...] = (),
                   recipe: Recipe | None = None) -> list[str]:
    """Findings from the engine inspector's JSON (ProfilingVerbosity DETAILED), by layer name:
    convs or residual Adds running in float in an INT8 engine, and reformat layers. Layers
    named in ``float_layers`` (ONNX node names, kept in float by --max-drop) are expected."""
    findings = []
    for layer in info.get("Layers", []):
        if not isinstance(layer, dict):
            continue  # LAYER_NAMES_ONLY verbosity gives bare names
        name, kind = str(layer.get("Name", "")), str(layer.get("LayerType", ""))
        inputs = layer.get("Inputs", [])
        if kind == "Reformat" or "Reformatting CopyNode" in name:
            findings.append(f"reformat layer {name!r}: a layout/precision conversion between layers costs time")
            continue
        if precision != "int8" or any(f in name for f in float_layers):
            continue
        recipe = recipe or RECIPES[DEFAULT_LINE]
        types = [datatype(i, recipe) for i in inputs if isinstance(i, dict)]
        float_in = [t for t in types if "Int8" not in t]
        if "Convolution" in kind and float_in:
            findings.append(f"conv {name!r} runs in float ({float_in[0]}): missing Q/DQ on its input or weights")
        elif kind in ("ElementWise", "PointWise", "PointWiseV2") and "Add" in name:
            findings.append(f"residual Add {name!r} runs as its own {kind} layer, not fused into a conv: "
                            "quantize its identity input")
    return findings


def write_bundle(work: Path, *, input_name: str, chw: tuple[int, int, int], batch_range: tuple[int, int, int],
                 dla_core: int | None, scales: dict[str, float], eval_spec: str | None, qdq_name: str,
                 trt_version: str | None = None, fallback_layers: tuple[str, ...] = (),
                 float_nodes: tuple[str, ...] = ()) -> Path:
    """Write ``work/trt/``: what `edgeresnet build` (or trtexec) needs on the device, for the
    TensorRT line ``trt_version`` names (default: 10.3, JetPack 6)."""
    recipe, version = recipe_for(trt_version)
    build_plan = plan(recipe, version, input_name=input_name, chw=chw, batch_range=batch_range, dla_core=dla_core,
                      float_layers=float_nodes)
    bundle = work / BUNDLE
    bundle.mkdir(exist_ok=True)
    (work / qdq_name).replace(bundle / "model.int8.trt.qdq.onnx")
    (bundle / "calibration.cache").write_text(calibration_cache(scales, version))
    if recipe.fp16_onnx:
        write_fp16_sources(bundle)
    cmds = trtexec_commands(input_name, chw, batch_range, dla_core, recipe)
    script = ["#!/usr/bin/env bash", f"# Build the engines with trtexec ({recipe.label}, written for {version}) from this folder.",
              "set -euo pipefail", 'cd "$(dirname "$0")"']
    script += [shlex.join(c) for c in cmds.values()]
    implicit = implicit_int8_command(recipe, input_name, chw, batch_range[1], float_nodes)
    if implicit:
        script += ["# Implicit INT8 from the calibration cache (its header must name the TensorRT that reads it):",
                   "# " + shlex.join(implicit)]
    else:
        script += [f"# {recipe.label} has no implicit INT8 (no --int8/--calib): the QDQ engine above is the INT8 one."]
    (bundle / "trtexec.sh").write_text("\n".join(script) + "\n")
    (bundle / "trtexec.sh").chmod(0o755)
    (bundle / "build.json").write_text(json.dumps({
        "input_name": input_name, "input_chw": list(chw), "batch_range": list(batch_range), "dla_core": dla_core,
        "eval_spec": eval_spec, "int8_onnx": "model.int8.trt.qdq.onnx", "fp32_onnx": "../model.fp32.onnx",
        "calibration_cache": "calibration.cache", "fallback_layers": list(fallback_layers),
        "float_nodes": list(float_nodes), "trt_line": recipe.line, "trt_version": version, "plan": build_plan,
        "trtexec": {k: shlex.join(v) for k, v in cmds.items()}}, indent=1))
    (bundle / "README.md").write_text(readme(recipe, version, shlex.join(cmds["int8"])))
    return bundle


MAX_BATCH = 65_536  # as --batch takes
MAX_DLA_CORE = 15  # Orin has 2; bounded so a hand-made number is one line, not a TensorRT error


@dataclass(frozen=True)
class BuildSpec:
    """build.json as `build` reads it. Every field it uses has its type and bounds here, so an
    edited file is one InputError naming the field; the file names are relative to ``trt/``
    and are resolved by the bundle reader (``bundle.Bundle``), never opened as written."""

    input_name: str
    input_chw: tuple[int, int, int]
    batch_range: tuple[int, int, int]
    dla_core: int | None
    eval_spec: str | None
    int8_onnx: str
    fp32_onnx: str
    calibration_cache: str
    fallback_layers: tuple[str, ...]
    float_nodes: tuple[str, ...]
    trt_version: str | None

    FILES = ("int8_onnx", "fp32_onnx", "calibration_cache")

    @classmethod
    def from_json(cls, data, where: str) -> "BuildSpec":
        from ..limits import MAX_SIDE

        if not isinstance(data, dict):
            raise InputError(f"{where} is not a JSON object", hint=SPEC_HINT)
        get = _SpecFields(data, where)
        batch = get.ints("batch_range", 1, MAX_BATCH)
        if not batch[0] <= batch[1] <= batch[2]:
            raise InputError(f"{where}: 'batch_range' is not min <= opt <= max, got {list(batch)}", hint=SPEC_HINT)
        spec = cls(get.text("input_name"), get.ints("input_chw", 1, MAX_SIDE), batch,
                   get.integer("dla_core", 0, MAX_DLA_CORE), get.text("eval_spec", optional=True),
                   get.text("int8_onnx"), get.text("fp32_onnx"), get.text("calibration_cache"),
                   get.names("fallback_layers"), get.names("float_nodes"), get.text("trt_version", optional=True))
        if spec.trt_version is not None:
            try:
                recipe_for(spec.trt_version)
            except UsageError:
                raise InputError(f"{where}: 'trt_version' {spec.trt_version!r} names no TensorRT line this edgeresnet "
                                 "knows", hint=SPEC_HINT) from None
        return spec


SPEC_HINT = "re-export with --target trt; build.json must not be edited by hand"


class _SpecFields:
    """Typed reads of build.json's fields, each refusal naming the field and the type it wants."""

    def __init__(self, data: dict, where: str) -> None:
        self.data, self.where = data, where

    def _bad(self, key: str, want: str) -> InputError:
        return InputError(f"{self.where}: '{key}' is not {want} (got {self.data.get(key)!r:.60})", hint=SPEC_HINT)

    def text(self, key: str, optional: bool = False) -> str | None:
        value = self.data.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value or len(value) > 4096:
            raise self._bad(key, "a string" + (" or null" if optional else ""))
        return value

    def integer(self, key: str, least: int, most: int) -> int | None:
        value = self.data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most):
            raise self._bad(key, f"an integer from {least} to {most} or null")
        return value

    def ints(self, key: str, least: int, most: int) -> tuple[int, int, int]:
        value = self.data.get(key)
        if not isinstance(value, list) or len(value) != 3 or \
                not all(isinstance(v, int) and not isinstance(v, bool) and least <= v <= most for v in value):
            raise self._bad(key, f"a list of 3 integers from {least} to {most:,}")
        return tuple(value)

    def names(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or len(value) > 100_000 or not all(isinstance(v, str) for v in value):
            raise self._bad(key, "a list of layer names")
        return tuple(value)


FP16_SOURCES = {"../model.fp32.onnx": "model.fp16.onnx", "model.int8.trt.qdq.onnx": "model.int8.trt.fp16.qdq.onnx"}


def write_fp16_sources(bundle: Path) -> None:
    """TensorRT 11: FP16-typed copies of the FP32 ONNX and of the QDQ ONNX (tensorrt_fp16)."""
    import onnx

    from .tensorrt_fp16 import to_fp16

    for source, copy in FP16_SOURCES.items():
        onnx.save(to_fp16(onnx.load(str(bundle / source))), str(bundle / copy))


def readme(recipe: Recipe, version: str, int8_line: str) -> str:
    if recipe.implicit_int8:
        cache = (f"- `calibration.cache`: the same scales in TensorRT's calibration-cache format, header "
                 f"`TRT-{version_code(version)}`, for implicit INT8 (`trtexec --int8 --calib=calibration.cache`). TensorRT "
                 "skips a cache whose header names another version; `edgeresnet build` rewrites the header for the "
                 "TensorRT it finds.")
    else:
        cache = (f"- {recipe.label} has no calibrator and no precision flags: every network is strongly typed. "
                 "`model.fp16.onnx` and `model.int8.trt.fp16.qdq.onnx` are the FP16-typed copies (float32 I/O) that "
                 "give the FP16 engine and the float layers of the INT8 engine their FP16. `calibration.cache` is "
                 "kept for reference only.")
    return README.format(label=recipe.label, version=version, int8=int8_line, cache=cache)


README = """# TensorRT bundle ({label}, written for {version})

Built by `edgeresnet export --target trt` on a machine without TensorRT. Copy the whole
export directory to the Jetson or GPU host, then either:

```bash
edgeresnet build EXPORT_DIR --dry-run   # the plan: engines, flags, profile, DLA, float layers
edgeresnet build EXPORT_DIR             # engines (int8, fp16, fp32), layer checks, accuracy and latency rows
edgeresnet bench EXPORT_DIR             # latency of every engine (the .engine files included)
```

or with trtexec, from this folder: `./trtexec.sh`, e.g.

```bash
{int8}
```

- `model.int8.trt.qdq.onnx`: explicit quantization (Q/DQ), symmetric int8, zero point 0, Q/DQ on
  every conv's input and weights and on the identity input of every residual Add, so TensorRT
  fuses each Add into a conv; no calibrator is needed.
{cache}
- The fp32 engine is built with TF32 off (`--noTF32`): on Ampere and Orin TF32 is on by default,
  and an "fp32" engine would otherwise run TF32 convolutions.
- `build.json`: input name and shape, the batch range (min/opt/max), the evaluation data,
  `fallback_layers` (layers `--max-drop` kept in float: no Q/DQ, so they run in FP16 and the
  engine checks expect them) and `plan`, what `build` will do per engine on this TensorRT line.
- With `--dla-core`, the INT8 and FP16 engines get a static profile (min = opt = max = the opt
  batch, as DLA requires); the fp32 engine is built for the GPU (DLA has no FP32).

Without edgeresnet on the device, `trt_device.py` (in this folder; Python >= 3.8, numpy and
TensorRT's Python module, CUDA through libcudart) does the same from the export directory:
`python3 trt/trt_device.py build`, then `eval` (top-1 on `eval.npz`) and `bench`. It has not
run on a GPU here: it is checked against NVIDIA's binding names and a test double.

Engines are specific to the GPU model and TensorRT version: always build on the device.
"""
