"""Stand-ins for what the typed engine contract will hand ``build`` (``BuildInputs``), while
``Backend.build`` still receives one ONNX path. Delete this module when the contract lands:

* :func:`torch_model` rebuilds the folded torch model from the FP32 ONNX (its
  ``edgeresnet.arch`` metadata and its initializers, which carry the torch parameter names).
  The contract passes ``BuildInputs.torch_model`` instead; an ONNX source, which has no torch
  model, then gets a skipped row instead of this function's error.
* :func:`recipe_from_qdq` reads the INT8 recipe (scales, corrected biases, layers in float)
  back out of the QDQ ONNX the engine stage writes from it for the ``executorch`` profile, and
  the calibration table beside it. The contract passes ``BuildInputs.candidate or
  Candidate(BuildInputs.table.scales)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...errors import InputError, require
from ...quantize.plan import layer_units, plan
from ...quantize.recipe import Candidate

FP32_NAME = "model.fp32.onnx"  # what the export stage names the folded FP32 ONNX, beside the QDQ files
TABLE_NAME = "calibration.json"  # and the calibration table


def _initializers(proto) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}


def torch_model(fp32_proto):
    """The folded torch model an edgeresnet FP32 ONNX was exported from: its architecture
    rebuilt from the metadata, BN folded as the export folds it, every weight from the ONNX."""
    torch = require("torch", "torch")
    from ...models.fold import fold_bn
    from ...models.registry import build_model

    props = {p.key: p.value for p in fp32_proto.metadata_props}
    arch = props.get("edgeresnet.arch")
    if not arch:
        raise InputError("the ExecuTorch engine needs the torch model; this ONNX has no edgeresnet architecture",
                         hint="export from a checkpoint (an ONNX source has no torch model)")
    inits = _initializers(fp32_proto)
    ops = {n.op_type for n in fp32_proto.graph.node}
    gemm = next(n for n in fp32_proto.graph.node if n.op_type == "Gemm")
    classes = int(inits[gemm.input[1]].shape[0])
    channels = int(json.loads(props.get("edgeresnet.preprocess", "{}")).get("channels", 3))
    shortcut = "B" if any(".downsample." in name for name in inits) else "A"
    model = build_model(arch, num_classes=classes, in_channels=channels, small_input="MaxPool" not in ops,
                        shortcut=shortcut)
    folded, _ = fold_bn(model.eval())
    state = folded.state_dict()
    bad = [k for k, v in state.items() if k not in inits or tuple(inits[k].shape) != tuple(v.shape)]
    if bad:
        raise InputError(f"cannot rebuild the torch model of this {arch} from its ONNX ({len(bad)} tensors differ, "
                         f"first {bad[0]})", hint="the typed engine contract will pass the export's torch model")
    folded.load_state_dict({k: torch.from_numpy(np.array(inits[k])) for k in state})
    return folded.eval()


def recipe_from_qdq(qdq_proto, fp32_proto, table_scales: dict[str, float]) -> Candidate:
    """The recipe a QDQ ONNX (profile ``executorch``) was emitted from. Its Q
    nodes hold the recipe's scales for the tensors that profile quantizes; the table fills in
    the rest (a tuned ``Candidate.scales`` covers every tensor of the table)."""
    inits = _initializers(qdq_proto)
    scales = dict(table_scales)
    scales.update({n.input[0]: float(inits[n.input[1]]) for n in qdq_proto.graph.node
                   if n.op_type == "QuantizeLinear" and n.input[1] in inits})
    dequantized = {n.output[0] for n in qdq_proto.graph.node if n.op_type == "DequantizeLinear"}
    units = layer_units(fp32_proto)
    by_name = {n.name: n for n in qdq_proto.graph.node}
    floated = [layer for layer in units if layer in by_name and by_name[layer].input[1] not in dequantized]
    keep = frozenset().union(*(units[layer] for layer in floated)) if floated else frozenset()
    original = _initializers(fp32_proto)
    biases = {site.bias: original[site.bias] for site in plan(fp32_proto).weights if site.bias}
    return Candidate(scales, keep, _corrected_biases(inits, biases))


def _corrected_biases(inits: dict[str, np.ndarray], original: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Biases the recipe changed: an int32 bias (``{b}_quantized`` on ``{b}_scale``) more than
    half a step away from the original's value, dequantized (XNNPACK re-quantizes it to the
    same integers); a float bias that differs."""
    found = {}
    for name, value in original.items():
        q, scale = inits.get(f"{name}_quantized"), inits.get(f"{name}_scale")
        if q is not None and scale is not None:
            steps = value.astype(np.float64) / scale.astype(np.float64)
            if np.abs(q - steps).max() > 0.5 + 1e-3:
                found[name] = (q * scale).astype(np.float32)
        elif name in inits and inits[name].shape == value.shape and not np.array_equal(inits[name], value):
            found[name] = inits[name]
    return found


def fp32_beside(qdq_path: Path) -> Path:
    return Path(qdq_path).parent / FP32_NAME


def table_scales_beside(qdq_path: Path) -> dict[str, float]:
    from ...calibrate.table import CalibrationTable

    return CalibrationTable.load(Path(qdq_path).parent / TABLE_NAME).scales
