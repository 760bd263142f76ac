"""One build recipe per major TensorRT line: what the device's TensorRT accepts, decided here,
without TensorRT, so the bundle, `build --dry-run` and the tests all read the same rules.

Lines (``--trt-version`` takes a version such as 8.5.2, 8.6, 10.3 or 11.4; ``build`` reads the
installed one):

* ``8.6``: TensorRT 8.5 / 8.6, JetPack 5. Weakly typed builds (``--int8``/``--fp16``); implicit
  INT8 from a calibration cache whose header carries the 4-digit version code (8.5.2 -> 8502),
  per "Developer Guide 8.6.1, INT8 Calibration Using Python / Calibration Cache".
* ``10``: TensorRT 10.x, JetPack 6 (10.3), the default. Same flags; the header carries the
  6-digit code (10.3.0 -> 100300). 10.12 deprecates the precision flags (removed in 11) but
  still accepts them: "TensorRT 10.x Release Notes, Deprecated API Lifetime".
* ``11``: TensorRT 11.x, x86 GPUs (no JetPack, no DLA: "Migrating from TensorRT 10.x to 11.x,
  Jetson / JetPack" and "NVIDIA DriveOS"). Every network is strongly typed: no precision flags,
  no calibrator ("Migrating trtexec Usage from TensorRT 10.x to 11.x, Migrating Precision Flags"
  and "Migrating INT8 Calibration Workflow"), so the FP16 engine and the float layers of the INT8
  engine come from ONNX files whose float tensors are FP16, with casts at the inputs and outputs
  (``tensorrt_fp16``). The inspector splits ``Format/Datatype`` into ``Format`` and ``DataType``
  ("Migrating IEngineInspector Usage from TensorRT 10.x to 11.x").

On every line the fp32 row is built with TF32 off (``--noTF32``, ``BuilderFlag.TF32`` cleared):
TF32 is on by default on Ampere and later, Orin included ("Developer Guide, TF32 Inference
Using C++/Python"), and an "fp32" row that ran TF32 would be mislabelled. DLA takes INT8 and
FP16 only, with static shapes ("Working with DLA, DLA Supported Layers and Restrictions": the
optimization profile's min, opt and max must be equal); an fp32 engine is built for the GPU.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from ..errors import UsageError

PRECISIONS = ("int8", "fp16", "fp32")


@dataclass(frozen=True)
class Recipe:
    line: str  # "8.6", "10", "11"
    label: str
    default_version: str  # the cache header's version when only the line is known
    weak_typing: bool  # --int8/--fp16, BuilderFlag.INT8/FP16 exist
    implicit_int8: bool  # a calibration cache can feed trtexec --calib
    dla: bool  # DLA engines can be built on this line
    fp16_onnx: bool  # FP16 engine and INT8 float layers need FP16-typed ONNX files
    inspector_dtype_keys: tuple[str, ...]  # where a layer input's data type is in the inspector JSON

    def sources(self) -> dict[str, str]:
        """ONNX file per engine, relative to the bundle folder."""
        if self.fp16_onnx:
            return {"int8": "model.int8.trt.fp16.qdq.onnx", "fp16": "model.fp16.onnx", "fp32": "../model.fp32.onnx"}
        return {"int8": "model.int8.trt.qdq.onnx", "fp16": "../model.fp32.onnx", "fp32": "../model.fp32.onnx"}


RECIPES = {
    "8.6": Recipe("8.6", "TensorRT 8.5/8.6 (JetPack 5)", "8.5.2", True, True, True, False, ("Format/Datatype", "Datatype")),
    "10": Recipe("10", "TensorRT 10.x (JetPack 6)", "10.3.0", True, True, True, False, ("Format/Datatype", "Datatype")),
    "11": Recipe("11", "TensorRT 11.x (x86 GPUs)", "11.4.0", False, False, False, True, ("DataType", "Format")),
}
DEFAULT_LINE = "10"
# The release a two-part version means: JetPack 5.1.x ships 8.5.2; 8.6's GA is 8.6.1; JetPack 6.1/6.2 ship 10.3.0.
KNOWN_RELEASES = {"8.5": "8.5.2", "8.6": "8.6.1", "10.3": "10.3.0"}


VERSION_FORMS = ("pass the device's TensorRT as MAJOR[.MINOR[.PATCH]] of a supported line: 8.5/8.6 (JetPack 5), "
                 "10.x (JetPack 6) or 11.x (x86 GPUs), e.g. 8.5.2, 8.6, 10.3, 11.4")


def recipe_for(version: str | None) -> tuple[Recipe, str]:
    """(recipe, full version) for a version string; None means the default line (JetPack 6)."""
    if version is None:
        recipe = RECIPES[DEFAULT_LINE]
        return recipe, recipe.default_version
    text = str(version).strip().lower()
    if text.startswith("trt"):  # "trt-10.3", "trt10": the "-" belongs to the prefix, never to the number
        text = text[3:].removeprefix("-").strip()
    parts = text.split(".")
    if not text or not all(p.isdigit() and p.isascii() for p in parts) or len(parts) > 4:
        raise UsageError(f"--trt-version {version!r} is not a TensorRT version (MAJOR[.MINOR[.PATCH]], digits only)",
                         hint=VERSION_FORMS)
    major, minor = int(parts[0]), int(parts[1]) if len(parts) > 1 else None
    if major == 8 and minor in (None, 5, 6):
        line = "8.6"
    elif major in (10, 11):
        line = str(major)
    else:
        raise UsageError(f"--trt-version {version}: no recipe for TensorRT {text}", hint=VERSION_FORMS)
    recipe = RECIPES[line]
    if len(parts) == 1:
        return recipe, recipe.default_version
    if len(parts) == 2:
        return recipe, KNOWN_RELEASES.get(f"{major}.{minor}", f"{major}.{minor}.0")
    return recipe, ".".join(parts[:3])  # 10.3.0.30 (tensorrt.__version__ has a build number) -> 10.3.0


def version_code(version: str) -> int:
    """NV_TENSORRT_VERSION as cache headers carry it: 8.6.1 -> 8601, 10.3.0 -> 100300."""
    major, minor, patch = [int(p) for p in (version.split(".") + ["0", "0"])[:3]]
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def check_dla(recipe: Recipe, dla_core: int | None) -> None:
    if dla_core is not None and not recipe.dla:
        raise UsageError(f"--dla-core: {recipe.label} builds no DLA engines",
                         hint="DLA needs a Jetson's TensorRT: --trt-version 8.5 (JetPack 5) or 10.3 (JetPack 6)")


def shapes(precision: str, batch_range: tuple[int, int, int], dla_core: int | None) -> tuple[int, int, int]:
    """The optimization profile: static at the opt batch on DLA (min = opt = max), else the range."""
    if dla_core is not None and precision in ("int8", "fp16"):
        return (batch_range[1],) * 3
    return batch_range


def _shape(name: str, batch: int, chw: tuple[int, int, int]) -> str:
    return f"{name}:{'x'.join(str(d) for d in (batch, *chw))}"


def trtexec_command(recipe: Recipe, precision: str, input_name: str, chw: tuple[int, int, int],
                    batch_range: tuple[int, int, int], dla_core: int | None = None) -> list[str]:
    """One engine's trtexec line, run from the bundle folder."""
    lo, opt, hi = shapes(precision, batch_range, dla_core)
    cmd = ["trtexec", f"--onnx={recipe.sources()[precision]}", f"--saveEngine=model.{precision}.engine"]
    if recipe.weak_typing:
        cmd += {"int8": ["--int8", "--fp16"], "fp16": ["--fp16"], "fp32": []}[precision]
    if precision == "fp32":
        cmd.append("--noTF32")
    cmd += [f"--minShapes={_shape(input_name, lo, chw)}", f"--optShapes={_shape(input_name, opt, chw)}",
            f"--maxShapes={_shape(input_name, hi, chw)}", "--timingCacheFile=timing.cache",
            "--profilingVerbosity=detailed", "--dumpLayerInfo", f"--exportLayerInfo=model.{precision}.layers.json"]
    if dla_core is not None and precision in ("int8", "fp16"):
        cmd += [f"--useDLACore={dla_core}", "--allowGPUFallback"]
    return cmd


def implicit_int8_command(recipe: Recipe, input_name: str, chw: tuple[int, int, int], batch: int,
                          float_layers: tuple[str, ...] = ()) -> list[str] | None:
    """Implicit INT8 from the calibration cache (8.6 and 10 only). Float layers get FP16 by name."""
    if not recipe.implicit_int8:
        return None
    cmd = ["trtexec", "--onnx=../model.fp32.onnx", "--int8", "--fp16", "--calib=calibration.cache",
           f"--shapes={_shape(input_name, batch, chw)}", "--saveEngine=model.int8-implicit.engine"]
    if float_layers:
        cmd += ["--precisionConstraints=prefer", "--layerPrecisions=" + ",".join(f"{n}:fp16" for n in float_layers)]
    return cmd


def plan(recipe: Recipe, version: str, *, input_name: str, chw: tuple[int, int, int],
         batch_range: tuple[int, int, int], dla_core: int | None, float_layers: tuple[str, ...] = ()) -> dict:
    """Everything a build will do, per engine: the `build --dry-run` view and build.json's record."""
    check_dla(recipe, dla_core)
    engines = {}
    for p in PRECISIONS:
        on_dla = dla_core is not None and p in ("int8", "fp16")
        flags = ([] if not recipe.weak_typing else {"int8": ["INT8", "FP16"], "fp16": ["FP16"], "fp32": []}[p])
        engines[p] = {
            "onnx": recipe.sources()[p],
            "builder_flags": flags + (["GPU_FALLBACK"] if on_dla else []),
            "strongly_typed": not recipe.weak_typing,
            "tf32": p != "fp32",
            "profile": dict(zip(("min", "opt", "max"), shapes(p, batch_range, dla_core))),
            "device": f"DLA core {dla_core} (GPU fallback)" if on_dla else "GPU",
            "float_layers_run_in": "fp32" if p == "fp32" else "fp16",
            "expected_float_layers": list(float_layers) if p == "int8" else [],
            "trtexec": shlex.join(trtexec_command(recipe, p, input_name, chw, batch_range, dla_core)),
        }
    implicit = implicit_int8_command(recipe, input_name, chw, batch_range[1], float_layers)
    return {"trt_line": recipe.line, "trt_label": recipe.label, "trt_version": version,
            "cache_header": f"TRT-{version_code(version)}-EntropyCalibration2" if recipe.implicit_int8 else None,
            "engines": engines, "implicit_int8": shlex.join(implicit) if implicit else None}


def datatype(entry: dict, recipe: Recipe) -> str:
    """A layer input's data type from the engine inspector's JSON, by the line's key names."""
    return next((str(entry[k]) for k in recipe.inspector_dtype_keys if k in entry), "")
