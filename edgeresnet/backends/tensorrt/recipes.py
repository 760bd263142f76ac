"""One build recipe per TensorRT line: what the device's TensorRT accepts, decided here, without
TensorRT, so the bundle (build.json's ``plans``), `build --dry-run`, the device file and the tests
all read the same rules.

The lines, each checked against NVIDIA's own pages (cited beside each number below):

* ``8.4``  TensorRT 8.4.x: JetPack 5.0.2 ships 8.4.1 (CUDA 11.4, Ubuntu 20.04, Python 3.8).
* ``8.5``  TensorRT 8.5.x: JetPack 5.1.x ships 8.5.2 (same CUDA, Ubuntu, Python).
* ``8.6``  TensorRT 8.6.x: JetPack 6.0 ships 8.6.2 (CUDA 12.2, Ubuntu 22.04); x86's GA is 8.6.1.
* ``10.3`` TensorRT 10.0-10.7: JetPack 6.1/6.2 ship 10.3.0 (CUDA 12.6, Python 3.10). 10.7 is the
  last 10.x with DLA.
* ``10``   TensorRT 10.8+: x86, ARM SBSA and JetPack 7 (Thor on 7.0/7.1; AGX Orin on 7.2 with the
  SBSA build). No DLA.
* ``11``   TensorRT 11.0-11.4.0: x86 and SBSA; no JetPack, no DLA there.
* ``11.4`` TensorRT 11.4.1+: x86, SBSA and JetPack 7.2.2+ (AGX Orin, Thor); DLA again, on AGX
  Orin only, strongly typed.

Weakly typed lines (8.x, 10.x) build INT8 on the GPU from the Q/DQ ONNX (explicit quantization)
and INT8 on the DLA the way NVIDIA's DLA tools do: the FP32 ONNX with the calibration cache,
``--int8 --fp16``, GPU fallback and FP16 constraints for the layers left without a scale
(NVIDIA/Deep-Learning-Accelerator-SW ``tools/qdq-translator``, README "Build engine" and
``utils.export_to_trt_calib``, commit ea61780e). No DLA engine is built from a Q/DQ file there.
Strongly typed lines (11.x) have no precision flags and no calibrator: the FP16 engine and the
float layers of the INT8 engine come from FP16-typed ONNX files (``tensorrt_fp16``); on 11.4.1 the
DLA engines are strongly typed too, so DLA INT8 is the FP16-typed Q/DQ file (explicit
quantization, the only INT8 a strongly typed network has) and DLA FP16 the FP16-typed FP32 model
("Strongly Typed Networks for DLA", TensorRT 11.4.1 docs; "TensorRT 11.4.1 Release Notes: Strongly
typed networks for DLA").

On every line the fp32 row is built with TF32 off (``--noTF32``, ``BuilderFlag.TF32`` cleared):
TF32 is on by default on Ampere and later, Orin included ("Developer Guide, TF32 Inference Using
C++/Python"). DLA takes INT8 and FP16 only, with static shapes ("DLA Supported Layers and
Restrictions": the profile's min, opt and max must be equal); the fp32 engine stays on the GPU.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from ...errors import UsageError

PRECISIONS = ("int8", "fp16", "fp32")
DLA_ENGINES = ("int8-dla", "fp16-dla")
FP32_ONNX = "../model.fp32.onnx"
QDQ_ONNX = "model.int8.trt.qdq.onnx"
FP16_ONNX = "model.fp16.onnx"  # TensorRT 11: the FP32 model with FP16 float tensors (tensorrt_fp16)
FP16_QDQ_ONNX = "model.int8.trt.fp16.qdq.onnx"  # TensorRT 11: the Q/DQ model with FP16 float tensors
CACHE = "calibration.cache"


@dataclass(frozen=True)
class Recipe:
    line: str  # the id build.json's "plans" and "lines" use
    label: str
    default_version: str  # the cache header's version when only the line is known
    min_version: str  # the versions this line covers, integer parts compared (see version_in_line)
    max_version: str  # inclusive on the parts it names: "8.4" = any 8.4.x, "11" = any 11.x
    weak_typing: bool  # --int8/--fp16, BuilderFlag.INT8/FP16 exist
    implicit_int8: bool  # a calibration cache can feed trtexec --calib / an IInt8Calibrator
    dla: bool  # DLA engines can be built on this line
    fp16_onnx: bool  # FP16 engine and INT8 float layers need FP16-typed ONNX files
    inspector_dtype_keys: tuple[str, ...]  # where a layer input's data type is in the inspector JSON
    runtime_api: str  # "bindings" (8.4: execute_async_v2) or "tensors" (8.5+: execute_async_v3)
    where: str  # where NVIDIA ships it, and how it installs there

    def sources(self) -> dict[str, str]:
        """ONNX file per engine, relative to the bundle folder (``trt/``). No DLA engine of a weakly
        typed line reads the Q/DQ file: DLA INT8 there is implicit, from the FP32 model."""
        if self.fp16_onnx:
            return {"int8": FP16_QDQ_ONNX, "fp16": FP16_ONNX, "fp32": FP32_ONNX,
                    "int8-dla": FP16_QDQ_ONNX, "fp16-dla": FP16_ONNX}
        return {"int8": QDQ_ONNX, "fp16": FP32_ONNX, "fp32": FP32_ONNX, "int8-dla": FP32_ONNX, "fp16-dla": FP32_ONNX}


_WEAK = dict(weak_typing=True, implicit_int8=True, fp16_onnx=False, inspector_dtype_keys=("Format/Datatype",))
# TensorRT 11 splits "Format/Datatype" into "Format" and "DataType" ("Migrating IEngineInspector
# Usage from TensorRT 10.x to 11.x").
_STRONG = dict(weak_typing=False, implicit_int8=False, fp16_onnx=True, inspector_dtype_keys=("DataType",),
               runtime_api="tensors")
APT = ("JetPack's own TensorRT from apt (`sudo apt install python3-libnvinfer`, part of `nvidia-jetpack`), "
       "never pip: PyPI's tensorrt supports ARM only as SBSA / JetPack 7 on Ubuntu 24.04+")
LINES = (
    # developer.nvidia.com/embedded/jetpack-sdk-502: "JetPack 5.0.2 ... Jetson Linux 35.1 ... CUDA 11.4,
    # TensorRT 8.4.1, cuDNN 8.4.1", Ubuntu 20.04. release/8.4 python/src/infer/pyCore.cpp has no
    # execute_async_v3 / set_input_shape (bindings API only); 8.5 adds them.
    Recipe("8.4", "TensorRT 8.4 (JetPack 5.0.2)", "8.4.1", "8.4.0", "8.4", dla=True, runtime_api="bindings",
           where="JetPack 5.0.2 (L4T R35.1, CUDA 11.4, Ubuntu 20.04, Python 3.8): " + APT, **_WEAK),
    # JetPack 5.1/5.1.1-5.1.5 (L4T R35.2.1-R35.6.x) ship TensorRT 8.5.2, CUDA 11.4
    # (developer.nvidia.com/embedded/jetpack-sdk-514: "packages the same compute stack as JetPack 5.1.3").
    Recipe("8.5", "TensorRT 8.5 (JetPack 5.1.x)", "8.5.2", "8.5.0", "8.5", dla=True, runtime_api="tensors",
           where="JetPack 5.1.x (L4T R35.2-R35.6, CUDA 11.4, Ubuntu 20.04, Python 3.8): " + APT, **_WEAK),
    # JetPack 6.0 (L4T R36.3): TensorRT 8.6.2, CUDA 12.2, Ubuntu 22.04 (JetPack 6.0 release notes).
    Recipe("8.6", "TensorRT 8.6 (JetPack 6.0)", "8.6.2", "8.6.0", "8.6", dla=True, runtime_api="tensors",
           where="JetPack 6.0 (L4T R36.3, CUDA 12.2, Ubuntu 22.04, Python 3.10): " + APT
                 + "; x86: `pip install tensorrt==8.6.1`", **_WEAK),
    # JetPack 6.1/6.2 (L4T R36.4.x): CUDA 12.6, TensorRT 10.3, cuDNN 9.3 (JetPack 6.1/6.2 release notes,
    # as quoted by pytorch.org/TensorRT/getting_started/jetpack.html). "TensorRT 10.7 was the last 10.x
    # release that supported DLA" (TensorRT 11.4.1 docs, "Working with DLA").
    Recipe("10.3", "TensorRT 10.3 (JetPack 6.1/6.2)", "10.3.0", "10.0.0", "10.7", dla=True,
           where="JetPack 6.1/6.2 (L4T R36.4, CUDA 12.6, Ubuntu 22.04, Python 3.10): " + APT, runtime_api="tensors",
           **_WEAK),
    # 10.8+: x86 and SBSA; JetPack 7.0/7.1 (Thor, CUDA 13.0) bundle a 10.x SBSA build, JetPack 7.2 brings
    # Orin's iGPU to the SBSA build with "Orin DLA not supported" (TensorRT 10.x download page, 10.16).
    # 10.12 deprecates --int8/--fp16/--calib (removed in 11) but still accepts them ("TensorRT 10.x
    # Release Notes, Deprecated API Lifetime").
    Recipe("10", "TensorRT 10.8+ (x86, SBSA, JetPack 7)", "10.13.3", "10.8.0", "10", dla=False, runtime_api="tensors",
           where="x86-64 and ARM SBSA / JetPack 7 (Ubuntu 24.04+): `pip install tensorrt-cu12` or `tensorrt-cu13` "
                 "matching the CUDA major; JetPack 7 also ships it as apt packages", **_WEAK),
    # 11.0-11.4.0: strongly typed only ("Migrating trtexec Usage from TensorRT 10.x to 11.x, Migrating
    # Precision Flags", "Migrating INT8 Calibration Workflow"); "TensorRT 11.3.0 does not support NVIDIA
    # JetPack" and "DLA was unavailable in TensorRT 11.0 through 11.3, and TensorRT 11.4.0 supported DLA
    # only on Windows on ARM" ("Migrating TensorRT from 10.x to 11.x on Jetson/JetPack", 11.3.0 and 11.4.1).
    Recipe("11", "TensorRT 11.0-11.4.0 (x86, SBSA)", "11.0.0", "11.0.0", "11.4.0", dla=False,
           where="x86-64 and ARM SBSA (Ubuntu 24.04+), Python 3.10+: `pip install tensorrt`", **_STRONG),
    # "TensorRT 11.4.1 supports NVIDIA JetPack 7.2.2 or later on Jetson AGX Orin and Jetson Thor. Install the
    # TensorRT SBSA build" and "restores DLA support, on Jetson AGX Orin only" ("Migrating TensorRT from 10.x
    # to 11.x on Jetson/JetPack", 11.4.1; "TensorRT 11.4.1 Release Notes").
    Recipe("11.4", "TensorRT 11.4.1+ (x86, SBSA, JetPack 7.2.2+)", "11.4.1", "11.4.1", "11", dla=True,
           where="x86-64, ARM SBSA and JetPack 7.2.2+ (AGX Orin, Thor; Ubuntu 24.04+), Python 3.10+: "
                 "`pip install tensorrt` (the SBSA build on Jetson)", **_STRONG),
)
RECIPES = {r.line: r for r in LINES}
DEFAULT_LINE = "10.3"  # JetPack 6.1/6.2: the JetPack most Orin boards run
# The release a two-part (or bare major) version means: the one a JetPack ships where one does.
KNOWN_RELEASES = {"8": "8.5.2", "8.4": "8.4.1", "8.5": "8.5.2", "8.6": "8.6.2", "10": "10.3.0", "10.3": "10.3.0",
                  "11": "11.4.1", "11.4": "11.4.1"}

VERSION_FORMS = ("pass the device's TensorRT as MAJOR[.MINOR[.PATCH]] of a supported line: 8.4 (JetPack 5.0.2), "
                 "8.5 (JetPack 5.1), 8.6 (JetPack 6.0), 10.3 (JetPack 6.1/6.2), 10.x (x86, JetPack 7) or 11.x, "
                 "e.g. 8.5.2, 10.3, 10.13, 11.4")


def _parts(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def version_in_line(version: str, recipe: Recipe) -> bool:
    """min_version <= version, and version <= max_version on the parts max_version names."""
    v = (_parts(version) + (0, 0, 0))[:3]
    if v < (_parts(recipe.min_version) + (0, 0, 0))[:3]:
        return False
    top = _parts(recipe.max_version)
    return v[:len(top)] <= top


def lines_table() -> list[dict]:
    """build.json's ``lines``: how a device maps its ``tensorrt.__version__`` to a plan."""
    return [{"line": r.line, "min_version": r.min_version, "max_version": r.max_version} for r in LINES]


def _normalize(version) -> str:
    text = str(version).strip().lower()
    if text.startswith("trt"):  # "trt-10.3", "trt10": the "-" belongs to the prefix, never to the number
        text = text[3:].strip()
        text = text[1:].strip() if text.startswith("-") else text
    parts = text.split(".")
    if not text or not all(p.isdigit() and p.isascii() for p in parts) or len(parts) > 4:
        raise UsageError(f"--trt-version {version!r} is not a TensorRT version (MAJOR[.MINOR[.PATCH]], digits only)",
                         hint=VERSION_FORMS)
    return text


def recipe_for(version: str | None) -> tuple[Recipe, str]:
    """(recipe, full version) for a version string; None means the default line (JetPack 6.1/6.2)."""
    if version is None:
        recipe = RECIPES[DEFAULT_LINE]
        return recipe, recipe.default_version
    text = _normalize(version)
    parts = text.split(".")
    full = KNOWN_RELEASES.get(text) if len(parts) <= 2 else None
    if full is None:
        full = ".".join((parts + ["0", "0"])[:3])  # 10.3.0.30 (__version__ has a build number) -> 10.3.0
    recipe = next((r for r in LINES if version_in_line(full, r)), None)
    if recipe is None:
        raise UsageError(f"--trt-version {version}: no recipe for TensorRT {text}", hint=VERSION_FORMS)
    return recipe, full


def version_code(version: str) -> int:
    """NV_TENSORRT_VERSION as cache headers carry it: 8.6.1 -> 8601, 10.3.0 -> 100300."""
    major, minor, patch = [int(p) for p in (version.split(".") + ["0", "0"])[:3]]
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def cache_header(version: str) -> str:
    return f"TRT-{version_code(version)}-EntropyCalibration2"


DLA_HINT = ("DLA needs a Jetson's TensorRT: --trt-version 8.4/8.5 (JetPack 5), 8.6 (JetPack 6.0), 10.3 "
            "(JetPack 6.1/6.2) or 11.4 (11.4.1+, AGX Orin on JetPack 7.2.2+)")


def dla_refusal(recipe: Recipe) -> str | None:
    """Why this line builds no DLA engine, or None when it does."""
    if recipe.dla:
        return None
    if recipe.line == "10":
        return f"{recipe.label} builds no DLA engines: TensorRT 10.7 was the last 10.x with DLA"
    return f"{recipe.label} builds no DLA engines: DLA returns in 11.4.1, on AGX Orin under JetPack 7.2.2+"


def check_dla(recipe: Recipe, dla_core: int | None) -> None:
    reason = dla_refusal(recipe) if dla_core is not None else None
    if reason:
        raise UsageError(f"--dla-core: {reason}", hint=DLA_HINT)


def engine_names(recipe: Recipe, dla_core: int | None) -> list[str]:
    """The GPU engines always; with a DLA core (and a line that has DLA) the DLA ones beside them, so a
    report compares the two on one device."""
    return list(PRECISIONS) + (list(DLA_ENGINES) if dla_core is not None and recipe.dla else [])


def shapes(engine: str, batch_range: tuple[int, int, int]) -> tuple[int, int, int]:
    """The optimization profile: static at the opt batch on DLA (min = opt = max), else the range."""
    if engine.endswith("-dla"):
        return (batch_range[1],) * 3
    return tuple(batch_range)


def _shape(name: str, batch: int, chw: tuple[int, int, int]) -> str:
    return f"{name}:{'x'.join(str(d) for d in (batch, *chw))}"


def builder_flags(recipe: Recipe, engine: str, layer_precisions: dict[str, str]) -> list[str]:
    """tensorrt.BuilderFlag names the engine's config sets (TF32 is cleared apart, for fp32)."""
    precision, dla = engine.split("-")[0], engine.endswith("-dla")
    flags = {"int8": ["INT8", "FP16"], "fp16": ["FP16"], "fp32": []}[precision] if recipe.weak_typing else []
    if dla:
        flags.append("GPU_FALLBACK")
    if recipe.weak_typing and dla and precision == "int8" and layer_precisions:
        flags.append("PREFER_PRECISION_CONSTRAINTS")
    return flags


def trtexec_command(recipe: Recipe, engine: str, input_name: str, chw: tuple[int, int, int],
                    batch_range: tuple[int, int, int], dla_core: int | None = None,
                    layer_precisions: dict[str, str] | None = None) -> list[str]:
    """One engine's trtexec line, run from the bundle folder."""
    precision, dla = engine.split("-")[0], engine.endswith("-dla")
    lo, opt, hi = shapes(engine, batch_range)
    cmd = ["trtexec", f"--onnx={recipe.sources()[engine]}", f"--saveEngine=model.{engine}.engine"]
    if recipe.weak_typing:
        cmd += {"int8": ["--int8", "--fp16"], "fp16": ["--fp16"], "fp32": []}[precision]
        if dla and precision == "int8":  # qdq-translator's line: the cache, then FP16 for the scale-less layers
            cmd.append(f"--calib={CACHE}")
            if layer_precisions:
                cmd += ["--precisionConstraints=prefer",
                        "--layerPrecisions=" + ",".join(f"{n}:{p}" for n, p in layer_precisions.items())]
    if precision == "fp32":
        cmd.append("--noTF32")
    if dla:
        cmd += [f"--useDLACore={0 if dla_core is None else dla_core}", "--allowGPUFallback"]
    cmd += [f"--minShapes={_shape(input_name, lo, chw)}", f"--optShapes={_shape(input_name, opt, chw)}",
            f"--maxShapes={_shape(input_name, hi, chw)}", "--timingCacheFile=timing.cache",
            "--profilingVerbosity=detailed", "--dumpLayerInfo", f"--exportLayerInfo=model.{engine}.layers.json"]
    return cmd


def implicit_int8_command(recipe: Recipe, input_name: str, chw: tuple[int, int, int], batch: int,
                          float_layers: tuple[str, ...] = ()) -> list[str] | None:
    """Implicit INT8 on the GPU from the calibration cache (8.x and 10.x only), for comparison with the
    Q/DQ engine. Layers left without a scale get FP16 by name, as on the DLA."""
    if not recipe.implicit_int8:
        return None
    cmd = ["trtexec", f"--onnx={FP32_ONNX}", "--int8", "--fp16", f"--calib={CACHE}",
           f"--shapes={_shape(input_name, batch, chw)}", "--saveEngine=model.int8-implicit.engine"]
    if float_layers:
        cmd += ["--precisionConstraints=prefer", "--layerPrecisions=" + ",".join(f"{n}:fp16" for n in float_layers)]
    return cmd


def engine_plan(recipe: Recipe, engine: str, *, input_name: str, chw: tuple[int, int, int],
                batch_range: tuple[int, int, int], dla_core: int | None, float_layers: tuple[str, ...],
                dla_float_layers: tuple[str, ...]) -> dict:
    """One ENGINE of build.json's plans: every field the device file reads, and the trtexec line
    that does the same."""
    precision, dla = engine.split("-")[0], engine.endswith("-dla")
    implicit = dla and precision == "int8" and recipe.implicit_int8
    precisions = {n: "fp16" for n in dla_float_layers} if implicit else {}
    return {
        "onnx": recipe.sources()[engine],
        "builder_flags": builder_flags(recipe, engine, precisions),
        "strongly_typed": not recipe.weak_typing,
        "tf32": precision != "fp32",
        "profile": dict(zip(("min", "opt", "max"), shapes(engine, batch_range))),
        "dla_core": (0 if dla_core is None else dla_core) if dla else None,
        "calibration_cache": CACHE if implicit else None,
        "layer_precisions": precisions,
        "precision_constraints": "prefer" if precisions else None,
        "expected_float_layers": list(dla_float_layers if implicit else float_layers if precision == "int8" else ()),
        "trtexec": shlex.join(trtexec_command(recipe, engine, input_name, chw, batch_range, dla_core, precisions)),
        # read by `build --dry-run`'s table, not by the device file:
        "device": f"DLA core {0 if dla_core is None else dla_core} (GPU fallback)" if dla else "GPU",
        "quantization": ("implicit (calibration cache)" if implicit else "explicit (Q/DQ)" if precision == "int8"
                         else "none"),
        "float_layers_run_in": "fp32" if precision == "fp32" else "fp16",
    }


def plan(recipe: Recipe, version: str, *, input_name: str, chw: tuple[int, int, int],
         batch_range: tuple[int, int, int], dla_core: int | None, float_layers: tuple[str, ...] = (),
         dla_float_layers: tuple[str, ...] | None = None) -> dict:
    """Everything a build on this line will do, per engine: the `build --dry-run` view, build.json's
    ``plan`` and each entry of its ``plans``. ``float_layers`` are the ONNX nodes kept in float in the
    Q/DQ model; ``dla_float_layers`` the nodes whose inputs have no scale in the cache (FP16 by name
    in the implicit DLA engine), by default the same."""
    check_dla(recipe, dla_core)
    dla_float = tuple(float_layers if dla_float_layers is None else dla_float_layers)
    engines = {e: engine_plan(recipe, e, input_name=input_name, chw=chw, batch_range=batch_range, dla_core=dla_core,
                              float_layers=tuple(float_layers), dla_float_layers=dla_float)
               for e in engine_names(recipe, dla_core)}
    implicit = implicit_int8_command(recipe, input_name, chw, batch_range[1], dla_float)
    return {"trt_line": recipe.line, "trt_label": recipe.label, "trt_version": version,
            "cache_header": cache_header(version) if recipe.implicit_int8 else None,
            "runtime_api": recipe.runtime_api, "where": recipe.where,
            "engines": engines, "implicit_int8": shlex.join(implicit) if implicit else None}


def all_plans(*, input_name: str, chw: tuple[int, int, int], batch_range: tuple[int, int, int],
              dla_core: int | None, float_layers: tuple[str, ...] = (), dla_float_layers: tuple[str, ...] | None = None,
              fp16_sources: str | None = None) -> dict[str, dict]:
    """build.json's ``plans``: one plan per supported line, so the device builds for the TensorRT it
    finds with no recipe logic of its own. A line without DLA gets the GPU engines and says why; a
    strongly typed line whose FP16 files could not be written says that (``fp16_sources``)."""
    plans = {}
    for recipe in LINES:
        dla = dla_core if recipe.dla else None
        p = plan(recipe, recipe.default_version, input_name=input_name, chw=chw, batch_range=batch_range,
                 dla_core=dla, float_layers=float_layers, dla_float_layers=dla_float_layers)
        if dla_core is not None and not recipe.dla:
            p["dla_note"] = dla_refusal(recipe)
        if recipe.fp16_onnx and fp16_sources:
            p["unavailable"] = fp16_sources
        plans[recipe.line] = p
    return plans


def datatype(entry: dict, recipe: Recipe | None = None) -> str:
    """A layer input's data type from the engine inspector's JSON, whichever line wrote it:
    "int8", "fp16", "fp32", ... or "unknown" (never guessed as float)."""
    from ...ondevice.trt_device import tensor_dtype

    return tensor_dtype(entry)
