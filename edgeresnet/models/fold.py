"""BatchNorm folding: every conv -> BN pair becomes one conv with a bias.

    W' = W * g / sqrt(v + eps)        b' = beta + (b - mu) * g / sqrt(v + eps)

BNs that follow no conv (pre-activation nets: a BN after a residual Add or the stem, before
a ReLU) cannot fold into a weight; they become a per-channel scale and shift, which every
engine fuses or runs as one cheap elementwise op. Returns a new model; the input is untouched.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from ..errors import require


@dataclass
class FoldReport:
    folded: int  # BNs merged into the preceding conv
    kept: int  # BNs turned into a per-channel scale + shift
    max_rel_error: float | None = None  # folded vs original on real images: max|dy| / max|y|
    images: int = 0

    def to_dict(self) -> dict:
        return {"folded": self.folded, "kept_as_scale_shift": self.kept, "max_rel_error": self.max_rel_error,
                "images": self.images}


def _affine_class():
    torch = require("torch", "torch")

    class ChannelAffine(torch.nn.Module):
        """y = x * scale + shift per channel: an inference-time BN that had no conv to fold into."""

        def __init__(self, scale, shift) -> None:
            super().__init__()
            self.register_buffer("scale", scale.detach().clone().view(1, -1, 1, 1))
            self.register_buffer("shift", shift.detach().clone().view(1, -1, 1, 1))

        def forward(self, x):
            return x * self.scale + self.shift

    return ChannelAffine


def _set_submodule(root, target: str, module) -> None:
    parent_name, _, name = target.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, name, module)


def bn_scale_shift(bn):
    """The per-channel (scale, shift) an eval-mode BN applies."""
    torch = require("torch", "torch")
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias.detach() - bn.running_mean * scale


def fold_bn(model) -> tuple[object, FoldReport]:
    """Fold BNs into convs (traced with torch.fx to find real conv -> BN edges)."""
    torch = require("torch", "torch")
    from torch import fx, nn

    model = copy.deepcopy(model).eval()
    graph = fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    affine = _affine_class()
    folded = kept = 0
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        bn = modules[node.target]
        scale, shift = bn_scale_shift(bn)
        src = node.args[0]
        conv = modules.get(src.target) if isinstance(src, fx.Node) and src.op == "call_module" else None
        if isinstance(conv, nn.Conv2d) and len(src.users) == 1:
            with torch.no_grad():
                bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(scale)
                new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                                conv.padding, conv.dilation, conv.groups, bias=True)
                new.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
                new.bias.copy_(shift + bias * scale)
            _set_submodule(model, src.target, new)
            _set_submodule(model, node.target, nn.Identity())
            folded += 1
        else:
            _set_submodule(model, node.target, affine(scale, shift))
            kept += 1
    return model, FoldReport(folded, kept)


def verify_fold(original, folded, batch: np.ndarray, report: FoldReport) -> FoldReport:
    """Fill ``report.max_rel_error`` from real images (float32 NCHW)."""
    torch = require("torch", "torch")
    x = torch.from_numpy(batch)
    with torch.inference_mode():
        y0, y1 = original.eval()(x), folded.eval()(x)
    report.max_rel_error = float((y1 - y0).abs().max() / y0.abs().max().clamp_min(1e-12))
    report.images = int(len(batch))
    return report
