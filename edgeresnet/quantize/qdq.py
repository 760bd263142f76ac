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

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, require
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
    """A new ModelProto with Q/DQ pairs; ``model`` is not modified.

    Four phases: activation Q/DQ pairs, weight (and bias) DequantizeLinear nodes, consumers
    rewired to the dequantized tensors, then the graph reassembled in topological order."""
    onnx = require("onnx", "torch")

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    keep_float = profile.float_nodes(graph, keep_float)
    sites: QuantPlan = plan(out, keep_float)
    tensors = sites.activations + (sites.outputs if profile.placement == "units" else [])
    missing = [t for t in tensors if t not in activation_scales]
    if missing:
        raise InputError(f"the calibration table has no scale for {len(missing)} tensors (first: {missing[0]})",
                         hint="recalibrate: the table was made for another model")
    activation_scales = _shared_scales(graph, activation_scales)
    act = _activation_qdq(tensors, activation_scales, sites, profile)
    weights = _weight_dq(graph, sites, activation_scales, profile)
    _rewire(graph, sites, profile, keep_float, act.dq_name)
    _assemble(graph, act, weights)
    onnx.checker.check_model(out)
    return out


@dataclass
class _Inserted:
    """What a phase adds: initializers, nodes, and (for activations) the dequantized names."""
    inits: list = field(default_factory=list)
    nodes: list = field(default_factory=list)  # weight DQs, in order
    after: dict[str, list] = field(default_factory=dict)  # tensor -> nodes right after its producer
    dq_name: dict[str, str] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)  # float initializers replaced by quantized ones


def _activation_qdq(tensors: list[str], activation_scales: dict[str, float], sites: QuantPlan,
                    profile: Profile) -> _Inserted:
    """A QuantizeLinear/DequantizeLinear pair per activation tensor, encoded per the profile."""
    from onnx import TensorProto, helper, numpy_helper

    types = {"uint8": TensorProto.UINT8, "int8": TensorProto.INT8}
    ins = _Inserted()
    for tensor in tensors:
        scale = float(activation_scales[tensor])
        s, z = f"{tensor}_scale", f"{tensor}_zero_point"
        ins.inits.append(numpy_helper.from_array(np.array(scale, dtype=np.float32), s))
        dtype, zero_point = profile.encoding(tensor in sites.nonnegative)
        ins.inits.append(helper.make_tensor(z, types[dtype], [], [zero_point]))
        q, dq = f"{tensor}_quantized", f"{tensor}_dequantized"
        ins.after[tensor] = [helper.make_node("QuantizeLinear", [tensor, s, z], [q], name=f"{tensor}_QuantizeLinear"),
                             helper.make_node("DequantizeLinear", [q, s, z], [dq], name=f"{tensor}_DequantizeLinear")]
        ins.dq_name[tensor] = dq
    return ins


def _dq_initializers(helper, numpy_helper, base: str, values, scales, zero_dtype, axis: int):
    """The three initializers and the DequantizeLinear node of one quantized constant."""
    inits = [numpy_helper.from_array(values, f"{base}_quantized"),
             numpy_helper.from_array(scales, f"{base}_scale"),
             numpy_helper.from_array(np.zeros(len(scales), zero_dtype), f"{base}_zero_point")]
    node = helper.make_node("DequantizeLinear", [f"{base}_quantized", f"{base}_scale", f"{base}_zero_point"],
                            [f"{base}_dequantized"], name=f"{base}_DequantizeLinear", axis=axis)
    return inits, node


def _weight_dq(graph, sites: QuantPlan, activation_scales: dict[str, float], profile: Profile) -> _Inserted:
    """Weights per output channel behind a DequantizeLinear (biases too, when the profile says)."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in graph.initializer}
    ins = _Inserted()
    for site in sites.weights:
        w = numpy_helper.to_array(inits[site.weight]).astype(np.float32)
        scales = weight_scales(w, axis=site.axis, num_bits=profile.weight_bits)
        shape = [1] * w.ndim
        shape[site.axis] = -1
        qw = quantize_symmetric(w, scales.reshape(shape), num_bits=profile.weight_bits)
        new, node = _dq_initializers(helper, numpy_helper, site.weight, qw, scales.astype(np.float32), np.int8, site.axis)
        ins.inits += new
        ins.nodes.append(node)
        ins.removed.add(site.weight)
        if profile.quantize_bias and site.bias is not None:
            qb, b_scales = quantize_bias(numpy_helper.to_array(inits[site.bias]),
                                         activation_scales[sites.layer_inputs[site.node]], scales)
            new, node = _dq_initializers(helper, numpy_helper, site.bias, qb, b_scales, np.int32, 0)
            ins.inits += new
            ins.nodes.append(node)
            ins.removed.add(site.bias)
    return ins


def _rewire(graph, sites: QuantPlan, profile: Profile, keep_float: frozenset[str], dq_name: dict[str, str]) -> None:
    """Point each quantized node's inputs at the dequantized tensors."""
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


def _assemble(graph, act: _Inserted, weights: _Inserted) -> None:
    """New initializers in; nodes re-ordered: weight DQs first, each activation's Q/DQ right
    after its producer (topological)."""
    kept = [i for i in graph.initializer if i.name not in weights.removed]
    del graph.initializer[:]
    graph.initializer.extend(kept + act.inits + weights.inits)
    ordered = list(weights.nodes)
    for tensor in (i.name for i in graph.input):
        ordered += act.after.get(tensor, [])
    for node in list(graph.node):
        ordered.append(node)
        for o in node.output:
            ordered += act.after.get(o, [])
    del graph.node[:]
    graph.node.extend(ordered)
