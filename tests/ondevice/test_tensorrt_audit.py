"""The layer audit of a built engine (`trt_device.audit`): a plain, stdlib-only, Python 3.8 function
of the engine inspector's JSON, checked on hand-written fixtures in the shape of NVIDIA's engine
JSON (tests/data/trex/README.md) and, where a NVIDIA/TensorRT clone is at hand, on NVIDIA's own
trex samples."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from edgeresnet.ondevice.trt_device import audit, summary, tensor_dtype

from .test_trt_device import py38_numpy117  # noqa: F401 - the Python 3.8 + numpy 1.17 venv fixture
from edgeresnet.backends.tensorrt.bundle import layer_warnings

DATA = Path(__file__).parents[1] / "data" / "trex"
AUDIT = Path(__file__).parents[2] / "edgeresnet" / "ondevice" / "trt_device.py"  # the audit lives in the device file


def load(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


@pytest.mark.parametrize("entry, dtype", [
    ({"Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}, "int8"),
    ({"Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}, "fp16"),
    ({"Format/Datatype": "Row major linear FP32"}, "fp32"),
    ({"Format": "Channel major", "DataType": "Half"}, "fp16"),
    ({"Format": "Row major linear", "DataType": "Float"}, "fp32"),
    ({"DataType": "Int8"}, "int8"), ({"DataType": "BFloat16"}, "bf16"),
    ({"Format": "Channel major"}, "unknown"), ({"Name": "x"}, "unknown"), ({"DataType": 3}, "unknown"),
    ({"Format/Datatype": "Something new"}, "unknown"), ("not a dict", "unknown")])
def test_a_tensors_type_from_either_lines_keys_or_unknown(entry, dtype):
    assert tensor_dtype(entry) == dtype


def test_a_well_placed_int8_engine_has_nothing_to_say():
    """The input quantize is a Reformat in every INT8 engine: expected, not a warning. The fused stem
    (ConvActPool) and the classifier (CaskGemmConvolution) count as int8 convolutions."""
    report = audit(load("int8_qdq_fused"), "int8")
    assert report["warnings"] == []
    assert report["reformats"] == {"expected": ["/QuantizeLinear"], "unexpected": []}
    assert report["convolutions"] == {"total": 4, "int8": 4, "float": [], "unknown": []}
    assert report["devices"] == {"dla": 0, "gpu": 6} and report["gpu_fallbacks"] == []


def test_an_unquantized_identity_branch_is_named_layer_by_layer():
    report = audit(load("int8_qdq_float_residual"), "int8")
    w = report["warnings"]
    assert report["residual_float_inputs"] == ["/layer1/layer1.0/conv2/Conv + /layer1/layer1.0/Add + "
                                               "/layer1/layer1.0/relu_1/Relu"]
    assert report["reformats"]["unexpected"] == ["/layer1/layer1.1/QuantizeLinear",
                                                 "Reformatting CopyNode for Input Tensor 0 to /avgpool/GlobalAveragePool"]
    assert report["unfused_adds"] == ["/layer2/layer2.0/Add"]
    assert report["convolutions"]["float"] == ["/layer2/layer2.0/conv1/Conv", "/fc/Gemm"]
    assert any("float residual" in x and "identity input" in x for x in w)
    assert any("/layer1/layer1.1/QuantizeLinear" in x and "did not fuse" in x for x in w)
    assert sum(x.startswith("conv ") and "runs in float" in x for x in w) == 2 and len(w) == 6
    # the classifier is kept in float on purpose: expected, no warning for it
    expected = audit(load("int8_qdq_float_residual"), "int8", expected_float=("/fc/Gemm",))
    assert len(expected["warnings"]) == 5 and not any("/fc/Gemm" in x for x in expected["warnings"])
    assert audit(load("int8_qdq_float_residual"), "fp16")["warnings"] == [x for x in w if "reformat" in x]


def test_tensorrt_11_keys_are_read_and_an_untyped_tensor_is_unknown_not_float():
    report = audit(load("int8_trt11_keys"), "int8")
    assert report["convolutions"]["unknown"] == ["/layer1/layer1.0/conv1/Conv"]
    assert report["convolutions"]["float"] == ["/layer1/layer1.0/conv2/Conv"]
    assert report["unknown_dtype_layers"] == ["/layer1/layer1.0/conv1/Conv"]
    assert len(report["warnings"]) == 1 and "Half" in report["warnings"][0]
    assert report["reformats"]["expected"] == ["/QuantizeLinear"]


def test_an_fp16_engines_edges_are_expected_and_noops_free():
    report = audit(load("fp16"), "fp16")
    assert report["warnings"] == [] and len(report["reformats"]["expected"]) == 2


def test_a_dla_engine_counts_dla_and_gpu_layers_and_names_the_fallbacks():
    report = audit(load("int8_dla_fallback"), "int8-dla", expected_float=("/fc/Gemm",))
    assert report["devices"] == {"dla": 2, "gpu": 3}
    assert report["dla_layers"] == ["{ForeignNode[/conv1/Conv.../layer3/layer3.2/relu_1/Relu]}",
                                    "{ForeignNode[/avgpool/GlobalAveragePool]}"]
    assert report["gpu_fallbacks"] == ["/fc/Gemm"]  # the Reformat and the Flatten move data, they are no fallback
    assert report["warnings"] == ["1 layer(s) fell back from the DLA to the GPU: /fc/Gemm"]
    assert "2 on DLA, 3 on GPU (1 fallbacks)" in summary(report)
    # the same JSON read as a GPU engine: ForeignNode is also TensorRT's name for Myelin regions
    gpu = audit(load("int8_dla_fallback"), "int8", expected_float=("/fc/Gemm",))
    assert gpu["devices"] == {"dla": 0, "gpu": 5} and gpu["gpu_fallbacks"] == []


def test_a_dla_engine_with_nothing_on_the_dla_says_so():
    info = load("int8_qdq_fused")
    report = audit(info, "int8", dla=True)
    assert report["warnings"][-1].startswith("no layer of this DLA engine ran on the DLA")


@pytest.mark.parametrize("info, verbosity", [({"Layers": ["conv1", "conv2"]}, "layer_names_only"),
                                             ({"Layers": []}, "none"), ({}, "none"), ([], "none")])
def test_without_detailed_verbosity_nothing_is_guessed(info, verbosity):
    report = audit(info, "int8")
    assert report["verbosity"] == verbosity and report["convolutions"]["total"] == 0
    assert ("cannot be checked" in " ".join(report["warnings"])) == (verbosity == "layer_names_only")


def test_layer_warnings_is_the_audits_warnings():
    info = load("int8_qdq_float_residual")
    assert layer_warnings(info, "int8", ("/fc/Gemm",)) == audit(info, "int8", ("/fc/Gemm",))["warnings"]


@pytest.mark.slow
def test_the_audit_runs_in_the_device_file_on_python_3_8(py38_numpy117):
    """JetPack 5's python3 is 3.8 and numpy 1.17: the device file, alone (no edgeresnet), audits
    an engine's JSON there."""
    code = ("import importlib.util, json, sys\n"
            f"spec = importlib.util.spec_from_file_location('trt_device', {str(AUDIT)!r})\n"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
            f"r = m.audit(json.load(open({str(DATA / 'int8_qdq_float_residual.json')!r})), 'int8')\n"
            "bad = [n for n in sys.modules if n.split('.')[0] in ('edgeresnet', 'onnx')]\n"
            "print(len(r['warnings']), bad)\n")
    res = subprocess.run([str(py38_numpy117), "-I", "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "6 []"


TREX = "tools/experimental/trt-engine-explorer/examples"
TREX_COMMIT = "5b990f0a739d8faf962dfe54f4829942633c639c"  # release/10.3; the samples are the same from 8.4 to 10.16
TREX_VERDICTS = {
    "pytorch/resnet/A100/qat-residual-qgap/resnet-qat-residual-qgap": ("int8", 0, 21, ["QuantizeLinear_2"]),
    "pytorch/resnet/A100/qat-residual/resnet-qat-residual": ("int8", 3, 21, ["QuantizeLinear_2"]),
    "pytorch/resnet/A100/qat/resnet-qat": ("int8", 19, 21, ["QuantizeLinear_2"]),
    "pytorch/resnet/A100/fp16/resnet": ("fp16", 0, 0, None),
    "tensorflow/resnet/RTX-3090/qat/resnet-qat": ("int8", 1, 54, ["QuantLinearNode__838"]),
}


@pytest.mark.skipif(not os.environ.get("EDGERESNET_TENSORRT_REPO"),
                    reason="set EDGERESNET_TENSORRT_REPO to a NVIDIA/TensorRT clone to audit NVIDIA's own samples")
@pytest.mark.parametrize("sample", list(TREX_VERDICTS))
def test_the_audit_on_nvidias_own_trex_samples(sample):
    """NVIDIA's trex ResNet engines, read from a clone (they are not redistributed here)."""
    repo = os.environ["EDGERESNET_TENSORRT_REPO"]
    text = subprocess.run(["git", "-C", repo, "show", f"{TREX_COMMIT}:{TREX}/{sample}.onnx.engine.graph.json"],
                          capture_output=True, text=True, check=True).stdout
    precision, warnings, int8_convs, expected = TREX_VERDICTS[sample]
    report = audit(json.loads(text), precision)
    assert len(report["warnings"]) == warnings, report["warnings"]
    assert report["convolutions"]["int8"] == int8_convs and report["convolutions"]["unknown"] == []
    if expected is not None:
        assert report["reformats"]["expected"] == expected
    if "qat-residual-qgap" in sample:
        assert "ConvActPool" in {layer["LayerType"] for layer in json.loads(text)["Layers"]}
    if sample.endswith("A100/qat/resnet-qat"):
        assert len(report["residual_float_inputs"]) == 8 and len(report["reformats"]["unexpected"]) == 11
