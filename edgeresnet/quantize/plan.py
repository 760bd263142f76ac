"""Where Q/DQ goes, read off an FP32 ONNX graph: TensorRT's explicit-quantization placement.

* the activation input and the weights of every Conv and Gemm;
* the residual (identity) input of every residual Add, so TensorRT fuses the Add into the
  epilogue of the conv on the other input (without it the Add runs in float and reformat
  layers appear: the most reported "INT8 is no faster than FP16" cause).

ONNX Runtime fuses Q/DQ only around whole node units (DQ inputs -> op -> Q output), so its
profile also quantizes ``outputs``: every Conv/Gemm and residual Add output (after the ReLU
that follows it, which ONNX Runtime then folds into the quantization). Calibration measures
the union once; each profile uses its part of the one table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

QUANTIZED_OPS = ("Conv", "Gemm")


@dataclass(frozen=True)
class WeightSite:
    node: str  # node name
    op: str
    weight: str  # initializer name
    bias: str | None
    axis: int  # the output-channel axis of the weight


@dataclass
class QuantPlan:
    activations: list[str]  # tensors to quantize, in graph order
    weights: list[WeightSite]
    residual_adds: dict[str, str] = field(default_factory=dict)  # Add node -> quantized input tensor
    layer_inputs: dict[str, str] = field(default_factory=dict)  # Conv/Gemm node -> its input tensor
    outputs: list[str] = field(default_factory=list)  # extra output-side tensors (ORT node units)
    nonnegative: set[str] = field(default_factory=set)  # tensors >= 0 by construction (after ReLU)

    @property
    def all_tensors(self) -> list[str]:
        """Every tensor any profile quantizes: what calibration measures."""
        return self.activations + [t for t in self.outputs if t not in self.activations]

    @property
    def layers(self) -> list[str]:
        return [w.node for w in self.weights]


def _producers(graph) -> dict[str, object]:
    return {out: node for node in graph.node for out in node.output}


def _consumers(graph) -> dict[str, list]:
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def residual_input(node, producers: dict, consumers: dict, initializers: dict) -> str | None:
    """For a residual Add, the input that should carry Q/DQ (the identity branch), else None."""
    if node.op_type != "Add" or len(node.input) != 2 or any(i in initializers for i in node.input):
        return None
    a, b = node.input
    from_conv = [i for i in (a, b) if getattr(producers.get(i), "op_type", None) == "Conv"
                 and len(consumers.get(i, [])) == 1]
    if len(from_conv) == 1:
        return b if from_conv[0] == a else a
    if len(from_conv) == 2:
        # Both branches end in a conv (projection shortcut): quantize the 1x1 projection's
        # output and let the 3x3 on the main path absorb the Add.
        def kernel(name: str) -> int:
            w = initializers.get(producers[name].input[1])
            return int(w.dims[-1]) if w is not None else 0
        return a if kernel(a) <= kernel(b) else b
    return b  # neither from a conv: quantize one input; the Add will not fuse either way


def plan(model, keep_float: set[str] | frozenset[str] = frozenset()) -> QuantPlan:
    """The quantization sites of ``model``; nodes named in ``keep_float`` stay in float."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers, consumers = _producers(graph), _consumers(graph)
    activations: list[str] = []
    weights: list[WeightSite] = []
    residual: dict[str, str] = {}
    layer_inputs: dict[str, str] = {}

    def want(tensor: str) -> None:
        if tensor not in activations:
            activations.append(tensor)

    for node in graph.node:
        if node.op_type in QUANTIZED_OPS and node.name not in keep_float:
            if len(node.input) < 2 or node.input[1] not in inits:
                continue
            axis = 0
            if node.op_type == "Gemm":
                trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
                axis = 0 if trans_b else 1
            bias = node.input[2] if len(node.input) > 2 and node.input[2] in inits else None
            weights.append(WeightSite(node.name, node.op_type, node.input[1], bias, axis))
            want(node.input[0])
            layer_inputs[node.name] = node.input[0]
        elif node.op_type == "Add" and node.name not in keep_float:
            tensor = residual_input(node, producers, consumers, inits)
            if tensor is not None:
                residual[node.name] = tensor
                want(tensor)
    outputs: list[str] = []
    for node in graph.node:
        quantized = (node.op_type in QUANTIZED_OPS and node.name in layer_inputs) or node.name in residual \
            or (node.op_type == "GlobalAveragePool" and node.name not in keep_float)
        if not quantized or node.output[0] in {o.name for o in graph.output}:
            continue
        tensor = node.output[0]
        users = consumers.get(tensor, [])
        if len(users) == 1 and users[0].op_type == "Relu":
            tensor = users[0].output[0]
        if tensor not in activations and tensor not in outputs:
            outputs.append(tensor)
    return QuantPlan(activations, weights, residual, layer_inputs, outputs, _nonnegative(graph, producers))


def layer_units(model) -> dict[str, frozenset[str]]:
    """Each quantized Conv/Gemm with the nodes that go back to float with it: the residual
    Add it absorbs (TensorRT fuses the Add into the epilogue of the conv on its non-identity
    input; with that conv in float there is nothing to fuse into) and a GlobalAveragePool
    that feeds it (through Flatten/Reshape). Keyed by layer, in graph order."""
    graph = model.graph
    sites = plan(model)
    producers, consumers = _producers(graph), _consumers(graph)
    units = {layer: {layer} for layer in sites.layers}
    by_name = {n.name: n for n in graph.node}
    for add, identity in sites.residual_adds.items():
        node = by_name[add]
        other = [i for i in node.input if i != identity]
        owner = producers.get(other[0]) if other else None
        if owner is not None and owner.name in units:
            units[owner.name].add(add)
    for node in graph.node:
        if node.op_type != "GlobalAveragePool":
            continue
        tensor, users = node.output[0], consumers.get(node.output[0], [])
        while len(users) == 1 and users[0].op_type in ("Flatten", "Reshape"):
            tensor = users[0].output[0]
            users = consumers.get(tensor, [])
        owners = [u.name for u in users if u.name in units]
        if len(owners) == 1:
            units[owners[0]].add(node.name)
    return {layer: frozenset(nodes) for layer, nodes in units.items()}


def _nonnegative(graph, producers: dict) -> set[str]:
    """Tensors that cannot be negative: ReLU outputs, and pooling/reshaping of such tensors."""
    passthrough = {"MaxPool", "GlobalAveragePool", "AveragePool", "Flatten", "Reshape"}
    result: set[str] = set()
    for node in graph.node:  # graph order is topological
        if node.op_type == "Relu" or (node.op_type in passthrough and node.input[0] in result):
            result.add(node.output[0])
    return result
