"""FP16-typed copies of the FP32 and QDQ ONNX, for TensorRT 11's strongly typed builds.

TensorRT 11 has no ``--fp16`` and no ``BuilderFlag.FP16``: a tensor runs in the type the ONNX
gives it ("Migrating from TensorRT 10.x to 11.x, Strongly Typed Networks Are Now Required").
NVIDIA's own route is ModelOpt AutoCast; this is the same result for a ResNet, with no extra
dependency: every float initializer (weights, biases, Q/DQ scales) becomes float16, one Cast
turns the float32 input into float16, and one Cast turns the output back, so the engine's I/O
stays float32 (AutoCast's ``keep_io_types``). QuantizeLinear takes a float16 scale from opset 19
on, so the opset is raised to 19 where it is lower; Conv, Relu, Add, MaxPool, GlobalAveragePool,
Flatten, Reshape and Gemm mean the same at 19.
"""

from __future__ import annotations

import numpy as np

from ...errors import InputError

MIN_OPSET = 19
FP16_MAX = 65504.0


def to_fp16(model):
    """A float16 copy of ``model`` (float32 graph I/O kept, by casts)."""
    import onnx
    from onnx import TensorProto, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for i, init in enumerate(g.initializer):
        if init.data_type == TensorProto.FLOAT:
            arr = numpy_helper.to_array(init)
            if np.abs(arr).max(initial=0.0) > FP16_MAX:
                raise InputError(f"weight {init.name} exceeds float16's range (65504), so TensorRT 11's FP16 copy "
                                 "cannot hold it", hint="pass --trt-version 10.3, whose builds keep such weights in FP32")
            g.initializer[i].CopyFrom(numpy_helper.from_array(arr.astype(np.float16), init.name))
    for node in g.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name))
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
    casts_in = [_cast_io(g, v, "input") for v in g.input if v.type.tensor_type.elem_type == TensorProto.FLOAT]
    casts_out = [_cast_io(g, v, "output") for v in g.output if v.type.tensor_type.elem_type == TensorProto.FLOAT]
    nodes = casts_in + list(g.node) + casts_out
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]  # float32 annotations no longer hold; types are inferred again
    for opset in m.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < MIN_OPSET:
            opset.version = MIN_OPSET
    return m


def _cast_io(graph, value, side: str):
    """Rename the graph's uses of a float32 input (or output) to a float16 tensor and return the
    Cast node between the two, so the graph's own I/O stays float32."""
    from onnx import TensorProto, helper

    half = f"{value.name}_fp16"
    for node in graph.node:
        field = node.input if side == "input" else node.output
        field[:] = [half if x == value.name else x for x in field]
    if side == "input":
        return helper.make_node("Cast", [value.name], [half], name=f"{value.name}_to_fp16", to=TensorProto.FLOAT16)
    return helper.make_node("Cast", [half], [value.name], name=f"{value.name}_to_fp32", to=TensorProto.FLOAT)
