"""Which tensor of the folded FP32 ONNX each node of a torch.export graph computes.

The calibration table is keyed by ONNX tensor names; PT2E quantizes FX nodes. The two graphs
come from the same module, but their names (``/layer1/layer1.0/relu_1/Relu_output_0`` vs
``relu__2``) and their orders differ, so they are paired by structure: a tensor is known by
the operation that made it and the tensors it read, anchored on the graph input and on the
parameters, which carry the module's own names in both graphs (``layer1.0.conv1.weight`` is an
ONNX initializer and an FX ``get_attr`` target). Every Conv and Gemm is pinned by its weight;
a ReLU, Add, pool or flatten by what it reads. Two tensors with one signature compute the same
value, so the pairing cannot be wrong where it exists; where the exporters disagree on an op
(an unknown kind on either side), the tensors stay unpaired and the caller refuses to invent
quantization parameters for them.
"""

from __future__ import annotations

from collections.abc import Iterable

from ...errors import InputError

class TableMismatch(InputError):
    """The calibration table (or a recipe) and the torch model do not describe the same tensors."""


# ONNX op type -> the kind both graphs agree on.
ONNX_KINDS = {"Conv": "conv", "Gemm": "linear", "Relu": "relu", "Add": "add", "Mul": "mul", "Sub": "sub",
              "GlobalAveragePool": "mean", "ReduceMean": "mean", "AveragePool": "avgpool", "MaxPool": "maxpool",
              "Flatten": "reshape", "Reshape": "reshape", "Concat": "cat"}
ONNX_PASS = {"Identity"}

# torch.export ATen op -> kind (in-place variants included: models written with ReLU(inplace=True)).
FX_KINDS = {"aten.conv2d.default": "conv", "aten.linear.default": "linear",
            "aten.relu.default": "relu", "aten.relu_.default": "relu",
            "aten.add.Tensor": "add", "aten.add_.Tensor": "add", "aten.mul.Tensor": "mul", "aten.sub.Tensor": "sub",
            "aten.adaptive_avg_pool2d.default": "mean", "aten.mean.dim": "mean", "aten.avg_pool2d.default": "avgpool",
            "aten.max_pool2d.default": "maxpool", "aten.max_pool2d_with_indices.default": "maxpool",
            "aten.flatten.using_ints": "reshape", "aten.view.default": "reshape", "aten.reshape.default": "reshape",
            "aten.cat.default": "cat"}
FX_PASS = {"aten.clone.default", "aten.contiguous.default", "aten.alias.default", "aten.dropout.default"}

DATA_INPUTS = {"relu": 1, "mean": 1, "avgpool": 1, "maxpool": 1, "reshape": 1}  # others: every tensor input
COMMUTATIVE = {"add", "mul"}


class _Signatures:
    """Interns nested signatures as small integers, so a deep network's keys stay flat."""

    def __init__(self) -> None:
        self.ids: dict[tuple, int] = {}

    def __call__(self, *key) -> int:
        return self.ids.setdefault(key, len(self.ids))

    def op(self, kind: str, inputs: list[int]) -> int:
        inputs = inputs[:DATA_INPUTS[kind]] if kind in DATA_INPUTS else inputs
        return self(kind, *(sorted(inputs) if kind in COMMUTATIVE else inputs))


def onnx_signatures(proto, sig: _Signatures) -> dict[str, int]:
    """Tensor name -> signature, for every tensor of an ONNX graph (topologically ordered)."""
    graph = proto.graph
    inits = {i.name for i in graph.initializer}
    of: dict[str, int] = {}
    for i, inp in enumerate(x for x in graph.input if x.name not in inits):
        of[inp.name] = sig("input", i)
    for name in inits:
        of[name] = sig("param", name)
    for node in graph.node:
        if node.op_type in ONNX_PASS and node.input and node.input[0] in of:
            of[node.output[0]] = of[node.input[0]]
            continue
        kind = ONNX_KINDS.get(node.op_type)
        ins = [of.get(i, sig("onnx-unknown", i)) for i in node.input if i]
        of[node.output[0]] = sig.op(kind, ins) if kind else sig("onnx-opaque", node.op_type, node.name)
        for extra in node.output[1:]:
            of[extra] = sig("onnx-opaque", node.name, extra)
    return of


def fx_signatures(gm, sig: _Signatures) -> dict[object, int]:
    """FX node -> signature, for a torch.export graph module (unlifted: parameters are get_attr)."""
    from torch.fx import Node

    of: dict[object, int] = {}
    inputs = 0
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            of[node] = sig("input", inputs)
            inputs += 1
        elif node.op == "get_attr":
            of[node] = sig("param", str(node.target))
        elif node.op == "call_function":
            target = str(node.target)
            args = [of.get(a, sig("fx-unknown", a.name)) for a in node.args if isinstance(a, Node)]
            if target in FX_PASS and args:
                of[node] = args[0]
            elif target in FX_KINDS:
                of[node] = sig.op(FX_KINDS[target], args)
            else:
                of[node] = sig("fx-opaque", node.name)
    return of


def onnx_names(proto, gm) -> dict[object, list[str]]:
    """FX node -> the ONNX tensors that hold its value (usually one; an Identity adds a name)."""
    sig = _Signatures()
    onnx = onnx_signatures(proto, sig)
    by_sig: dict[int, list[str]] = {}
    for name, s in onnx.items():
        by_sig.setdefault(s, []).append(name)
    return {node: by_sig[s] for node, s in fx_signatures(gm, sig).items() if s in by_sig}


def node_outputs(proto, node_names: Iterable[str]) -> set[str]:
    """The output tensors of the named ONNX nodes (how a recipe's float layers are found in FX)."""
    wanted = set(node_names)
    return {out for n in proto.graph.node if n.name in wanted for out in n.output}
