"""Where a QDQ ONNX puts its Q/DQ pairs, read the same way from ours and from NVIDIA's ModelOpt:
for every compute node, which inputs arrive through DequantizeLinear, from which float tensor,
with which scale. Used by tests/quantize/test_modelopt_reference.py and by the script that made its
fixture (tests/data/modelopt/make_fixture.py)."""

from __future__ import annotations

import numpy as np

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def placement(model) -> dict:
    """{node name: {"op": op type, "inputs": {index: {"tensor", "kind", "scale", "axis", "zero_point", "dtype"}}}}
    for every non-Q/DQ node with at least one input that comes from a DequantizeLinear."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}

    def const(name):
        if name in inits:
            return numpy_helper.to_array(inits[name])
        node = producer.get(name)
        if node is not None and node.op_type == "Constant":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    found = {}
    for node in graph.node:
        if node.op_type in QDQ_OPS:
            continue
        inputs = {}
        for idx, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            source = dq.input[0]
            q = producer.get(source)
            if q is not None and q.op_type == "QuantizeLinear":
                tensor, kind = q.input[0], ("weight" if q.input[0] in inits else "activation")
            else:
                tensor, kind = source, "weight"  # int8 initializer behind the DequantizeLinear
            scale = const(dq.input[1])
            zp = const(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
            axis = next((a.i for a in dq.attribute if a.name == "axis"), None)
            inputs[str(idx)] = {
                "tensor": tensor if kind == "activation" else f"<weight of {node.name}>", "kind": kind,
                "scale": None if scale is None else np.asarray(scale, np.float64).ravel().tolist(),
                "axis": axis if scale is not None and np.asarray(scale).size > 1 else None,
                "zero_point": None if zp is None else sorted({int(v) for v in np.asarray(zp).ravel()}),
                "dtype": None if zp is None else str(np.asarray(zp).dtype)}
        if inputs:
            found[node.name] = {"op": node.op_type, "inputs": inputs}
    return found


def quantized_inputs(found: dict) -> set[tuple[str, str, str]]:
    """(op type, node name, input index) of every quantized input."""
    return {(v["op"], name, idx) for name, v in found.items() for idx in v["inputs"]}
