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


def module_path(node_name: str) -> str:
    """The PyTorch module path of an exported node: '/layer2/layer2.0/downsample/downsample.0/Conv'
    -> 'layer2.0.downsample.0' (each scope segment repeats its parent's name before a dot)."""
    segments = [s for s in node_name.strip("/").split("/")[:-1] if s]
    path = ""
    for seg in segments:
        last = path.rsplit(".", 1)[-1] if path else ""
        if last and seg.startswith(last + "."):
            path = path + seg[len(last):]
        else:
            path = f"{path}.{seg}" if path else seg
    return path


def match_layers(patterns: list[str], units: dict[str, frozenset[str]]) -> list[str]:
    """Quantized layers named by ``patterns``: an ONNX node name, a PyTorch module path
    ('layer1.0.conv1') or a glob over either ('layer4.*', '*downsample*'); in graph order.
    A pattern that names no layer is an error listing some that exist."""
    from fnmatch import fnmatchcase

    from ..errors import UsageError

    found: list[str] = []
    for pattern in patterns:
        hits = [layer for layer in units if fnmatchcase(layer, pattern) or fnmatchcase(module_path(layer), pattern)]
        if not hits:
            examples = ", ".join(module_path(layer) for layer in list(units)[:4])
            raise UsageError(f"--float-layers {pattern!r} names no quantized layer",
                             hint=f"use ONNX node names or module paths, e.g. {examples}")
        found += [h for h in hits if h not in found]
    return [layer for layer in units if layer in found]
