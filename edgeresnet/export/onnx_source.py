"""An FP32 ONNX model as the source of an export (ours, or exported by torchvision/timm code):
checked, its BatchNorms folded into the convs by ONNX Runtime's own Conv+BN fusion, its input
and output renamed to ``input``/``logits`` with a dynamic batch, and its preprocessing taken
from edgeresnet's metadata when it has it, else from flags or defaults for its input shape."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..models.checkpoint import IMAGENET_PREPROCESS, ModelMeta
from ..data import Preprocess
from ..data.preprocess import Overrides
from ..errors import InputError, require
from .torch_onnx import INPUT, OUTPUT, set_metadata
from ..core.limits import MAX_CLASSES, check_count
from ..onnxfile import STANDARD, check_onnx_file, read_metadata
from ..onnxfile.metadata import PREFIX
from ..onnxfile.reference import file_session, user_run, user_session


@dataclass
class OnnxSource:
    proto: object  # BN folded, input/logits names, dynamic batch
    meta: ModelMeta
    bn_before: int
    bn_after: int
    params: int


def compare_graphs(original: Path, folded: Path, batch: np.ndarray) -> float:
    """Max |folded - original| / max |original| on real images, through ONNX Runtime."""
    ref_sess = user_session(original, level="none")  # the file as written, BN unfused
    new_sess = file_session(folded)
    ref_name = ref_sess.get_inputs()[0].name
    fixed = ref_sess.get_inputs()[0].shape[0]
    if isinstance(fixed, int) and fixed > 0:  # a file with a fixed batch: feed it that many
        batch = batch[:fixed]
    ref = user_run(ref_sess, original, {ref_name: batch})[0]
    got = new_sess.run(None, {INPUT: batch})[0]
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12))


def _dims(value_info) -> list:
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


@dataclass(frozen=True)
class _Interface:
    input: str
    output: str
    shape: list  # N, C, H, W; None where symbolic
    classes: int


def _interface(model, path: Path) -> _Interface:
    """One NCHW input (1 or 3 channels), one N x classes output: an image classifier."""
    init_names = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init_names]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise InputError(f"{path} has {len(inputs)} inputs and {len(model.graph.output)} outputs",
                         hint="an image classifier: one NCHW input, one N x classes output")
    shape, out_shape = _dims(inputs[0]), _dims(model.graph.output[0])
    if len(shape) != 4 or shape[1] not in (1, 3) or len(out_shape) != 2 or not out_shape[1]:
        raise InputError(f"{path}: input {shape} and output {out_shape} are not NCHW (1 or 3 channels) -> N x classes",
                         hint="an image classifier: one N x C x H x W input (C = 1 or 3), one N x classes output")
    classes = check_count(f"{path.name}: its classes", out_shape[1], MAX_CLASSES,
                          hint="an image classifier's output is N x classes, classes from 1 to 100,000")
    return _Interface(inputs[0].name, model.graph.output[0].name, shape, classes)


def _preprocess(pre: Preprocess | None, shape: list, path: Path, overrides: Overrides | None) -> Preprocess:
    """The file's own spec (one of ours), else ImageNet's for its input side; then the flags."""
    channels = shape[1]
    if pre is None:
        size = shape[2] if shape[2] and shape[2] == shape[3] else 224
        pre = Preprocess(channels, size, round(size * 256 / 224) if size >= 128 else size,
                         IMAGENET_PREPROCESS.mean if channels == 3 else (0.5,), IMAGENET_PREPROCESS.std if channels == 3 else (0.5,))
    pre = pre.with_overrides(overrides, channels=channels)
    if pre.channels != channels or any(d and d != pre.size for d in shape[2:]):
        raise InputError(f"the preprocessing gives {pre.channels}x{pre.size}x{pre.size}; {path.name} takes {shape[1:]}",
                         hint="pass --size / --mean / --std that fit the model's input")
    return pre


def _class_names(names: list[str] | None, classes: int, path: Path) -> list[str]:
    if names is None:  # not one of ours: outputs are numbered
        return [str(i) for i in range(classes)]
    if len(names) != classes:
        raise InputError(f"{path.name} names {len(names)} classes but has {classes} outputs (its metadata "
                         f"{PREFIX}classes)", hint=f"its class names must be one string per output: fix or remove "
                         f"{PREFIX}classes in the model's metadata_props")
    return names


def _fold(path: Path):
    """The file with its BatchNorms folded: ONNX Runtime's basic level folds Conv+BN exactly."""
    onnx = require("onnx", "torch")
    with tempfile.TemporaryDirectory() as tmp:
        user_session(path, level="basic", optimized_path=Path(tmp) / "folded.onnx")
        return onnx.load(str(Path(tmp) / "folded.onnx"))


def load_onnx_source(path: Path, overrides: Overrides | None = None) -> OnnxSource:
    """The user's FP32 ONNX file, checked (only standard ops: every engine must read it), its
    metadata typed, its BNs folded, ready to calibrate as a checkpoint's export would be."""
    onnx = require("onnx", "torch")
    check_onnx_file(path, domains=STANDARD)
    model = onnx.load(str(path))
    io = _interface(model, path)
    props = read_metadata(model, path.name)
    pre = _preprocess(props.preprocess, io.shape, path, overrides)
    names = _class_names(props.classes, io.classes, path)
    bn_before = sum(n.op_type == "BatchNormalization" for n in model.graph.node)
    folded = _fold(path)
    _normalise(folded, io.input, io.output)
    kept = {PREFIX + k: v for k, v in (("version", props.version), ("arch", props.arch)) if v is not None}
    set_metadata(folded, {**props.other, **kept, PREFIX + "preprocess": json.dumps(pre.to_dict()),
                          PREFIX + "classes": json.dumps(names), PREFIX + "source": path.name})
    meta = ModelMeta(arch=props.arch or f"onnx:{path.name}", num_classes=io.classes, in_channels=io.shape[1],
                     preprocess=pre, classes=names, train={"source": f"ONNX model {path.name}"})
    params = int(sum(np.prod(i.dims) for i in folded.graph.initializer))
    return OnnxSource(folded, meta, bn_before, sum(n.op_type == "BatchNormalization" for n in folded.graph.node), params)


def _normalise(model, input_name: str, output_name: str) -> None:
    """``input``/``logits`` names, a dynamic batch axis, a name on every node (Q/DQ placement
    and the reports refer to nodes by name)."""
    rename = {input_name: INPUT, output_name: OUTPUT}
    for node in model.graph.node:
        node.input[:] = [rename.get(t, t) for t in node.input]
        node.output[:] = [rename.get(t, t) for t in node.output]
    for vi, new in ((model.graph.input, INPUT), (model.graph.output, OUTPUT)):
        for v in vi:
            if v.name in rename:
                v.name = new
                v.type.tensor_type.shape.dim[0].dim_param = "batch"
    del model.graph.value_info[:]  # shapes inferred for the file's fixed batch would contradict a dynamic one
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"/{node.op_type}_{i}"
        seen.add(node.name)
