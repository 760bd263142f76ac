"""ONNX Runtime sessions on in-memory graphs with chosen intermediate tensors exposed as
outputs: how calibration observes activations and how the tuner measures candidates."""

from __future__ import annotations

from .errors import require

LEVELS = {"none": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "all": "ORT_ENABLE_ALL"}


def session_with_outputs(model, tensors: list[str], threads: int | None = None, level: str = "all"):
    """A CPU session on ``model`` (a ModelProto) that also returns ``tensors``.

    ``level``: ``basic`` keeps every observed tensor (fusions would swallow some), ``none`` runs
    the graph exactly as written (QDQ unfused: the int8 grid's exact arithmetic)."""
    onnx = require("onnx", "torch")
    ort = require("onnxruntime", "ort")
    have = {o.name for o in model.graph.output}
    missing = [t for t in dict.fromkeys(tensors) if t not in have]
    if missing:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in missing)
        model = probe
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
