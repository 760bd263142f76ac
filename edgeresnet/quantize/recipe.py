"""The recipe an INT8 graph is made from: the calibration scales, the conv biases corrected
for quantization's mean shift, and the layers kept in float. The calibration table gives the
default recipe; ``--max-drop`` (tune/) searches for a better one; every engine's QDQ graph is
emitted from the one recipe, in its own encoding (``qdq.Profile``)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import require
from .profile import Profile
from .qdq import emit_qdq


@dataclass(frozen=True)
class Candidate:
    """Scales per activation tensor, layers kept in float, corrected biases."""

    scales: dict[str, float]
    keep_float: frozenset[str] = frozenset()  # node names that stay in float
    biases: dict[str, np.ndarray] = field(default_factory=dict)  # bias initializer -> corrected values

    def but(self, **changes) -> "Candidate":
        return replace(self, **changes)


def with_biases(model, biases: dict[str, np.ndarray]):
    """A copy of ``model`` whose named bias initializers hold new values."""
    onnx = require("onnx", "torch")
    from onnx import numpy_helper

    if not biases:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for init in out.graph.initializer:
        if init.name in biases:
            init.CopyFrom(numpy_helper.from_array(biases[init.name].astype(np.float32), init.name))
    return out


def quantized_model(fp32, cand: Candidate, profile: Profile):
    """The QDQ ModelProto a recipe stands for, in a backend's encoding. A layer in float keeps
    its original bias: a correction removes the shift of that layer's own quantization."""
    floated = {n.input[2] for n in fp32.graph.node if n.name in cand.keep_float and len(n.input) > 2}
    biases = {b: v for b, v in cand.biases.items() if b not in floated}
    return emit_qdq(with_biases(fp32, biases), cand.scales, profile, cand.keep_float)
