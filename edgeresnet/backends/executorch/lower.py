"""torch model -> ExecuTorch program (.pte) lowered to the XNNPACK delegate, FP32 or INT8.

INT8 is PT2E with :mod:`.qparams`: XNNPACK's quantizer places the quantization, the table
gives every activation its fixed scale, and one forward pass on zeros between
``prepare_pt2e`` and ``convert_pt2e`` lets the per-channel weight observers see the weights
(activation observers are all fixed, so no data is measured: no second calibration).

The program takes batch 1, the edge case it is for (the runner feeds larger batches image by
image: with a dynamic batch, torch.export's flatten became a view outside the delegate and
split it in two), and carries two constant methods, so the file says what it is without its
name: ``edgeresnet_int8`` (bool) and ``edgeresnet_format``.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...core.outdir import atomic_write
from . import FORMAT, FORMAT_METHOD, PRECISION_METHOD
from .qparams import TableQuantizer, check_fixed, quantized_tensors
from .tensors import TableMismatch


@dataclass
class Lowered:
    """What a lowering produced and what it checked."""

    path: Path
    precision: str
    delegated_nodes: int
    subgraphs: int
    outside: dict[str, int]  # op -> nodes left to ExecuTorch's portable kernels (none for a ResNet)
    delegated_ops: dict[str, int]  # op -> nodes inside the XNNPACK delegate
    seconds: float
    assigned: dict[str, tuple[float, int]] = field(default_factory=dict)  # ONNX tensor -> (scale, zero point)
    float_output: list[str] = field(default_factory=list)
    kept_float: list[str] = field(default_factory=list)
    left_float: list[str] = field(default_factory=list)

    @property
    def kernel(self) -> str:
        """The delegate's kernel family: XNNPACK's int8 (QS8) or f32 operators."""
        return "xnnpack-qs8" if self.precision == "int8" else "xnnpack-f32"

    def details(self) -> dict:
        return {"delegate": "XnnpackBackend", "kernel_family": self.kernel, "delegated_nodes": self.delegated_nodes,
                "delegated_subgraphs": self.subgraphs, "outside_delegate": dict(self.outside),
                "lower_seconds": round(self.seconds, 2), "batch": 1,
                **({"fixed_qparams": len(self.assigned), "float_output_layer": self.float_output,
                    "kept_float": self.kept_float, "float_ops": self.left_float} if self.precision == "int8" else {})}


def export_graph(model, chw: tuple[int, int, int]):
    """torch.export at batch 1."""
    import torch

    return torch.export.export(model, (torch.zeros(1, *chw),))


def _with_biases(model, biases: Mapping[str, np.ndarray] | None):
    """A copy of ``model`` with a recipe's corrected biases (keyed by the ONNX initializer names,
    which are the torch parameter names: the exporter keeps them)."""
    import torch

    model = copy.deepcopy(model).eval()
    params = dict(model.named_parameters())
    for name, value in (biases or {}).items():
        if name not in params or tuple(params[name].shape) != tuple(np.shape(value)):
            raise TableMismatch(f"the recipe corrects a bias {name!r} the torch model does not have",
                                hint="the recipe and the torch model must come from the same export")
        with torch.no_grad():
            params[name].copy_(torch.from_numpy(np.asarray(value, dtype=np.float32)))
    return model


def _write(exported, precision: str, out: Path, started: float, **extra) -> Lowered:
    """Lower to XNNPACK, serialize, and report what was delegated."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower

    with warnings.catch_warnings():  # torch's pytree deprecates LeafSpec inside executorch's own passes
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
        edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()],
                                           constant_methods={PRECISION_METHOD: precision == "int8", FORMAT_METHOD: FORMAT})
        info = get_delegation_info(edge.exported_program().graph_module)
        program = edge.to_executorch()
    atomic_write(out, lambda p: p.write_bytes(program.buffer))
    ops = info.delegation_by_operator.values()
    outside = {b.op_type: b.non_delegated for b in ops if b.non_delegated and b.op_type != "getitem"}
    return Lowered(out, precision, info.num_delegated_nodes, info.num_delegated_subgraphs, outside,
                   {b.op_type: b.delegated for b in ops if b.delegated}, time.perf_counter() - started, **extra)


def lower_fp32(model, chw: tuple[int, int, int], out: Path) -> Lowered:
    """The FP32 program: the model as it is (BN folded by the export), every op in XNNPACK f32."""
    started = time.perf_counter()
    return _write(export_graph(copy.deepcopy(model).eval(), chw), "fp32", out, started)


def lower_int8(model, fp32_onnx, scales: Mapping[str, float], chw: tuple[int, int, int], out: Path, *,
               keep_float: frozenset[str] = frozenset(), biases: Mapping[str, np.ndarray] | None = None) -> Lowered:
    """The INT8 program with fixed quantization parameters.

    ``model``: the folded torch model the FP32 ONNX was exported from; ``fp32_onnx``: that
    ONNX (ModelProto), whose tensor names key ``scales``; ``scales``: the calibration table's
    (``CalibrationTable.scales``) or a tuned recipe's (``Candidate.scales``), with its
    ``keep_float`` node names and corrected ``biases``."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    started = time.perf_counter()
    graph = export_graph(_with_biases(model, biases), chw).module()
    quantizer = TableQuantizer(fp32_onnx, scales, keep_float)
    prepared = prepare_pt2e(graph, quantizer)
    check_fixed(prepared)
    with torch.no_grad():
        prepared(torch.zeros(1, *chw))  # weight observers only: every activation observer is fixed
    converted = convert_pt2e(prepared)
    assigned = quantized_tensors(converted, quantizer.names)
    wrong = {t: v for t, v in assigned.items() if v != quantizer.assigned.get(t)}
    if wrong:
        raise TableMismatch(f"{len(wrong)} tensors were not quantized with the table's scale (first: {next(iter(wrong))})")
    exported = export_graph(converted, chw)
    return _write(exported, "int8", out, started, assigned=assigned, float_output=quantizer.float_output,
                  kept_float=quantizer.kept_float, left_float=quantizer.left_float)
