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
import re
import shutil
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

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
SYSFS_ENV = "TRT_DEVICE_SYSFS_ROOT"  # telemetry reads /sys, /proc, /etc under this root (tests: a fixture board)
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
    if not hasattr(engine, "num_io_tensors"):
        # TensorRT 8.4 (JetPack 5.0.2) has only the bindings API (release/8.4 python/src/infer/pyCore.cpp:
        # no num_io_tensors, set_input_shape or execute_async_v3); this file runs engines through the
        # named-tensor API of 8.5+. Its engines still build and are audited.
        raise DeviceError(f"TensorRT {trt.__version__} runs engines through the bindings API only; eval and bench here "
                          "use the named-tensor API of TensorRT 8.5+ (build works on 8.4)",
                          hint="upgrade to JetPack 5.1.x (TensorRT 8.5.2), or time the built engines with "
                          "trtexec --loadEngine=trt/model.<engine>.engine", code=EXIT_UNAVAILABLE)
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
# Layer audit: the engine inspector's JSON, read the same way on the device and in the package
# ---------------------------------------------------------------------------------------------

# The layer audit of a built engine: a plain function of the engine inspector's JSON
# (``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)``, or trtexec's
# ``--exportLayerInfo``), so the package and the device file read an engine the same way.
#
# Standard library only and Python 3.8 (the device file inlines this module on JetPack 5).
#
# What it reads, from NVIDIA's own engine JSON (the trex samples in NVIDIA/TensorRT,
# ``tools/experimental/trt-engine-explorer/examples/pytorch/resnet/A100/*/*.graph.json``,
# unchanged from release/8.4 to release/10.16):
#
# * ``Layers``: one object per engine layer (``Name``, ``LayerType``, ``Inputs``/``Outputs`` with
#   the tensor's ``Name`` and its type), and ``Bindings``: the engine's I/O tensor names. With
#   ``ProfilingVerbosity.LAYER_NAMES_ONLY`` the layers are bare names and nothing can be checked.
# * A tensor's type: ``"Format/Datatype"`` up to TensorRT 10 ("Row major linear FP32", "Thirty-two
#   wide channel vectorized row major Int8 format"), ``"DataType"`` from 11 ("Migrating
#   IEngineInspector Usage from TensorRT 10.x to 11.x"). A tensor with neither is *unknown*: it is
#   reported as such and never counted as float.
# * Convolutions: ``CaskConvolution``, ``CaskFlattenConvolution``, ``CaskGemmConvolution``,
#   ``ConvActPool`` (a stem conv fused with its activation and max-pool) and any ``LayerType``
#   naming a convolution, or ``ParameterType: "Convolution"``. The first input is the data; a
#   second input is the residual of a fused ``Add``.
# * Reformats: ``LayerType: "Reformat"``; ``Origin: "QDQ"`` marks a quantize/dequantize that did
#   not fuse, ``"REFORMAT"`` a layout/precision copy. A reformat at the engine's edge (reading an
#   input that nothing before it made int8, or writing an output) is expected: an INT8 engine must
#   quantize its float input somewhere. ``NoOp`` copy nodes cost nothing and are skipped.
# * DLA: TensorRT names each DLA subgraph ``{ForeignNode[first...last]}`` (its builder log lists
#   them as ``[DlaLayer] {ForeignNode[...]}``: NVIDIA/TensorRT ``samples/sampleCudla/README.md``).
#   GPU engines use the same name for Myelin regions, so a layer counts as DLA only in an engine
#   built for DLA, or when its type, tactic or device field says DLA. No inspector JSON of a DLA
#   engine is published by NVIDIA: this rule is read from the builder's naming, not from a sample.

_DTYPES = (  # (canonical, words that name it), first match wins; order matters (fp16 before float)
    ("int8", ("int8",)), ("uint8", ("uint8",)), ("int4", ("int4",)), ("int32", ("int32",)), ("int64", ("int64",)),
    ("bf16", ("bf16", "bfloat16")), ("fp16", ("fp16", "half", "float16")), ("fp8", ("fp8", "e4m3")),
    ("fp4", ("fp4", "e2m1")), ("fp32", ("fp32", "float", "float32")), ("bool", ("bool",)),
)
FLOAT_TYPES = ("fp32", "fp16", "bf16")
CONV_TYPES = ("CaskConvolution", "CaskFlattenConvolution", "CaskGemmConvolution", "ConvActPool",
              "CaskDeconvolution", "Convolution", "CudnnConvolution")
GLUE_TYPES = ("Reformat", "NoOp", "Shuffle", "Slice", "Padding", "Constant")  # move data, compute nothing
ELEMENTWISE = ("ElementWise", "PointWise", "PointWiseV2")


def tensor_dtype(entry) -> str:
    """The data type of one inspector tensor entry: "int8", "fp16", "fp32", ... or "unknown"."""
    if not isinstance(entry, dict):
        return "unknown"
    for key in ("DataType", "Format/Datatype", "Datatype"):
        text = entry.get(key)
        if isinstance(text, str):
            words = re.findall(r"[a-z0-9]+", text.lower())
            for canonical, names in _DTYPES:
                if any(w in names for w in words):
                    return canonical
            return "unknown"
    return "unknown"


def _raw_dtype(entry) -> str:
    if isinstance(entry, dict):
        for key in ("DataType", "Format/Datatype", "Datatype"):
            if isinstance(entry.get(key), str):
                return entry[key]
    return "no type field"


def _tensors(layer: dict, key: str) -> List[dict]:
    value = layer.get(key)
    return [t for t in value if isinstance(t, dict)] if isinstance(value, list) else []


def _parts(name: str) -> List[str]:
    """The ONNX node names inside a (fused) layer name: "A + B", "{ForeignNode[A...B]}"."""
    return [p.strip() for p in re.split(r" \+ |\.\.\.|\{ForeignNode\[|\]\}", name) if p.strip()]


def is_conv(layer: dict) -> bool:
    kind = str(layer.get("LayerType", ""))
    return kind in CONV_TYPES or "conv" in kind.lower() or layer.get("ParameterType") == "Convolution"


def is_dla(layer: dict, dla_engine: bool) -> bool:
    """A DLA layer: one the engine says runs on DLA, or a ForeignNode of an engine built for DLA."""
    said = " ".join(str(layer.get(k, "")) for k in ("LayerType", "TacticName", "Device", "DeviceType")).lower()
    if re.search(r"\bdla\b|dla_|kdla", said):
        return True
    return dla_engine and str(layer.get("Name", "")).startswith("{ForeignNode[")


class _Graph:
    """Producers, and the engine's input and output tensors (``Bindings``, else inferred)."""

    def __init__(self, layers: List[dict], bindings: Optional[Sequence[str]]) -> None:
        self.producer: Dict[str, dict] = {}
        consumed = set()
        for layer in layers:
            for t in _tensors(layer, "Outputs"):
                self.producer.setdefault(str(t.get("Name")), layer)
            consumed.update(str(t.get("Name")) for t in _tensors(layer, "Inputs"))
        if bindings:
            self.io = {str(b) for b in bindings}
        else:
            self.io = {n for n in consumed if n not in self.producer} | {n for n in self.producer if n not in consumed}

    def from_inputs(self, tensor: str) -> bool:
        """Whether ``tensor`` comes from the engine's inputs through data movement only (pads, copies,
        shuffles): the place where an INT8 engine must quantize its float input."""
        seen, todo = set(), [tensor]
        while todo:
            name = todo.pop()
            if name in self.io:
                continue
            layer = self.producer.get(name)
            if layer is None:
                return False
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            if str(layer.get("LayerType", "")) not in GLUE_TYPES:
                return False
            todo.extend(str(t.get("Name")) for t in _tensors(layer, "Inputs"))
        return True


def _reformat_expected(layer: dict, graph: _Graph) -> bool:
    ins, outs = _tensors(layer, "Inputs"), _tensors(layer, "Outputs")
    if any(str(t.get("Name")) in graph.io for t in outs):
        return True
    return bool(ins) and all(graph.from_inputs(str(t.get("Name"))) for t in ins)


def _expected(name: str, expected_float: Iterable[str]) -> bool:
    parts = _parts(name)
    return any(f in parts for f in expected_float)


def _check_reformat(layer: dict, graph: _Graph, report: dict) -> None:
    name = str(layer.get("Name", ""))
    if _reformat_expected(layer, graph):
        report["reformats"]["expected"].append(name)
        return
    report["reformats"]["unexpected"].append(name)
    ins, outs = _tensors(layer, "Inputs"), _tensors(layer, "Outputs")
    change = "{} -> {}".format(",".join(tensor_dtype(t) for t in ins) or "?",
                               ",".join(tensor_dtype(t) for t in outs) or "?")
    if layer.get("Origin") == "QDQ":
        report["warnings"].append("reformat layer {!r} ({}): a quantize/dequantize that did not fuse, because the "
                                  "layer next to it runs in float".format(name, change))
    else:
        report["warnings"].append("reformat layer {!r} ({}): a layout/precision conversion between layers costs "
                                  "time".format(name, change))


def _check_conv(layer: dict, expected_float: Sequence[str], report: dict) -> None:
    name, ins = str(layer.get("Name", "")), _tensors(layer, "Inputs")
    convs = report["convolutions"]
    convs["total"] += 1
    data = tensor_dtype(ins[0]) if ins else "unknown"
    if data == "unknown":
        convs["unknown"].append(name)
        return
    if data != "int8":
        convs["float"].append(name)
        if not _expected(name, expected_float):
            report["warnings"].append("conv {!r} runs in float ({}): missing Q/DQ on its input or weights".format(
                name, _raw_dtype(ins[0])))
        return
    convs["int8"] += 1
    residual = [t for t in ins[1:] if tensor_dtype(t) in FLOAT_TYPES]
    if residual and not _expected(name, expected_float):
        report["residual_float_inputs"].append(name)
        report["warnings"].append("conv {!r} adds a float residual ({}): quantize the identity input of its Add so "
                                  "the sum stays int8".format(name, _raw_dtype(residual[0])))


def _new_report(verbosity: str, layers: int) -> dict:
    return {"verbosity": verbosity, "layers": layers,
            "convolutions": {"total": 0, "int8": 0, "float": [], "unknown": []},
            "reformats": {"expected": [], "unexpected": []}, "residual_float_inputs": [], "unfused_adds": [],
            "float_layers": [], "unknown_type_layers": [], "unknown_dtype_layers": [],
            "devices": {"dla": 0, "gpu": 0}, "dla_layers": [], "gpu_fallbacks": [], "warnings": []}


def audit(info, precision: str, expected_float: Sequence[str] = (), dla: bool = False) -> dict:
    """Findings and counts for one engine. ``precision`` is the engine's ("int8", "fp16", "fp32";
    a "-dla" suffix is allowed); ``expected_float`` names the ONNX nodes kept in float on purpose;
    ``dla`` says the engine was built for a DLA core. ``warnings`` are the lines to show a user."""
    layers = info.get("Layers") if isinstance(info, dict) else None
    if not isinstance(layers, list):
        return _new_report("none", 0)
    objects = [layer for layer in layers if isinstance(layer, dict)]
    if not objects:
        report = _new_report("layer_names_only" if layers else "none", len(layers))
        if layers:
            report["warnings"].append("the engine was built without ProfilingVerbosity.DETAILED: its layers "
                                      "cannot be checked")
        return report
    report = _new_report("detailed", len(layers))
    graph = _Graph(objects, info.get("Bindings") if isinstance(info.get("Bindings"), list) else None)
    int8, dla = precision.split("-")[0] == "int8", dla or precision.endswith("-dla")
    for layer in objects:
        _audit_layer(layer, graph, int8, dla, tuple(expected_float), report)
    if dla and not report["dla_layers"]:
        report["warnings"].append("no layer of this DLA engine ran on the DLA: everything fell back to the GPU")
    elif report["gpu_fallbacks"]:
        report["warnings"].append("{} layer(s) fell back from the DLA to the GPU: {}".format(
            len(report["gpu_fallbacks"]), ", ".join(report["gpu_fallbacks"][:8])))
    return report


def _audit_layer(layer: dict, graph: _Graph, int8: bool, dla: bool, expected_float: Tuple[str, ...],
                 report: dict) -> None:
    name, kind = str(layer.get("Name", "")), layer.get("LayerType")
    if not isinstance(kind, str) or not kind:
        report["unknown_type_layers"].append(name)
        kind = ""
    on_dla = is_dla(layer, dla)
    report["devices"]["dla" if on_dla else "gpu"] += 1
    if on_dla:
        report["dla_layers"].append(name)
        return  # a DLA loadable's inside is not in the JSON: its precision is the DLA's business
    if dla and kind not in GLUE_TYPES and not name.startswith("Reformatting CopyNode"):
        report["gpu_fallbacks"].append(name)
    if kind == "NoOp":
        return
    if kind == "Reformat" or name.startswith("Reformatting CopyNode"):
        _check_reformat(layer, graph, report)
        return
    ins = _tensors(layer, "Inputs")
    types = [tensor_dtype(t) for t in ins]
    if ins and all(t == "unknown" for t in types):
        report["unknown_dtype_layers"].append(name)
    if not int8:
        return
    if is_conv(layer):
        _check_conv(layer, expected_float, report)
    elif kind in ELEMENTWISE and "Add" in name and not _expected(name, expected_float):
        report["unfused_adds"].append(name)
        report["warnings"].append("residual Add {!r} runs as its own {} layer, not fused into a conv: quantize its "
                                  "identity input".format(name, kind))
    elif kind not in GLUE_TYPES and any(t in FLOAT_TYPES for t in types):
        report["float_layers"].append(name)


def summary(report: dict) -> str:
    """One line for a bench row or a build log: DLA vs GPU, convs in int8, reformats."""
    convs, dev = report["convolutions"], report["devices"]
    parts = ["{} layers".format(report["layers"])]
    if dev["dla"]:
        parts.append("{} on DLA, {} on GPU ({} fallbacks)".format(dev["dla"], dev["gpu"], len(report["gpu_fallbacks"])))
    if convs["total"]:
        parts.append("{}/{} convs int8".format(convs["int8"], convs["total"])
                     + (", {} unknown".format(len(convs["unknown"])) if convs["unknown"] else ""))
    parts.append("{} unexpected reformats".format(len(report["reformats"]["unexpected"])))
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# Telemetry: power, clocks and temperatures around a run (as rbonghi/jetson_stats reads them)
# ---------------------------------------------------------------------------------------------

# Power, clocks and temperatures around a benchmark run, read the way Jetson users read them.
#
# A Jetson number means little without the board's state: the nvpmodel power mode, whether
# `jetson_clocks` locked the clocks, whether a clock fell or a thermal zone passed a trip point
# during the run, and what each image cost in energy. This module reads those facts from sysfs
# (the files rbonghi/jetson_stats reads; each reader names the jetson_stats file it follows), from
# RAPL on x86 and from NVML on discrete GPUs, and writes "n/a" and why wherever a fact cannot be
# read: it never makes up a figure.
#
# Standard library only, Python >= 3.8: it runs on the device beside trt_device.py (which inlines
# it), where nothing may be installed. pynvml (nvidia-ml-py) is used when it imports.
# Units out: W, J, MHz, degrees C, GPU load in percent.

NA = "n/a"
HIGH_LOAD_PCT = 50.0  # a clock drop is throttling only while the GPU is at least this busy
CLOCK_DROP = 0.05  # ... and only when the clock fell more than 5% below its starting value
THROTTLE_TRIPS = ("passive", "hot", "critical")  # trip types that cap clocks or stop the chip
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")  # module input rails: jtop/core/power.py total_power
GPU_NODE_NAMES = ("gv11b", "gp10b", "ga10b", "gb10b")  # jtop/core/gpu.py KNOWN_GPU_DEVICE_NAMES
OFFLINE_C = -40.0  # jtop/core/temperature.py marks an unreadable zone -256 C; none runs this cold


class _Sysfs:
    """Files under `root` read as if `root` were "/" (a fixture tree in tests). A missing or
    unreadable file reads as None: on a device that is a fact to report, never an error."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def path(self, absolute: str) -> str:
        return os.path.join(self.root, absolute.lstrip("/"))

    def shown(self, path: str) -> str:
        """The path as the device names it (the fixture root taken off), for messages."""
        rel = os.path.relpath(path, self.root)
        return path if rel.startswith("..") else "/" + rel.replace(os.sep, "/")

    def glob(self, pattern: str, under: Optional[str] = None) -> List[str]:
        """Sorted matches of `pattern`, an absolute device path or one relative to the folder
        `under`; the root itself is escaped, so a fixture path with [ or * in it stays literal."""
        base = glob.escape(under if under is not None else self.root)
        return sorted(glob.glob(os.path.join(base, pattern.lstrip("/") if under is None else pattern)))

    @staticmethod
    def text(path: str) -> Optional[str]:
        try:
            with open(path, "r", errors="replace") as handle:
                return handle.read().strip("\x00\n\r\t ")
        except OSError:
            return None

    @classmethod
    def number(cls, path: str) -> Optional[int]:
        """An integer file; jtop/core/power.py also meets "32760 ma", so the first word."""
        text = cls.text(path)
        try:
            return int(text.split()[0]) if text else None
        except ValueError:
            return None

    def why(self, path: str) -> str:
        """Why `path` gives no number: absent, permission denied, or the OS's own words."""
        try:
            with open(path, "r") as handle:
                handle.read(64)
            return "{}: not a number".format(self.shown(path))
        except FileNotFoundError:
            return "{}: absent".format(self.shown(path))
        except PermissionError:
            return "{}: permission denied".format(self.shown(path))
        except OSError as exc:
            return "{}: {}".format(self.shown(path), exc.strerror or exc)


def gpu_devfreq(root: str = "/") -> Optional[str]:
    """The integrated GPU's devfreq folder, or None off Jetson.

    Every /sys/class/devfreq entry whose device-tree node (device/of_node/name) or own name is a
    Tegra GPU, as jtop/core/gpu.py find_igpu scans; Thor's GPU is gpu-gpc-0 (jtop/core/thor_gpu.py,
    hw_detect.py), ranked before its other gpu-* domains. Never one hard-coded path: Orin is
    17000000.ga10b on JetPack 5 and 17000000.gpu on JetPack 6, Xavier 17000000.gv11b, Nano
    57000000.gpu."""
    fs = _Sysfs(root)
    ranked = []
    for entry in fs.glob("/sys/class/devfreq/*"):
        base = os.path.basename(entry).lower()
        node = (fs.text(os.path.join(entry, "device", "of_node", "name")) or "").lower()
        if any(name in node or name in base for name in GPU_NODE_NAMES):
            rank = 0
        elif "gpu" in node:
            rank = 1
        elif "gpu" in base:
            rank = 2 if "gpc" in base else 3
        else:
            continue
        ranked.append((rank, base, entry))
    return min(ranked)[2] if ranked else None


# EMC (memory) clock, (cur, min, max) in Hz, in the order jtop/core/memory.py read_emc tries them:
# BPMP debugfs (Xavier, Orin; debugfs is root-only), Thor's bwmgr devfreq, tegra_bwmgr (Nano, TX),
# the old clk tree. nvpmodel's EMC cap lowers max (read_emc, emc_iso_cap).
_EMC_SOURCES = (
    ("/sys/kernel/debug/bpmp/debug/clk/emc/rate", "/sys/kernel/debug/bpmp/debug/clk/emc/min_rate",
     "/sys/kernel/debug/bpmp/debug/clk/emc/max_rate"),
    ("/sys/class/devfreq/bwmgr/cur_freq", "/sys/class/devfreq/bwmgr/min_freq",
     "/sys/class/devfreq/bwmgr/max_freq"),
    ("/sys/kernel/debug/clk/override.emc/clk_rate", "/sys/kernel/debug/tegra_bwmgr/emc_min_rate",
     "/sys/kernel/debug/tegra_bwmgr/emc_max_rate"),
    ("/sys/kernel/clk/emc/clk_rate", "/sys/kernel/clk/emc/clk_min_rate", "/sys/kernel/clk/emc/clk_max_rate"),
)
_EMC_CAP = "/sys/kernel/nvpmodel_emc_cap/emc_iso_cap"


def _mhz(value: Optional[int], per_mhz: float) -> Optional[float]:
    return None if value is None else round(value / per_mhz, 1)


class _Clocks:
    """Where the GPU (devfreq, Hz), EMC (Hz) and CPU (cpufreq, kHz) clocks are, and their
    min/max/cur now. CPU files as jtop/core/cpu.py read_system_cpu reads them."""

    def __init__(self, fs: _Sysfs) -> None:
        self.fs = fs
        self.gpu = gpu_devfreq(fs.root)
        self.emc, self.emc_why = self._find_emc()
        self.cpus = [d for d in fs.glob("/sys/devices/system/cpu/cpu[0-9]*")
                     if os.path.isdir(os.path.join(d, "cpufreq"))]

    def _find_emc(self) -> Tuple[Optional[Tuple[str, str, str]], Optional[str]]:
        reasons = []
        for paths in _EMC_SOURCES:
            full = tuple(self.fs.path(p) for p in paths)
            if self.fs.number(full[0]) is not None:
                return (full[0], full[1], full[2]), None
            reason = self.fs.why(full[0])
            if not reason.endswith(": absent"):
                reasons.append(reason + (" (debugfs is root-only)" if "/debug/" in paths[0] else ""))
        if reasons:
            return None, "; ".join(reasons)
        return None, "no EMC clock under /sys/kernel/debug/bpmp, /sys/class/devfreq/bwmgr, " \
                     "/sys/kernel/debug/tegra_bwmgr or /sys/kernel/clk/emc"

    def gpu_hz(self) -> Optional[int]:
        return self.fs.number(os.path.join(self.gpu, "cur_freq")) if self.gpu else None

    def gpu_load(self) -> Optional[float]:
        """Percent busy: the GPU device's `load`, per mille (jtop/core/gpu.py igpu_read_status)."""
        if not self.gpu:
            return None
        for name in (os.path.join("device", "load"), "load"):
            value = self.fs.number(os.path.join(self.gpu, name))
            if value is not None:
                return value / 10.0
        return None

    def emc_hz(self) -> Optional[int]:
        return self.fs.number(self.emc[0]) if self.emc else None

    def state(self) -> Dict[str, Dict[str, Any]]:
        """{"gpu"|"emc"|"cpu": {"cur_mhz", "min_mhz", "max_mhz", ...}} for the domains readable."""
        out = {}  # type: Dict[str, Dict[str, Any]]
        if self.gpu:
            read = lambda name: self.fs.number(os.path.join(self.gpu, name))  # noqa: E731
            out["gpu"] = {"cur_mhz": _mhz(read("cur_freq"), 1e6), "min_mhz": _mhz(read("min_freq"), 1e6),
                          "max_mhz": _mhz(read("max_freq"), 1e6), "devfreq": os.path.basename(self.gpu),
                          "governor": self.fs.text(os.path.join(self.gpu, "governor"))}
        if self.emc:
            top = self.fs.number(self.emc[2])
            cap = self.fs.number(self.fs.path(_EMC_CAP))
            if top is not None and cap and 0 < cap < top:
                top = cap
            out["emc"] = {"cur_mhz": _mhz(self.fs.number(self.emc[0]), 1e6),
                          "min_mhz": _mhz(self.fs.number(self.emc[1]), 1e6), "max_mhz": _mhz(top, 1e6),
                          "source": self.fs.shown(os.path.dirname(self.emc[0]))}
        cpu = self._cpu_state()
        if cpu:
            out["cpu"] = cpu
        return out

    def _cpu_state(self) -> Optional[Dict[str, Any]]:
        """Online CPUs' scaling min/max/cur (kHz files): the lowest current and minimum, the
        highest maximum, and which CPUs are unlocked (min != max) or below their maximum."""
        rows = []
        for cpu in self.cpus:
            if (self.fs.text(os.path.join(cpu, "online")) or "1") != "1":
                continue
            freq = os.path.join(cpu, "cpufreq")
            values = [self.fs.number(os.path.join(freq, "scaling_{}_freq".format(k))) for k in ("cur", "min", "max")]
            if all(v is not None for v in values):
                rows.append((os.path.basename(cpu), values[0], values[1], values[2]))
        if not rows:
            return None
        return {"cur_mhz": _mhz(min(r[1] for r in rows), 1e3), "cur_top_mhz": _mhz(max(r[1] for r in rows), 1e3),
                "min_mhz": _mhz(min(r[2] for r in rows), 1e3), "max_mhz": _mhz(max(r[3] for r in rows), 1e3),
                "online": len(rows), "unlocked": [r[0] for r in rows if r[2] != r[3]],
                "below_max": [r[0] for r in rows if r[1] != r[3]],
                "governor": self.fs.text(os.path.join(self.cpus[0], "cpufreq", "scaling_governor"))}


_MODEL_RE = re.compile(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)\s*>")
_DEFAULT_RE = re.compile(r"<\s*PM_CONFIG\s+DEFAULT=(\d+)\s*>")
_QUERY_RE = re.compile(r"NV Power Mode:\s*(\S+)")  # jtop/core/nvpmodel.py NV_POWER_MODE_RE


def _nvpmodel_conf(fs: _Sysfs) -> Tuple[Dict[int, str], Optional[int]]:
    """Mode names and the boot default from /etc/nvpmodel.conf ("< POWER_MODEL ID=0 NAME=MAXN >",
    "< PM_CONFIG DEFAULT=2 >", the format its own header documents); comment lines skipped."""
    modes, default = {}, None  # type: Dict[int, str], Optional[int]
    for line in (fs.text(fs.path("/etc/nvpmodel.conf")) or "").splitlines():
        if line.lstrip().startswith("#"):
            continue
        match = _MODEL_RE.search(line)
        if match:
            modes.setdefault(int(match.group(1)), match.group(2))
        match = _DEFAULT_RE.search(line)
        if match:
            default = int(match.group(1))
    return modes, default


def _nvpmodel_query() -> Optional[Tuple[int, str]]:
    """`nvpmodel -q`: "NV Power Mode: MAXN" then the id on the next line (jtop/core/nvpmodel.py
    nvpmodel_query)."""
    try:
        lines = subprocess.run(["nvpmodel", "-q"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               universal_newlines=True, timeout=5).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    for index, line in enumerate(lines):
        match = _QUERY_RE.search(line)
        if match and index + 1 < len(lines) and lines[index + 1].strip().isdigit():
            return int(lines[index + 1].strip()), match.group(1)
    return None


def _power_mode(fs: _Sysfs, live: bool) -> Dict[str, Any]:
    """The nvpmodel mode: its id from /var/lib/nvpmodel/status ("pmode:0002", what nvpmodel
    writes on every -m), named from /etc/nvpmodel.conf; else `nvpmodel -q` (on the real machine
    only); else the conf's PM_CONFIG default, which nvpmodel applies when it has saved no mode."""
    modes, default = _nvpmodel_conf(fs)
    maxn = sorted((i, n) for i, n in modes.items() if n.upper().startswith("MAXN"))
    out = {"maxn": {"id": maxn[0][0], "name": maxn[0][1]} if maxn else None}  # type: Dict[str, Any]
    status = fs.text(fs.path("/var/lib/nvpmodel/status")) or ""
    match = re.search(r"pmode:\s*(\d+)", status)
    queried = _nvpmodel_query() if not match and live and shutil.which("nvpmodel") else None
    if match:
        mode_id, source = int(match.group(1)), "/var/lib/nvpmodel/status"
    elif queried:
        mode_id, source = queried[0], "nvpmodel -q"
        modes.setdefault(mode_id, queried[1])
    elif default is not None:
        mode_id, source = default, "/etc/nvpmodel.conf PM_CONFIG DEFAULT (no saved mode)"
    else:
        out.update(id=None, name=NA, why="no /var/lib/nvpmodel/status, /etc/nvpmodel.conf or nvpmodel")
        return out
    out.update(id=mode_id, name=modes.get(mode_id, NA), source=source)
    if mode_id not in modes:
        out["why"] = "mode {} is not named in /etc/nvpmodel.conf".format(mode_id)
    return out


def _lock_check(clocks: Dict[str, Dict[str, Any]], mode: Dict[str, Any]) -> Tuple[Any, Optional[str]]:
    """(locked, warning). Locked is what `jetson_clocks` leaves: GPU and CPU min == max == cur,
    EMC cur == max (jtop/core/jetson_clocks.py jetson_clocks_alive: min == max for CPU and GPU,
    cur == max for EMC). One warning names every clock below its maximum or unlocked and a power
    mode other than the board's MAXN. n/a off Jetson (no GPU devfreq)."""
    gpu = clocks.get("gpu")
    if not gpu:
        return NA, None
    if None in (gpu["cur_mhz"], gpu["min_mhz"], gpu["max_mhz"]):
        return NA, "GPU clocks unreadable in {}".format(gpu["devfreq"])
    problems = []
    if gpu["min_mhz"] != gpu["max_mhz"] or gpu["cur_mhz"] != gpu["max_mhz"]:
        unlocked = "" if gpu["min_mhz"] == gpu["max_mhz"] else " (min {}, not locked)".format(gpu["min_mhz"])
        problems.append("GPU at {} of {} MHz{}".format(gpu["cur_mhz"], gpu["max_mhz"], unlocked))
    emc = clocks.get("emc")
    if emc and emc["max_mhz"] is not None and emc["cur_mhz"] != emc["max_mhz"]:
        problems.append("EMC at {} of {} MHz".format(emc["cur_mhz"], emc["max_mhz"]))
    cpu = clocks.get("cpu")
    if cpu and (cpu["unlocked"] or cpu["below_max"]):
        unlocked = " ({} not locked)".format(", ".join(cpu["unlocked"])) if cpu["unlocked"] else ""
        problems.append("CPU at {} of {} MHz{}".format(cpu["cur_mhz"], cpu["max_mhz"], unlocked))
    locked = not problems
    maxn = mode.get("maxn")
    if maxn and mode.get("id") is not None and mode["id"] != maxn["id"]:
        problems.append("power mode {} ({}), not {} ({})".format(mode["name"], mode["id"], maxn["name"], maxn["id"]))
    if not problems:
        return locked, None
    fix = "sudo nvpmodel -m {} && sudo jetson_clocks".format(maxn["id"]) if maxn else "sudo jetson_clocks"
    return locked, "not at maximum clocks: {}; `{}` gives repeatable numbers".format("; ".join(problems), fix)


class _Thermal:
    """Thermal zones and their trip points. jtop/core/temperature.py reads
    /sys/devices/virtual/thermal/thermal_zone*/{type,temp}, which /sys/class/thermal links to,
    and skips PMIC zones (a fixed value on TX and Nano); trip points per the kernel's
    Documentation/driver-api/thermal/sysfs-api.rst (trip_point_N_temp in millidegrees C,
    trip_point_N_type critical/hot/passive/active)."""

    def __init__(self, fs: _Sysfs) -> None:
        self.fs = fs
        self.zones = []  # type: List[Tuple[str, str]]
        self.trips = {}  # type: Dict[str, List[Tuple[str, float]]]
        for zone in fs.glob("/sys/class/thermal/thermal_zone*"):
            name = fs.text(os.path.join(zone, "type")) or os.path.basename(zone)
            if "PMIC" in name:
                continue
            if any(name == seen for seen, _ in self.zones):
                name = "{} ({})".format(name, os.path.basename(zone))
            self.zones.append((name, os.path.join(zone, "temp")))
            trips = []
            for temp_path in fs.glob("trip_point_*_temp", under=zone):
                kind = fs.text(temp_path[:-len("temp")] + "type")
                limit = fs.number(temp_path)
                if kind in THROTTLE_TRIPS and limit is not None:
                    trips.append((kind, limit / 1000.0))
            if trips:
                self.trips[name] = sorted(trips, key=lambda trip: trip[1])

    def read(self) -> Dict[str, float]:
        temps = {}
        for name, path in self.zones:
            value = self.fs.number(path)
            if value is not None and value / 1000.0 > OFFLINE_C:
                temps[name] = value / 1000.0
        return temps


class _Rail:
    """One power reading: `read()` gives watts now (kind "W") or a running energy total in
    joules (kind "J": RAPL's and NVML's counters, unwrapped by _Counter)."""

    def __init__(self, name: str, kind: str, read: Callable[[], Optional[float]]) -> None:
        self.name, self.kind, self.read = name, kind, read


class _Counter:
    """A hardware energy counter made monotonic: each read adds the step since the last read,
    adding the range back when it wrapped (RAPL's energy_uj wraps at max_energy_range_uj).
    A counter that steps back with no known range (a driver reload) adds nothing for that step."""

    def __init__(self, read_raw: Callable[[], Optional[int]], wrap: Optional[int], joules_per_unit: float) -> None:
        self.read_raw, self.wrap, self.scale = read_raw, wrap, joules_per_unit
        self.last = None  # type: Optional[int]
        self.total = 0.0

    def read(self) -> Optional[float]:
        raw = self.read_raw()
        if raw is None:
            return None
        if self.last is not None:
            step = raw - self.last
            if step < 0:
                step = step + self.wrap if self.wrap else 0
            self.total += step * self.scale
        self.last = raw
        return self.total


class _Source:
    """One energy meter (INA3221, NVML or RAPL): its rails, which of them make the total, and
    why it has none."""

    def __init__(self, kind: str, label: str, rails: List[_Rail], total: List[str], why: str) -> None:
        self.kind, self.label, self.rails, self.total, self.why = kind, label, rails, total, why

    def total_name(self) -> str:
        return self.total[0] if len(self.total) == 1 else "sum of " + ", ".join(self.total)


def _ina3221_folders(fs: _Sysfs) -> List[str]:
    """INA3221 hwmon folders (JetPack 5+) and IIO folders (JetPack 4), found under the paths
    jtop/core/power.py find_all_i2c_power_monitor walks (/sys/bus/i2c/devices/*, a device whose
    `name` says ina3221) and under /sys/class/hwmon and the driver's own folder; one folder
    reached by two of these paths (they are links to one device) counts once."""
    seen, found = set(), []
    patterns = ("/sys/class/hwmon/hwmon*", "/sys/bus/i2c/drivers/ina3221*/*/hwmon/hwmon*",
                "/sys/bus/i2c/drivers/ina3221*/*/iio:device*", "/sys/bus/i2c/devices/*/hwmon/hwmon*",
                "/sys/bus/i2c/devices/*/iio:device*")
    for pattern in patterns:
        for folder in fs.glob(pattern):
            names = [fs.text(os.path.join(d, "name")) or "" for d in
                     (folder, os.path.dirname(folder), os.path.dirname(os.path.dirname(folder)))]
            real = os.path.realpath(folder)
            if real not in seen and any("ina3221" in name for name in names):
                seen.add(real)
                found.append(folder)
    return found


def _watts(volt_mv: str, curr_ma: str, fs: _Sysfs) -> Callable[[], Optional[float]]:
    def read() -> Optional[float]:
        volt, curr = fs.number(volt_mv), fs.number(curr_ma)
        return None if volt is None or curr is None else volt * curr / 1e6
    return read


def _scaled(read_raw: Callable[[], Optional[int]], factor: float) -> Callable[[], Optional[float]]:
    def read() -> Optional[float]:
        value = read_raw()
        return None if value is None else value * factor
    return read


def _ina3221_source(fs: _Sysfs) -> _Source:
    """INA3221 channels as jtop/core/power.py list_all_i2c_ports reads them: hwmon inN_label,
    inN_input (mV), currN_input (mA) (kernel Documentation/hwmon/ina3221.rst), or IIO rail_name_N,
    in_powerN_input (mW) or in_voltageN_input x in_currentN_input. "NC" (unconnected) channels
    and channel 7 (the sum of shunt voltages) are skipped as jtop skips them. The total is
    VDD_IN or POM_5V_IN where the board has it, else the sum (jtop's total_power; AGX Xavier and
    AGX Orin monitor no input rail, so their sum leaves out the carrier board)."""
    rails = []  # type: List[_Rail]
    for folder in _ina3221_folders(fs):
        for label_path in fs.glob("in*_label", under=folder) + fs.glob("rail_name_*", under=folder):
            match = re.search(r"(?:in(\d+)_label|rail_name_(\d+))$", label_path)
            label = fs.text(label_path)
            if not match or not label or label.upper() == "NC" or match.group(1) == "7":
                continue
            if match.group(1):
                read = _watts(os.path.join(folder, "in{}_input".format(match.group(1))),
                              os.path.join(folder, "curr{}_input".format(match.group(1))), fs)
            elif os.path.exists(os.path.join(folder, "in_power{}_input".format(match.group(2)))):
                path = os.path.join(folder, "in_power{}_input".format(match.group(2)))
                read = _scaled(lambda path=path: fs.number(path), 1e-3)
            else:
                read = _watts(os.path.join(folder, "in_voltage{}_input".format(match.group(2))),
                              os.path.join(folder, "in_current{}_input".format(match.group(2))), fs)
            if any(rail.name == label for rail in rails):
                label = "{} ({})".format(label, fs.shown(folder))
            rails.append(_Rail(label, "W", read))
    readable = [rail for rail in rails if rail.read() is not None]
    if not rails:
        why = "none under /sys/class/hwmon or /sys/bus/i2c"
    else:
        why = "" if readable else "INA3221 channels found but none readable"
    total = [r.name for r in readable if r.name in TOTAL_RAILS][:1] or [r.name for r in readable]
    return _Source("ina3221", "INA3221 rails", readable, total, why)


def _rapl_source(fs: _Sysfs) -> _Source:
    """Package energy from RAPL: /sys/class/powercap/intel-rapl:N/energy_uj, a microjoule
    counter that wraps at max_energy_range_uj (kernel Documentation/power/powercap/powercap.rst).
    Top-level zones only (intel-rapl:N:M are parts of package N); the total is the packages'
    sum. Kernels patched for CVE-2020-8694 let only root read energy_uj."""
    if not os.path.isdir(fs.path("/sys/class/powercap")):
        return _Source("rapl", "readable RAPL", [], [], "/sys/class/powercap: absent")
    zones = [z for z in fs.glob("/sys/class/powercap/intel-rapl:*") if re.search(r"intel-rapl:\d+$", z)]
    rails, reasons = [], []
    for zone in zones:
        energy = os.path.join(zone, "energy_uj")
        if fs.number(energy) is None:
            reason = fs.why(energy)
            reasons.append(reason + (" (root-only since the CVE-2020-8694 fix)" if "permission" in reason else ""))
            continue
        counter = _Counter(lambda path=energy: fs.number(path), fs.number(os.path.join(zone, "max_energy_range_uj")), 1e-6)
        rails.append(_Rail(fs.text(os.path.join(zone, "name")) or os.path.basename(zone), "J", counter.read))
    why = "; ".join(reasons) or ("" if rails else "no intel-rapl:N zone under /sys/class/powercap")
    total = [r.name for r in rails if r.name.startswith("package")] or [r.name for r in rails]
    return _Source("rapl", "readable RAPL", rails, total, why)


def _nvml_source(live: bool) -> _Source:
    """GPU energy from NVML through nvidia-ml-py: nvmlDeviceGetTotalEnergyConsumption (mJ since
    the driver loaded, Volta and newer), else nvmlDeviceGetPowerUsage (mW) sampled (NVML API
    reference). On Jetson NVML answers "Not Supported", which is why INA3221 comes first."""
    if not live:
        return _Source("nvml", "NVML", [], [], "not consulted for a fixture root")
    try:
        import pynvml  # optional: nvidia-ml-py
    except ImportError:
        return _Source("nvml", "NVML", [], [], "pynvml not importable: pip install nvidia-ml-py")
    try:
        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except pynvml.NVMLError as exc:
        return _Source("nvml", "NVML", [], [], "nvmlInit: {}".format(exc))

    def guarded(call: Callable[[], Any]) -> Callable[[], Optional[int]]:
        def read() -> Optional[int]:
            try:
                return int(call())
            except pynvml.NVMLError:
                return None
        return read

    rails, reasons = [], []
    for index, handle in enumerate(handles):
        energy = guarded(lambda h=handle: pynvml.nvmlDeviceGetTotalEnergyConsumption(h))
        power = guarded(lambda h=handle: pynvml.nvmlDeviceGetPowerUsage(h))
        if energy() is not None:
            rails.append(_Rail("gpu{}".format(index), "J", _Counter(energy, None, 1e-3).read))
        elif power() is not None:
            rails.append(_Rail("gpu{}".format(index), "W", _scaled(power, 1e-3)))
        else:
            reasons.append("GPU {}: energy and power not supported".format(index))
    kind = rails[0].kind if rails else "W"
    why = "; ".join(reasons) or ("" if rails else "no GPU")
    return _Source("nvml", "NVML", rails, [r.name for r in rails if r.kind == kind], why)


def _rail_stats(series: List[Tuple[float, Optional[float]]], kind: str) -> Dict[str, Any]:
    """avg/max W and energy J of one rail over the run: power rails integrated by the trapezoid
    rule over the sample times; energy counters as last minus first."""
    points = [(t, v) for t, v in series if v is not None]
    if not points or (kind == "J" and len(points) < 2):
        return {"avg_w": NA, "max_w": NA, "energy_j": NA}
    span = points[-1][0] - points[0][0]
    steps = list(zip(points, points[1:]))
    if kind == "W":
        energy = sum((t1 - t0) * (v0 + v1) / 2.0 for (t0, v0), (t1, v1) in steps)
        avg = energy / span if span > 0 else sum(v for _, v in points) / len(points)
        peak = max(v for _, v in points)
    else:
        energy = points[-1][1] - points[0][1]
        rates = [(v1 - v0) / (t1 - t0) for (t0, v0), (t1, v1) in steps if t1 > t0]
        if span <= 0 or not rates:
            return {"avg_w": NA, "max_w": NA, "energy_j": NA}
        avg, peak = energy / span, max(rates)
    return {"avg_w": round(avg, 4), "max_w": round(peak, 4), "energy_j": round(energy, 4)}


def _span(values: List[Optional[float]], per_mhz: float) -> Optional[Dict[str, float]]:
    known = [v for v in values if v is not None]
    return {"min": _mhz(min(known), per_mhz), "max": _mhz(max(known), per_mhz)} if known else None


def _throttle(samples: List[Dict[str, Any]], trips: Dict[str, List[Tuple[str, float]]]) -> Tuple[Any, Optional[str]]:
    """(throttled, why): a GPU or EMC clock fell more than CLOCK_DROP below its value at the
    start while the GPU was busy (or its load unreadable), or a zone reached a passive, hot or
    critical trip point. n/a when neither clocks nor trip points are readable."""
    events = []
    for key, label in (("gpu_hz", "GPU"), ("emc_hz", "EMC")):
        start = next((s[key] for s in samples if s[key] is not None), None)
        for sample in samples:
            load, value = sample["gpu_load"], sample[key]
            if start and value is not None and value < start * (1 - CLOCK_DROP) and (load is None or load >= HIGH_LOAD_PCT):
                events.append("{} clock fell to {} MHz from {} MHz at the start ({})".format(
                    label, _mhz(value, 1e6), _mhz(start, 1e6), "GPU load unreadable" if load is None else
                    "GPU load {:.0f}%".format(load)))
                break
    for zone, zone_trips in trips.items():
        peak = max((s["temps"][zone] for s in samples if zone in s["temps"]), default=None)
        crossed = [trip for trip in zone_trips if peak is not None and peak >= trip[1]]
        if crossed:
            kind, limit = crossed[-1]
            events.append("{} reached {:.1f} C, past its {} trip point at {:.1f} C".format(zone, peak, kind, limit))
    readable = any(s["gpu_hz"] is not None or s["emc_hz"] is not None for s in samples) or bool(trips)
    if events:
        return True, "; ".join(events)
    return (False, None) if readable else (NA, "no GPU/EMC clock or thermal trip point readable")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Telemetry:
    """Power mode, clocks, temperatures and energy around one benchmark run.

    `snapshot()` reads the state once (before and after a run); `start()`/`stop()` around the
    timed run sample GPU load and clock, EMC, temperatures and power rails in a daemon thread
    every `interval` seconds and summarise them; `row_columns()` turns the summary into the
    columns every bench row carries. `root` points every read at a fixture tree (tests); only
    with root "/" does it run `nvpmodel -q` or ask NVML, which describe the real machine.

    The energy figure comes from the first meter that reads, INA3221 (the module's own rails),
    then NVML (the GPU board), then RAPL (the CPU packages); the others' rails still appear in
    the summary's "rails", never added in, since each meter covers a different part of the box."""

    COLUMNS = ("power_mode", "clocks_locked", "clocks", "avg_w", "mj_per_image", "images_per_joule", "throttled",
               "energy_source", "energy_na_reason", "clocks_warning", "throttled_why")  # row_columns' keys

    def __init__(self, root: str = "/", interval: float = 0.1) -> None:
        if not interval > 0:
            raise ValueError("interval must be > 0 seconds, got {!r}".format(interval))
        self.fs = _Sysfs(root)
        self.interval = interval
        self._live = self.fs.root == os.path.abspath(os.sep)
        self._clocks = _Clocks(self.fs)
        self._thermal = _Thermal(self.fs)
        self._sources = [_ina3221_source(self.fs), _nvml_source(self._live), _rapl_source(self.fs)]
        self._primary = next((s for s in self._sources if s.rails), None)
        self._samples = []  # type: List[Dict[str, Any]]
        self._before = {}  # type: Dict[str, Any]
        self._halt = threading.Event()
        self._thread = None  # type: Optional[threading.Thread]

    def energy_na_reason(self) -> Optional[str]:
        """Why no energy figure can be given (None when one can): each meter and what it lacks."""
        if self._primary:
            return None
        return "; ".join("no {} ({})".format(s.label, s.why) for s in self._sources)

    def snapshot(self) -> Dict[str, Any]:
        """Power mode, GPU/EMC/CPU clocks, whether they are locked (with one warning when not at
        maximum), GPU load, temperatures and instantaneous rail watts, plus why for what is n/a."""
        clocks = self._clocks.state()
        mode = _power_mode(self.fs, self._live)
        locked, warning = _lock_check(clocks, mode)
        load = self._clocks.gpu_load()
        rails = {}
        for source in self._sources:
            for rail in source.rails:
                watts = rail.read() if rail.kind == "W" else None
                if watts is not None:
                    rails[rail.name] = round(watts, 3)
        why = {"gpu": None if self._clocks.gpu else "no GPU devfreq under /sys/class/devfreq",
               "emc": self._clocks.emc_why, "power_mode": mode.get("why"), "energy": self.energy_na_reason(),
               "cpu": None if "cpu" in clocks else "no cpufreq under /sys/devices/system/cpu"}
        return {"time": time.time(), "power_mode": mode, "clocks": clocks, "clocks_locked": locked,
                "clocks_warning": warning, "gpu_load_pct": NA if load is None else load,
                "temps_c": self._thermal.read(), "rails_w": rails, "why": {k: v for k, v in why.items() if v}}

    def _sample(self) -> Dict[str, Any]:
        rails = {}
        for source in self._sources:
            for rail in source.rails:
                rails[rail.name] = rail.read()
        return {"t": time.perf_counter(), "gpu_load": self._clocks.gpu_load(), "gpu_hz": self._clocks.gpu_hz(),
                "emc_hz": self._clocks.emc_hz(), "temps": self._thermal.read(), "rails": rails}

    def _run(self) -> None:
        deadline = time.perf_counter()
        while True:
            deadline = max(deadline + self.interval, time.perf_counter())
            if self._halt.wait(max(0.0, deadline - time.perf_counter())):
                return
            self._samples.append(self._sample())

    def start(self) -> None:
        """Snapshot the state, take the first sample, then sample every `interval` in a daemon
        thread (it never keeps the process alive) until stop()."""
        if self._thread is not None:
            raise RuntimeError("Telemetry.start() called twice without stop()")
        self._before = self.snapshot()
        self._samples = [self._sample()]
        self._halt.clear()
        self._thread = threading.Thread(target=self._run, name="trt-telemetry", daemon=True)
        self._thread.start()

    def stop(self) -> Dict[str, Any]:
        """Stop sampling, take the last sample and summarise the run."""
        if self._thread is None:
            raise RuntimeError("Telemetry.stop() called before start()")
        self._halt.set()
        self._thread.join()
        self._thread = None
        self._samples.append(self._sample())
        return self._summary(self._samples, self._before, self.snapshot())

    def _summary(self, samples: List[Dict[str, Any]], before: Dict[str, Any], after: Dict[str, Any]) -> Dict[str, Any]:
        rails = {}
        for source in self._sources:
            for rail in source.rails:
                stats = _rail_stats([(s["t"], s["rails"].get(rail.name)) for s in samples], rail.kind)
                rails[rail.name] = dict(stats, source=source.kind)
        out = {"samples": len(samples), "seconds": round(samples[-1]["t"] - samples[0]["t"], 4), "rails": rails,
               "energy_source": NA, "energy_na_reason": self.energy_na_reason(), "total_rail": NA,
               "avg_w": NA, "max_w": NA, "energy_j": NA}  # type: Dict[str, Any]
        if self._primary:
            names, kind = self._primary.total, self._primary.rails[0].kind
            series = [(s["t"], None if any(s["rails"].get(n) is None for n in names) else
                       sum(s["rails"][n] for n in names)) for s in samples]
            out.update(_rail_stats(series, kind), energy_source=self._primary.kind, total_rail=self._primary.total_name())
            if not _is_number(out["avg_w"]):
                out["energy_na_reason"] = "{}: fewer than two readings in {} s".format(self._primary.label, out["seconds"])
        loads = [s["gpu_load"] for s in samples if s["gpu_load"] is not None]
        peaks = {}  # type: Dict[str, float]
        for sample in samples:
            for zone, temp in sample["temps"].items():
                peaks[zone] = max(temp, peaks.get(zone, temp))
        clocks = {"gpu": _span([s["gpu_hz"] for s in samples], 1e6), "emc": _span([s["emc_hz"] for s in samples], 1e6)}
        throttled, why = _throttle(samples, self._thermal.trips)
        out.update(gpu_load_pct={"avg": round(sum(loads) / len(loads), 1), "max": max(loads)} if loads else NA,
                   clocks_mhz={k: v for k, v in clocks.items() if v}, temps_max_c=peaks,
                   temp_max_c=max(peaks.values()) if peaks else NA, throttled=throttled, throttled_why=why,
                   before=before, after=after)
        return out

    def row_columns(self, summary: Dict[str, Any], images: int, seconds: float) -> Dict[str, Any]:
        """The columns every bench row carries. Energy is the run's average watts (over the
        sampled window) times the bench's own timed `seconds`, so mJ/image and images/J describe
        exactly the images it timed; "n/a" with energy_na_reason wherever no meter reads."""
        before, after = summary.get("before") or {}, summary.get("after") or {}
        mode = before.get("power_mode") or {}
        locks = [before.get("clocks_locked", NA), after.get("clocks_locked", NA)]
        avg_w, reason = summary.get("avg_w", NA), summary.get("energy_na_reason")
        energy = avg_w * seconds if _is_number(avg_w) and seconds > 0 and images > 0 else None
        if _is_number(avg_w) and energy is None:
            reason = "no images or no time measured ({} images in {} s)".format(images, seconds)
        return {
            "power_mode": {"id": mode["id"], "name": mode["name"]} if mode.get("id") is not None else NA,
            "clocks_locked": NA if NA in locks else all(locks),
            "clocks": self._clock_columns(summary, before, after),
            "avg_w": round(avg_w, 3) if _is_number(avg_w) else NA,
            "mj_per_image": round(energy * 1e3 / images, 4) if energy else NA,
            "images_per_joule": round(images / energy, 4) if energy else NA,
            "throttled": summary.get("throttled", NA),
            "energy_source": summary.get("energy_source", NA) if _is_number(avg_w) else NA,
            "energy_na_reason": reason,
            "clocks_warning": before.get("clocks_warning") or after.get("clocks_warning"),
            "throttled_why": summary.get("throttled_why"),
        }

    @staticmethod
    def _clock_columns(summary: Dict[str, Any], before: Dict[str, Any], after: Dict[str, Any]) -> Any:
        """{"gpu_mhz"|"emc_mhz"|"cpu_mhz": {"min", "max", "cap"}}: GPU and EMC over the sampled
        run, CPU (not sampled) from the two snapshots; cap is the maximum the mode allows."""
        out = {}
        for domain, run in (summary.get("clocks_mhz") or {}).items():
            cap = (before.get("clocks") or {}).get(domain, {}).get("max_mhz")
            out[domain + "_mhz"] = {"min": run["min"], "max": run["max"], "cap": cap}
        cpus = [s["clocks"]["cpu"] for s in (before, after) if "cpu" in (s.get("clocks") or {})]
        if cpus:
            out["cpu_mhz"] = {"min": min(c["cur_mhz"] for c in cpus), "max": max(c["cur_top_mhz"] for c in cpus),
                              "cap": cpus[0]["max_mhz"]}
        return out or NA


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
        _audit_built(bundle, name, plan, details)
        rows.append(make_row(name, artifact=artifact, size_bytes=size, details=details,
                             engine_batch=plan["profile"]["opt"] if details["batch_range"][0] == details["batch_range"][2]
                             else None))
    return rows


def _audit_built(bundle: DeviceBundle, name: str, plan: Dict[str, Any], details: Dict[str, Any]) -> None:
    """The layer audit of a just-built engine into its row: warnings, DLA vs GPU layer counts and the
    GPU fallbacks, and one summary line for the log."""
    path = os.path.join(bundle.folder, layers_file(name))
    try:
        with open(path) as f:
            info = json.load(f)
    except (OSError, ValueError) as exc:
        details["warnings"] = ["no layer audit: {} ({})".format(layers_file(name), exc)]
        return
    report = audit(info, name, plan.get("expected_float_layers") or (), dla=plan.get("dla_core") is not None)
    details["warnings"] = report["warnings"]
    details["layers_audit"] = {"devices": report["devices"], "gpu_fallbacks": report["gpu_fallbacks"],
                               "convolutions": {k: v if isinstance(v, int) else len(v)
                                                for k, v in report["convolutions"].items()},
                               "unexpected_reformats": report["reformats"]["unexpected"]}
    _say("{}: {}".format(name, summary(report)))


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
                                         duration_s=args.duration, iterations=args.iterations,
                                         telemetry=Telemetry(os.environ.get(SYSFS_ENV) or "/"))
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


def device_facts() -> Dict[str, str]:
    """Which machine the rows come from, for the workstation's report: the host name, and on a
    Jetson the board (/proc/device-tree/model) and the L4T release line (/etc/nv_tegra_release)."""
    import platform

    facts = {"host": platform.node()}
    for key, path in (("board", "/proc/device-tree/model"), ("l4t", "/etc/nv_tegra_release")):
        try:
            with open(path, "rb") as f:
                text = f.read(512).decode("utf-8", "replace").replace("\x00", "").strip().splitlines()
        except OSError:
            continue
        if text:
            facts[key] = text[0][:200]
    return facts


def write_rows(bundle: DeviceBundle, command: str, rows: List[Dict[str, Any]], trt: Any, out: Optional[str]) -> str:
    """The rows as a JSON file the package reads (same keys as report.json's results)."""
    doc = {"format": FORMAT, "command": command, "tensorrt": str(trt.__version__), "created": time.strftime(
        "%Y-%m-%dT%H:%M:%S%z"), "python": sys.version.split()[0], "numpy": np.__version__, **device_facts(),
        "rows": rows}
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
