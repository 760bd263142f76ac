"""XNNPACK's INT8 with our calibration table's scales: fixed quantization parameters, no
second calibration.

``XNNPACKQuantizer`` decides *where* quantization goes (the patterns XNNPACK fuses: conv+relu,
add+relu, pools, linear); :class:`TableQuantizer` then replaces *every* activation spec it
wrote with a ``FixedQParamsQuantizationSpec`` from the table, found through
:func:`tensors.onnx_names`, and every weight spec with per-channel symmetric scales computed
as ``quantize.scheme.weight_scales`` computes them for the ONNX engines. The encoding is the
grid the ORT/OpenVINO QDQ graphs use: scale = amax / 127, zero at 0; int8 zero point 0 for
signed tensors ([-128, 127] steps, ONNX Runtime's uint8 with zero point 128), zero point -128
after a ReLU ([0, 255] steps, ONNX Runtime's uint8 with zero point 0).

What cannot be matched is an error, never a fresh observer: :func:`check_fixed` refuses a
prepared model with any activation observer that would learn from data.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np

from ...errors import InputError
from ...quantize.plan import plan
from ...quantize.scheme import dequantize, quantize_symmetric, weight_scales
from .tensors import FX_KINDS, node_outputs, onnx_names

SIGNED_ZERO_POINT, RELU_ZERO_POINT = 0, -128
SCALE_PRESERVING = {"reshape", "maxpool"}  # their output keeps the input's scale (quantize/qdq.py does the same)
ANNOTATION = "quantization_annotation"


class TableMismatch(InputError):
    """The calibration table and the torch model do not describe the same tensors."""


def _torch():
    import torch
    from torchao.quantization.pt2e.observer import PerChannelMinMaxObserver

    return torch, PerChannelMinMaxObserver


@functools.cache
def scheme_weight_observer() -> type:
    """PerChannelMinMaxObserver whose scales are ``scheme.weight_scales``: max |w| / 127 per
    output channel, an all-zero channel 1.0 (PyTorch's observer clamps to an ``eps`` instead;
    XNNPACK's default config uses eps = 2**-12, which coarsens every channel with max |w| < 0.03)."""
    torch, base = _torch()

    class SchemeWeightObserver(base):
        def calculate_qparams(self):
            ranges = torch.stack([self.min_val, self.max_val], dim=1).detach().cpu().numpy()
            scales = torch.from_numpy(weight_scales(ranges, axis=0))
            return scales, torch.zeros(len(scales), dtype=torch.int64)

    return SchemeWeightObserver


def weight_spec():
    torch, _ = _torch()
    from torchao.quantization.pt2e.quantizer import QuantizationSpec

    return QuantizationSpec(torch.int8, scheme_weight_observer(), quant_min=-127, quant_max=127,
                            qscheme=torch.per_channel_symmetric, ch_axis=0)


def fake_quantize_(weight) -> None:
    """Round a float weight onto its per-channel int8 grid, in place (same numbers as the QDQ graphs)."""
    torch, _ = _torch()
    w = weight.detach().cpu().numpy()
    shape = (-1,) + (1,) * (w.ndim - 1)
    scales = weight_scales(w, axis=0).reshape(shape)
    with torch.no_grad():
        weight.copy_(torch.from_numpy(dequantize(quantize_symmetric(w, scales), scales)))


def _kind(node) -> str | None:
    return FX_KINDS.get(str(node.target)) if node.op == "call_function" else None


def _attr(gm, target: str):
    return functools.reduce(getattr, target.split("."), gm)


def table_quantizer(fp32_onnx, scales: Mapping[str, float], keep_float: frozenset[str] = frozenset()):
    """An XNNPACKQuantizer whose every activation has the table's fixed scale.

    ``fp32_onnx``: the folded FP32 ONNX ModelProto the table's names refer to; ``scales``:
    tensor name -> scale (``CalibrationTable.scales`` or a tuned ``Candidate.scales``);
    ``keep_float``: ONNX node names of layers that stay in float (``Candidate.keep_float``).
    After ``prepare_pt2e``, ``quantizer.assigned`` maps each ONNX tensor to its (scale, zero point)
    and ``quantizer.float_output`` names the output layer run in float on int8-grid weights.
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantizer import FixedQParamsQuantizationSpec, SharedQuantizationSpec

    torch, _ = _torch()
    nonnegative = plan(fp32_onnx).nonnegative
    floated = node_outputs(fp32_onnx, keep_float)

    class TableQuantizer(XNNPACKQuantizer):
        def __init__(self) -> None:
            super().__init__()
            self.set_global(get_symmetric_quantization_config(is_per_channel=True))
            self.assigned: dict[str, tuple[float, int]] = {}
            self.float_output: list[str] = []
            self.kept_float: list[str] = []

        def annotate(self, model):
            model = super().annotate(model)
            self.names = onnx_names(fp32_onnx, model)
            for node in list(model.graph.nodes):
                ann = node.meta.get(ANNOTATION)
                if ann is None:
                    continue
                if floated.intersection(self.names.get(node, ())):
                    del node.meta[ANNOTATION]  # a layer of the recipe's float set
                    self.kept_float.append(node.name)
                    continue
                if ann.output_qspec is not None and self._scale_name(node) is None and self._is_output_layer(node):
                    self._float_output(model, node, ann)
                for inp, spec in list(ann.input_qspec_map.items()):
                    if spec is None or isinstance(spec, SharedQuantizationSpec):
                        continue
                    ann.input_qspec_map[inp] = weight_spec() if inp.op == "get_attr" else self._fixed(inp)
                out = ann.output_qspec
                if out is not None and not (isinstance(out, SharedQuantizationSpec) and _kind(node) in SCALE_PRESERVING):
                    ann.output_qspec = self._fixed(node)
            return model

        def _scale_name(self, node) -> str | None:
            return next((n for n in self.names.get(node, ()) if n in scales), None)

        def _fixed(self, node):
            name = self._scale_name(node)
            if name is None:
                onnx = ", ".join(self.names.get(node, ())) or "no ONNX tensor computes it"
                raise TableMismatch(f"the calibration table has no scale for {node.name} ({onnx})",
                                    hint="the table and the torch model must come from the same export")
            zero_point = RELU_ZERO_POINT if name in nonnegative else SIGNED_ZERO_POINT
            scale = float(np.float32(scales[name]))  # what the observer stores and the program holds
            self.assigned[name] = (scale, zero_point)
            return FixedQParamsQuantizationSpec(torch.int8, scale, zero_point, -128, 127, torch.per_tensor_affine)

        @staticmethod
        def _is_output_layer(node) -> bool:
            return _kind(node) in ("linear", "conv") and all(u.op == "output" for u in node.users)

        def _float_output(self, model, node, ann) -> None:
            """The logits have no table scale (every engine leaves the graph output in float) and
            XNNPACK has no int8-in/float-out layer: run it in f32 on int8-grid weights and its
            quantized input, which are the numbers the QDQ graphs compute."""
            ann.output_qspec = None
            for inp in [i for i in ann.input_qspec_map if i.op == "get_attr"]:
                spec = ann.input_qspec_map.pop(inp)
                if spec is not None:
                    fake_quantize_(_attr(model, str(inp.target)))
            self.float_output.append(node.name)

    return TableQuantizer()


def check_fixed(prepared) -> int:
    """Every observer of a prepared model is fixed or a weight observer: nothing learns from data.
    Returns how many activation observers there are."""
    from torchao.quantization.pt2e.observer import FixedQParamsObserver, ObserverBase

    fixed, learning = 0, []
    for name, module in prepared.named_modules():
        if isinstance(module, FixedQParamsObserver):
            fixed += 1
        elif isinstance(module, ObserverBase) and not isinstance(module, scheme_weight_observer()):
            learning.append(f"{name} ({type(module).__name__})")
    if learning:
        raise TableMismatch(f"{len(learning)} activations would be calibrated again: {', '.join(learning[:3])}",
                            hint="every quantized activation must take its scale from the calibration table")
    return fixed


def quantized_tensors(converted, names: Mapping[object, list[str]]) -> dict[str, tuple[float, int]]:
    """ONNX tensor -> (scale, zero point) of every quantize op in a converted model (for checks)."""
    out: dict[str, tuple[float, int]] = {}
    by_name = {node.name: onnx for node, onnx in names.items()}
    for node in converted.graph.nodes:
        if "quantize_per_tensor" in str(node.target) and "dequantize" not in str(node.target):
            src = node.args[0]
            for tensor in by_name.get(getattr(src, "name", None), ()):
                out[tensor] = (float(node.args[1]), int(node.args[2]))
    return out

