"""Everything of the TensorRT path that needs no GPU: the calibration cache in TensorRT's own
text format, the layers the implicit (DLA) INT8 engine keeps in FP16, the trtexec command lines,
the engine-inspector checks, and the bundle that `edgeresnet build` or the device file
(``trt/trt_device.py``) turns into engines on the Jetson or GPU host."""

from __future__ import annotations

import json
import shlex
import struct
from dataclasses import dataclass
from pathlib import Path

from ...errors import InputError, UsageError

from .recipes import DEFAULT_LINE, LINES, RECIPES, Recipe, all_plans, cache_header, implicit_int8_command
from .recipes import lines_table, plan, recipe_for, trtexec_command, version_code

BUNDLE = "trt"
DEFAULT_TRT_VERSION = RECIPES[DEFAULT_LINE].default_version  # JetPack 6.1/6.2


trt_version_code = version_code  # the name this module had before the recipes (tests and callers use it)


def calibration_cache(scales: dict[str, float], version: str = DEFAULT_TRT_VERSION) -> str:
    """``TRT-<version>-EntropyCalibration2`` then ``tensor: <big-endian float32 bits of the scale>``."""
    lines = [cache_header(version)]
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


# qdq_translator.py's default ops_to_infer_adjacent_scales, less Sigmoid (whose scale is not unchanged):
# an op that moves or clips values without rescaling them gives its output its input's scale and back.
UNCHANGED_SCALE_OPS = ("Pad", "Transpose", "MaxPool", "Flatten", "Relu", "Squeeze", "Reshape")


def implicit_float_layers(graph, scales, keep_float=frozenset()) -> list[str]:
    """The ONNX nodes an implicit INT8 build (the DLA's) must keep in FP16: the consumers of every
    tensor left without a scale, after the scales are carried through ops that do not rescale
    (NVIDIA/Deep-Learning-Accelerator-SW tools/qdq-translator: ``infer_unchanged_scales`` forward and
    backward, then ``fp16_nodes`` = consumers of scale-less tensors, written as ``--layerPrecisions``).
    Tensors a float layer reads (``keep_float``, the classifier) are never given a scale."""
    inits = {i.name for i in graph.initializer}
    blocked = {i for n in graph.node if n.name in keep_float for i in n.input}
    have = set(scales)
    nodes = [n for n in graph.node if n.op_type in UNCHANGED_SCALE_OPS and n.input and n.output]
    for src_dst in ([(n.input[0], n.output[0]) for n in nodes], [(n.output[0], n.input[0]) for n in reversed(nodes)]):
        for src, dst in src_dst:
            if src in have and dst not in have and dst not in blocked and dst not in inits:
                have.add(dst)
    tensors = [i.name for i in graph.input if i.name not in inits] + [o for n in graph.node for o in n.output]
    missing = {t for t in tensors if t not in have}
    return list(dict.fromkeys(n.name for n in graph.node if any(i in missing for i in n.input)))


def trtexec_commands(input_name: str, chw: tuple[int, int, int], batch_range: tuple[int, int, int],
                     dla_core: int | None = None, recipe: Recipe | None = None,
                     dla_float_layers: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """trtexec invocations for every engine of one TensorRT line: int8 (explicit Q/DQ), fp16, fp32 on
    the GPU, and with a DLA core the int8-dla (implicit, from the cache) and fp16-dla engines."""
    recipe = recipe or RECIPES[DEFAULT_LINE]
    p = plan(recipe, recipe.default_version, input_name=input_name, chw=chw, batch_range=batch_range,
             dla_core=dla_core, dla_float_layers=dla_float_layers)
    return {name: shlex.split(e["trtexec"]) for name, e in p["engines"].items()}


def layer_warnings(info: dict, precision: str, float_layers: tuple[str, ...] = (),
                   recipe: Recipe | None = None, dla: bool = False) -> list[str]:
    """Findings from the engine inspector's JSON (ProfilingVerbosity DETAILED), by layer name
    (``trt_device.audit``, the device file's own): convs or residual Adds left in float in an INT8 engine, reformats other than
    the input quantize, DLA layers that fell back to the GPU. Layers named in ``float_layers`` (ONNX
    node names kept in float) are expected. Every line's JSON keys are read (``recipe`` is not needed)."""
    from ...ondevice.trt_device import audit  # the device file imports numpy: not at CLI start

    return audit(info, precision, float_layers, dla=dla)["warnings"]


def write_bundle(work: Path, *, input_name: str, chw: tuple[int, int, int], batch_range: tuple[int, int, int],
                 dla_core: int | None, scales: dict[str, float], eval_spec: str | None, qdq_name: str,
                 trt_version: str | None = None, fallback_layers: tuple[str, ...] = (),
                 float_nodes: tuple[str, ...] = (), dla_float_layers: tuple[str, ...] | None = None) -> Path:
    """Write ``work/trt/``: what `edgeresnet build` (or trtexec, or the device file) needs on the
    device, for the TensorRT line ``trt_version`` names (default: 10.3, JetPack 6.1/6.2) and, in
    build.json's ``plans``, for every other supported line."""
    recipe, version = recipe_for(trt_version)
    dla_float = tuple(float_nodes if dla_float_layers is None else dla_float_layers)
    kw = dict(input_name=input_name, chw=chw, batch_range=batch_range, float_layers=float_nodes,
              dla_float_layers=dla_float)
    build_plan = plan(recipe, version, dla_core=dla_core, **kw)
    bundle = work / BUNDLE
    bundle.mkdir(exist_ok=True)
    (work / qdq_name).replace(bundle / "model.int8.trt.qdq.onnx")
    (bundle / "calibration.cache").write_text(calibration_cache(scales, version))
    fp16_missing = fp16_sources_for_every_line(bundle, required=recipe.fp16_onnx)
    (bundle / "trtexec.sh").write_text(trtexec_script(recipe, version, build_plan))
    (bundle / "trtexec.sh").chmod(0o755)
    (bundle / "build.json").write_text(json.dumps({
        "input_name": input_name, "input_chw": list(chw), "batch_range": list(batch_range), "dla_core": dla_core,
        "eval_spec": eval_spec, "int8_onnx": "model.int8.trt.qdq.onnx", "fp32_onnx": "../model.fp32.onnx",
        "calibration_cache": "calibration.cache", "fallback_layers": list(fallback_layers),
        "float_nodes": list(float_nodes), "dla_float_layers": list(dla_float), "trt_line": recipe.line,
        "trt_version": version, "plan": build_plan,
        "plans": all_plans(dla_core=dla_core, fp16_sources=fp16_missing, **kw), "lines": lines_table(),
        "lines_rule": "a tensorrt.__version__ v belongs to a line when min_version <= v and, if max_version is "
                      "set, v <= max_version on the parts max_version names (integers, 10.3.0.30 -> 10.3.0)",
        "cache_header_rule": "first line of calibration.cache: TRT-<code>-EntropyCalibration2, code = 1000*M + "
                             "100*m + p for 8.x, 10000*M + 100*m + p from 10.x; TensorRT skips a cache whose code "
                             "is not its own, so rewrite the header for the installed version",
        "trtexec": {k: e["trtexec"] for k, e in build_plan["engines"].items()}}, indent=1))
    (bundle / "README.md").write_text(readme(recipe, version, build_plan, dla_core))
    return bundle


def trtexec_script(recipe: Recipe, version: str, build_plan: dict) -> str:
    lines = ["#!/usr/bin/env bash", f"# Build the engines with trtexec ({recipe.label}, written for {version}) from "
             "this folder. build.json's \"plans\" holds the lines for the other TensorRT versions.",
             "set -euo pipefail", 'cd "$(dirname "$0")"']
    for name, engine in build_plan["engines"].items():
        how = "no quantization" if engine["quantization"] == "none" else f"{engine['quantization']} quantization"
        lines += [f"# {name}: {engine['device']}, {how}", engine["trtexec"]]
    if build_plan["implicit_int8"]:
        lines += ["# Implicit INT8 on the GPU from the calibration cache (its header must name the TensorRT "
                  "that reads it), for comparison:", "# " + build_plan["implicit_int8"]]
    else:
        lines += [f"# {recipe.label} has no implicit INT8 (no --int8/--calib): the Q/DQ engine is the INT8 one."]
    return "\n".join(lines) + "\n"


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
    dla_float_layers: tuple[str, ...] = ()  # absent from bundles written before the DLA recipe

    FILES = ("int8_onnx", "fp32_onnx", "calibration_cache")

    @classmethod
    def from_json(cls, data, where: str) -> "BuildSpec":
        from ...core.limits import MAX_SIDE

        if not isinstance(data, dict):
            raise InputError(f"{where} is not a JSON object", hint=SPEC_HINT)
        get = _SpecFields(data, where)
        batch = get.ints("batch_range", 1, MAX_BATCH)
        if not batch[0] <= batch[1] <= batch[2]:
            raise InputError(f"{where}: 'batch_range' is not min <= opt <= max, got {list(batch)}", hint=SPEC_HINT)
        floats, dla_floats = get.names("float_nodes"), get.names("dla_float_layers", default=None)
        spec = cls(get.text("input_name"), get.ints("input_chw", 1, MAX_SIDE), batch,
                   get.integer("dla_core", 0, MAX_DLA_CORE), get.text("eval_spec", optional=True),
                   get.text("int8_onnx"), get.text("fp32_onnx"), get.text("calibration_cache"),
                   get.names("fallback_layers"), floats, get.text("trt_version", optional=True),
                   floats if dla_floats is None else dla_floats)
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

    def names(self, key: str, default=()) -> tuple[str, ...] | None:
        if key not in self.data and default is None:
            return None
        value = self.data.get(key, [])
        if not isinstance(value, list) or len(value) > 100_000 or not all(isinstance(v, str) for v in value):
            raise self._bad(key, "a list of layer names")
        return tuple(value)


FP16_SOURCES = {"../model.fp32.onnx": "model.fp16.onnx", "model.int8.trt.qdq.onnx": "model.int8.trt.fp16.qdq.onnx"}


def write_fp16_sources(bundle: Path) -> None:
    """TensorRT 11: FP16-typed copies of the FP32 ONNX and of the QDQ ONNX (tensorrt_fp16)."""
    import onnx

    from .fp16 import to_fp16

    for source, copy in FP16_SOURCES.items():
        onnx.save(to_fp16(onnx.load(str(bundle / source))), str(bundle / copy))


def fp16_sources_for_every_line(bundle: Path, required: bool) -> str | None:
    """Write the FP16 copies whatever the bundle's line, so a device with TensorRT 11 finds its plan
    executable. A model FP16 cannot hold is refused for an 11.x bundle; for another line the 11.x
    plans say why they cannot run, and the reason is returned."""
    try:
        write_fp16_sources(bundle)
    except InputError as exc:
        if required:
            raise
        for copy in FP16_SOURCES.values():
            (bundle / copy).unlink(missing_ok=True)
        return f"no FP16-typed ONNX in this bundle: {exc.message}"
    return None


def readme(recipe: Recipe, version: str, build_plan: dict, dla_core: int | None) -> str:
    """trt/README.md: what is here, how to build it on each JetPack with nothing installed, and what
    was verified where."""
    if recipe.implicit_int8:
        cache = (f"`calibration.cache` holds the same scales in TensorRT's calibration-cache format (header "
                 f"`{cache_header(version)}`): the DLA INT8 engine is built from it with the FP32 ONNX "
                 "(implicit INT8, NVIDIA's DLA recipe); TensorRT skips a cache whose header names another version, "
                 "so the device file rewrites the header for the TensorRT it finds.")
    else:
        cache = (f"{recipe.label} has no calibrator and no precision flags: every network is strongly typed. "
                 "`model.fp16.onnx` and `model.int8.trt.fp16.qdq.onnx` are the FP16-typed copies (float32 I/O) "
                 "that give the FP16 engine and the float layers of the INT8 engine their FP16; on 11.4.1+ the DLA "
                 "engines read them too. `calibration.cache` is kept for the 8.x/10.x plans.")
    dla = ("" if dla_core is None else
           f"\nWith DLA core {dla_core} the bundle also plans `int8-dla` and `fp16-dla` engines: static batch "
           f"{build_plan['engines']['fp32']['profile']['opt']} (DLA has no dynamic shapes), GPU fallback on, "
           "fp32 stays on the GPU. On 8.x/10.x the DLA INT8 engine is the FP32 ONNX + `calibration.cache` + "
           "`--int8 --fp16`, with FP16 for the layers left without a scale (`--layerPrecisions`), as NVIDIA's "
           "qdq-translator writes it; no DLA engine is built from the Q/DQ file there.\n"
           if "int8-dla" in build_plan["engines"] else
           f"\nDLA core {dla_core} was asked for, but {recipe.label} builds no DLA engine; build.json's plans for "
           "the Jetson lines (8.4, 8.5, 8.6, 10.3, 11.4) have them.\n")
    top = {r.line: r.max_version + (".x" if r.max_version.count(".") < 2 else "") for r in LINES}
    lines = "\n".join(f"| `{r.line}` | {r.min_version} - {top[r.line]} | {r.where} |" for r in LINES)
    return README.format(label=recipe.label, version=version, cache=cache, dla=dla, lines=lines,
                         int8=build_plan["engines"]["int8"]["trtexec"])


README = """# TensorRT bundle ({label}, written for {version})

Written by `edgeresnet export --target trt --prepare-only` on a machine without TensorRT. Engines
are specific to the GPU and the TensorRT version, so they are built here, on the device.

## On the device: nothing to install

`trt_device.py` needs only Python >= 3.8, numpy and the device's own TensorRT (on JetPack 5 and 6
that is JetPack's `python3-libnvinfer`; CUDA is reached through `libcudart` with ctypes, so
cuda-python is optional). From the export directory:

```bash
python3 trt/trt_device.py build              # engines for the TensorRT it finds, their layer lists
python3 trt/trt_device.py eval               # accuracy of every engine
python3 trt/trt_device.py bench              # latency, GPU compute, power and clocks
```

Where edgeresnet itself is installed (x86 hosts, JetPack 7), `edgeresnet build EXPORT_DIR` does
the same, and `edgeresnet build EXPORT_DIR --dry-run` prints the plan anywhere, without TensorRT.

Each writes its rows to `trt/device.<command>.json`. Bring `trt/` back to the workstation and run
`edgeresnet report EXPORT_DIR` there: the rows, tagged with this device, go into the export's
report.json, report.md/html and bench.json, and the layer lists are audited. The device file reads `build.json`'s
`plans`: one build plan per TensorRT line, chosen by `tensorrt.__version__` through `lines`, so
it has no recipe logic of its own:

| line | versions | where it is shipped, how it installs |
|---|---|---|
{lines}

{cache}
{dla}
## Or with trtexec

`./trtexec.sh` holds the lines for {label}; every plan in `build.json` carries its own
`trtexec` line per engine. The INT8 engine on the GPU, for example:

```bash
{int8}
```

- `model.int8.trt.qdq.onnx`: explicit quantization (Q/DQ), symmetric int8, zero point 0, Q/DQ on
  every conv's input and weights and on the identity input of every residual Add, so TensorRT
  fuses each Add into a conv; it is the GPU's INT8 engine.
- The fp32 engine is built with TF32 off (`--noTF32`): on Ampere and Orin TF32 is on by default.
- After each build the engine inspector's JSON (`model.<engine>.layers.json`) is audited: convs
  left in float, residual Adds not fused, reformats other than the input quantize, and for DLA
  engines how many layers ran on the DLA and which fell back to the GPU.

Engines are specific to the GPU model and TensorRT version: always build on the device.

## What was verified, and where

Nothing here has run on a Jetson or built an engine: no machine this project runs on has
TensorRT or a Jetson. The recipes (versions, flags, the DLA line, the install path per JetPack)
are checked against NVIDIA's documentation and sources, cited in
`edgeresnet/backends/tensorrt_recipes.py`; the device file runs in CI against a numpy stand-in
for `tensorrt` and `libcudart` that implements only the documented API.
"""
