"""Run a TensorRT engine with numpy, tensorrt and NVIDIA's cuda-python only (no torch), as
TensorRT's own Python samples do (``samples/python/common_runtime.py``: cudart allocations,
``cudaMemcpyAsync`` on one stream, ``execute_async_v3``).

Untested on a GPU: no machine here has TensorRT (its wheels are not on our registries). What runs
here is everything up to the CUDA calls: the chunking by the engine's profile, the buffer
bookkeeping and the error paths, against a stand-in for cudart and the execution context
(tests/test_trt_recipes.py).
"""

from __future__ import annotations

import numpy as np

from ..errors import BackendUnavailable

# Optional: the device file reaches CUDA through ctypes on libcudart. Where cuda-python is used, pin it to the
# JetPack's CUDA major.minor, as dusty-nv/jetson-containers packages/cuda/cuda-python/config.py does (an
# unpinned 12.x resolves to 12.9 on JetPack 6's CUDA 12.2/12.6 driver).
CUDA_PYTHON_HINT = ("pip install cuda-python pinned to the device's CUDA minor: JetPack 5 (CUDA 11.4) "
                    "'cuda-python==11.4.*', JetPack 6.0 (12.2) '==12.2.*', 6.1/6.2 (12.6) '==12.6.*', JetPack 7.0/7.1 "
                    "(13.0) '==13.0.*'; x86 hosts the CUDA `nvidia-smi` prints; or run the bundle's "
                    "`python3 trt/trt_device.py`, which needs no cuda-python")


def load_cudart():
    """cuda-python's runtime module: ``cuda.bindings.runtime`` (12.6+), else ``cuda.cudart`` (older).
    A failed import is reported as what it is: cuda-python missing, or a library it could not load."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError as first:
        try:
            from cuda import cudart
        except ImportError as exc:
            missing = getattr(exc, "name", None) or getattr(first, "name", None)
            if missing in ("cuda", "cuda.bindings", "cuda.cudart", "cuda.bindings.runtime"):
                raise BackendUnavailable(f"cuda-python is not installed (no module named {missing!r}); running a "
                                         "TensorRT engine from the package needs it (no torch needed)",
                                         hint=CUDA_PYTHON_HINT) from None
            raise BackendUnavailable(f"importing cuda-python's runtime failed: {exc}",
                                     hint="check that cuda-python's CUDA major.minor matches the device's libcudart "
                                     "(" + CUDA_PYTHON_HINT + ")") from None
    return cudart


def _ok(cudart, result):
    """cuda-python returns (error, *values); anything but cudaSuccess becomes one readable error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        name = err
        try:
            name = cudart.cudaGetErrorName(err)[1]
            name = name.decode() if isinstance(name, bytes) else name
        except Exception:  # noqa: BLE001 - the code alone still names the failure
            pass
        raise BackendUnavailable(f"CUDA call failed: {name}", hint="check the GPU driver (nvidia-smi) and that the "
                                 "cuda-python major matches the driver's CUDA")
    return values[0] if len(values) == 1 else tuple(values)


class DeviceBuffer:
    """Device memory that grows to the largest batch seen and is reused."""

    def __init__(self, cudart):
        self.cudart, self.ptr, self.nbytes = cudart, 0, 0

    def fit(self, nbytes: int) -> int:
        if nbytes > self.nbytes:
            self.free()
            self.ptr, self.nbytes = int(_ok(self.cudart, self.cudart.cudaMalloc(nbytes))), nbytes
        return self.ptr

    def free(self) -> None:
        if self.ptr:
            _ok(self.cudart, self.cudart.cudaFree(self.ptr))
            self.ptr, self.nbytes = 0, 0


class EngineRunner:
    """``runner(x)`` -> logits for an NCHW float32 batch of any size (chunked to the profile's max)."""

    def __init__(self, engine, context, input_name: str, output_name: str, max_batch: int, cudart=None):
        self.cudart = cudart or load_cudart()
        self.engine, self.context = engine, context
        self.input_name, self.output_name, self.max_batch = input_name, output_name, max(1, int(max_batch))
        self.stream = _ok(self.cudart, self.cudart.cudaStreamCreate())
        self.d_in, self.d_out = DeviceBuffer(self.cudart), DeviceBuffer(self.cudart)
        kinds = self.cudart.cudaMemcpyKind
        self.h2d, self.d2h = kinds.cudaMemcpyHostToDevice, kinds.cudaMemcpyDeviceToHost

    def _chunk(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not self.context.set_input_shape(self.input_name, tuple(x.shape)):
            raise ValueError(f"the engine takes no input of shape {tuple(x.shape)} (outside its optimization profile)")
        out_shape = tuple(int(d) for d in self.context.get_tensor_shape(self.output_name))
        y = np.empty(out_shape, np.float32)
        d_in, d_out = self.d_in.fit(x.nbytes), self.d_out.fit(y.nbytes)
        _ok(self.cudart, self.cudart.cudaMemcpyAsync(d_in, x.ctypes.data, x.nbytes, self.h2d, self.stream))
        self.context.set_tensor_address(self.input_name, d_in)
        self.context.set_tensor_address(self.output_name, d_out)
        if not self.context.execute_async_v3(self.stream):
            raise RuntimeError("TensorRT could not enqueue the engine (see its log above)")
        _ok(self.cudart, self.cudart.cudaMemcpyAsync(y.ctypes.data, d_out, y.nbytes, self.d2h, self.stream))
        _ok(self.cudart, self.cudart.cudaStreamSynchronize(self.stream))
        return y

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([self._chunk(x[i:i + self.max_batch]) for i in range(0, len(x), self.max_batch)])

    def close(self) -> None:
        self.d_in.free()
        self.d_out.free()
        if self.stream is not None:
            _ok(self.cudart, self.cudart.cudaStreamDestroy(self.stream))
            self.stream = None


def open_engine(trt, engine_bytes: bytes, max_batch: int, cudart=None) -> EngineRunner:
    """Deserialize an engine and wrap it in a runner (TensorRT 8.5+: named I/O tensors)."""
    cudart = cudart or load_cudart()
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(engine_bytes)
    if engine is None:
        raise BackendUnavailable("TensorRT could not load the engine (built by another TensorRT version or GPU?)",
                                 hint="rebuild it on this device: edgeresnet build EXPORT_DIR")
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inp = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
    out = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
    return EngineRunner(engine, engine.create_execution_context(), inp, out, max_batch, cudart)
