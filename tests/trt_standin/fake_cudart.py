"""TEST DOUBLE for libcudart: the functions trt_device calls, with the C calling convention its
ctypes layer uses (results written through ``ctypes.byref`` arguments, a cudaError_t returned),
working on host memory: "device" and pinned allocations are ctypes buffers, copies are
memmove, streams are synchronous, events read the host clock. Not CUDA: it says nothing about a
GPU's timings.

Injected into trt_device either directly (``trt_device._CUDA = CudartLibrary(FakeCudart(), ...)``)
or, in a subprocess, with ``TRT_DEVICE_CUDART=fake_cudart:library`` and this folder on PYTHONPATH.
"""

from __future__ import annotations

import ctypes
import threading
import time
from typing import Any, Dict, List

ERRORS = {0: b"cudaSuccess", 2: b"cudaErrorMemoryAllocation", 100: b"cudaErrorNoDevice",
          35: b"cudaErrorInsufficientDriver", 400: b"cudaErrorInvalidResourceHandle"}


def _value(arg: Any) -> int:
    """An integer from a ctypes scalar (c_void_p(None) is a null pointer) or a Python int."""
    value = getattr(arg, "value", arg)
    return int(value or 0)


def _set(ref: Any, value: Any) -> None:
    ref._obj.value = value  # ctypes.byref(x)._obj is x


class FakeCudart:
    def __init__(self, devices: int = 1) -> None:
        self.devices = devices
        self.memory: Dict[int, Any] = {}  # address -> ctypes buffer (device and pinned alike)
        self.pinned: set = set()
        self.streams: set = set()
        self.events: Dict[int, float] = {}
        self.calls: List[str] = []
        self.fail: Dict[str, int] = {}  # function name -> error status to return (tests)
        self._lock = threading.Lock()
        self._next = 1

    def _enter(self, name: str) -> int:
        with self._lock:
            self.calls.append(name)
        return self.fail.get(name, 0)

    def _handle(self) -> int:
        with self._lock:
            self._next += 1
            return self._next

    def _alloc(self, name: str, ref: Any, size: Any, pinned: bool) -> int:
        status = self._enter(name)
        if status:
            return status
        buf = ctypes.create_string_buffer(max(1, _value(size)))
        address = ctypes.addressof(buf)
        with self._lock:
            self.memory[address] = buf
            if pinned:
                self.pinned.add(address)
        _set(ref, address)
        return 0

    def _release(self, name: str, ptr: Any, pinned: bool) -> int:
        status = self._enter(name)
        address = _value(ptr)
        with self._lock:
            if status or address not in self.memory or (address in self.pinned) != pinned:
                return status or 400
            del self.memory[address]
            self.pinned.discard(address)
        return 0

    def cudaMalloc(self, ref: Any, size: Any) -> int:  # noqa: N802 - CUDA's names
        return self._alloc("cudaMalloc", ref, size, False)

    def cudaMallocHost(self, ref: Any, size: Any) -> int:  # noqa: N802
        return self._alloc("cudaMallocHost", ref, size, True)

    def cudaFree(self, ptr: Any) -> int:  # noqa: N802
        return self._release("cudaFree", ptr, False)

    def cudaFreeHost(self, ptr: Any) -> int:  # noqa: N802
        return self._release("cudaFreeHost", ptr, True)

    def cudaMemcpyAsync(self, dst: Any, src: Any, count: Any, kind: Any, stream: Any) -> int:  # noqa: N802
        status = self._enter(f"cudaMemcpyAsync:{_value(kind)}")
        if status:
            return status
        if _value(stream) not in self.streams:
            return 400
        ctypes.memmove(_value(dst), _value(src), _value(count))
        return 0

    def cudaStreamCreate(self, ref: Any) -> int:  # noqa: N802
        status = self._enter("cudaStreamCreate")
        if not status:
            handle = self._handle()
            self.streams.add(handle)
            _set(ref, handle)
        return status

    def cudaStreamSynchronize(self, stream: Any) -> int:  # noqa: N802
        return self._enter("cudaStreamSynchronize") or (0 if _value(stream) in self.streams else 400)

    def cudaStreamDestroy(self, stream: Any) -> int:  # noqa: N802
        status = self._enter("cudaStreamDestroy")
        if status or _value(stream) not in self.streams:
            return status or 400
        self.streams.discard(_value(stream))
        return 0

    def cudaEventCreate(self, ref: Any) -> int:  # noqa: N802
        status = self._enter("cudaEventCreate")
        if not status:
            handle = self._handle()
            self.events[handle] = 0.0
            _set(ref, handle)
        return status

    def cudaEventRecord(self, event: Any, stream: Any) -> int:  # noqa: N802
        if _value(event) not in self.events or _value(stream) not in self.streams:
            return 400
        self.events[_value(event)] = time.perf_counter()
        return self._enter("cudaEventRecord")

    def cudaEventSynchronize(self, event: Any) -> int:  # noqa: N802
        return self._enter("cudaEventSynchronize") or (0 if _value(event) in self.events else 400)

    def cudaEventElapsedTime(self, ref: Any, start: Any, end: Any) -> int:  # noqa: N802
        status = self._enter("cudaEventElapsedTime")
        if not status:
            _set(ref, (self.events[_value(end)] - self.events[_value(start)]) * 1e3)
        return status

    def cudaEventDestroy(self, event: Any) -> int:  # noqa: N802
        status = self._enter("cudaEventDestroy")
        return status or (0 if self.events.pop(_value(event), None) is not None else 400)

    def cudaGetDeviceCount(self, ref: Any) -> int:  # noqa: N802
        status = self._enter("cudaGetDeviceCount")
        if status:
            return status
        if not self.devices:
            return 100
        _set(ref, self.devices)
        return 0

    def cudaRuntimeGetVersion(self, ref: Any) -> int:  # noqa: N802
        _set(ref, 12060)
        return self._enter("cudaRuntimeGetVersion")

    def cudaGetErrorName(self, error: Any) -> bytes:  # noqa: N802
        return ERRORS.get(_value(error), b"cudaErrorUnknown")


library = FakeCudart()


class CudaPythonStyle:
    """The same fake behind cuda-python's convention (``cuda.bindings.runtime``): plain arguments,
    ``(cudaError_t, *values)`` returned, ``cudaMemcpyKind`` members, handles that ``int()`` takes."""

    class cudaMemcpyKind:  # noqa: N801 - cuda-python's name
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    def __init__(self, fake: FakeCudart) -> None:
        self.fake = fake

    def _out(self, name: str, kind: Any, *args: Any) -> tuple:
        value = kind()
        status = getattr(self.fake, name)(ctypes.byref(value), *args)
        return status, value.value

    def cudaGetDeviceCount(self):  # noqa: N802
        return self._out("cudaGetDeviceCount", ctypes.c_int)

    def cudaRuntimeGetVersion(self):  # noqa: N802
        return self._out("cudaRuntimeGetVersion", ctypes.c_int)

    def cudaMalloc(self, size):  # noqa: N802
        return self._out("cudaMalloc", ctypes.c_void_p, size)

    def cudaMallocHost(self, size):  # noqa: N802
        return self._out("cudaMallocHost", ctypes.c_void_p, size)

    def cudaStreamCreate(self):  # noqa: N802
        return self._out("cudaStreamCreate", ctypes.c_void_p)

    def cudaEventCreate(self):  # noqa: N802
        return self._out("cudaEventCreate", ctypes.c_void_p)

    def cudaEventElapsedTime(self, start, end):  # noqa: N802
        return self._out("cudaEventElapsedTime", ctypes.c_float, start, end)

    def cudaGetErrorName(self, error):  # noqa: N802
        return 0, self.fake.cudaGetErrorName(error)

    def __getattr__(self, name: str):  # cudaFree, cudaMemcpyAsync, cudaStreamSynchronize, ...: status only
        call = getattr(self.fake, name)
        return lambda *args: (call(*args),)
