"""The layer audit of a built engine: a plain function of the engine inspector's JSON
(``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)``, or trtexec's
``--exportLayerInfo``), so the package and the device file read an engine the same way.

Standard library only and Python 3.8 (the device file inlines this module on JetPack 5).

What it reads, from NVIDIA's own engine JSON (the trex samples in NVIDIA/TensorRT,
``tools/experimental/trt-engine-explorer/examples/pytorch/resnet/A100/*/*.graph.json``,
unchanged from release/8.4 to release/10.16):

* ``Layers``: one object per engine layer (``Name``, ``LayerType``, ``Inputs``/``Outputs`` with
  the tensor's ``Name`` and its type), and ``Bindings``: the engine's I/O tensor names. With
  ``ProfilingVerbosity.LAYER_NAMES_ONLY`` the layers are bare names and nothing can be checked.
* A tensor's type: ``"Format/Datatype"`` up to TensorRT 10 ("Row major linear FP32", "Thirty-two
  wide channel vectorized row major Int8 format"), ``"DataType"`` from 11 ("Migrating
  IEngineInspector Usage from TensorRT 10.x to 11.x"). A tensor with neither is *unknown*: it is
  reported as such and never counted as float.
* Convolutions: ``CaskConvolution``, ``CaskFlattenConvolution``, ``CaskGemmConvolution``,
  ``ConvActPool`` (a stem conv fused with its activation and max-pool) and any ``LayerType``
  naming a convolution, or ``ParameterType: "Convolution"``. The first input is the data; a
  second input is the residual of a fused ``Add``.
* Reformats: ``LayerType: "Reformat"``; ``Origin: "QDQ"`` marks a quantize/dequantize that did
  not fuse, ``"REFORMAT"`` a layout/precision copy. A reformat at the engine's edge (reading an
  input that nothing before it made int8, or writing an output) is expected: an INT8 engine must
  quantize its float input somewhere. ``NoOp`` copy nodes cost nothing and are skipped.
* DLA: TensorRT names each DLA subgraph ``{ForeignNode[first...last]}`` (its builder log lists
  them as ``[DlaLayer] {ForeignNode[...]}``: NVIDIA/TensorRT ``samples/sampleCudla/README.md``).
  GPU engines use the same name for Myelin regions, so a layer counts as DLA only in an engine
  built for DLA, or when its type, tactic or device field says DLA. No inspector JSON of a DLA
  engine is published by NVIDIA: this rule is read from the builder's naming, not from a sample.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

_DTYPES = (  # (canonical, words that name it), first match wins; order matters (fp16 before float)
    ("int8", ("int8",)), ("uint8", ("uint8",)), ("int4", ("int4",)), ("int32", ("int32",)), ("int64", ("int64",)),
    ("bf16", ("bf16", "bfloat16")), ("fp16", ("fp16", "half", "float16")), ("fp8", ("fp8", "e4m3")),
    ("fp4", ("fp4", "e2m1")), ("fp32", ("fp32", "float", "float32")), ("bool", ("bool",)),
)
FLOAT_TYPES = ("fp32", "fp16", "bf16")
CONV_TYPES = ("CaskConvolution", "CaskFlattenConvolution", "CaskGemmConvolution", "ConvActPool",
              "CaskDeconvolution", "Convolution", "CudnnConvolution")
GLUE_TYPES = ("Reformat", "NoOp", "Shuffle", "Slice", "Padding", "Constant")  # move data, compute nothing
ELEMENTWISE = ("ElementWise", "PointWise", "PointWiseV2")


def tensor_dtype(entry) -> str:
    """The data type of one inspector tensor entry: "int8", "fp16", "fp32", ... or "unknown"."""
    if not isinstance(entry, dict):
        return "unknown"
    for key in ("DataType", "Format/Datatype", "Datatype"):
        text = entry.get(key)
        if isinstance(text, str):
            words = re.findall(r"[a-z0-9]+", text.lower())
            for canonical, names in _DTYPES:
                if any(w in names for w in words):
                    return canonical
            return "unknown"
    return "unknown"


def _raw_dtype(entry) -> str:
    if isinstance(entry, dict):
        for key in ("DataType", "Format/Datatype", "Datatype"):
            if isinstance(entry.get(key), str):
                return entry[key]
    return "no type field"


def _tensors(layer: dict, key: str) -> List[dict]:
    value = layer.get(key)
    return [t for t in value if isinstance(t, dict)] if isinstance(value, list) else []


def _parts(name: str) -> List[str]:
    """The ONNX node names inside a (fused) layer name: "A + B", "{ForeignNode[A...B]}"."""
    return [p.strip() for p in re.split(r" \+ |\.\.\.|\{ForeignNode\[|\]\}", name) if p.strip()]


def is_conv(layer: dict) -> bool:
    kind = str(layer.get("LayerType", ""))
    return kind in CONV_TYPES or "conv" in kind.lower() or layer.get("ParameterType") == "Convolution"


def is_dla(layer: dict, dla_engine: bool) -> bool:
    """A DLA layer: one the engine says runs on DLA, or a ForeignNode of an engine built for DLA."""
    said = " ".join(str(layer.get(k, "")) for k in ("LayerType", "TacticName", "Device", "DeviceType")).lower()
    if re.search(r"\bdla\b|dla_|kdla", said):
        return True
    return dla_engine and str(layer.get("Name", "")).startswith("{ForeignNode[")


class _Graph:
    """Producers, and the engine's input and output tensors (``Bindings``, else inferred)."""

    def __init__(self, layers: List[dict], bindings: Optional[Sequence[str]]) -> None:
        self.producer: Dict[str, dict] = {}
        consumed = set()
        for layer in layers:
            for t in _tensors(layer, "Outputs"):
                self.producer.setdefault(str(t.get("Name")), layer)
            consumed.update(str(t.get("Name")) for t in _tensors(layer, "Inputs"))
        if bindings:
            self.io = {str(b) for b in bindings}
        else:
            self.io = {n for n in consumed if n not in self.producer} | {n for n in self.producer if n not in consumed}

    def from_inputs(self, tensor: str) -> bool:
        """Whether ``tensor`` comes from the engine's inputs through data movement only (pads, copies,
        shuffles): the place where an INT8 engine must quantize its float input."""
        seen, todo = set(), [tensor]
        while todo:
            name = todo.pop()
            if name in self.io:
                continue
            layer = self.producer.get(name)
            if layer is None:
                return False
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            if str(layer.get("LayerType", "")) not in GLUE_TYPES:
                return False
            todo.extend(str(t.get("Name")) for t in _tensors(layer, "Inputs"))
        return True


def _reformat_expected(layer: dict, graph: _Graph) -> bool:
    ins, outs = _tensors(layer, "Inputs"), _tensors(layer, "Outputs")
    if any(str(t.get("Name")) in graph.io for t in outs):
        return True
    return bool(ins) and all(graph.from_inputs(str(t.get("Name"))) for t in ins)


def _expected(name: str, expected_float: Iterable[str]) -> bool:
    parts = _parts(name)
    return any(f in parts for f in expected_float)


def _check_reformat(layer: dict, graph: _Graph, report: dict) -> None:
    name = str(layer.get("Name", ""))
    if _reformat_expected(layer, graph):
        report["reformats"]["expected"].append(name)
        return
    report["reformats"]["unexpected"].append(name)
    ins, outs = _tensors(layer, "Inputs"), _tensors(layer, "Outputs")
    change = "{} -> {}".format(",".join(tensor_dtype(t) for t in ins) or "?",
                               ",".join(tensor_dtype(t) for t in outs) or "?")
    if layer.get("Origin") == "QDQ":
        report["warnings"].append("reformat layer {!r} ({}): a quantize/dequantize that did not fuse, because the "
                                  "layer next to it runs in float".format(name, change))
    else:
        report["warnings"].append("reformat layer {!r} ({}): a layout/precision conversion between layers costs "
                                  "time".format(name, change))


def _check_conv(layer: dict, expected_float: Sequence[str], report: dict) -> None:
    name, ins = str(layer.get("Name", "")), _tensors(layer, "Inputs")
    convs = report["convolutions"]
    convs["total"] += 1
    data = tensor_dtype(ins[0]) if ins else "unknown"
    if data == "unknown":
        convs["unknown"].append(name)
        return
    if data != "int8":
        convs["float"].append(name)
        if not _expected(name, expected_float):
            report["warnings"].append("conv {!r} runs in float ({}): missing Q/DQ on its input or weights".format(
                name, _raw_dtype(ins[0])))
        return
    convs["int8"] += 1
    residual = [t for t in ins[1:] if tensor_dtype(t) in FLOAT_TYPES]
    if residual and not _expected(name, expected_float):
        report["residual_float_inputs"].append(name)
        report["warnings"].append("conv {!r} adds a float residual ({}): quantize the identity input of its Add so "
                                  "the sum stays int8".format(name, _raw_dtype(residual[0])))


def _new_report(verbosity: str, layers: int) -> dict:
    return {"verbosity": verbosity, "layers": layers,
            "convolutions": {"total": 0, "int8": 0, "float": [], "unknown": []},
            "reformats": {"expected": [], "unexpected": []}, "residual_float_inputs": [], "unfused_adds": [],
            "float_layers": [], "unknown_type_layers": [], "unknown_dtype_layers": [],
            "devices": {"dla": 0, "gpu": 0}, "dla_layers": [], "gpu_fallbacks": [], "warnings": []}


def audit(info, precision: str, expected_float: Sequence[str] = (), dla: bool = False) -> dict:
    """Findings and counts for one engine. ``precision`` is the engine's ("int8", "fp16", "fp32";
    a "-dla" suffix is allowed); ``expected_float`` names the ONNX nodes kept in float on purpose;
    ``dla`` says the engine was built for a DLA core. ``warnings`` are the lines to show a user."""
    layers = info.get("Layers") if isinstance(info, dict) else None
    if not isinstance(layers, list):
        return _new_report("none", 0)
    objects = [layer for layer in layers if isinstance(layer, dict)]
    if not objects:
        report = _new_report("layer_names_only" if layers else "none", len(layers))
        if layers:
            report["warnings"].append("the engine was built without ProfilingVerbosity.DETAILED: its layers "
                                      "cannot be checked")
        return report
    report = _new_report("detailed", len(layers))
    graph = _Graph(objects, info.get("Bindings") if isinstance(info.get("Bindings"), list) else None)
    int8, dla = precision.split("-")[0] == "int8", dla or precision.endswith("-dla")
    for layer in objects:
        _audit_layer(layer, graph, int8, dla, tuple(expected_float), report)
    if dla and not report["dla_layers"]:
        report["warnings"].append("no layer of this DLA engine ran on the DLA: everything fell back to the GPU")
    elif report["gpu_fallbacks"]:
        report["warnings"].append("{} layer(s) fell back from the DLA to the GPU: {}".format(
            len(report["gpu_fallbacks"]), ", ".join(report["gpu_fallbacks"][:8])))
    return report


def _audit_layer(layer: dict, graph: _Graph, int8: bool, dla: bool, expected_float: Tuple[str, ...],
                 report: dict) -> None:
    name, kind = str(layer.get("Name", "")), layer.get("LayerType")
    if not isinstance(kind, str) or not kind:
        report["unknown_type_layers"].append(name)
        kind = ""
    on_dla = is_dla(layer, dla)
    report["devices"]["dla" if on_dla else "gpu"] += 1
    if on_dla:
        report["dla_layers"].append(name)
        return  # a DLA loadable's inside is not in the JSON: its precision is the DLA's business
    if dla and kind not in GLUE_TYPES and not name.startswith("Reformatting CopyNode"):
        report["gpu_fallbacks"].append(name)
    if kind == "NoOp":
        return
    if kind == "Reformat" or name.startswith("Reformatting CopyNode"):
        _check_reformat(layer, graph, report)
        return
    ins = _tensors(layer, "Inputs")
    types = [tensor_dtype(t) for t in ins]
    if ins and all(t == "unknown" for t in types):
        report["unknown_dtype_layers"].append(name)
    if not int8:
        return
    if is_conv(layer):
        _check_conv(layer, expected_float, report)
    elif kind in ELEMENTWISE and "Add" in name and not _expected(name, expected_float):
        report["unfused_adds"].append(name)
        report["warnings"].append("residual Add {!r} runs as its own {} layer, not fused into a conv: quantize its "
                                  "identity input".format(name, kind))
    elif kind not in GLUE_TYPES and any(t in FLOAT_TYPES for t in types):
        report["float_layers"].append(name)


def summary(report: dict) -> str:
    """One line for a bench row or a build log: DLA vs GPU, convs in int8, reformats."""
    convs, dev = report["convolutions"], report["devices"]
    parts = ["{} layers".format(report["layers"])]
    if dev["dla"]:
        parts.append("{} on DLA, {} on GPU ({} fallbacks)".format(dev["dla"], dev["gpu"], len(report["gpu_fallbacks"])))
    if convs["total"]:
        parts.append("{}/{} convs int8".format(convs["int8"], convs["total"])
                     + (", {} unknown".format(len(convs["unknown"])) if convs["unknown"] else ""))
    parts.append("{} unexpected reformats".format(len(report["reformats"]["unexpected"])))
    return ", ".join(parts)
