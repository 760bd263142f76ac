#!/usr/bin/env python3
"""The TensorRT device side of an edgeresnet export, in one file: build the engines a bundle's
plan describes, evaluate them on the images shipped with it, and benchmark them as trtexec does.

    python3 trt/trt_device.py build    # engines from build.json's plan for the TensorRT found here
    python3 trt/trt_device.py eval     # top-1 on trt/eval.npz, agreement with the fp32 engine
    python3 trt/trt_device.py bench    # latency / throughput, GPU compute, H2D, D2H, enqueue

Needs only what JetPack already has: Python >= 3.8, numpy >= 1.17 and TensorRT's Python module
(``python3-libnvinfer``). CUDA memory goes through ctypes on ``libcudart`` (as Polygraphy's
``polygraphy/cuda/cuda.py`` does); NVIDIA's cuda-python is used when it is installed, never
required. The package (``edgeresnet build``, ``bench``, ``eval``, ``predict``) imports this same
module, so there is one implementation; this file imports nothing from edgeresnet.

What is verified where: the TensorRT calls are checked name by name against NVIDIA's bindings
(``python/src/infer/pyCore.cpp``, ``pyInt8.cpp``, ``parsers/pyOnnx.cpp`` on the release/8.5,
release/10.3 and release/11.1 branches of NVIDIA/TensorRT; the lists are the package's
``tests/data/trt_api/``) and run end to end against a numpy test double of ``tensorrt`` and
``libcudart``. No engine has been built by this file on a real GPU from this repository's CI.

Exit codes as the package's: 2 a flag is wrong, 3 a bundle file is wrong, 4 TensorRT/CUDA/GPU
missing; every error is one line and a hint.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import glob
import hashlib
import json
import os
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

FORMAT = "edgeresnet-device/1"
EXIT_USAGE, EXIT_INPUT, EXIT_UNAVAILABLE = 2, 3, 4
MANIFEST = "edgeresnet.json"
EVAL_FILE = "eval.npz"


class DeviceError(Exception):
    """One line, a hint naming the fix, and the package's exit code (2 usage, 3 input, 4 unavailable)."""

    def __init__(self, message: str, hint: str, code: int = EXIT_INPUT) -> None:
        super().__init__(message)
        self.message, self.hint, self.code = message, hint, code


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# CUDA: libcudart through ctypes (cuda-python when installed)
# ---------------------------------------------------------------------------------------------

CUDART_ENV = "TRT_DEVICE_CUDART"  # a libcudart path, or module:object naming a test double
# The names the loader knows on CUDA 11/12 and JetPack 5/6/7 (CUDA 11.4's soname is .so.11.0).
CUDART_NAMES = ("libcudart.so", "libcudart.so.12", "libcudart.so.13", "libcudart.so.11.0")
# JetPack installs CUDA under /usr/local/cuda; its libraries also sit in targets/aarch64-linux/lib.
CUDART_DIRS = ("/usr/local/cuda/lib64", "/usr/local/cuda/targets/aarch64-linux/lib",
               "/usr/local/cuda/targets/sbsa-linux/lib", "/usr/lib/aarch64-linux-gnu", "/usr/lib/x86_64-linux-gnu")
# cudaMemcpyKind (CUDA Runtime API, driver_types.h): cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2.
H2D, D2H = 1, 2
CUDA_HINT = ("JetPack ships libcudart in /usr/local/cuda/lib64: add it to LD_LIBRARY_PATH, or set "
             f"{CUDART_ENV}=/path/to/libcudart.so")


def _cudart_candidates() -> List[str]:
    """Where libcudart may be, most specific first (the loader's own search, then JetPack's
    folders, then ctypes.util.find_library)."""
    names = list(CUDART_NAMES)
    for folder in CUDART_DIRS + tuple(os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)):
        if folder:
            names += sorted(glob.glob(os.path.join(folder, "libcudart.so*")), reverse=True)
    found = ctypes.util.find_library("cudart")
    return names + ([found] if found else [])


def _load_library(spec: Optional[str]) -> Tuple[Any, str]:
    """(library, where it came from). ``spec``: a path, or ``module:attribute`` (a test double)."""
    if spec and ":" in spec and "/" not in spec:
        import importlib

        module, _, attr = spec.partition(":")
        return getattr(importlib.import_module(module), attr), spec
    errors = []
    for name in ([spec] if spec else _cudart_candidates()):
        try:
            return ctypes.CDLL(name), name
        except OSError as exc:
            errors.append(str(exc))
    raise DeviceError("no CUDA runtime library (libcudart) found" + (f": {errors[-1]}" if errors else ""),
                      hint=CUDA_HINT, code=EXIT_UNAVAILABLE)


class CudartLibrary:
    """The CUDA runtime calls the runner needs, on libcudart through ctypes. Signatures from the
    CUDA Runtime API reference: every call returns a cudaError_t (0 = cudaSuccess) and writes its
    result through a pointer argument."""

    kind = "ctypes"

    def __init__(self, lib: Any, where: str) -> None:
        self.lib, self.where = lib, where
        if isinstance(lib, ctypes.CDLL):
            self._declare(lib)

    @staticmethod
    def _declare(lib: ctypes.CDLL) -> None:
        vp, size, ptr = ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p)
        signatures = {
            "cudaMalloc": [ptr, size], "cudaFree": [vp], "cudaMallocHost": [ptr, size], "cudaFreeHost": [vp],
            "cudaMemcpyAsync": [vp, vp, size, ctypes.c_int, vp], "cudaStreamCreate": [ptr],
            "cudaStreamSynchronize": [vp], "cudaStreamDestroy": [vp], "cudaEventCreate": [ptr],
            "cudaEventRecord": [vp, vp], "cudaEventSynchronize": [vp], "cudaEventDestroy": [vp],
            "cudaEventElapsedTime": [ctypes.POINTER(ctypes.c_float), vp, vp],
            "cudaGetDeviceCount": [ctypes.POINTER(ctypes.c_int)], "cudaRuntimeGetVersion": [ctypes.POINTER(ctypes.c_int)],
        }
        for name, args in signatures.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, ctypes.c_int
        lib.cudaGetErrorName.argtypes, lib.cudaGetErrorName.restype = [ctypes.c_int], ctypes.c_char_p

    def _check(self, name: str, status: int) -> None:
        if int(status) != 0:
            text = self.lib.cudaGetErrorName(int(status))
            text = text.decode() if isinstance(text, bytes) else str(text)
            raise DeviceError(f"CUDA {name} failed: {text} ({int(status)})",
                              hint="check the GPU with nvidia-smi (x86) or tegrastats (Jetson), and that libcudart "
                                   "matches the driver's CUDA", code=EXIT_UNAVAILABLE)

    def _out(self, name: str, *args: Any, kind: Any = ctypes.c_void_p) -> Any:
        value = kind()
        self._check(name, getattr(self.lib, name)(ctypes.byref(value), *args))
        return value.value or 0

    def device_count(self) -> int:
        return int(self._out("cudaGetDeviceCount", kind=ctypes.c_int))

    def runtime_version(self) -> int:
        return int(self._out("cudaRuntimeGetVersion", kind=ctypes.c_int))

    def malloc(self, nbytes: int) -> int:
        return int(self._out("cudaMalloc", ctypes.c_size_t(nbytes)))

    def malloc_host(self, nbytes: int) -> int:
        """Page-locked host memory: the copies are truly asynchronous and as fast as trtexec's."""
        return int(self._out("cudaMallocHost", ctypes.c_size_t(nbytes)))

    def free(self, ptr: int) -> None:
        self._check("cudaFree", self.lib.cudaFree(ctypes.c_void_p(ptr)))

    def free_host(self, ptr: int) -> None:
        self._check("cudaFreeHost", self.lib.cudaFreeHost(ctypes.c_void_p(ptr)))

    def memcpy_async(self, dst: int, src: int, nbytes: int, kind: int, stream: Any) -> None:
        self._check("cudaMemcpyAsync", self.lib.cudaMemcpyAsync(
            ctypes.c_void_p(dst), ctypes.c_void_p(src), ctypes.c_size_t(nbytes), kind, ctypes.c_void_p(stream)))

    def stream_create(self) -> Any:
        return self._out("cudaStreamCreate")

    def stream_synchronize(self, stream: Any) -> None:
        self._check("cudaStreamSynchronize", self.lib.cudaStreamSynchronize(ctypes.c_void_p(stream)))

    def stream_destroy(self, stream: Any) -> None:
        self._check("cudaStreamDestroy", self.lib.cudaStreamDestroy(ctypes.c_void_p(stream)))

    def stream_handle(self, stream: Any) -> int:
        return int(stream or 0)

    def event_create(self) -> Any:
        return self._out("cudaEventCreate")

    def event_record(self, event: Any, stream: Any) -> None:
        self._check("cudaEventRecord", self.lib.cudaEventRecord(ctypes.c_void_p(event), ctypes.c_void_p(stream)))

    def event_synchronize(self, event: Any) -> None:
        self._check("cudaEventSynchronize", self.lib.cudaEventSynchronize(ctypes.c_void_p(event)))

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        ms = ctypes.c_float()
        self._check("cudaEventElapsedTime", self.lib.cudaEventElapsedTime(
            ctypes.byref(ms), ctypes.c_void_p(start), ctypes.c_void_p(end)))
        return float(ms.value)

    def event_destroy(self, event: Any) -> None:
        self._check("cudaEventDestroy", self.lib.cudaEventDestroy(ctypes.c_void_p(event)))


class CudaPython:
    """The same calls through NVIDIA's cuda-python, when it is installed: ``cuda.bindings.runtime``
    (cuda-python 12.6.1+ and 11.8.4+), else the older ``cuda.cudart``. Each call returns
    ``(cudaError_t, *values)``."""

    kind = "cuda-python"

    def __init__(self, rt: Any, where: str) -> None:
        self.rt, self.where = rt, where

    def _call(self, name: str, *args: Any) -> Any:
        result = getattr(self.rt, name)(*args)
        err, values = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
        if int(err) != 0:
            text = self.rt.cudaGetErrorName(err)[1]
            text = text.decode() if isinstance(text, bytes) else str(text)
            raise DeviceError(f"CUDA {name} failed: {text} ({int(err)})",
                              hint="cuda-python's major must match the driver's CUDA (JetPack 5: <12, JetPack 6: 12.x); "
                                   "or uninstall it: this file runs on libcudart alone", code=EXIT_UNAVAILABLE)
        return values[0] if len(values) == 1 else values

    def device_count(self) -> int:
        return int(self._call("cudaGetDeviceCount"))

    def runtime_version(self) -> int:
        return int(self._call("cudaRuntimeGetVersion"))

    def malloc(self, nbytes: int) -> int:
        return int(self._call("cudaMalloc", nbytes))

    def malloc_host(self, nbytes: int) -> int:
        return int(self._call("cudaMallocHost", nbytes))

    def free(self, ptr: int) -> None:
        self._call("cudaFree", ptr)

    def free_host(self, ptr: int) -> None:
        self._call("cudaFreeHost", ptr)

    def memcpy_async(self, dst: int, src: int, nbytes: int, kind: int, stream: Any) -> None:
        kinds = self.rt.cudaMemcpyKind
        self._call("cudaMemcpyAsync", dst, src, nbytes,
                   kinds.cudaMemcpyHostToDevice if kind == H2D else kinds.cudaMemcpyDeviceToHost, stream)

    def stream_create(self) -> Any:
        return self._call("cudaStreamCreate")

    def stream_synchronize(self, stream: Any) -> None:
        self._call("cudaStreamSynchronize", stream)

    def stream_destroy(self, stream: Any) -> None:
        self._call("cudaStreamDestroy", stream)

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def event_create(self) -> Any:
        return self._call("cudaEventCreate")

    def event_record(self, event: Any, stream: Any) -> None:
        self._call("cudaEventRecord", event, stream)

    def event_synchronize(self, event: Any) -> None:
        self._call("cudaEventSynchronize", event)

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        return float(self._call("cudaEventElapsedTime", start, end))

    def event_destroy(self, event: Any) -> None:
        self._call("cudaEventDestroy", event)


def _cuda_python() -> Optional[CudaPython]:
    try:
        from cuda.bindings import runtime as rt  # cuda-python 12.6.1+ / 11.8.4+
        return CudaPython(rt, "cuda.bindings.runtime")
    except ImportError:
        pass
    try:
        from cuda import cudart as rt  # older cuda-python; removed in 13.x
        return CudaPython(rt, "cuda.cudart")
    except ImportError:
        return None


_CUDA: Any = None
_CUDA_LOCK = threading.Lock()


def open_cuda() -> Any:
    """The process's CUDA layer, opened once: ``$TRT_DEVICE_CUDART`` when set, else cuda-python when
    installed and working, else libcudart through ctypes."""
    global _CUDA
    with _CUDA_LOCK:
        if _CUDA is None:
            spec = os.environ.get(CUDART_ENV)
            cuda = None if spec else _cuda_python()
            if cuda is not None:
                try:
                    cuda.device_count()
                except DeviceError as exc:  # e.g. a cuda-python newer than the driver: libcudart still works
                    _say(f"note: cuda-python does not work here ({exc.message}); using libcudart through ctypes")
                    cuda = None
            _CUDA = cuda or CudartLibrary(*_load_library(spec))
        return _CUDA


def cuda_description(cuda: Any) -> str:
    try:
        version = cuda.runtime_version()
        return f"{cuda.where} ({cuda.kind}, CUDA runtime {version // 1000}.{version % 1000 // 10})"
    except DeviceError:
        return f"{cuda.where} ({cuda.kind})"


def gpu_count() -> int:
    """GPUs the CUDA runtime sees (a Jetson's integrated GPU counts); 0 when it sees none."""
    try:
        return open_cuda().device_count()
    except DeviceError as exc:
        if "cudaErrorNoDevice" in exc.message or "cudaErrorInsufficientDriver" in exc.message:
            return 0
        raise


# ---------------------------------------------------------------------------------------------
# TensorRT: version, plan selection, engines
# ---------------------------------------------------------------------------------------------

TRT_HINT = ("on JetPack 5/6: sudo apt install python3-libnvinfer (TensorRT's Python module comes from apt, "
            "not pip); on x86 and JetPack 7: pip install tensorrt")


def tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError:
        raise DeviceError("TensorRT's Python module is not installed", hint=TRT_HINT, code=EXIT_UNAVAILABLE) from None
    return trt


def version_tuple(text: str) -> Tuple[int, ...]:
    parts = []
    for piece in str(text).strip().split("."):
        digits = "".join(c for c in piece if c.isdigit()) if piece[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def version_code(version: str) -> int:
    """NV_TENSORRT_VERSION, as calibration-cache headers carry it (include/NvInferVersion.h:
    8.x is major*1000 + minor*100 + patch, 10.x and later major*10000 + minor*100 + patch)."""
    major, minor, patch = (version_tuple(version) + (0, 0, 0))[:3]
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def _within(version: Tuple[int, ...], low: Optional[str], high: Optional[str]) -> bool:
    """``low <= version <= high``, each bound compared on as many parts as it has ("8.6" covers 8.6.x)."""
    lo, hi = version_tuple(low or "0"), version_tuple(high) if high else None
    return version[:len(lo)] >= lo and (hi is None or version[:len(hi)] <= hi)


def select_plan(build: Dict[str, Any], version: str) -> Tuple[str, Dict[str, Any]]:
    """(line id, PLAN) of build.json for an installed TensorRT version, by its ``lines`` table;
    the narrowest matching range wins (the highest min_version)."""
    plans, lines = build.get("plans"), build.get("lines")
    if not isinstance(plans, dict) or not isinstance(lines, list):
        raise DeviceError("build.json has no 'plans'/'lines' (a bundle from an older edgeresnet)",
                          hint="re-export with --target trt using this edgeresnet")
    have = version_tuple(version)
    matches = [e for e in lines if isinstance(e, dict) and e.get("line") in plans
               and _within(have, e.get("min_version"), e.get("max_version"))]
    if not matches:
        known = ", ".join(f"{e.get('line')} ({e.get('min_version')}..{e.get('max_version') or ''})"
                          for e in lines if isinstance(e, dict))
        raise DeviceError(f"this bundle has no plan for TensorRT {version}",
                          hint=f"its lines: {known}; re-export with a newer edgeresnet", code=EXIT_UNAVAILABLE)
    best = max(matches, key=lambda e: version_tuple(e.get("min_version") or "0"))
    return str(best["line"]), plans[best["line"]]


ENGINE_KEYS = ("onnx", "builder_flags", "strongly_typed", "tf32", "profile", "dla_core", "calibration_cache",
               "layer_precisions", "precision_constraints")


def check_engine_plan(name: str, plan: Any) -> Dict[str, Any]:
    """One ENGINE of a PLAN, every field this file reads typed, so an edited build.json is one line."""
    def bad(key: str, want: str) -> DeviceError:
        return DeviceError(f"build.json: engine {name!r}: {key!r} is not {want}", hint="re-export; build.json must "
                           "not be edited by hand")
    if not isinstance(plan, dict):
        raise bad("(engine)", "an object")
    missing = [k for k in ENGINE_KEYS if k not in plan]
    if missing:
        raise bad(missing[0], "present")
    if not isinstance(plan["onnx"], str) or not plan["onnx"]:
        raise bad("onnx", "a file name")
    if not isinstance(plan["builder_flags"], list) or not all(isinstance(f, str) for f in plan["builder_flags"]):
        raise bad("builder_flags", "a list of tensorrt.BuilderFlag names")
    profile = plan["profile"]
    if not isinstance(profile, dict) or not all(isinstance(profile.get(k), int) and profile[k] >= 1
                                                for k in ("min", "opt", "max")) \
            or not profile["min"] <= profile["opt"] <= profile["max"]:
        raise bad("profile", "{min, opt, max} batch sizes with min <= opt <= max")
    if plan["dla_core"] is not None and (not isinstance(plan["dla_core"], int) or isinstance(plan["dla_core"], bool)
                                         or not 0 <= plan["dla_core"] <= 15):
        raise bad("dla_core", "a DLA core number or null")
    if plan["calibration_cache"] is not None and not isinstance(plan["calibration_cache"], str):
        raise bad("calibration_cache", "a file name or null")
    if not isinstance(plan["layer_precisions"], dict) or \
            not all(isinstance(v, str) and v in PRECISION_TYPES for v in plan["layer_precisions"].values()):
        raise bad("layer_precisions", f"{{layer: one of {', '.join(PRECISION_TYPES)}}}")
    if plan["precision_constraints"] not in (None, "prefer", "obey"):
        raise bad("precision_constraints", "'prefer', 'obey' or null")
    return plan


PRECISION_TYPES = {"fp32": "FLOAT", "fp16": "HALF", "int8": "INT8"}  # tensorrt.DataType members
CONSTRAINT_FLAGS = {"prefer": "PREFER_PRECISION_CONSTRAINTS", "obey": "OBEY_PRECISION_CONSTRAINTS"}


def retarget_cache(cache: bytes, version: str) -> Tuple[bytes, str, str]:
    """(cache, header it had, header it has): the first line rewritten for the TensorRT that reads
    it. TensorRT ignores a calibration cache whose header names another version (then calibrates,
    which a calibrator without images cannot), so the header must be the installed one's."""
    first, newline, rest = cache.partition(b"\n")
    head = first.decode("ascii", errors="replace").strip()
    if not head.startswith("TRT-") or "-" not in head[4:]:
        raise DeviceError("the calibration cache has no TRT-<version>-<algorithm> header",
                          hint="re-export with --target trt")
    header = f"TRT-{version_code(version)}-{head[4:].split('-', 1)[1]}"
    return header.encode("ascii") + b"\n" + rest, head, header


# ---------------------------------------------------------------------------------------------
# The bundle: trt/ and the export folder around it
# ---------------------------------------------------------------------------------------------

class DeviceBundle:
    """``trt/`` of an export. Every file a plan names is read through :meth:`read`: inside the
    export folder, a regular file, and (``verify``) with the SHA-256 the export's edgeresnet.json
    records, as the package's own reader checks it. Outputs (engines, layer lists, the timing
    cache, row files) are written into ``trt/`` only."""

    def __init__(self, folder: str, verify: bool = True) -> None:
        self.folder = os.path.abspath(folder)
        self.root = os.path.dirname(self.folder)
        self.verify = verify
        self.hashes: Dict[str, str] = {}
        if verify:
            self.hashes = self._manifest_hashes()

    def _manifest_hashes(self) -> Dict[str, str]:
        path = os.path.join(self.root, MANIFEST)
        if not os.path.isfile(path):
            raise DeviceError(f"{path} is missing: the bundle's files cannot be checked",
                              hint="copy the whole export directory, not only trt/ (or pass --no-verify)")
        try:
            with open(path, "rb") as f:
                manifest = json.loads(f.read())
            hashes = dict(manifest.get("files") or {})
            for entry in manifest.get("artifacts") or []:
                hashes.update(entry.get("files") or {})
        except (ValueError, AttributeError, TypeError) as exc:
            raise DeviceError(f"{path} is not an edgeresnet manifest ({exc})", hint="re-export") from None
        return {str(k): str(v) for k, v in hashes.items()}

    def rel(self, name: str) -> str:
        """``name`` (relative to trt/) relative to the export folder; refused outside it."""
        full = os.path.normpath(os.path.join(self.folder, name))
        root = os.path.realpath(self.root)
        real = os.path.realpath(full)
        if os.path.isabs(name) or not (real + os.sep).startswith(root + os.sep) or os.path.islink(full):
            raise DeviceError(f"build.json names a file outside the bundle or a link: {name}",
                              hint="re-export; a bundle's files must not name files outside it")
        return os.path.relpath(full, self.root).replace(os.sep, "/")

    def path(self, name: str) -> str:
        return os.path.join(self.root, self.rel(name))

    def read(self, name: str) -> bytes:
        """A bundle file's bytes, checked as read (no window between the check and the use)."""
        rel = self.rel(name)
        path = os.path.join(self.root, rel)
        if not os.path.isfile(path):
            raise DeviceError(f"{rel} is missing from {self.root}", hint="copy the whole export directory")
        with open(path, "rb") as f:
            data = f.read()
        if self.verify:
            want = self.hashes.get(rel)
            if want is None:
                raise DeviceError(f"{rel} is not listed in {MANIFEST} (no hash to check it by)",
                                  hint="re-export; a bundle's files must not be added by hand")
            if hashlib.sha256(data).hexdigest() != want:
                raise DeviceError(f"{rel} differs from the exported file (SHA-256 mismatch)",
                                  hint="copy the export again; a bundle's files must not be edited by hand")
        return data

    def build_json(self) -> Dict[str, Any]:
        try:
            data = json.loads(self.read("build.json").decode("utf-8"))
        except ValueError as exc:
            raise DeviceError(f"cannot read trt/build.json: {exc}", hint="re-export with --target trt") from None
        if not isinstance(data, dict):
            raise DeviceError("trt/build.json is not a JSON object", hint="re-export with --target trt")
        return data

    def output(self, name: str) -> str:
        """A file this tool writes in trt/ (never through a link)."""
        path = os.path.join(self.folder, os.path.basename(name))
        if os.path.islink(path):
            raise DeviceError(f"{path} is a symbolic link", hint="delete it and rerun")
        return path


def write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def engine_file(name: str) -> str:
    return f"model.{name}.engine"


def layers_file(name: str) -> str:
    return f"model.{name}.layers.json"


# ---------------------------------------------------------------------------------------------
# Build: one PLAN engine -> model.<name>.engine + model.<name>.layers.json
#
# Every tensorrt name used from here on is listed, with the lines it is used on, in the package's
# tests/data/trt_api/used.txt and checked against NVIDIA's bindings on release/8.5, 10.3 and 11.1:
# python/src/infer/pyCore.cpp (Builder, IBuilderConfig, BuilderFlag, Runtime, ICudaEngine,
# IExecutionContext, EngineInspector), pyInt8.cpp (IInt8EntropyCalibrator2: 8.5 and 10.3, no
# such file on 11.1), pyGraph.cpp (INetworkDefinition, ILayer, ITensor), parsers/pyOnnx.cpp
# (OnnxParser) and pyFoundationalTypes.cpp (DataType, IHostMemory's buffer protocol).
# ---------------------------------------------------------------------------------------------

def _member(trt: Any, enum: str, name: str) -> Any:
    """``trt.<enum>.<name>``, or one line saying this TensorRT lacks it (a plan for another line)."""
    try:
        return getattr(getattr(trt, enum), name)
    except AttributeError:
        raise DeviceError(f"TensorRT {trt.__version__} has no {enum}.{name}",
                          hint="the plan was chosen for another TensorRT line: check build.json's 'lines', or "
                               "re-export for this TensorRT", code=EXIT_UNAVAILABLE) from None


def _logger(trt: Any, verbose: bool) -> Any:
    return trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)


def _parse(trt: Any, builder: Any, logger: Any, bundle: DeviceBundle, plan: Dict[str, Any]) -> Tuple[Any, Any]:
    """(network, parser) from the plan's ONNX; the parser owns the weights, so it lives as long."""
    flags = 0
    if plan["strongly_typed"]:  # NetworkDefinitionCreationFlag.STRONGLY_TYPED: 10.x and 11.x (pyCore.cpp)
        flags |= 1 << int(_member(trt, "NetworkDefinitionCreationFlag", "STRONGLY_TYPED"))
    if version_tuple(trt.__version__)[:1] < (10,):
        # 8.x: the ONNX parser needs an explicit-batch network; NvInfer.h release/10.3 marks
        # kEXPLICIT_BATCH "Ignored because networks are always explicit batch in TensorRT 10.0", 11 drops it.
        flags |= 1 << int(_member(trt, "NetworkDefinitionCreationFlag", "EXPLICIT_BATCH"))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    data = bundle.read(plan["onnx"])
    if not parser.parse(data, bundle.path(plan["onnx"])):  # the path: where external weights would be
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise DeviceError(f"TensorRT's ONNX parser rejected {plan['onnx']}: {errors}",
                          hint="re-export; if it persists, the ONNX uses an operator this TensorRT lacks")
    if network.num_inputs != 1 or network.num_outputs != 1:
        raise DeviceError(f"{plan['onnx']} has {network.num_inputs} inputs and {network.num_outputs} outputs, not 1 and 1",
                          hint="export a classifier with edgeresnet export")
    return network, parser


def _profile(builder: Any, config: Any, network: Any, plan: Dict[str, Any]) -> Any:
    """The one optimization profile: the plan's batch range over the network's fixed C, H, W."""
    inp = network.get_input(0)
    rest = tuple(int(d) for d in tuple(inp.shape)[1:])
    if any(d < 1 for d in rest):
        raise DeviceError(f"the input {inp.name} has a dynamic non-batch dimension {tuple(inp.shape)}",
                          hint="export with a fixed input size")
    p = plan["profile"]
    profile = builder.create_optimization_profile()
    profile.set_shape(inp.name, (p["min"],) + rest, (p["opt"],) + rest, (p["max"],) + rest)
    config.add_optimization_profile(profile)
    return profile


def _configure(trt: Any, builder: Any, config: Any, plan: Dict[str, Any], workspace_mb: int) -> List[str]:
    """Builder flags by name, TF32, memory, the inspector's detail and DLA. Returns the flags set."""
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # per-layer precision and formats in the inspector
    flags = list(plan["builder_flags"])
    if plan["precision_constraints"]:
        flags.append(CONSTRAINT_FLAGS[plan["precision_constraints"]])
    for name in dict.fromkeys(flags):
        config.set_flag(_member(trt, "BuilderFlag", name))
    if not plan["tf32"]:
        # NvInfer.h (release/8.5, 10.3, 11.1), BuilderFlag::kTF32: "Enabled by default": an fp32 row
        # built without clearing it may run TF32 convolutions on Ampere and Orin.
        config.clear_flag(_member(trt, "BuilderFlag", "TF32"))
    core = plan["dla_core"]
    if core is not None:
        cores = int(builder.num_DLA_cores)
        if core >= cores:
            raise DeviceError(f"the plan builds for DLA core {core}; this device has {cores} DLA cores",
                              hint="re-export with --dla-core for a core this device has, or without it (Orin "
                                   "Nano and x86 GPUs have no DLA)", code=EXIT_UNAVAILABLE)
        # NvInfer.h IBuilderConfig::setDefaultDeviceType / setDLACore; layers DLA cannot run go to the
        # GPU only with BuilderFlag GPU_FALLBACK, which the plan lists when it wants it.
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = core
    return list(dict.fromkeys(flags))


def cache_calibrator(trt: Any, cache: bytes, batch: int) -> Any:
    """An IInt8EntropyCalibrator2 that only reads the bundle's calibration cache: implicit INT8
    from the cache, as trtexec --int8 --calib=<cache> does and NVIDIA's DLA recipe uses
    (NVIDIA/Deep-Learning-Accelerator-SW, tools/qdq-translator). ``get_batch`` returns None: with a
    valid cache TensorRT never asks for images (pyInt8.cpp's trampoline treats None as "no batch")."""

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # pybind11: the base must be initialised
            self._cache, self._batch = cache, int(batch)

        def get_batch_size(self) -> int:
            return self._batch

        def get_batch(self, names: List[str]) -> None:
            return None

        def read_calibration_cache(self) -> bytes:
            return self._cache

        def write_calibration_cache(self, cache: Any) -> None:
            return None  # the bundle's cache is the source of truth: never overwritten

    return CacheCalibrator()


def _calibration(trt: Any, config: Any, bundle: DeviceBundle, plan: Dict[str, Any], profile: Any,
                 version: str) -> Tuple[Any, Dict[str, Any]]:
    """(calibrator to keep alive, notes) for a plan with a calibration cache; (None, {}) without."""
    name = plan["calibration_cache"]
    if name is None:
        return None, {}
    if not hasattr(trt, "IInt8EntropyCalibrator2"):  # 11.x removed implicit INT8 (no pyInt8.cpp on release/11.1)
        raise DeviceError(f"TensorRT {version} has no calibrators: implicit INT8 from a calibration cache ended with 11",
                          hint="the plan was chosen for another TensorRT line: check build.json's 'lines'",
                          code=EXIT_UNAVAILABLE)
    cache, was, header = retarget_cache(bundle.read(name), version)
    calibrator = cache_calibrator(trt, cache, plan["profile"]["opt"])
    config.int8_calibrator = calibrator
    # NvInfer.h release/8.5, IBuilderConfig::setCalibrationProfile: "must be set if int8 calibration
    # is used to set scales for a network with runtime dimensions" (deprecated, still present, in 10.x).
    config.set_calibration_profile(profile)
    return calibrator, {"calibration_cache": name, "cache_header": header,
                        **({"cache_header_was": was} if was != header else {})}


def _layer_precisions(trt: Any, network: Any, plan: Dict[str, Any]) -> Dict[str, Any]:
    """Per-layer precisions by layer name, as trtexec --layerPrecisions (the ONNX parser names each
    layer after its ONNX node). The builder honours them under the plan's precision_constraints."""
    wanted = plan["layer_precisions"]
    if not wanted:
        return {}
    if plan["strongly_typed"]:  # NvInfer.h release/10.3, ILayer::setPrecision: "Strongly-typed networks reject calls"
        raise DeviceError("the plan sets layer precisions on a strongly typed network",
                          hint="re-export; strongly typed plans carry their float layers in the ONNX")
    found = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name in wanted:
            layer.precision = _member(trt, "DataType", PRECISION_TYPES[wanted[layer.name]])
            found.append(layer.name)
    return {"layer_precisions_set": len(found), "layer_precisions_unmatched": sorted(set(wanted) - set(found))}


def _timing_cache(config: Any, path: str) -> str:
    """Reuse the bundle's timing cache; one from another TensorRT or GPU is refused and replaced."""
    blob = b""
    if os.path.isfile(path):
        with open(path, "rb") as f:
            blob = f.read()
    cache = config.create_timing_cache(blob)
    if cache is not None and config.set_timing_cache(cache, False):  # ignore_mismatch=False
        return "reused" if blob else "new"
    config.set_timing_cache(config.create_timing_cache(b""), False)
    return "reset (it came from another TensorRT or GPU)"


def build_engine(trt: Any, bundle: DeviceBundle, name: str, plan: Dict[str, Any], *, line: str = "",
                 workspace_mb: int = 1024, verbose: bool = False, out_dir: Optional[str] = None) -> Dict[str, Any]:
    """Build one engine of the plan; write model.<name>.engine, model.<name>.layers.json (the engine
    inspector's JSON) and the shared timing.cache into ``out_dir`` (default trt/). Returns what
    the row's details record."""
    plan = check_engine_plan(name, plan)
    version = str(trt.__version__)
    out_dir = out_dir or bundle.folder
    started = time.perf_counter()
    logger = _logger(trt, verbose)
    builder = trt.Builder(logger)
    network, parser = _parse(trt, builder, logger, bundle, plan)
    config = builder.create_builder_config()
    flags = _configure(trt, builder, config, plan, workspace_mb)
    profile = _profile(builder, config, network, plan)
    calibrator, notes = _calibration(trt, config, bundle, plan, profile, version)
    notes.update(_layer_precisions(trt, network, plan))
    cache_path = os.path.join(out_dir, "timing.cache")
    notes["timing_cache"] = _timing_cache(config, cache_path)
    serialized = builder.build_serialized_network(network, config)
    del parser, calibrator  # kept alive through the build: TensorRT holds raw pointers to both
    if serialized is None:
        raise DeviceError(f"TensorRT could not build the {name} engine (its log above says why)",
                          hint="run with --verbose for TensorRT's full log")
    data = bytes(memoryview(serialized))
    write_atomic(os.path.join(out_dir, engine_file(name)), data)
    write_atomic(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    layers = inspect_engine(trt, data, plan["dla_core"])
    write_atomic(os.path.join(out_dir, layers_file(name)), json.dumps(layers, indent=1).encode())
    p = plan["profile"]
    return {"tensorrt": version, "trt_line": line, "engine": name, "source": plan["onnx"], "builder_flags": flags,
            "strongly_typed": bool(plan["strongly_typed"]), "tf32": bool(plan["tf32"]),
            "batch_range": [p["min"], p["opt"], p["max"]], "dla_core": plan["dla_core"],
            "device": "GPU" if plan["dla_core"] is None else f"DLA core {plan['dla_core']}"
            + (" (GPU fallback)" if "GPU_FALLBACK" in flags else ""),
            "layers": layers_file(name), "build_seconds": round(time.perf_counter() - started, 3), **notes}


def inspect_engine(trt: Any, data: bytes, dla_core: Optional[int]) -> Any:
    """The engine inspector's JSON (ProfilingVerbosity DETAILED): layers, precisions, formats."""
    info = load_engine(trt, data, dla_core)
    inspector = info.engine.create_engine_inspector()
    return json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


# ---------------------------------------------------------------------------------------------
# Run: engines, lanes (context + stream + buffers per thread), the runner
# ---------------------------------------------------------------------------------------------

class EngineInfo:
    """A deserialized engine with its one input and output, their shapes and its profile."""

    def __init__(self, trt: Any, runtime: Any, engine: Any, dla_core: Optional[int]) -> None:
        self.runtime, self.engine, self.dla_core = runtime, engine, dla_core
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise DeviceError(f"the engine has {len(inputs)} inputs and {len(outputs)} outputs, not 1 and 1",
                              hint="rebuild it from the bundle")
        self.input_name, self.output_name = inputs[0], outputs[0]
        for n in (self.input_name, self.output_name):
            if engine.get_tensor_dtype(n) != trt.DataType.FLOAT:
                raise DeviceError(f"the engine's tensor {n} is {engine.get_tensor_dtype(n)}, not float32",
                                  hint="rebuild it from the bundle (its ONNX keeps float32 inputs and outputs)")
        self.chw = tuple(int(d) for d in tuple(engine.get_tensor_shape(self.input_name))[1:])
        low, opt, high = (tuple(s) for s in engine.get_tensor_profile_shape(self.input_name, 0))
        self.profile = (int(low[0]), int(opt[0]), int(high[0]))

    @property
    def static(self) -> bool:
        """min = opt = max: DLA engines ("Working with DLA": DLA supports static shapes only)."""
        return self.profile[0] == self.profile[2]

    def engine_batch(self, n: int) -> int:
        """The batch a request of ``n`` images really runs: chunked to max, padded up to min."""
        return max(self.profile[0], min(int(n), self.profile[2]))


def load_engine(trt: Any, data: bytes, dla_core: Optional[int] = None, logger: Any = None) -> EngineInfo:
    runtime = trt.Runtime(logger or _logger(trt, False))
    if dla_core is not None:
        # NvInferRuntime.h, IRuntime::setDLACore: the DLA core the deserialized engine executes on.
        runtime.DLA_core = int(dla_core)
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise DeviceError(f"TensorRT {trt.__version__} could not load the engine (built by another TensorRT or GPU?)",
                          hint="rebuild it on this device: trt_device.py build", code=EXIT_UNAVAILABLE)
    return EngineInfo(trt, runtime, engine, dla_core)


def _volume(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


class Lane:
    """One execution context, one CUDA stream, pinned host and device buffers for ``max_batch``,
    and four events (before H2D, after H2D, after the engine, after D2H). An execution context
    is not thread-safe ("TensorRT Developer Guide, Thread Safety": one context per thread), so
    every thread that runs an engine owns one Lane and nothing in it is shared."""

    def __init__(self, info: EngineInfo, cuda: Any, max_batch: int) -> None:
        self.info, self.cuda, self.max_batch = info, cuda, int(max_batch)
        self.stream: Any = None
        self.events: List[Any] = []
        self.h_in = self.h_out = self.d_in = self.d_out = 0
        self.context = info.engine.create_execution_context()
        if self.context is None:
            raise DeviceError("TensorRT could not create an execution context (out of device memory?)",
                              hint="close other GPU programs, or benchmark with fewer --threads", code=EXIT_UNAVAILABLE)
        try:
            self._allocate()
        except BaseException:
            self.close()  # what was allocated before the failure
            raise

    def _allocate(self) -> None:
        cuda, info = self.cuda, self.info
        self.stream = cuda.stream_create()
        self.events = [cuda.event_create() for _ in range(4)]
        self.batch = 0
        self._set_shape(self.max_batch)
        self.out_rest = self.out_shape[1:]
        in_bytes, out_bytes = self.max_batch * _volume(info.chw) * 4, self.max_batch * _volume(self.out_rest) * 4
        self.h_in, self.h_out = cuda.malloc_host(in_bytes), cuda.malloc_host(out_bytes)
        self.d_in, self.d_out = cuda.malloc(in_bytes), cuda.malloc(out_bytes)
        self.x = np.frombuffer((ctypes.c_char * in_bytes).from_address(self.h_in), np.float32).reshape(
            (self.max_batch,) + info.chw)
        self.y = np.frombuffer((ctypes.c_char * out_bytes).from_address(self.h_out), np.float32).reshape(
            (self.max_batch,) + self.out_rest)
        self.context.set_tensor_address(info.input_name, self.d_in)
        self.context.set_tensor_address(info.output_name, self.d_out)

    def _set_shape(self, batch: int) -> None:
        if batch != self.batch:
            if not self.context.set_input_shape(self.info.input_name, (batch,) + self.info.chw):
                raise DeviceError(f"the engine takes no batch of {batch} (its profile is {self.info.profile})",
                                  hint="use a batch inside the engine's profile", code=EXIT_USAGE)
            self.out_shape = tuple(int(d) for d in self.context.get_tensor_shape(self.info.output_name))
            self.batch = batch

    def run(self, batch: int) -> Tuple[float, float, float, float]:
        """One inference on the pinned input's first ``batch`` images. (H2D, GPU compute, D2H)
        from the CUDA events, enqueue from the host clock, in ms, as trtexec splits them."""
        cuda, s, e = self.cuda, self.stream, self.events
        self._set_shape(batch)
        in_bytes, out_bytes = batch * _volume(self.info.chw) * 4, _volume(self.out_shape) * 4
        cuda.event_record(e[0], s)
        cuda.memcpy_async(self.d_in, self.h_in, in_bytes, H2D, s)
        cuda.event_record(e[1], s)
        t0 = time.perf_counter()
        ok = self.context.execute_async_v3(cuda.stream_handle(s))
        enqueue = (time.perf_counter() - t0) * 1e3
        if not ok:
            raise DeviceError("TensorRT could not enqueue the engine (its log above says why)",
                              hint="run with --verbose", code=EXIT_UNAVAILABLE)
        cuda.event_record(e[2], s)
        cuda.memcpy_async(self.h_out, self.d_out, out_bytes, D2H, s)
        cuda.event_record(e[3], s)
        cuda.event_synchronize(e[3])
        return (cuda.event_elapsed_ms(e[0], e[1]), cuda.event_elapsed_ms(e[1], e[2]),
                cuda.event_elapsed_ms(e[2], e[3]), enqueue)

    def close(self) -> None:
        """Free everything this Lane holds (once; safe after a failed allocation)."""
        cuda = self.cuda
        if self.stream is not None:
            cuda.stream_synchronize(self.stream)
        self.x = self.y = None  # type: ignore[assignment]  # views of the pinned memory freed below
        for ptr in (self.d_in, self.d_out):
            if ptr:
                cuda.free(ptr)
        for ptr in (self.h_in, self.h_out):
            if ptr:
                cuda.free_host(ptr)
        for event in self.events:
            cuda.event_destroy(event)
        if self.stream is not None:
            cuda.stream_destroy(self.stream)
        self.h_in = self.h_out = self.d_in = self.d_out = 0
        self.events, self.stream, self.context = [], None, None


class Runner:
    """``runner(x)`` -> logits for a float32 NCHW batch of any size: chunked to the profile's max;
    a chunk below its min (every chunk of a static DLA engine but full ones) is padded with zero
    images and the padding dropped from the output. One Lane: not for several threads at once."""

    def __init__(self, info: EngineInfo, cuda: Any = None) -> None:
        self.info, self.cuda = info, cuda or open_cuda()
        self.lane = Lane(info, self.cuda, info.profile[2])
        self.input_name, self.output_name, self.max_batch = info.input_name, info.output_name, info.profile[2]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        step = self.info.profile[2]
        parts = [self._chunk(x[i:i + step]) for i in range(0, len(x), step)]
        return np.concatenate(parts) if parts else np.zeros((0,) + self.lane.out_rest, np.float32)

    def _chunk(self, chunk: np.ndarray) -> np.ndarray:
        n = len(chunk)
        batch = self.info.engine_batch(n)
        self.lane.x[:n] = chunk
        self.lane.x[n:batch] = 0.0  # padding up to the profile's min
        self.lane.run(batch)
        return self.lane.y[:n].copy()

    def close(self) -> None:
        self.lane.close()


def open_runner(engine_path: str, dla_core: Optional[int] = None, cuda: Any = None, trt: Any = None) -> Runner:
    trt = trt or tensorrt()
    with open(engine_path, "rb") as f:
        data = f.read()
    return Runner(load_engine(trt, data, dla_core), cuda)


# ---------------------------------------------------------------------------------------------
# Telemetry (placeholder: the interface of edgeresnet/bundle/trt_telemetry.py)
# ---------------------------------------------------------------------------------------------

class Telemetry:
    """Power, clocks and temperatures during a run. This is the placeholder with the interface
    of ``edgeresnet/bundle/trt_telemetry.py``, which replaces it when that module is merged: every
    column says "n/a" and why, never a made-up figure."""

    WHY = "telemetry is not part of this trt_device.py (placeholder)"
    COLUMNS = ("power_mode", "clocks_locked", "clocks", "avg_w", "mj_per_image", "images_per_joule", "throttled",
               "energy_source", "energy_na_reason")

    def __init__(self, root: str = "/", interval: float = 0.1) -> None:
        self.root, self.interval = root, interval

    def snapshot(self) -> Dict[str, Any]:
        return {"power_mode": "n/a", "clocks": "n/a", "why": self.WHY}

    def start(self) -> None:
        return None

    def stop(self) -> Dict[str, Any]:
        return {"samples": 0, "why": self.WHY}

    def row_columns(self, summary: Dict[str, Any], images: int, seconds: float) -> Dict[str, Any]:
        columns: Dict[str, Any] = {k: "n/a" for k in self.COLUMNS}
        columns["energy_na_reason"] = self.WHY
        return columns


# ---------------------------------------------------------------------------------------------
# Bench: trtexec's measurement (samples/common/sampleInference.cpp, sampleReporting.cpp)
# ---------------------------------------------------------------------------------------------

WARMUP_MS, DURATION_S, ITERATIONS = 200.0, 3.0, 10  # trtexec's defaults (sampleOptions.h, release/10.3)
CV_LIMIT_PCT = 1.0  # sampleReporting.cpp printEpilog: kUNSTABLE_PERF_REPORTING_THRESHOLD
ENQUEUE_BOUND = 0.8  # sampleReporting.cpp printEpilog: kENQUEUE_BOUND_REPORTING_THRESHOLD
METRICS = ("wall", "h2d", "compute", "d2h", "enqueue")


class _Started:
    """The telemetry's start(), remembered, so that stop() follows it even when a run fails."""

    def __init__(self, telemetry: Any) -> None:
        self.telemetry, self.done = telemetry, False

    def start(self) -> None:
        self.telemetry.start()
        self.done = True


def summarize(values: Sequence[float]) -> Dict[str, float]:
    """p50/p90/p95/p99, mean, min, max, count and the coefficient of variation in percent: the
    population std / mean * 100, as trtexec's findCoeffOfVariance (sampleReporting.cpp)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"samples": 0}
    p50, p90, p95, p99 = np.percentile(a, [50, 90, 95, 99])
    mean = float(a.mean())
    return {"p50": float(p50), "p90": float(p90), "p95": float(p95), "p99": float(p99), "mean": mean,
            "min": float(a.min()), "max": float(a.max()), "samples": int(a.size),
            "cv_pct": float(a.std() / mean * 100.0) if mean > 0 else 0.0}


def timing_warnings(stats: Dict[str, Dict[str, float]], requests: int) -> List[str]:
    """trtexec's warnings, by its rules (sampleReporting.cpp, printEpilog, release/10.3)."""
    compute, found = stats["compute"], []
    if not compute.get("samples"):
        return found
    if stats["enqueue"]["p50"] > ENQUEUE_BOUND * compute["p50"]:
        found.append("throughput may be bound by enqueue time rather than GPU compute (the GPU may be idle between "
                     "inferences)")
    if stats["h2d"]["p50"] >= compute["p50"]:
        found.append("throughput may be bound by host-to-device copies rather than GPU compute")
    if stats["d2h"]["p50"] >= compute["p50"]:
        found.append("throughput may be bound by device-to-host copies rather than GPU compute")
    if compute["cv_pct"] > CV_LIMIT_PCT:
        found.append(f"GPU compute time is unstable: coefficient of variation {compute['cv_pct']:.1f}% > "
                     f"{CV_LIMIT_PCT:g}%; lock the clocks (Jetson: sudo nvpmodel -m 0 && sudo jetson_clocks)")
    if requests > 1:
        found.append("several inferences ran in parallel: their latencies overlap; compare throughput")
    return found


def _time_lane(lane: Lane, batch: int, warmup_ms: float, duration_s: float, iterations: int,
               start: Optional[Callable[[], float]] = None) -> Tuple[Dict[str, List[float]], float, float]:
    """Warm up for ``warmup_ms`` (time-based, as trtexec --warmUp: DVFS needs the time to ramp),
    then time runs for ``duration_s`` and at least ``iterations``. ``start`` (throughput: a
    barrier) returns the shared start time. Returns (samples in ms per metric, start, end)."""
    until = time.perf_counter() + warmup_ms / 1e3
    while True:
        lane.run(batch)
        if time.perf_counter() >= until:
            break
    began = start() if start else time.perf_counter()
    samples: Dict[str, List[float]] = {m: [] for m in METRICS}
    while True:
        t0 = time.perf_counter()
        parts = lane.run(batch)
        samples["wall"].append((time.perf_counter() - t0) * 1e3)
        for metric, value in zip(METRICS[1:], parts):
            samples[metric].append(value)
        now = time.perf_counter()
        if now - began >= duration_s and len(samples["wall"]) >= iterations:
            return samples, began, now


def _fill(lane: Lane, n: int, batch: int) -> None:
    """A fixed pseudo-random input in the pinned buffer; images past ``n`` are padding (zeros)."""
    rng = np.random.RandomState(0)
    lane.x[:n] = rng.standard_normal((n,) + lane.info.chw).astype(np.float32)
    lane.x[n:batch] = 0.0


def _latency(info: EngineInfo, cuda: Any, n: int, batch: int, opts: Dict[str, Any],
             telemetry: Any) -> Tuple[Dict[str, List[float]], float, int]:
    lane = Lane(info, cuda, batch)
    try:
        _fill(lane, n, batch)

        def start() -> float:
            telemetry.start()
            return time.perf_counter()
        samples, began, ended = _time_lane(lane, batch, opts["warmup_ms"], opts["duration_s"], opts["iterations"], start)
        return samples, ended - began, len(samples["wall"]) * n
    finally:
        lane.close()


def _throughput(info: EngineInfo, cuda: Any, n: int, batch: int, opts: Dict[str, Any],
                telemetry: Any) -> Tuple[Dict[str, List[float]], float, int]:
    """``requests`` threads, each with its own Lane (context, stream, buffers) made in the thread,
    all timed from one start (a barrier); execute_async_v3 and the CUDA calls release the GIL
    (pyCore.cpp: py::call_guard<py::gil_scoped_release>; ctypes drops it around foreign calls)."""
    requests = opts["requests"]
    shared: Dict[str, float] = {}
    barrier = threading.Barrier(requests, action=lambda: (telemetry.start(), shared.update(start=time.perf_counter())))
    results: List[Any] = [None] * requests

    def worker(i: int) -> None:
        lane = None
        try:
            lane = Lane(info, cuda, batch)
            _fill(lane, n, batch)

            def start() -> float:
                barrier.wait()
                return shared["start"]
            results[i] = _time_lane(lane, batch, opts["warmup_ms"], opts["duration_s"], opts["iterations"], start)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which raises it
            results[i] = exc
            barrier.abort()
        finally:
            if lane is not None:
                lane.close()

    threads = [threading.Thread(target=worker, args=(i,), name=f"trt-lane-{i}") for i in range(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:  # the first real error, not the broken barrier it left the other threads
        raise next((e for e in failures if not isinstance(e, threading.BrokenBarrierError)), failures[0])
    samples = {m: [v for r in results for v in r[0][m]] for m in METRICS}
    seconds = max(r[2] for r in results) - shared["start"]
    return samples, seconds, len(samples["wall"]) * n


def bench_engine(info: EngineInfo, cuda: Any = None, *, batch: int = 1, mode: str = "latency", requests: int = 1,
                 warmup_ms: float = WARMUP_MS, duration_s: float = DURATION_S, iterations: int = ITERATIONS,
                 telemetry: Any = None) -> Dict[str, Any]:
    """One benchmark block, as the package's bench worker returns it: ``latency_ms``,
    ``throughput_ips``, ``samples_ms``, ``requests``, ``details`` and ``row`` (the new row columns:
    GPU compute, H2D, D2H, enqueue, engine batch, per-image latency, telemetry)."""
    cuda = cuda or open_cuda()
    telemetry = telemetry or Telemetry()
    engine_batch = info.engine_batch(batch)
    if batch > engine_batch:
        raise DeviceError(f"--batch {batch} is above the engine's profile {info.profile}",
                          hint=f"benchmark with --batch {info.profile[2]} or less", code=EXIT_USAGE)
    opts = {"warmup_ms": float(warmup_ms), "duration_s": float(duration_s), "iterations": max(1, int(iterations)),
            "requests": max(1, int(requests)) if mode == "throughput" else 1}
    before = telemetry.snapshot()
    run = _throughput if mode == "throughput" else _latency
    started = _Started(telemetry)
    try:
        samples, seconds, images = run(info, cuda, batch, engine_batch, opts, started)
    finally:
        summary = telemetry.stop() if started.done else {}  # a sampling thread never outlives its run
    after = telemetry.snapshot()
    stats = {m: summarize(samples[m]) for m in METRICS}
    wall = stats["wall"]
    step = max(1, len(samples["wall"]) // 2000)
    details = {"timing": "trtexec-like: time-based warm-up, CUDA events around H2D, the engine and D2H, host clock "
                         "around enqueue and the whole call; pinned host buffers",
               "warmup_ms": opts["warmup_ms"], "duration_s": opts["duration_s"], "min_iterations": opts["iterations"],
               "seconds": round(seconds, 4), "engine_batch": engine_batch, "requested_batch": int(batch),
               "padding_images": engine_batch - int(batch), "profile": list(info.profile),
               "dla_core": info.dla_core, "cuda": cuda_description(cuda),
               "timing_warnings": timing_warnings(stats, opts["requests"]),
               "telemetry": {"before": before, "after": after, "summary": summary}}
    if engine_batch != batch:
        details["ran"] = (f"batch {engine_batch} ({batch} image{'s' if batch > 1 else ''} + {engine_batch - batch} "
                          f"padding): the engine's profile is static at {info.profile[0]}")
    row = {"gpu_compute_ms": stats["compute"], "h2d_ms": stats["h2d"], "d2h_ms": stats["d2h"],
           "enqueue_ms": stats["enqueue"], "engine_batch": engine_batch,
           "per_image_ms": wall["p50"] / engine_batch, "cv_pct": stats["compute"]["cv_pct"],
           **telemetry.row_columns(summary, images, seconds)}
    return {"latency_ms": wall, "throughput_ips": images / seconds if seconds > 0 else float("nan"),
            "samples_ms": [round(v, 4) for v in samples["wall"][::step]], "requests": opts["requests"],
            "details": details, "row": row}


# ---------------------------------------------------------------------------------------------
# Eval: the images shipped in trt/eval.npz
# ---------------------------------------------------------------------------------------------

MAX_EVAL_IMAGES = 2000


def load_eval(bundle: DeviceBundle, limit: Optional[int] = None) -> Dict[str, Any]:
    """trt/eval.npz: ``images`` uint8 NHWC (already resized and cropped at export), ``labels``,
    ``mean``/``std`` (normalisation happens here, as the package's Preprocess.normalize does it),
    ``classes``, ``source`` and ``labelled`` (unlabelled images give agreement only). Loaded
    without pickle."""
    import io

    if not os.path.isfile(bundle.path(EVAL_FILE)):
        raise DeviceError(f"this bundle has no evaluation images (trt/{EVAL_FILE}): it was exported without them",
                          hint="re-export with --target trt and --eval DATA (without --no-eval)")
    try:
        with np.load(io.BytesIO(bundle.read(EVAL_FILE)), allow_pickle=False) as data:
            out = {k: data[k] for k in ("images", "labels", "mean", "std", "classes", "source")}
            out["labelled"] = bool(data["labelled"]) if "labelled" in data.files else True
    except (KeyError, ValueError, OSError) as exc:
        raise DeviceError(f"trt/{EVAL_FILE} is not an evaluation file ({exc})", hint="re-export with --target trt") from None
    images, labels = out["images"], out["labels"]
    if images.dtype != np.uint8 or images.ndim != 4 or labels.shape != (len(images),) or len(images) > MAX_EVAL_IMAGES:
        raise DeviceError(f"trt/{EVAL_FILE} holds no uint8 NHWC images with one label each (<= {MAX_EVAL_IMAGES})",
                          hint="re-export with --target trt")
    n = len(images) if limit is None else min(int(limit), len(images))
    return {"images": images[:n], "labels": labels[:n].astype(np.int64), "mean": out["mean"].astype(np.float32),
            "std": out["std"].astype(np.float32), "classes": [str(c) for c in out["classes"]],
            "source": str(out["source"]), "labelled": out["labelled"]}


def normalize(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW model input, the same arithmetic as edgeresnet's Preprocess.normalize."""
    x = images.astype(np.float32) / np.float32(255.0)
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def predict_all(runner: Runner, data: Dict[str, Any], step: int = 256) -> np.ndarray:
    """Logits for every evaluation image, normalised ``step`` images at a time (bounded memory)."""
    parts = [runner(normalize(data["images"][i:i + step], data["mean"], data["std"]))
             for i in range(0, len(data["images"]), step)]
    return np.concatenate(parts)


def accuracy(logits: np.ndarray, labels: np.ndarray, classes: List[str]) -> Dict[str, Any]:
    pred = logits.argmax(1)
    top5 = None
    if logits.shape[1] >= 5:
        top5 = float((np.argsort(-logits, axis=1)[:, :5] == labels[:, None]).any(1).mean())
    per_class = {c: float((pred[labels == i] == i).mean()) for i, c in enumerate(classes) if (labels == i).any()}
    return {"pred": pred, "top1": float((pred == labels).mean()), "top5": top5, "per_class": per_class}


# ---------------------------------------------------------------------------------------------
# Rows: the package's report row (edgeresnet/report/schema.py ResultRow), same keys
# ---------------------------------------------------------------------------------------------

ROW: Dict[str, Any] = {
    "target": "trt", "precision": "", "artifact": None, "size_bytes": None, "top1": None, "top5": None,
    "top1_drop_pp": None, "agreement": None, "latency_ms": None, "throughput_ips": None, "batch": 1, "threads": None,
    "status": "ok", "reason": None, "per_class_drop_pp": None, "details": {}, "mode": "latency", "peak_memory_mb": None,
    "samples_ms": None, "fallback_layers": None, "kernel": None,
    # added by the device side: trtexec's split of the time, what a padded request really ran, telemetry
    "gpu_compute_ms": None, "h2d_ms": None, "d2h_ms": None, "enqueue_ms": None, "engine_batch": None,
    "per_image_ms": None, "cv_pct": None, **{k: None for k in Telemetry.COLUMNS}}


def make_row(precision: str, **fields: Any) -> Dict[str, Any]:
    unknown = set(fields) - set(ROW)
    if unknown:
        raise KeyError(f"not a row column: {sorted(unknown)}")
    return {**ROW, "details": {}, "precision": precision, **fields}


def failed_row(precision: str, exc: BaseException, **fields: Any) -> Dict[str, Any]:
    reason = exc.message if isinstance(exc, DeviceError) else f"{type(exc).__name__}: {exc}"
    return make_row(precision, status="failed", reason=(reason.splitlines() or ["failed"])[0], **fields)


def peak_rss_mb() -> Optional[float]:
    """This process's peak resident memory (Linux VmHWM), as the package's bench reports it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


def bench_row(name: str, engine_path: str, artifact: str, block: Dict[str, Any], batch: int, mode: str) -> Dict[str, Any]:
    """A bench block (bench_engine) as a report row."""
    return make_row(name, artifact=artifact, size_bytes=os.path.getsize(engine_path), batch=int(batch), mode=mode,
                    threads=block["requests"], latency_ms=block["latency_ms"], throughput_ips=block["throughput_ips"],
                    samples_ms=block["samples_ms"], peak_memory_mb=peak_rss_mb(), details=block["details"],
                    **block["row"])


def _fatal(exc: BaseException) -> bool:
    """Errors that end the whole run rather than one engine's row: out of memory or disk space."""
    import errno

    return isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT))


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------

def _plan(bundle: DeviceBundle, version: str, wanted: Optional[str]) -> Tuple[str, Dict[str, Any], Dict[str, Any]]:
    """(line, plan, engines to act on): the plan for ``version``, its engines filtered by --engines."""
    line, plan = select_plan(bundle.build_json(), version)
    engines = plan.get("engines") if isinstance(plan, dict) else None
    if not isinstance(engines, dict) or not engines:
        raise DeviceError(f"build.json's plan for line {line} has no engines", hint="re-export with --target trt")
    if wanted:
        names = [n.strip() for n in wanted.split(",") if n.strip()]
        unknown = [n for n in names if n not in engines]
        if unknown:
            raise DeviceError(f"--engines {unknown[0]}: the plan has {', '.join(engines)}", hint="pick from those",
                              code=EXIT_USAGE)
        engines = {n: engines[n] for n in names}
    fp32_first = sorted(engines, key=lambda n: (n != "fp32", n != "fp16", list(engines).index(n)))
    return line, plan, {n: engines[n] for n in fp32_first}


def _built(bundle: DeviceBundle, engines: Dict[str, Any]) -> Dict[str, Any]:
    have = {n: e for n, e in engines.items() if os.path.isfile(os.path.join(bundle.folder, engine_file(n)))}
    if not have:
        raise DeviceError(f"no engine of this plan is built in {bundle.folder}", hint="run: trt_device.py build")
    return have


def cmd_build(args: argparse.Namespace, trt: Any, bundle: DeviceBundle) -> List[Dict[str, Any]]:
    line, _, engines = _plan(bundle, str(trt.__version__), args.engines)
    rows = []
    for name, plan in engines.items():
        _say(f"building {name} ({line}) ...")
        artifact = f"{os.path.basename(bundle.folder)}/{engine_file(name)}"
        try:
            details = build_engine(trt, bundle, name, plan, line=line, workspace_mb=args.workspace_mb,
                                   verbose=args.verbose)
        except Exception as exc:  # one engine's failure is its row; the others still build
            if _fatal(exc):
                raise
            rows.append(failed_row(name, exc, artifact=artifact))
            continue
        size = os.path.getsize(os.path.join(bundle.folder, engine_file(name)))
        rows.append(make_row(name, artifact=artifact, size_bytes=size, details=details,
                             engine_batch=plan["profile"]["opt"] if details["batch_range"][0] == details["batch_range"][2]
                             else None))
    return rows


def cmd_eval(args: argparse.Namespace, trt: Any, bundle: DeviceBundle) -> List[Dict[str, Any]]:
    _, _, engines = _plan(bundle, str(trt.__version__), args.engines)
    engines = _built(bundle, engines)
    data = load_eval(bundle, args.limit)
    rows, base = [], None
    for name, plan in engines.items():
        artifact = f"{os.path.basename(bundle.folder)}/{engine_file(name)}"
        try:
            runner = open_runner(os.path.join(bundle.folder, engine_file(name)), plan.get("dla_core"), trt=trt)
            try:
                acc = accuracy(predict_all(runner, data), data["labels"], data["classes"])
            finally:
                runner.close()
        except Exception as exc:
            if _fatal(exc):
                raise
            rows.append(failed_row(name, exc, artifact=artifact))
            continue
        labelled = data["labelled"]
        row = make_row(name, artifact=artifact, top1=acc["top1"] if labelled else None,
                       top5=acc["top5"] if labelled else None,
                       details={"eval_images": len(data["labels"]), "eval_source": data["source"],
                                "engine_batch": runner.info.profile[2] if runner.info.static else None})
        if name == "fp32":
            base = acc
        if base is not None:
            row["agreement"] = float((acc["pred"] == base["pred"]).mean())
            if labelled:
                row["top1_drop_pp"] = round((base["top1"] - acc["top1"]) * 100, 4)
                row["per_class_drop_pp"] = {c: round((base["per_class"][c] - acc["per_class"].get(c, 0.0)) * 100, 3)
                                            for c in base["per_class"]}
        rows.append(row)
    return rows


def cmd_bench(args: argparse.Namespace, trt: Any, bundle: DeviceBundle) -> List[Dict[str, Any]]:
    _, _, engines = _plan(bundle, str(trt.__version__), args.engines)
    engines = _built(bundle, engines)
    rows = []
    for name, plan in engines.items():
        path = os.path.join(bundle.folder, engine_file(name))
        artifact = f"{os.path.basename(bundle.folder)}/{engine_file(name)}"
        for batch in args.batch:
            for mode in args.mode:
                _say(f"bench {name} batch {batch} {mode} ...")
                try:
                    with open(path, "rb") as f:
                        info = load_engine(trt, f.read(), plan.get("dla_core"))
                    block = bench_engine(info, batch=batch, mode=mode, requests=args.threads, warmup_ms=args.warmup_ms,
                                         duration_s=args.duration, iterations=args.iterations, telemetry=Telemetry())
                except Exception as exc:
                    if _fatal(exc):
                        raise
                    rows.append(failed_row(name, exc, artifact=artifact, batch=batch, mode=mode))
                    continue
                rows.append(bench_row(name, path, artifact, block, batch, mode))
    return rows


COMMANDS = {"build": cmd_build, "eval": cmd_eval, "bench": cmd_bench}


def _default_bundle() -> str:
    """This file's folder when it sits in a bundle (trt/trt_device.py), else ./trt, else ."""
    here = os.path.dirname(os.path.abspath(__file__))
    if os.path.isfile(os.path.join(here, "build.json")):
        return here
    return "trt" if os.path.isfile(os.path.join("trt", "build.json")) else "."


def _positive_ints(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or any(v < 1 or v > 65536 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: each value must be 1 to 65536")
    return values


def _modes(text: str) -> List[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes or any(m not in ("latency", "throughput") for m in modes):
        raise argparse.ArgumentTypeError(f"{text!r}: latency, throughput or both (latency,throughput)")
    return modes


def _bounded(kind: Callable[[str], Any], low: float, high: float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is outside {low:g}..{high:g}")
        return value
    return parse


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="trt_device.py", description="Build, evaluate and benchmark an edgeresnet TensorRT bundle on the device "
        "(Python >= 3.8, numpy, TensorRT's Python module; CUDA through libcudart).",
        epilog="exit codes: 0 ok, 1 an engine failed (its row says why), 2 bad flag, 3 bad bundle file, "
               "4 TensorRT/CUDA/GPU/DLA missing")
    sub = top.add_subparsers(dest="command", metavar="{build,eval,bench,plan}")
    sub.required = True
    for name, text in (("build", "build the engines of build.json's plan for the installed TensorRT"),
                       ("eval", "top-1 of each built engine on trt/eval.npz, and agreement with the fp32 engine"),
                       ("bench", "time each built engine as trtexec does (warm-up, duration, CUDA events)"),
                       ("plan", "print the plan this TensorRT (or --trt-version) selects; builds nothing")):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--bundle", default=None, help="the bundle's trt/ folder (default: this file's folder, or ./trt)")
        p.add_argument("--engines", default=None, help="comma-separated engine names of the plan (default: all)")
        p.add_argument("--json", action="store_true", help="print the rows as JSON on stdout")
        p.add_argument("--out", default=None, help="write the rows here (default: trt/device.<command>.json)")
        p.add_argument("--no-verify", action="store_true",
                       help="skip the SHA-256 check of bundle files against ../edgeresnet.json")
        if name == "build":
            p.add_argument("--workspace-mb", type=_bounded(int, 16, 1 << 20), default=1024,
                           help="builder workspace memory pool in MiB (default 1024)")
            p.add_argument("--verbose", action="store_true", help="TensorRT's verbose log")
        if name == "eval":
            p.add_argument("--limit", type=_bounded(int, 1, MAX_EVAL_IMAGES), default=None,
                           help="evaluate on the first N images only")
        if name == "bench":
            p.add_argument("--batch", type=_positive_ints, default=[1], help="batch sizes, e.g. 1,8 (default 1)")
            p.add_argument("--mode", type=_modes, default=["latency"], help="latency, throughput or latency,throughput")
            p.add_argument("--threads", type=_bounded(int, 1, 64), default=2,
                           help="throughput mode: threads, each with its own execution context, stream and buffers "
                                "(default 2)")
            p.add_argument("--warmup-ms", type=_bounded(float, 0, 600_000), default=WARMUP_MS,
                           help=f"time-based warm-up in ms (default {WARMUP_MS:g}, as trtexec --warmUp)")
            p.add_argument("--duration", type=_bounded(float, 0, 3600), default=DURATION_S,
                           help=f"timed seconds per row (default {DURATION_S:g}, as trtexec --duration)")
            p.add_argument("--iterations", type=_bounded(int, 1, 10_000_000), default=ITERATIONS,
                           help=f"at least this many timed runs (default {ITERATIONS}, as trtexec --iterations)")
        if name == "plan":
            p.add_argument("--trt-version", default=None, help="plan for this TensorRT version instead of the installed one")
    return top


def write_rows(bundle: DeviceBundle, command: str, rows: List[Dict[str, Any]], trt: Any, out: Optional[str]) -> str:
    """The rows as a JSON file the package reads (same keys as report.json's results)."""
    doc = {"format": FORMAT, "command": command, "tensorrt": str(trt.__version__), "created": time.strftime(
        "%Y-%m-%dT%H:%M:%S%z"), "python": sys.version.split()[0], "numpy": np.__version__, "rows": rows}
    path = out or bundle.output(f"device.{command}.json")
    write_atomic(path, json.dumps(doc, indent=1, default=str).encode())
    return path


def _show(rows: List[Dict[str, Any]]) -> None:
    for r in rows:
        if r["status"] != "ok":
            _say(f"  {r['precision']:<10} FAILED: {r['reason']}")
            continue
        parts = [f"  {r['precision']:<10}"]
        if r["top1"] is not None:
            parts.append(f"top-1 {r['top1'] * 100:6.2f}%")
        if r["agreement"] is not None:
            parts.append(f"agreement {r['agreement'] * 100:6.2f}%")
        if r["latency_ms"]:
            parts.append(f"b{r['batch']} {r['mode']}: p50 {r['latency_ms']['p50']:.3f} ms, "
                         f"GPU {r['gpu_compute_ms']['p50']:.3f} ms, {r['throughput_ips']:.1f} img/s")
            if r["engine_batch"] != r["batch"]:
                parts.append(f"(ran batch {r['engine_batch']}: {r['per_image_ms']:.3f} ms/image)")
        elif r["size_bytes"]:
            parts.append(f"{r['size_bytes'] / 1e6:.1f} MB on {r['details'].get('device')}")
        _say(" ".join(parts))
        for warning in r["details"].get("warnings", []) + r["details"].get("timing_warnings", []):
            _say(f"  warning: {r['precision']}: {warning}")


def run(args: argparse.Namespace) -> int:
    bundle = DeviceBundle(args.bundle or _default_bundle(), verify=not args.no_verify)
    if args.command == "plan":
        version = args.trt_version or str(tensorrt().__version__)
        line, plan = select_plan(bundle.build_json(), version)
        print(json.dumps({"tensorrt": version, "line": line, "plan": plan}, indent=1))
        return 0
    trt = tensorrt()
    rows = COMMANDS[args.command](args, trt, bundle)
    path = write_rows(bundle, args.command, rows, trt, args.out)
    _show(rows)
    _say(f"rows written to {path}")
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
    return 1 if any(r["status"] != "ok" for r in rows) else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except DeviceError as exc:
        _say(f"error: {exc.message}\n  hint: {exc.hint}")
        return exc.code
    except KeyboardInterrupt:
        _say("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
