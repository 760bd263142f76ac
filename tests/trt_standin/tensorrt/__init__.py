"""TEST DOUBLE for NVIDIA TensorRT's Python module. Not TensorRT: numpy (and onnxruntime when
installed) stand in for the GPU, so trt_device's build -> eval -> bench runs end to end on a
machine without TensorRT. Nothing here says how fast or how accurate a real engine is.

What it does hold to:
- Only the API of the line its ``__version__`` names exists: every public class, enum member,
  method and property is looked up in NVIDIA's own binding names for that line
  (``tests/data/trt_api/release-8.5.txt``, ``release-10.3.txt``, ``release-11.1.txt``, extracted
  from pyCore.cpp / pyInt8.cpp / pyOnnx.cpp); anything else raises AttributeError, as a real
  module would. ``USED`` collects every name touched, for the API fixture test.
- Documented rules trt_device depends on: 8.x's ONNX parser wants an explicit-batch network;
  DLA takes static profiles, needs FP16 or INT8 (or GPU fallback) and a core the device has;
  a calibration cache whose header names another TensorRT is skipped (and calibration without
  images fails); a dynamic-shape network calibrated needs a calibration profile; the builder
  needs the calibrator's base class initialised; an engine loads only in the TensorRT that
  built it; an execution context must not run on two threads at once (this one raises).
- ``execute_async_v3`` reads its input from, and writes its output to, the addresses given
  (host memory, through tests/trt_standin/fake_cudart.py) and computes with the ONNX itself.

``__version__`` is settable per test (or ``TRT_STANDIN_VERSION`` for subprocesses); 8.x maps to
the 8.5 names, 10.x to 10.3's, 11.x to 11.1's. ``STATE`` holds the test knobs (DLA cores, the
time an execution holds its context).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Set

import numpy as np

from . import _onnx

__version__ = os.environ.get("TRT_STANDIN_VERSION", "10.3.0.30")
STANDIN = True  # a test double: see the docstring
STATE: Dict[str, Any] = {"dla_cores": int(os.environ.get("TRT_STANDIN_DLA_CORES", "2")), "execute_ms": 0.5}
USED: Set[str] = set()
CONTEXT_THREADS: Dict[int, Set[int]] = {}  # id(context) -> threads that ran it
_LISTS = {8: "release-8.5.txt", 10: "release-10.3.txt", 11: "release-11.1.txt"}
_API_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "trt_api")
_API_CACHE: Dict[str, Set[str]] = {}
_CLASSES: Dict[str, Any] = {}


def _major() -> int:
    return int(str(__version__).split(".")[0])


def _api() -> Set[str]:
    name = _LISTS.get(_major())
    if name is None:
        raise ImportError(f"the stand-in has no API list for TensorRT {__version__}")
    if name not in _API_CACHE:
        with open(os.path.join(_API_DIR, name)) as f:
            _API_CACHE[name] = {ln.strip() for ln in f if ln.strip() and not ln.startswith("#")}
    return _API_CACHE[name]


def _check(qualified: str) -> None:
    if qualified not in _api():
        raise AttributeError(f"TensorRT {__version__} has no {qualified} (stand-in: not in {_LISTS[_major()]})")
    USED.add(qualified)


def __getattr__(name: str) -> Any:  # PEP 562: the module's public names depend on __version__
    if name.startswith("_") or name not in _CLASSES:
        raise AttributeError(f"module 'tensorrt' (stand-in) has no attribute {name!r}")
    _check(name)
    return _CLASSES[name]() if name in _ENUMS or name in _VALUES else _CLASSES[name]


def _public(name: str):
    def register(cls):
        _CLASSES[name] = cls
        cls._api_name = name
        return cls
    return register


class _ApiMeta(type):
    def __getattribute__(cls, name: str) -> Any:
        if not name.startswith("_") and type.__getattribute__(cls, "_api_name"):
            _check(f"{type.__getattribute__(cls, '_api_name')}.{name}")
        return type.__getattribute__(cls, name)


class _Api(metaclass=_ApiMeta):
    """Every public attribute read or written is checked against the line's binding names."""

    _api_name = ""

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("_"):
            _check(f"{type(self)._api_name}.{name}")
        return object.__getattribute__(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_"):
            _check(f"{type(self)._api_name}.{name}")
        object.__setattr__(self, name, value)


class _Value:
    """An enum member: compares by enum and name, ``int()`` gives its position."""

    def __init__(self, enum: str, name: str, index: int) -> None:
        self.enum, self.name, self.index = enum, name, index

    def __int__(self) -> int:
        return self.index

    __index__ = __int__

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, _Value) and (other.enum, other.name) == (self.enum, self.name)

    def __hash__(self) -> int:
        return hash((self.enum, self.name))

    def __repr__(self) -> str:
        return f"<{self.enum}.{self.name}: {self.index}>"

    __str__ = __repr__


class _Enum:
    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_name", name)

    def __getattr__(self, member: str) -> _Value:
        if member.startswith("_"):
            raise AttributeError(member)
        _check(f"{self._name}.{member}")
        members = sorted(n.split(".", 1)[1] for n in _api() if n.startswith(self._name + ".") and n.count(".") == 1)
        return _Value(self._name, member, members.index(member))


_ENUMS = ("BuilderFlag", "NetworkDefinitionCreationFlag", "DeviceType", "MemoryPoolType", "ProfilingVerbosity",
          "LayerInformationFormat", "TensorIOMode", "DataType")
for _name in _ENUMS:
    _CLASSES[_name] = (lambda n: (lambda: _Enum(n)))(_name)
_VALUES = ("float32", "float16", "int8")
for _name, _member in zip(_VALUES, ("FLOAT", "HALF", "INT8")):
    _CLASSES[_name] = (lambda m: (lambda: getattr(_Enum("DataType"), m)))(_member)


def _flag(enum: str, name: str) -> _Value:
    return getattr(_Enum(enum), name)


def _has(qualified: str) -> bool:
    return qualified in _api()


_SEVERITY = ("INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE")


@_public("Logger")
class _Logger(_Api):
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = (_Value("ILogger.Severity", n, i) for i, n in enumerate(_SEVERITY))

    def __init__(self, min_severity: Any = None) -> None:
        self._min = min_severity if min_severity is not None else _Value("ILogger.Severity", "WARNING", 2)

    @property
    def min_severity(self) -> Any:
        return self._min

    def log(self, severity: Any, msg: str) -> None:
        if int(severity) <= int(self._min):
            print(f"[TRT stand-in] [{severity.name[0]}] {msg}", file=sys.stderr)


class _Error:
    def __init__(self, text: str) -> None:
        self._text = text

    def __str__(self) -> str:
        return self._text


@_public("ITensor")
class _ITensor(_Api):
    def __init__(self, name: str, shape: Any) -> None:
        self._name, self._shape = name, tuple(shape)

    @property
    def name(self) -> str:
        return self._name

    @property
    def shape(self) -> tuple:
        return self._shape


@_public("ILayer")
class _ILayer(_Api):
    def __init__(self, network: "_INetworkDefinition", node: Any) -> None:
        self._network, self._node, self._precision = network, node, None

    @property
    def name(self) -> str:
        return self._node.name

    @property
    def type(self) -> str:
        return self._node.op

    @property
    def precision(self) -> Any:
        return self._precision or _flag("DataType", "FLOAT")

    @precision.setter
    def precision(self, value: Any) -> None:
        if self._network._strongly_typed:  # NvInfer.h: strongly typed networks reject setPrecision
            self._network._errors.append(f"setPrecision on {self.name}: the network is strongly typed")
        self._precision = value


@_public("INetworkDefinition")
class _INetworkDefinition(_Api):
    def __init__(self, flags: int) -> None:
        names = sorted(n.split(".", 1)[1] for n in _api() if n.startswith("NetworkDefinitionCreationFlag."))
        self._flags = {n for i, n in enumerate(names) if flags >> i & 1}
        self._strongly_typed = "STRONGLY_TYPED" in self._flags
        self._model: Optional[_onnx.Model] = None
        self._layers: List[_ILayer] = []
        self._errors: List[str] = []

    @property
    def num_inputs(self) -> int:
        return len(self._model.inputs) if self._model else 0

    @property
    def num_outputs(self) -> int:
        return len(self._model.outputs) if self._model else 0

    def get_input(self, index: int) -> _ITensor:
        return _ITensor(*self._model.inputs[index])

    def get_output(self, index: int) -> _ITensor:
        return _ITensor(*self._model.outputs[index])

    @property
    def num_layers(self) -> int:
        return len(self._layers)

    def get_layer(self, index: int) -> _ILayer:
        return self._layers[index]


@_public("OnnxParser")
class _OnnxParser(_Api):
    def __init__(self, network: _INetworkDefinition, logger: _Logger) -> None:
        self._network, self._logger, self._errors = network, logger, []

    def parse(self, model: bytes, path: Optional[str] = None) -> bool:
        if _major() < 10 and "EXPLICIT_BATCH" not in self._network._flags:
            self._errors.append(_Error("the ONNX parser needs an explicit-batch network (EXPLICIT_BATCH)"))
            return False
        try:
            parsed = _onnx.Model(model)
        except (ValueError, KeyError, IndexError) as exc:
            self._errors.append(_Error(f"cannot parse the model: {exc}"))
            return False
        self._network._model = parsed
        self._network._layers = [_ILayer(self._network, n) for n in parsed.nodes]
        return True

    def parse_from_file(self, path: str) -> bool:
        with open(path, "rb") as f:
            return self.parse(f.read(), path)

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> _Error:
        return self._errors[index]


@_public("IOptimizationProfile")
class _IOptimizationProfile(_Api):
    def __init__(self) -> None:
        self._shapes: Dict[str, tuple] = {}

    def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:  # noqa: A002 - TensorRT's names
        self._shapes[input] = (tuple(min), tuple(opt), tuple(max))


class _HostMemory(bytes):
    """IHostMemory: a buffer (bytes here)."""


_CLASSES["IHostMemory"] = _HostMemory


def _cache_header() -> str:
    major, minor, patch = ([int(p) for p in str(__version__).split(".")[:3]] + [0, 0])[:3]
    code = major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch
    return f"TRT-{code}-EntropyCalibration2"


@_public("ITimingCache")
class _ITimingCache(_Api):
    def __init__(self, blob: bytes) -> None:
        self._blob = bytes(blob)
        self._ok = not blob or self._blob.startswith(self._header())

    @staticmethod
    def _header() -> bytes:
        return f"STANDIN-TIMING-CACHE {__version__}\n".encode()

    def serialize(self) -> _HostMemory:
        return _HostMemory(self._header() + b"(no timings: stand-in)\n")


@_public("IBuilderConfig")
class _IBuilderConfig(_Api):
    def __init__(self) -> None:
        self._flags = {"TF32"} if _has("BuilderFlag.TF32") else set()  # NvInfer.h: kTF32 "Enabled by default"
        self._device, self._core, self._calibrator, self._calibration_profile = None, 0, None, None
        self._profiles: List[_IOptimizationProfile] = []
        self._pool: Dict[Any, int] = {}
        self._verbosity, self._timing_cache = None, None

    def set_flag(self, flag: _Value) -> None:
        self._flags.add(flag.name)

    def clear_flag(self, flag: _Value) -> None:
        self._flags.discard(flag.name)

    def get_flag(self, flag: _Value) -> bool:
        return flag.name in self._flags

    def set_memory_pool_limit(self, pool: _Value, size: int) -> None:
        self._pool[pool.name] = int(size)

    @property
    def profiling_verbosity(self) -> Any:
        return self._verbosity

    @profiling_verbosity.setter
    def profiling_verbosity(self, value: Any) -> None:
        self._verbosity = value

    @property
    def default_device_type(self) -> Any:
        return self._device or _flag("DeviceType", "GPU")

    @default_device_type.setter
    def default_device_type(self, value: Any) -> None:
        self._device = value

    @property
    def DLA_core(self) -> int:  # noqa: N802 - TensorRT's name
        return self._core

    @DLA_core.setter
    def DLA_core(self, value: int) -> None:  # noqa: N802
        self._core = int(value)

    @property
    def int8_calibrator(self) -> Any:
        return self._calibrator

    @int8_calibrator.setter
    def int8_calibrator(self, value: Any) -> None:
        self._calibrator = value

    def set_calibration_profile(self, profile: _IOptimizationProfile) -> bool:
        self._calibration_profile = profile
        return True

    def add_optimization_profile(self, profile: _IOptimizationProfile) -> int:
        self._profiles.append(profile)
        return len(self._profiles) - 1

    def create_timing_cache(self, serialized_timing_cache: bytes) -> _ITimingCache:
        return _ITimingCache(serialized_timing_cache)

    def set_timing_cache(self, cache: _ITimingCache, ignore_mismatch: bool) -> bool:
        if not cache._ok and not ignore_mismatch:
            return False
        self._timing_cache = cache
        return True

    def get_timing_cache(self) -> _ITimingCache:
        return self._timing_cache or _ITimingCache(b"")


@_public("Builder")
class _Builder(_Api):
    def __init__(self, logger: _Logger) -> None:
        self._logger = logger

    def create_network(self, flags: int = 0) -> _INetworkDefinition:
        return _INetworkDefinition(int(flags))

    def create_builder_config(self) -> _IBuilderConfig:
        return _IBuilderConfig()

    def create_optimization_profile(self) -> _IOptimizationProfile:
        return _IOptimizationProfile()

    @property
    def num_DLA_cores(self) -> int:  # noqa: N802 - TensorRT's name
        return int(STATE["dla_cores"])

    def build_serialized_network(self, network: _INetworkDefinition, config: _IBuilderConfig) -> Optional[_HostMemory]:
        try:
            header = _build_header(network, config)
        except _BuildError as exc:
            self._logger.log(_Value("ILogger.Severity", "ERROR", 1), str(exc))
            return None
        blob = json.dumps(header).encode()
        return _HostMemory(b"TRT-STANDIN-ENGINE\n" + blob + b"\n" + network._model.data)


class _BuildError(Exception):
    pass


def _build_header(network: _INetworkDefinition, config: _IBuilderConfig) -> Dict[str, Any]:
    """What the 'engine' records, after the checks a real builder makes (see the docstring)."""
    if network._model is None:
        raise _BuildError("the network is empty (nothing parsed)")
    if network._errors:
        raise _BuildError(network._errors[0])
    name, dims = network._model.inputs[0]
    if len(config._profiles) != 1 or name not in config._profiles[0]._shapes:
        raise _BuildError(f"one optimization profile for {name} is required (dynamic shapes)")
    low, opt, high = config._profiles[0]._shapes[name]
    if any(tuple(s[1:]) != tuple(dims[1:]) for s in (low, opt, high)) or not low[0] <= opt[0] <= high[0]:
        raise _BuildError(f"profile {low}/{opt}/{high} does not fit the input {dims}")
    flags = sorted(config._flags)
    device = "GPU"
    if config._device is not None and config._device.name == "DLA":
        if config._core >= STATE["dla_cores"]:
            raise _BuildError(f"DLA core {config._core} requested; the device has {STATE['dla_cores']}")
        if low != high:  # Developer Guide, Working with DLA: static shapes only (min = opt = max)
            raise _BuildError("DLA needs a static optimization profile (min = opt = max)")
        if not {"FP16", "INT8"} & config._flags and "GPU_FALLBACK" not in config._flags:
            raise _BuildError("DLA runs FP16 or INT8 only: set FP16/INT8 or allow GPU_FALLBACK")
        device = f"DLA:{config._core}"
    return {"version": __version__, "input": [name, list(dims)], "output": list(network._model.outputs[0]),
            "profile": [list(low), list(opt), list(high)], "flags": flags, "device": device,
            "strongly_typed": network._strongly_typed, "int8": _int8_source(network, config, low != high),
            "layer_precisions": {l.name: l._precision.name for l in network._layers if l._precision is not None},
            "tf32": "TF32" in config._flags}


def _int8_source(network: _INetworkDefinition, config: _IBuilderConfig, dynamic: bool) -> Optional[str]:
    """Where INT8 scales come from: the Q/DQ nodes, the calibrator's cache, or nowhere (dummy)."""
    if network._model.has_qdq:
        return "Q/DQ"
    if "INT8" not in config._flags:
        return None
    calibrator = config._calibrator
    if calibrator is None:
        return "dummy scales (no calibrator: INT8 calibrator not provided, as TensorRT warns)"
    if not getattr(calibrator, "_standin_initialised", False):
        raise _BuildError("the calibrator's base class __init__ was not called (pybind11 requires it)")
    if dynamic and config._calibration_profile is None:
        raise _BuildError("a calibration profile must be set for a network with runtime dimensions")
    calibrator.get_batch_size()
    cache = calibrator.read_calibration_cache()
    head = bytes(cache or b"").split(b"\n", 1)[0].decode(errors="replace")
    if head != _cache_header():  # another version's cache is skipped: TensorRT calibrates instead
        if calibrator.get_batch([network._model.inputs[0][0]]) is None:
            raise _BuildError(f"calibration cache header {head!r} is not {_cache_header()!r} and get_batch gave no "
                              "images: calibration failure")
    return f"calibration cache {head}"


@_public("IInt8EntropyCalibrator2")
class _IInt8EntropyCalibrator2(_Api):
    def __init__(self) -> None:
        self._standin_initialised = True


@_public("Runtime")
class _Runtime(_Api):
    def __init__(self, logger: _Logger) -> None:
        self._logger, self._core = logger, 0

    @property
    def DLA_core(self) -> int:  # noqa: N802
        return self._core

    @DLA_core.setter
    def DLA_core(self, value: int) -> None:  # noqa: N802
        self._core = int(value)

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> Optional["_ICudaEngine"]:
        data = bytes(serialized_engine)
        magic, _, rest = data.partition(b"\n")
        blob, _, model = rest.partition(b"\n")
        if magic != b"TRT-STANDIN-ENGINE":
            return None
        header = json.loads(blob)
        if header["version"] != __version__:  # "engines are not portable across TensorRT versions"
            self._logger.log(_Value("ILogger.Severity", "ERROR", 1), "engine built by TensorRT " + header["version"])
            return None
        return _ICudaEngine(header, _onnx.Model(model), self._core)


@_public("ICudaEngine")
class _ICudaEngine(_Api):
    def __init__(self, header: Dict[str, Any], model: Any, dla_core: int) -> None:
        self._header, self._model, self._dla_core = header, model, dla_core
        self._names = [header["input"][0], header["output"][0]]

    @property
    def num_io_tensors(self) -> int:
        return 2

    def get_tensor_name(self, index: int) -> str:
        return self._names[index]

    def get_tensor_mode(self, name: str) -> _Value:
        return _flag("TensorIOMode", "INPUT" if name == self._names[0] else "OUTPUT")

    def get_tensor_dtype(self, name: str) -> _Value:
        return _flag("DataType", "FLOAT")

    def get_tensor_shape(self, name: str) -> tuple:
        low, _, high = self._header["profile"]
        batch = low[0] if low[0] == high[0] else -1
        dims = self._header["input"][1] if name == self._names[0] else self._header["output"][1]
        return (batch,) + tuple(dims[1:])

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> List[tuple]:
        return [tuple(s) for s in self._header["profile"]]

    @property
    def num_optimization_profiles(self) -> int:
        return 1

    def create_execution_context(self) -> "_IExecutionContext":
        return _IExecutionContext(self)

    def create_engine_inspector(self) -> "_EngineInspector":
        return _EngineInspector(self)


@_public("IExecutionContext")
class _IExecutionContext(_Api):
    def __init__(self, engine: _ICudaEngine) -> None:
        self._engine, self._shape, self._addresses = engine, None, {}
        self._busy = threading.Lock()

    def set_input_shape(self, name: str, shape: Any) -> bool:
        low, _, high = self._engine._header["profile"]
        shape = tuple(int(d) for d in shape)
        if name != self._engine._names[0] or shape[1:] != tuple(low[1:]) or not low[0] <= shape[0] <= high[0]:
            return False
        self._shape = shape
        return True

    def get_tensor_shape(self, name: str) -> tuple:
        if name == self._engine._names[0]:
            return self._shape
        return (self._shape[0],) + tuple(self._engine._header["output"][1][1:])

    def set_tensor_address(self, name: str, memory: int) -> bool:
        self._addresses[name] = int(memory)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("stand-in: one IExecutionContext used from two threads at once (TensorRT contexts "
                               "are not thread-safe: one context per thread)")
        try:
            CONTEXT_THREADS.setdefault(id(self), set()).add(threading.get_ident())
            time.sleep(STATE["execute_ms"] / 1e3)  # holds the context as a running inference would
            n = int(np.prod(self._shape))
            x = np.frombuffer((ctypes.c_char * (n * 4)).from_address(self._addresses[self._engine._names[0]]),
                              np.float32).reshape(self._shape).copy()
            y = np.ascontiguousarray(self._engine._model.run(x), dtype=np.float32)
            ctypes.memmove(self._addresses[self._engine._names[1]], y.ctypes.data, y.nbytes)
            return True
        finally:
            self._busy.release()


@_public("EngineInspector")
class _EngineInspector(_Api):
    def __init__(self, engine: _ICudaEngine) -> None:
        self._engine, self._context = engine, None

    @property
    def execution_context(self) -> Any:
        return self._context

    @execution_context.setter
    def execution_context(self, value: Any) -> None:
        self._context = value

    def get_engine_information(self, format: _Value) -> str:  # noqa: A002 - TensorRT's name
        header = self._engine._header
        layers = [self._layer(node, header) for node in self._engine._model.nodes]
        return json.dumps({"StandIn": "layer list written by the TensorRT test double, not by TensorRT",
                           "Layers": layers, "Bindings": list(self._engine._names)})

    def _layer(self, node: Any, header: Dict[str, Any]) -> Dict[str, Any]:
        precision = header["layer_precisions"].get(node.name)
        if precision is None:
            int8 = header["int8"] and "dummy" not in header["int8"] and node.op in ("Conv", "Gemm", "MatMul")
            precision = "INT8" if int8 else "HALF" if "FP16" in header["flags"] else "FLOAT"
        dtype = {"INT8": "Int8", "HALF": "Half", "FLOAT": "Float"}[precision]
        inputs = [{"Name": i, "Format": "Row major linear", "DataType": dtype} if _major() >= 11
                  else {"Name": i, "Format/Datatype": f"Row major linear {dtype}"} for i in node.inputs[:1]]
        return {"Name": node.name, "LayerType": node.op, "Inputs": inputs, "Device": header["device"]}
