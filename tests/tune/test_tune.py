"""Accuracy-aware INT8 (--max-drop): validation slice, layer units, the search on a model
made hard to quantize, the issue's own acceptance run, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgeresnet.backends.tensorrt.bundle import layer_warnings, parse_calibration_cache
from edgeresnet.calibrate.collect import pick_calibration_images, pick_validation_images
from edgeresnet.models.checkpoint import load_checkpoint, save_checkpoint
from edgeresnet.export.torch_onnx import export_onnx
from edgeresnet.models.fold import fold_bn
from edgeresnet.models.surgery import rescale_channel
from edgeresnet.quantize.plan import layer_units, plan
from edgeresnet.quantize.recipe import Candidate, quantized_model
from edgeresnet.tune.emulate import TUNE_PROFILE

from ..conftest import DEBIAN, export_default, run_cli, run_inprocess

OUTLIER_LAYER = "/layer3/layer3.0/conv2/Conv"


def _weight_dqs(model) -> set[str]:
    """Nodes whose weight input comes from a DequantizeLinear."""
    produced_by_dq = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return {n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm") and n.input[1] in produced_by_dq}


def test_validation_slice_is_disjoint_from_calibration_and_balanced(calib_set):
    calib = pick_calibration_images(calib_set, 200)
    val = pick_validation_images(calib_set, 500, calib)
    assert len(val) == 500 and not set(val) & set(calib)
    counts = np.bincount(calib_set.labels[val[:100]], minlength=10)
    assert counts.min() >= 8  # any prefix is balanced over the 10 classes
    everything = pick_validation_images(calib_set, 10_000, calib)
    assert len(everything) == len(calib_set) - 200  # never more than what calibration left


@pytest.fixture(scope="module")
def fp32_default(tmp_path_factory):
    """The default model folded and exported, in-process (no export run)."""
    ckpt = load_checkpoint("default")
    path = tmp_path_factory.mktemp("fp32") / "model.fp32.onnx"
    export_onnx(fold_bn(ckpt.model)[0], ckpt.meta, path)
    return onnx.load(str(path))


def test_layer_units_tie_adds_and_pooling_to_their_conv(fp32_default):
    units = layer_units(fp32_default)
    convs = [n.name for n in fp32_default.graph.node if n.op_type in ("Conv", "Gemm")]
    assert list(units) == convs  # one unit per quantized layer, in graph order
    adds = {n.name for n in fp32_default.graph.node if n.op_type == "Add"}
    owned = set().union(*(u - {k} for k, u in units.items()))
    assert adds <= owned  # every residual Add goes back to float with the conv it fuses into
    assert "/layer1/layer1.0/Add" in units["/layer1/layer1.0/conv2/Conv"]
    assert any(n.startswith("/avgpool") for n in units["/fc/Gemm"])


def test_float_layer_keeps_float_weights_and_its_original_bias(fp32_default):
    from onnx import numpy_helper

    scales = {t: 0.05 for t in plan(fp32_default).all_tensors}
    layer = "/layer2/layer2.0/conv1/Conv"
    node = next(n for n in fp32_default.graph.node if n.name == layer)
    other = next(n for n in fp32_default.graph.node if n.name == "/layer2/layer2.1/conv1/Conv")
    biases = {node.input[2]: np.full(32, 7.0, np.float32), other.input[2]: np.full(32, 7.0, np.float32)}
    units = layer_units(fp32_default)
    model = quantized_model(fp32_default, Candidate(scales, units[layer], biases), TUNE_PROFILE)
    assert layer not in _weight_dqs(model) and other.name in _weight_dqs(model)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    original = {i.name: numpy_helper.to_array(i) for i in fp32_default.graph.initializer}
    assert np.array_equal(inits[node.input[2]], original[node.input[2]])  # float layer: correction dropped
    assert node.input[2] not in inits or not np.allclose(inits[node.input[2]], 7.0)
    bias = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == f"{other.input[2]}_quantized"))
    scale = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == f"{other.input[2]}_scale"))
    assert np.allclose(bias * scale, 7.0, rtol=1e-3)  # the quantized neighbour carries its correction (int32 bias)


def test_rescale_channel_keeps_the_fp32_function(real_images):
    import torch

    from edgeresnet.models.checkpoint import load_checkpoint as load

    a, b = load("default").model.eval(), load("default").model.eval()
    rescale_channel(b.layer3[0], 3, 1000.0)
    x = torch.from_numpy(load("default").meta.preprocess.normalize(real_images[:8, :, :, None]))
    with torch.no_grad():
        assert torch.allclose(a(x), b(x), atol=1e-3)
    with pytest.raises(ValueError):
        rescale_channel(b.layer3[0], 3, -1.0)


def test_layer_warnings_expect_the_float_layers():
    info = {"Layers": [{"Name": "/layer1/layer1.0/conv1/Conv + /layer1/layer1.0/relu/Relu", "LayerType": "CaskConvolution",
                        "Inputs": [{"Format/Datatype": "Half"}]}]}
    assert len(layer_warnings(info, "int8")) == 1
    assert layer_warnings(info, "int8", ("/layer1/layer1.0/conv1/Conv",)) == []


@pytest.fixture(scope="module")
def outlier_export(tmp_path_factory) -> Path:
    """The default model with one channel of a ReLU output scaled by 1000 and the next conv's
    weights for it divided by 1000: the same function in FP32, but per-tensor activation
    quantization crushes the other 63 channels of that tensor into zero."""
    tmp = tmp_path_factory.mktemp("outlier")
    ckpt = load_checkpoint("default")
    rescale_channel(ckpt.model.layer3[0], 3, 1000.0)
    save_checkpoint(tmp / "outlier.pt", ckpt.model, ckpt.meta)
    out = tmp / "exp"
    res = run_cli("export", str(tmp / "outlier.pt"), "--calib", "default", "--eval", "default", "--calib-size", "64",
                  "--val-size", "900", "--max-drop", "0.2", "--target", "ort,trt", "--prepare-only",
                  "--eval-limit", "2000", "--out", str(out))
    assert res.returncode == 0, res.stderr
    return out


@pytest.mark.slow
def test_search_floats_the_outlier_layer_first_and_meets_the_budget(outlier_export):
    report = json.loads((outlier_export / "report.json").read_text())
    tuning, sensitivity = report["tuning"], report["sensitivity"]
    fp32 = onnx.load(str(outlier_export / "model.fp32.onnx"))
    layers = [n.name for n in fp32.graph.node if n.op_type in ("Conv", "Gemm")]
    assert sorted(e["layer"] for e in sensitivity) == sorted(layers)  # one entry per quantized layer
    assert {"layer", "sqnr_db", "top1_delta_pp", "output_sqnr_db", "rank"} <= set(sensitivity[0])
    assert sensitivity[0]["layer"] == OUTLIER_LAYER and sensitivity[0]["sqnr_db"] < 20
    assert tuning["stages"][0]["stage"] == "int8" and tuning["stages"][0]["drop_pp"] > 5  # really broken
    assert tuning["validation"]["split"] == "train" and tuning["validation"]["disjoint_from_calibration"]
    fallback = tuning["fallback_layers"]
    assert fallback[0] == OUTLIER_LAYER and len(fallback) <= len(layers) // 4
    assert tuning["met"] and tuning["final"]["drop_pp"] <= 0.2
    ort = next(r for r in report["results"] if r["target"] == "ort" and r["precision"] == "int8")
    assert ort["fallback_layers"] == fallback
    assert ort["top1_drop_pp"] <= 0.2  # and it holds on the evaluation images
    price = ort["details"]["fallback_price"]
    assert set(price["per_layer_ms"]) == set(fallback) and price["all_int8_ms"] > 0
    shipped = onnx.load(str(outlier_export / "model.int8.ort.qdq.onnx"))
    assert OUTLIER_LAYER not in _weight_dqs(shipped) and len(_weight_dqs(shipped)) == len(layers) - len(fallback)


@pytest.mark.slow
def test_tensorrt_bundle_keeps_the_fallback_layers_in_fp16(outlier_export):
    trt = outlier_export / "trt"
    plan = json.loads((trt / "build.json").read_text())
    report = json.loads((outlier_export / "report.json").read_text())
    assert plan["fallback_layers"] == report["tuning"]["fallback_layers"]
    qdq = onnx.load(str(trt / "model.int8.trt.qdq.onnx"))
    assert OUTLIER_LAYER not in _weight_dqs(qdq)
    node = next(n for n in qdq.graph.node if n.name == OUTLIER_LAYER)
    _, scales = parse_calibration_cache((trt / "calibration.cache").read_text())
    assert node.input[0] not in scales  # implicit INT8 leaves it out too
    script = (trt / "trtexec.sh").read_text()
    assert f"{OUTLIER_LAYER}:fp16" in script


@pytest.mark.slow
@pytest.mark.skipif(not DEBIAN.exists(), reason="needs Debian's dataset-fashion-mnist (setup.sh installs it)")
def test_issue_acceptance_minmax_32_images_within_a_tenth_of_a_point(tmp_path):
    """The issue's done-when: minmax on 32 images, --max-drop 0.1, all 10,000 test images."""
    out = tmp_path / "exp"
    res = run_cli("export", "default", "--calib-method", "minmax", "--calib-size", "32", "--max-drop", "0.1",
                  "--target", "ort,openvino", "--out", str(out))
    assert res.returncode == 0, res.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["evaluation"]["images"] == 10_000 and report["calibration"]["images"] == 32
    assert report["tuning"]["validation"]["source"] == report["calibration"]["source"]  # the calibration split
    layers = report["tuning"]["quantized_layers"]
    assert len(report["sensitivity"]) == layers
    for row in (r for r in report["results"] if r["precision"] == "int8"):
        assert row["top1_drop_pp"] <= 0.1, row
        assert len(row["fallback_layers"]) <= layers / 4


@pytest.mark.parametrize("args, needle", [
    (["--max-drop", "-1"], "--max-drop must be from 0 to 100"),
    (["--max-drop", "0.1", "--bias-correction", "maybe"], "--bias-correction must be one of"),
    (["--max-drop", "0.1", "--no-int8"], "need --int8"),
    pytest.param(["--max-drop", "0.1", "--calib-size", "1000"], "no images left for the validation slice",
                 marks=pytest.mark.slow),  # calibrates before it can tell
])
def test_bad_budget_input_is_one_line(tmp_path, args, needle):
    res = run_inprocess("export", "default", "--calib", "default", "--no-eval", "--out", str(tmp_path / "x"), *args)
    assert res.returncode in (2, 3), res.stderr
    assert needle in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_sensitivity_without_a_budget_changes_nothing(tmp_path):
    out = tmp_path / "exp"
    export_default(out, "--calib-size", "64", "--sensitivity", "--val-size", "300", "--eval-limit", "500")
    report = json.loads((out / "report.json").read_text())
    assert report["tuning"]["max_drop_pp"] is None and report["tuning"]["met"] is None
    assert len(report["sensitivity"]) == report["tuning"]["quantized_layers"] == 22
    assert [e["rank"] for e in report["sensitivity"]] == list(range(1, 23))
    sqnrs = [e["output_sqnr_db"] for e in report["sensitivity"]]
    assert sqnrs == sorted(sqnrs)  # most harmful (lowest SQNR) first
    assert all(s.get("skipped") == "no --max-drop" for s in report["tuning"]["stages"][1:])
    row = next(r for r in report["results"] if r["target"] == "ort" and r["precision"] == "int8")
    assert row["fallback_layers"] == [] and "fallback_price" not in row["details"]
    assert "Per-layer sensitivity" in (out / "report.md").read_text()


@pytest.mark.slow
def test_budget_refuses_a_slice_that_would_be_the_evaluation_images(tmp_path, test_set):
    from PIL import Image

    folder = tmp_path / "flat"  # no train/test subfolders: both splits are the same images
    for i in range(40):
        d = folder / test_set.classes[int(test_set.labels[i])]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(test_set.images[i, :, :, 0]).save(d / f"{i}.png")
    res = run_cli("export", "default", "--calib", str(folder), "--allow-eval-calib", "--calib-size", "8",
                  "--max-drop", "0.1", "--out", str(tmp_path / "x"))
    assert res.returncode == 3, res.stderr
    assert "validation slice would come from the evaluation images" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_float_layers_stay_float_on_every_engine(tmp_path):
    out = tmp_path / "fl"
    export_default(out, "--target", "ort,openvino,trt", "--prepare-only", "--float-layers", "conv1,layer3.2.*",
                   "--calib-size", "64", "--eval-limit", "300")
    report = json.loads((out / "report.json").read_text())
    floated = report["float_layers"]["layers"]
    assert report["float_layers"]["modules"] == ["conv1", "layer3.2.conv1", "layer3.2.conv2"]
    for name in ("model.int8.ort.qdq.onnx", "model.int8.openvino.qdq.onnx", "trt/model.int8.trt.qdq.onnx"):
        model = onnx.load(str(out / name))
        assert not any(layer in _weight_dqs(model) for layer in floated), name
        classifier = 1 if name.startswith("trt/") else 0  # TensorRT keeps the Gemm in float (as ModelOpt does)
        assert len(_weight_dqs(model)) == 22 - len(floated) - classifier, name
    rows = [r for r in report["results"] if r["precision"] == "int8" and r["status"] == "ok"]
    assert rows and all(r["fallback_layers"] == floated for r in rows)
    assert json.loads((out / "trt" / "build.json").read_text())["fallback_layers"] == floated
