"""Everything of the TensorRT path that needs no GPU: the calibration cache in TensorRT's own
text format, the trtexec command lines, the engine-inspector checks, and the bundle that
`edgeresnet build` turns into engines on the Jetson or GPU host."""

from __future__ import annotations

import json
import shlex
import struct
from pathlib import Path

BUNDLE = "trt"
DEFAULT_TRT_VERSION = "10.3.0"  # JetPack 6.1/6.2


def trt_version_code(version: str) -> int:
    """TensorRT's NV_TENSORRT_VERSION number as calibration-cache headers carry it:
    8.6.1 -> 8601, 10.3.0 -> 100300 (the encoding changed with TensorRT 10)."""
    parts = [int(p) for p in (version.split(".") + ["0", "0"])[:3]]
    major, minor, patch = parts
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


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


def shape_arg(name: str, shape: tuple[int, ...]) -> str:
    return f"{name}:{'x'.join(str(d) for d in shape)}"


def trtexec_commands(input_name: str, chw: tuple[int, int, int], batch_range: tuple[int, int, int],
                     dla_core: int | None = None) -> dict[str, list[str]]:
    """trtexec invocations for the int8 (explicit QDQ), fp16 and fp32 engines, TensorRT 8.x/10.
    (TensorRT 11 has no --int8/--fp16: use --stronglyTyped there.)"""
    lo, opt, hi = batch_range
    common = [f"--minShapes={shape_arg(input_name, (lo, *chw))}", f"--optShapes={shape_arg(input_name, (opt, *chw))}",
              f"--maxShapes={shape_arg(input_name, (hi, *chw))}", "--timingCacheFile=timing.cache",
              "--profilingVerbosity=detailed", "--dumpLayerInfo"]
    if dla_core is not None:
        common += [f"--useDLACore={dla_core}", "--allowGPUFallback"]
    flags = {"int8": ["--int8", "--fp16"], "fp16": ["--fp16"], "fp32": []}
    sources = {"int8": "model.int8.trt.qdq.onnx", "fp16": "../model.fp32.onnx", "fp32": "../model.fp32.onnx"}
    return {p: ["trtexec", f"--onnx={sources[p]}", f"--saveEngine=model.{p}.engine", *flags[p], *common,
                f"--exportLayerInfo=model.{p}.layers.json"] for p in ("int8", "fp16", "fp32")}


def implicit_int8_command(input_name: str, chw: tuple[int, int, int], batch: int,
                          float_layers: tuple[str, ...] = ()) -> list[str]:
    """The older JetPacks' path: implicit INT8 from our table as a calibration cache. Layers
    kept in float get FP16 by name (their tensors are also left out of the cache)."""
    cmd = ["trtexec", "--onnx=../model.fp32.onnx", "--int8", "--fp16", "--calib=calibration.cache",
           f"--shapes={shape_arg(input_name, (batch, *chw))}", "--saveEngine=model.int8-implicit.engine"]
    if float_layers:
        cmd += ["--precisionConstraints=prefer", "--layerPrecisions=" + ",".join(f"{n}:fp16" for n in float_layers)]
    return cmd


def _dtype(entry: dict) -> str:
    return str(entry.get("Format/Datatype", entry.get("Datatype", "")))


def layer_warnings(info: dict, precision: str, float_layers: tuple[str, ...] = ()) -> list[str]:
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
        float_in = [_dtype(i) for i in inputs if "Int8" not in _dtype(i)]
        if "Convolution" in kind and float_in:
            findings.append(f"conv {name!r} runs in float ({float_in[0]}): missing Q/DQ on its input or weights")
        elif kind in ("ElementWise", "PointWise", "PointWiseV2") and "Add" in name:
            findings.append(f"residual Add {name!r} runs as its own {kind} layer, not fused into a conv: "
                            "quantize its identity input")
    return findings


def write_bundle(work: Path, *, input_name: str, chw: tuple[int, int, int], batch_range: tuple[int, int, int],
                 dla_core: int | None, scales: dict[str, float], eval_spec: str | None, qdq_name: str,
                 trt_version: str = DEFAULT_TRT_VERSION, fallback_layers: tuple[str, ...] = (),
                 float_nodes: tuple[str, ...] = ()) -> Path:
    """Write ``work/trt/``: what `edgeresnet build` (or trtexec) needs on the device."""
    bundle = work / BUNDLE
    bundle.mkdir(exist_ok=True)
    (work / qdq_name).replace(bundle / "model.int8.trt.qdq.onnx")
    (bundle / "calibration.cache").write_text(calibration_cache(scales, trt_version))
    cmds = trtexec_commands(input_name, chw, batch_range, dla_core)
    script = ["#!/usr/bin/env bash", "# Build the engines with trtexec (TensorRT 8.x / 10) from this folder.",
              "set -euo pipefail", 'cd "$(dirname "$0")"']
    script += [shlex.join(c) for c in cmds.values()]
    script += ["# Implicit INT8 from the calibration cache (older JetPacks):",
               "# " + shlex.join(implicit_int8_command(input_name, chw, batch_range[1], float_nodes))]
    (bundle / "trtexec.sh").write_text("\n".join(script) + "\n")
    (bundle / "trtexec.sh").chmod(0o755)
    (bundle / "build.json").write_text(json.dumps({
        "input_name": input_name, "input_chw": list(chw), "batch_range": list(batch_range), "dla_core": dla_core,
        "eval_spec": eval_spec, "int8_onnx": "model.int8.trt.qdq.onnx", "fp32_onnx": "../model.fp32.onnx",
        "calibration_cache": "calibration.cache", "fallback_layers": list(fallback_layers),
        "float_nodes": list(float_nodes), "trtexec": {k: shlex.join(v) for k, v in cmds.items()}}, indent=1))
    (bundle / "README.md").write_text(README.format(int8=shlex.join(cmds["int8"])))
    return bundle


README = """# TensorRT bundle

Built by `edgeresnet export --target trt` on a machine without TensorRT. Copy the whole
export directory to the Jetson or GPU host, then either:

```bash
edgeresnet build EXPORT_DIR          # engines (int8, fp16, fp32), layer checks, accuracy and latency rows
edgeresnet bench EXPORT_DIR          # once `bench` lands: latency of every engine
```

or with trtexec (TensorRT 8.x / 10), from this folder: `./trtexec.sh`, e.g.

```bash
{int8}
```

- `model.int8.trt.qdq.onnx`: explicit quantization (Q/DQ), symmetric int8, zero point 0, Q/DQ on
  every conv's input and weights and on the identity input of every residual Add, so TensorRT
  fuses each Add into a conv; no calibrator is needed.
- `calibration.cache`: the same scales in TensorRT's calibration-cache format, for implicit
  INT8 on older JetPacks (`trtexec --int8 --calib=calibration.cache`). Engines and caches are
  specific to the TensorRT version: the header names the version it was written for.
- `build.json`: input name and shape, the batch range (min/opt/max), the evaluation data, and
  `fallback_layers`: layers `--max-drop` kept in float. They carry no Q/DQ in the QDQ ONNX, so
  TensorRT runs them in FP16 (`--fp16` is on with `--int8`); the engine checks expect them.

Engines are specific to the GPU model and TensorRT version: always build on the device.
"""
