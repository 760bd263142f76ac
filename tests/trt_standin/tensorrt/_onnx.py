"""TEST DOUBLE support: read an ONNX file without the onnx package (a minimal protobuf reader of
the ModelProto fields the stand-in needs) and run it, through onnxruntime when it is installed,
else through a numpy interpreter of the few operators the tiny test models use. Python 3.8 and
numpy 1.17 are enough (the py3.8 check of trt_device runs the stand-in without onnxruntime)."""

from __future__ import annotations

import struct
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np

DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 10: np.float16, 11: np.float64}


def _varint(buf: memoryview, i: int) -> Tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _fields(buf: memoryview) -> Iterator[Tuple[int, int, Any]]:
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"protobuf wire type {wire} is not used by ONNX")
        yield field, wire, value


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _ints(wire: int, value: Any) -> List[int]:
    if wire == 0:
        return [_signed(value)]
    out, i = [], 0
    while i < len(value):
        v, i = _varint(value, i)
        out.append(_signed(v))
    return out


def _tensor(buf: memoryview) -> Tuple[str, np.ndarray]:
    dims: List[int] = []
    name, dtype, raw, floats, ints = "", 1, None, [], []
    for field, wire, value in _fields(buf):
        if field == 1:
            dims += _ints(wire, value)
        elif field == 2:
            dtype = value
        elif field == 4:
            floats += list(struct.unpack(f"<{len(value) // 4}f", bytes(value)))
        elif field in (5, 7):
            ints += _ints(wire, value)
        elif field == 8:
            name = bytes(value).decode()
        elif field == 9:
            raw = bytes(value)
    kind = DTYPES[dtype]
    if raw is not None:
        array = np.frombuffer(raw, dtype=kind).copy()
    else:
        array = np.asarray(floats if kind in (np.float32, np.float64) else ints).astype(kind)
    return name, array.reshape(dims)


def _value_info(buf: memoryview) -> Tuple[str, Tuple[int, ...]]:
    name, dims = "", []
    for field, _, value in _fields(buf):
        if field == 1:
            name = bytes(value).decode()
        elif field == 2:  # TypeProto -> tensor_type (1) -> shape (2) -> dim (1) -> dim_value (1) | dim_param (2)
            for f, _, tensor in _fields(value):
                if f != 1:
                    continue
                for g, _, shape in _fields(tensor):
                    if g != 2:
                        continue
                    for h, _, dim in _fields(shape):
                        if h == 1:
                            parts = {k: v for k, _, v in _fields(dim)}
                            dims.append(int(parts[1]) if 1 in parts else -1)
    return name, tuple(dims)


def _attribute(buf: memoryview) -> Tuple[str, Any]:
    name, value = "", None
    for field, wire, v in _fields(buf):
        if field == 1:
            name = bytes(v).decode()
        elif field == 2:
            value = struct.unpack("<f", bytes(v))[0]
        elif field == 3:
            value = _signed(v)
        elif field == 4:
            value = bytes(v).decode()
        elif field == 8:
            value = (value or []) + _ints(wire, v)
    return name, value


class Node:
    def __init__(self, buf: memoryview) -> None:
        self.inputs: List[str] = []
        self.outputs: List[str] = []
        self.name = self.op = ""
        self.attrs: Dict[str, Any] = {}
        for field, _, value in _fields(buf):
            if field == 1:
                self.inputs.append(bytes(value).decode())
            elif field == 2:
                self.outputs.append(bytes(value).decode())
            elif field == 3:
                self.name = bytes(value).decode()
            elif field == 4:
                self.op = bytes(value).decode()
            elif field == 5:
                key, val = _attribute(value)
                self.attrs[key] = val


class Model:
    """The graph's inputs, outputs, nodes and initializers, and a way to run it."""

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.nodes: List[Node] = []
        self.weights: Dict[str, np.ndarray] = {}
        self.inputs: List[Tuple[str, Tuple[int, ...]]] = []
        self.outputs: List[Tuple[str, Tuple[int, ...]]] = []
        graph = None
        for field, _, value in _fields(memoryview(self.data)):
            if field == 7:
                graph = value
        if graph is None:
            raise ValueError("not an ONNX model (no graph)")
        for field, _, value in _fields(graph):
            if field == 1:
                self.nodes.append(Node(value))
            elif field == 5:
                name, array = _tensor(value)
                self.weights[name] = array
            elif field == 11:
                self.inputs.append(_value_info(value))
            elif field == 12:
                self.outputs.append(_value_info(value))
        self.inputs = [i for i in self.inputs if i[0] not in self.weights]
        self._session = None

    @property
    def has_qdq(self) -> bool:
        return any(n.op == "QuantizeLinear" for n in self.nodes)

    def run(self, x: np.ndarray) -> np.ndarray:
        try:
            import onnxruntime as ort
        except ImportError:
            return self._numpy(x)
        if self._session is None:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            self._session = ort.InferenceSession(self.data, options, providers=["CPUExecutionProvider"])
        return self._session.run(None, {self.inputs[0][0]: x})[0]

    def _numpy(self, x: np.ndarray) -> np.ndarray:
        values: Dict[str, Any] = dict(self.weights)
        values[self.inputs[0][0]] = x
        for node in self.nodes:
            args = [values[i] if i else None for i in node.inputs]
            values[node.outputs[0]] = OPS[node.op](node.attrs, *args) if node.op in OPS else _missing(node.op)
        return np.asarray(values[self.outputs[0][0]], dtype=np.float32)


def _missing(op: str) -> Any:
    raise NotImplementedError(f"the stand-in's numpy interpreter has no {op}; install onnxruntime")


def _gemm(a: Dict[str, Any], x: np.ndarray, w: np.ndarray, c: Any = None) -> np.ndarray:
    x = x.T if a.get("transA") else x
    w = w.T if a.get("transB") else w
    y = a.get("alpha", 1.0) * (x @ w)
    return y + a.get("beta", 1.0) * c if c is not None else y


def _quantize(a: Dict[str, Any], x: np.ndarray, scale: np.ndarray, zero: Any = None) -> np.ndarray:
    kind = zero.dtype if zero is not None else np.uint8
    info = np.iinfo(kind)
    z = 0 if zero is None else zero.astype(np.int32)
    return np.clip(np.round(x / scale) + z, info.min, info.max).astype(kind)


OPS = {
    "Flatten": lambda a, x: x.reshape(int(np.prod(x.shape[:a.get("axis", 1)])), -1),
    "Gemm": _gemm,
    "MatMul": lambda a, x, w: x @ w,
    "Add": lambda a, x, y: x + y,
    "Relu": lambda a, x: np.maximum(x, 0),
    "Identity": lambda a, x: x,
    "QuantizeLinear": _quantize,
    "DequantizeLinear": lambda a, q, scale, zero=None: ((q.astype(np.int32) - (0 if zero is None else zero.astype(np.int32)))
                                                         * scale).astype(np.float32),
}
