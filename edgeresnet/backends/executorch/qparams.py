"""XNNPACK's INT8 with our calibration table's scales: fixed quantization parameters, no
second calibration.

``XNNPACKQuantizer`` proposes *where* quantization goes (the patterns XNNPACK fuses:
conv+relu, add+relu, pools, linear); :class:`TableQuantizer` keeps what the table covers and
replaces every activation spec with a ``FixedQParamsQuantizationSpec`` from it (tensors paired
by :func:`tensors.onnx_names`), every weight spec with per-channel symmetric scales computed
as ``quantize.scheme.weight_scales`` computes them for the ONNX engines. The encoding is the
grid the ORT/OpenVINO QDQ graphs use: scale = amax / 127, zero at 0; int8 zero point 0 for
signed tensors ([-128, 127] steps: ONNX Runtime's uint8 with zero point 128), zero point -128
after a ReLU ([0, 255] steps: ONNX Runtime's uint8 with zero point 0).

A tensor a quantized layer needs but the table lacks is an error, never a fresh observer;
:func:`check_fixed` refuses a prepared model with any activation observer that would learn
from data. Imported only to build (it imports torch, torchao and ExecuTorch at the top).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
import torch
from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
from torchao.quantization.pt2e.observer import FixedQParamsObserver, ObserverBase, PerChannelMinMaxObserver
from torchao.quantization.pt2e.quantizer import (
    FixedQParamsQuantizationSpec,
    QuantizationSpec,
    SharedQuantizationSpec,
)

from ...quantize.plan import plan
from ...quantize.scheme import dequantize, quantize_symmetric, weight_scales
from .tensors import FX_KINDS, TableMismatch, node_outputs, onnx_names

SIGNED_ZERO_POINT, RELU_ZERO_POINT = 0, -128
SCALE_PRESERVING = {"reshape", "maxpool"}  # their output keeps the input's scale (quantize/qdq.py does the same)
ANNOTATION = "quantization_annotation"


class SchemeWeightObserver(PerChannelMinMaxObserver):
    """Scales as ``scheme.weight_scales``: max |w| / 127 per output channel, an all-zero channel
    1.0. PyTorch's observer clamps to an ``eps`` instead, and XNNPACK's default config uses
    eps = 2**-12, which coarsens every channel with max |w| < 0.03."""

    def calculate_qparams(self):
        ranges = torch.stack([self.min_val, self.max_val], dim=1).detach().cpu().numpy()
        scales = torch.from_numpy(weight_scales(ranges, axis=0))
        return scales, torch.zeros(len(scales), dtype=torch.int64)


WEIGHT_SPEC = QuantizationSpec(torch.int8, SchemeWeightObserver, quant_min=-127, quant_max=127,
                               qscheme=torch.per_channel_symmetric, ch_axis=0)


def fake_quantize_(weight) -> None:
    """Round a float weight onto its per-channel int8 grid, in place (same numbers as the QDQ graphs)."""
    w = weight.detach().cpu().numpy()
    scales = weight_scales(w, axis=0).reshape((-1,) + (1,) * (w.ndim - 1))
    with torch.no_grad():
        weight.copy_(torch.from_numpy(dequantize(quantize_symmetric(w, scales), scales)))


def _kind(node) -> str | None:
    return FX_KINDS.get(str(node.target)) if node.op == "call_function" else None


def _shared(spec) -> bool:
    return isinstance(spec, SharedQuantizationSpec)


def _attr(gm, target: str):
    return functools.reduce(getattr, target.split("."), gm)


class TableQuantizer(XNNPACKQuantizer):
    """An XNNPACKQuantizer whose every activation has the table's fixed scale.

    ``fp32_onnx``: the folded FP32 ONNX ModelProto the table's names refer to; ``scales``:
    tensor name -> scale (``CalibrationTable.scales`` or a tuned ``Candidate.scales``);
    ``keep_float``: ONNX node names of layers that stay in float (``Candidate.keep_float``).
    After ``prepare_pt2e``: ``assigned`` maps each ONNX tensor to its (scale, zero point),
    ``names`` each FX node to its ONNX tensors, and three lists name the ops in float."""

    def __init__(self, fp32_onnx, scales: Mapping[str, float], keep_float: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.set_global(get_symmetric_quantization_config(is_per_channel=True))
        self.fp32_onnx, self.scales = fp32_onnx, scales
        self.nonnegative = plan(fp32_onnx).nonnegative
        self.floated = node_outputs(fp32_onnx, keep_float)
        self.names: dict = {}
        self.assigned: dict[str, tuple[float, int]] = {}
        self.float_output: list[str] = []  # conv/linear run in f32 on int8-grid weights (the logits)
        self.kept_float: list[str] = []  # the recipe's float layers
        self.left_float: list[str] = []  # ops XNNPACK could quantize but the table (every engine) does not

    def annotate(self, model):
        model = super().annotate(model)
        self.names = onnx_names(self.fp32_onnx, model)
        for node in list(model.graph.nodes):
            ann = node.meta.get(ANNOTATION)
            if ann is None:
                continue
            layer = _kind(node) in ("conv", "linear")
            if self.floated.intersection(self.names.get(node, ())):
                self._keep_float(node)
            elif not layer and not all(self._scale_name(t) for t in self._activations(node, ann)):
                self._leave_float(node)
            else:
                self._use_table(model, node, ann, layer)
        self._drop_orphans(model)
        return model

    @staticmethod
    def _activations(node, ann) -> list:
        """The tensors a pattern would give observers of their own (shared ones follow theirs)."""
        found = [i for i, spec in ann.input_qspec_map.items() if spec is not None and not _shared(spec)]
        out = ann.output_qspec
        return found + ([node] if out is not None and not (_shared(out) and _kind(node) in SCALE_PRESERVING) else [])

    def _use_table(self, model, node, ann, layer: bool) -> None:
        """Fixed specs from the table for the activations, the scheme's for the weights. A conv
        or linear whose output has no scale (the logits: every engine leaves the graph output in
        float) runs in f32 on int8-grid weights and its quantized input, as the QDQ graphs do:
        XNNPACK has no int8-in/float-out layer."""
        if layer and ann.output_qspec is not None and self._scale_name(node) is None:
            ann.output_qspec = None
            if ann.input_qspec_map.pop(node.args[1], None) is not None:
                fake_quantize_(_attr(model, str(node.args[1].target)))
            self.float_output.append(node.name)
        for inp, spec in list(ann.input_qspec_map.items()):
            if spec is not None and not _shared(spec):
                ann.input_qspec_map[inp] = WEIGHT_SPEC if layer and inp is node.args[1] else self._fixed(inp)
        if node in self._activations(node, ann):
            ann.output_qspec = self._fixed(node)

    def _keep_float(self, node) -> None:
        """A layer of the recipe's float set, with the ReLU fused into its pattern (conv+relu,
        add+relu: XNNPACK's quantizer puts the pattern's output spec on the ReLU). A quantized
        consumer still quantizes that output through its own input spec."""
        self._leave_float(node, self.kept_float)
        for user in node.users:
            fused = user.meta.get(ANNOTATION)
            if _kind(user) == "relu" and fused is not None and not fused.input_qspec_map:
                del user.meta[ANNOTATION]

    def _leave_float(self, node, record: list | None = None) -> None:
        """Runs in float: the table quantizes none of its tensors, e.g. the per-channel scale and
        shift of a BN that had no conv to fold into."""
        del node.meta[ANNOTATION]
        (self.left_float if record is None else record).append(node.name)

    def _drop_orphans(self, model) -> None:
        """A spec shared with an op left in float has nothing to share (a flatten after a pool
        that stays float): that op stays float too."""
        gone = set(self.kept_float + self.left_float)
        for node in model.graph.nodes:
            ann = node.meta.get(ANNOTATION)
            specs = [] if ann is None else [*ann.input_qspec_map.values(), ann.output_qspec]
            for spec in (s for s in specs if _shared(s)):
                ref = spec.edge_or_node
                if {n.name for n in (ref if isinstance(ref, tuple) else (ref,))} & gone:
                    self._leave_float(node)
                    gone.add(node.name)
                    break

    def _scale_name(self, node) -> str | None:
        return next((n for n in self.names.get(node, ()) if n in self.scales), None)

    def _fixed(self, node) -> FixedQParamsQuantizationSpec:
        name = self._scale_name(node)
        if name is None:
            onnx = ", ".join(self.names.get(node, ())) or "no ONNX tensor computes it"
            raise TableMismatch(f"the calibration table has no scale for {node.name} ({onnx})",
                                hint="the table and the torch model must come from the same export")
        zero_point = RELU_ZERO_POINT if name in self.nonnegative else SIGNED_ZERO_POINT
        scale = float(np.float32(self.scales[name]))  # what the observer stores and the program holds
        self.assigned[name] = (scale, zero_point)
        return FixedQParamsQuantizationSpec(torch.int8, scale, zero_point, -128, 127, torch.per_tensor_affine)


def check_fixed(prepared) -> int:
    """Every observer of a prepared model is fixed or a weight observer: nothing learns from data.
    Returns how many activation observers there are."""
    fixed, learning = 0, []
    for name, module in prepared.named_modules():
        if isinstance(module, FixedQParamsObserver):
            fixed += 1
        elif isinstance(module, ObserverBase) and not isinstance(module, SchemeWeightObserver):
            learning.append(f"{name} ({type(module).__name__})")
    if learning:
        raise TableMismatch(f"{len(learning)} activations would be calibrated again: {', '.join(learning[:3])}",
                            hint="every quantized activation must take its scale from the calibration table")
    return fixed


def quantized_tensors(converted, names: Mapping[object, list[str]]) -> dict[str, tuple[float, int]]:
    """ONNX tensor -> (scale, zero point) of every quantize op in a converted model (for checks)."""
    by_name = {node.name: onnx for node, onnx in names.items()}
    out: dict[str, tuple[float, int]] = {}
    for node in converted.graph.nodes:
        if "quantize_per_tensor" in str(node.target) and "dequantize" not in str(node.target):
            for tensor in by_name.get(getattr(node.args[0], "name", None), ()):
                out[tensor] = (float(node.args[1]), int(node.args[2]))
    return out
