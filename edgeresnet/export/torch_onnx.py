"""torch -> FP32 ONNX: opset 17, dynamic batch axis, named ``input``/``logits``, and metadata
that lets any runtime rebuild the preprocessing and class names without torch."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from .._version import __version__
from ..models.checkpoint import ModelMeta
from ..errors import EdgeResNetError, native_call, require

INPUT, OUTPUT = "input", "logits"
OPSET = 17


class ExportError(EdgeResNetError):
    """The model could not be turned into a valid ONNX graph."""


def metadata(meta: ModelMeta, **extra: str) -> dict[str, str]:
    return {"edgeresnet.version": __version__, "edgeresnet.arch": meta.arch,
            "edgeresnet.preprocess": json.dumps(meta.preprocess.to_dict()),
            "edgeresnet.classes": json.dumps(meta.classes), **extra}


def set_metadata(model, props: dict[str, str]) -> None:
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def _inline_identity_initializers(model) -> None:
    """The TorchScript exporter dedups equal initializers through Identity nodes; give each
    consumer its own initializer instead, so every Conv reads its weights directly (what
    QDQ placement and TensorRT's constant folding expect)."""
    onnx = require("onnx", "torch")
    inits = {i.name: i for i in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            model.graph.initializer.append(copy)
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)


def export_onnx(model, meta: ModelMeta, path: Path, opset: int = OPSET) -> None:
    """Write ``model`` (a folded ResNet, eval mode) as an FP32 ONNX file, checked with onnx.checker."""
    torch = require("torch", "torch")
    onnx = require("onnx", "torch")
    from ..core.outdir import atomic_write

    model = model.eval()
    dummy = torch.zeros(1, *meta.preprocess.input_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            tmp = Path(str(path) + ".torch.tmp")
            with native_call():
                torch.onnx.export(model, (dummy,), str(tmp), input_names=[INPUT], output_names=[OUTPUT],
                                  opset_version=opset, dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                                  dynamo=False, do_constant_folding=True)
        except Exception as exc:
            raise ExportError(f"torch.onnx.export failed: {exc}") from None
    proto = onnx.load(str(tmp))
    tmp.unlink()
    _inline_identity_initializers(proto)
    set_metadata(proto, metadata(meta))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ExportError(f"the exported ONNX fails onnx.checker: {exc}") from None
    atomic_write(path, lambda p: onnx.save(proto, str(p)))


def compare_with_torch(model, onnx_path: Path, batch: np.ndarray) -> float:
    """Max |ONNX - torch| / max |torch| on real images, through ONNX Runtime on CPU."""
    torch = require("torch", "torch")
    from ..onnxfile.reference import file_session

    sess = file_session(onnx_path)
    with torch.inference_mode():
        ref = model.eval()(torch.from_numpy(batch)).numpy()
    got = sess.run(None, {INPUT: batch})[0]
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12))
