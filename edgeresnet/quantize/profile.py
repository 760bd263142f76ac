"""How a QDQ graph encodes the shared scales for one runtime: dtypes and zero points of
activations, bias encoding, where Q/DQ go. Each backend declares its own (backends/registry.py);
no numpy here, so the registry stays cheap to import."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    signed_dtype: str  # "int8" or "uint8": tensors that may be negative
    signed_zero_point: int
    relu_dtype: str  # tensors >= 0 by construction (after a ReLU)
    relu_zero_point: int
    quantize_bias: bool
    placement: str  # "inputs" (TensorRT's rules) or "units" (inputs and outputs of each op)
    weight_bits: int = 8
    float_ops: tuple[str, ...] = ()  # op types this runtime keeps in float whatever the plan says

    def float_nodes(self, graph, keep_float=frozenset()) -> frozenset[str]:
        """The nodes of ``graph`` kept in float: the recipe's and this runtime's ``float_ops``."""
        return frozenset(keep_float) | {n.name for n in graph.node if n.op_type in self.float_ops}

    def encoding(self, nonnegative: bool) -> tuple[str, int]:
        return (self.relu_dtype, self.relu_zero_point) if nonnegative else (self.signed_dtype, self.signed_zero_point)

    def to_dict(self) -> dict:
        return {"name": self.name, "activations": f"{self.signed_dtype} zero point {self.signed_zero_point} (signed), "
                f"{self.relu_dtype} zero point {self.relu_zero_point} (after ReLU)", "placement": self.placement,
                "weights": f"int8 per-channel symmetric, {self.weight_bits}-bit", "bias": "int32" if self.quantize_bias else "float",
                **({"float_ops": list(self.float_ops)} if self.float_ops else {})}


# The encoding whose quantization points (inputs and outputs of every node unit, uint8 with zero
# point 128) cover every engine's on the same int8 grid: tune/emulate scores candidates in it, and
# ONNX Runtime ships it (its name is in file names and reports, so it stays "ort").
REFERENCE = Profile("ort", "uint8", 128, "uint8", 0, quantize_bias=True, placement="units")
