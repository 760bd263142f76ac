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

MIN_OPSET = 19
FP16_MAX = 65504.0


def to_fp16(model):
    """A float16 copy of ``model`` (float32 graph I/O kept, by casts)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for i, init in enumerate(g.initializer):
        if init.data_type == TensorProto.FLOAT:
            arr = numpy_helper.to_array(init)
            if np.abs(arr).max(initial=0.0) > FP16_MAX:
                raise ValueError(f"initializer {init.name} exceeds the float16 range")
            g.initializer[i].CopyFrom(numpy_helper.from_array(arr.astype(np.float16), init.name))
    for node in g.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name))
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
    casts_in, casts_out = [], []
    for inp in g.input:
        if inp.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        half = f"{inp.name}_fp16"
        for node in g.node:
            node.input[:] = [half if x == inp.name else x for x in node.input]
        casts_in.append(helper.make_node("Cast", [inp.name], [half], name=f"{inp.name}_to_fp16", to=TensorProto.FLOAT16))
    for out in g.output:
        if out.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        half = f"{out.name}_fp16"
        for node in g.node:
            node.output[:] = [half if x == out.name else x for x in node.output]
        casts_out.append(helper.make_node("Cast", [half], [out.name], name=f"{out.name}_to_fp32", to=TensorProto.FLOAT))
    nodes = casts_in + list(g.node) + casts_out
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]  # float32 annotations no longer hold; types are inferred again
    for opset in m.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < MIN_OPSET:
            opset.version = MIN_OPSET
    return m
