"""What an ONNX file must be before any runtime opens it. Each check names a defect that a
runtime would otherwise report as its own crash (a C++ signature, a 4 TB allocation): the file
parses, its external data lies beside it within the data file's size, its opsets are ones the
installed onnx knows, its ops come from the domains we run, its graph input and output are
float32 with a bounded image side, and onnx.checker accepts it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError
from ..core.limits import MAX_SIDE, check_count

MIN_OPSET = 7  # ONNX Runtime reads ai.onnx from opset 7 (ONNX 1.2) on
STANDARD = frozenset({"", "ai.onnx"})  # what an export source may use: every engine reads these
OURS = STANDARD | {"com.microsoft"}  # plus ORT's fused INT8 ops (model.int8.ort.onnx)
REEXPORT = "re-export the model with torch.onnx.export(..., opset_version=17) and standard ONNX ops"
SIDE_HINT = f"edgeresnet takes images up to {MAX_SIDE} px a side: export the model at its input size (e.g. 224)"


def check_onnx_file(path: Path, domains: frozenset[str] = OURS):
    """Refuse a file no runtime should be handed; returns the graph (external data not loaded).

    ``domains``: the op domains allowed (``STANDARD`` for a model to quantize and convert)."""
    try:
        import onnx
    except ImportError:  # runtime-only install: the runtime's own parser is the check
        return _check_with_runtime(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise InputError(f"{path} is not a valid ONNX file (truncated or corrupt?): {type(exc).__name__}",
                         hint="pass the .onnx file torch.onnx.export wrote, copied whole") from None
    _check_external_data(model, path)
    _check_opsets(model, path, domains)
    _check_io(model, path)
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise InputError(f"{path} fails onnx.checker: {str(exc).splitlines()[0]}", hint=REEXPORT) from None
    return model


def _check_with_runtime(path: Path) -> None:
    from .reference import runtime_present, user_session

    if runtime_present():
        user_session(path)


def _graphs(graph) -> Iterator:
    """The graph and every subgraph (If/Loop/Scan bodies) in it."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _graphs(sub)


def _tensors(model) -> Iterator:
    """Every tensor that can hold external data: initializers and Constant-like attributes."""
    for graph in _graphs(model.graph):
        yield from graph.initializer
        for node in graph.node:
            for attr in node.attribute:
                yield from ([attr.t] if attr.HasField("t") else []) + list(attr.tensors)


def _check_external_data(model, path: Path) -> None:
    """External data must sit in the model's folder (a model must not read arbitrary files on the
    machine that loads it), be a regular file, and hold the bytes each tensor claims."""
    from onnx import TensorProto

    folder = path.parent.resolve()
    for tensor in _tensors(model):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        target = (folder / location).resolve()
        if folder not in target.parents:
            raise InputError(f"{path}: tensor {tensor.name!r} reads external data outside the model's folder "
                             f"({location})", hint="refusing to load it; external data must sit beside the model")
        if not target.is_file():
            raise InputError(f"{path}: tensor {tensor.name!r} reads external data from {location}, which is "
                             "missing or not a regular file", hint="copy the model's data files beside it")
        size = target.stat().st_size
        try:
            offset = int(info.get("offset", 0))
            length = int(info.get("length", size - offset))
        except ValueError:
            raise InputError(f"{path}: tensor {tensor.name!r} has a non-integer external data offset or length",
                             hint="re-save the model with onnx.save(..., save_as_external_data=True)") from None
        if offset < 0 or length < 0 or offset + length > size:
            raise InputError(f"{path}: tensor {tensor.name!r} claims {length:,} bytes at offset {offset:,} of "
                             f"{location}, a {size:,}-byte file", hint="the data file is truncated or not this "
                             "model's: copy the model and its data files together, as onnx.save wrote them")


def _check_opsets(model, path: Path, domains: frozenset[str]) -> None:
    """ai.onnx opsets the installed onnx knows (a runtime fails on others with a C++ message),
    and ops only from ``domains`` (a custom op needs a library we never load)."""
    from onnx import defs

    newest = defs.onnx_opset_version()
    for entry in model.opset_import:
        if entry.domain in STANDARD and not MIN_OPSET <= entry.version <= newest:
            raise InputError(f"{path.name} uses ONNX opset {entry.version}; edgeresnet reads opsets "
                             f"{MIN_OPSET} to {newest} (the installed onnx)", hint=REEXPORT)
    for graph in _graphs(model.graph):
        for node in graph.node:
            if node.domain not in domains:
                allowed = "standard ONNX ops" + (" and ONNX Runtime's com.microsoft ops" if "com.microsoft" in domains else "")
                raise InputError(f"{path.name}: node {node.name or node.op_type!r} is op {node.op_type} from domain "
                                 f"{node.domain}; edgeresnet runs {allowed}", hint=REEXPORT)


def _check_io(model, path: Path) -> None:
    """Float32 in and out (we feed normalised float32 NCHW images and read float logits), and
    an image side within MAX_SIDE before anything allocates a batch of it."""
    from onnx import TensorProto

    init_names = {i.name for i in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in init_names]
    for role, values in (("input", inputs), ("output", model.graph.output)):
        for v in values:
            elem = v.type.tensor_type.elem_type
            if elem != TensorProto.FLOAT:
                kind = TensorProto.DataType.Name(elem).lower() if elem in TensorProto.DataType.values() else str(elem)
                raise InputError(f"{path.name}: the {role} {v.name!r} is {kind}; edgeresnet takes a float32 NCHW "
                                 "input and float32 logits", hint="export the model with float32 input and output "
                                 "(scaling and normalisation come from edgeresnet's preprocessing)")
    for v in inputs:
        dims = v.type.tensor_type.shape.dim
        if len(dims) == 4:
            for d in dims[2:]:
                if d.HasField("dim_value"):
                    check_count(f"{path.name}: its input side", d.dim_value, MAX_SIDE, hint=SIDE_HINT)
