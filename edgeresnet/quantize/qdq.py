"""Emit a QDQ ONNX graph from an FP32 graph, a placement plan and a calibration table.

Backend profiles share the scales and differ only in encoding. Each backend module defines
its own (``qdq_profile`` on the class, see backends/registry.py); these are the ones shipped:

* ``trt``: int8 activations, zero point 0, float biases (TensorRT's explicit quantization
  accepts symmetric int8 only; it folds biases itself);
* ``ort``: uint8 activations (the fast U8S8 kernels on x86) on the same scales: zero point
  128 for signed tensors (the int8/0 grid exactly) and 0 for tensors that follow a ReLU (the
  same grid on [0, amax], which lets ONNX Runtime fold the ReLU into the quantization);
  int32 biases; Q/DQ around whole node units (inputs and outputs) so every Conv becomes a
  QLinearConv and every residual Add a QLinearAdd. Measured on the default model: with the
  TensorRT placement alone ONNX Runtime fused 2 of 21 convs and INT8 ran 3x slower than FP32.
* ``openvino``: the same scales; int8 zero point 0 for signed tensors, uint8 zero point 0 after
  a ReLU (OpenVINO then runs u8 convolutions, pooling and reduce, as with NNCF's placement);
  Q/DQ around whole node units; float biases. Measured on ResNet-18 at 224, 2 threads: 1.59 ms,
  as fast as NNCF's default (1.58-1.63 ms); the TensorRT profile gave 1.69-1.72 ms (i8 convs,
  float pooling).

* ``ort-w7``: ``ort`` with 7-bit weights ([-63, 63] in int8), for x86 CPUs without VNNI.
  Their U8S8 kernels sum pairs of u8 x s8 products into saturating int16 (VPMADDUBSW): with
  8-bit weights a pair can reach 2 x 255 x 127 and clip. Seven bits keep every pair exact at
  the same U8S8 speed (ONNX Runtime's ``reduce_range``; oneDNN halves weights the same way).
  Measured on an AVX2-only EPYC: default model 93.97% (8-bit fused: 92.57%, FP32: 93.92%),
  ResNet-18 at 224 0.97x the latency of 8-bit; U8U8 kernels (``session.x64quantprecision``)
  were exact too but 1.49x slower. See backends/onnxruntime.py for the choice at load time.

Weights are symmetric, per output channel, stored as int8 initializers behind a
DequantizeLinear: 8 bits unless the profile says otherwise.
"""

from __future__ import annotations

import numpy as np

from ..errors import require
from .plan import QuantPlan, plan
from .profile import Profile
from .scheme import quantize_bias, quantize_symmetric, weight_scales


SCALE_PRESERVING = ("MaxPool", "Flatten", "Reshape")


def _shared_scales(graph, activation_scales: dict[str, float]) -> dict[str, float]:
    """Outputs of MaxPool / Flatten / Reshape take their input's scale: max-pooling a quantized
    tensor is exact on its grid, and equal scales let the runtimes run the op in int8 (with a
    scale of its own ONNX Runtime ran ResNet-18's max-pool in float, with 6 extra layout
    transposes, and INT8 was 16% slower than quantize_static's)."""
    scales = dict(activation_scales)
    for node in graph.node:  # topological order: chains resolve front to back
        if node.op_type in SCALE_PRESERVING and node.input[0] in scales and node.output[0] in scales:
            scales[node.output[0]] = scales[node.input[0]]
    return scales


def emit_qdq(model, activation_scales: dict[str, float], profile: Profile,
             keep_float: frozenset[str] = frozenset()):
    """A new ModelProto with Q/DQ pairs; ``model`` is not modified."""
    onnx = require("onnx", "torch")
    from onnx import TensorProto, helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    keep_float = profile.float_nodes(graph, keep_float)
    sites: QuantPlan = plan(out, keep_float)
    tensors = sites.activations + (sites.outputs if profile.placement == "units" else [])
    missing = [t for t in tensors if t not in activation_scales]
    if missing:
        from ..errors import InputError
        raise InputError(f"the calibration table has no scale for {len(missing)} tensors (first: {missing[0]})",
                         hint="recalibrate: the table was made for another model")
    activation_scales = _shared_scales(graph, activation_scales)
    inits = {i.name: i for i in graph.initializer}
    types = {"uint8": TensorProto.UINT8, "int8": TensorProto.INT8}
    new_inits: list = []
    new_nodes: dict[str, list] = {}  # tensor -> nodes to insert right after its producer
    dq_name: dict[str, str] = {}

    for tensor in tensors:
        scale = float(activation_scales[tensor])
        s, z = f"{tensor}_scale", f"{tensor}_zero_point"
        new_inits.append(numpy_helper.from_array(np.array(scale, dtype=np.float32), s))
        dtype, zero_point = profile.encoding(tensor in sites.nonnegative)
        new_inits.append(helper.make_tensor(z, types[dtype], [], [zero_point]))
        q, dq = f"{tensor}_quantized", f"{tensor}_dequantized"
        new_nodes[tensor] = [helper.make_node("QuantizeLinear", [tensor, s, z], [q], name=f"{tensor}_QuantizeLinear"),
                             helper.make_node("DequantizeLinear", [q, s, z], [dq], name=f"{tensor}_DequantizeLinear")]
        dq_name[tensor] = dq

    weight_nodes = []
    removed = set()
    for site in sites.weights:
        w = numpy_helper.to_array(inits[site.weight]).astype(np.float32)
        scales = weight_scales(w, axis=site.axis, num_bits=profile.weight_bits)
        shape = [1] * w.ndim
        shape[site.axis] = -1
        qw = quantize_symmetric(w, scales.reshape(shape), num_bits=profile.weight_bits)
        base = site.weight
        new_inits += [numpy_helper.from_array(qw, f"{base}_quantized"),
                      numpy_helper.from_array(scales.astype(np.float32), f"{base}_scale"),
                      numpy_helper.from_array(np.zeros(len(scales), np.int8), f"{base}_zero_point")]
        weight_nodes.append(helper.make_node("DequantizeLinear", [f"{base}_quantized", f"{base}_scale", f"{base}_zero_point"],
                                             [f"{base}_dequantized"], name=f"{base}_DequantizeLinear", axis=site.axis))
        removed.add(site.weight)
        if profile.quantize_bias and site.bias is not None:
            qb, b_scales = quantize_bias(numpy_helper.to_array(inits[site.bias]),
                                         activation_scales[sites.layer_inputs[site.node]], scales)
            bb = site.bias
            new_inits += [numpy_helper.from_array(qb, f"{bb}_quantized"),
                          numpy_helper.from_array(b_scales, f"{bb}_scale"),
                          numpy_helper.from_array(np.zeros(len(qb), np.int32), f"{bb}_zero_point")]
            weight_nodes.append(helper.make_node("DequantizeLinear", [f"{bb}_quantized", f"{bb}_scale", f"{bb}_zero_point"],
                                                 [f"{bb}_dequantized"], name=f"{bb}_DequantizeLinear", axis=0))
            removed.add(site.bias)

    quantized_nodes = {w.node for w in sites.weights}
    bias_q = {w.bias for w in sites.weights if profile.quantize_bias and w.bias}
    for node in graph.node:
        if node.name in quantized_nodes:
            node.input[0] = dq_name[node.input[0]]
            node.input[1] = f"{node.input[1]}_dequantized"
            if len(node.input) > 2 and node.input[2] in bias_q:
                node.input[2] = f"{node.input[2]}_dequantized"
        elif node.name in sites.residual_adds:
            tensor = sites.residual_adds[node.name]
            for i, name in enumerate(node.input):
                if name == tensor:
                    node.input[i] = dq_name[tensor]
        if profile.placement == "units" and node.name not in keep_float:
            for i, name in enumerate(node.input):
                if name in dq_name and node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
                    node.input[i] = dq_name[name]

    kept = [i for i in graph.initializer if i.name not in removed]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    # Re-order: weight DQs first, each activation's Q/DQ right after its producer (topological).
    ordered = list(weight_nodes)
    for tensor in (i.name for i in graph.input):
        ordered += new_nodes.get(tensor, [])
    for node in list(graph.node):
        ordered.append(node)
        for o in node.output:
            ordered += new_nodes.get(o, [])
    del graph.node[:]
    graph.node.extend(ordered)
    onnx.checker.check_model(out)
    return out
