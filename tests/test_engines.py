"""OpenVINO and TensorRT from the same calibration, `--target all`, and failure isolation."""

import json
import struct

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from edgeresnet.backends import expand_targets, names
from edgeresnet.backends.tensorrt.backend import unavailable_reason as trt_unavailable
from edgeresnet.backends.tensorrt.bundle import (calibration_cache,
    layer_warnings,
    parse_calibration_cache,
    trt_version_code,
    trtexec_commands)
from edgeresnet.calibrate.table import CalibrationTable
from edgeresnet.export.engines import EngineContext, engine_rows
from edgeresnet.errors import UsageError

from .conftest import FailingEngine, export_default, run_cli

TRT_REASON = trt_unavailable()


@pytest.fixture(scope="module")
def export_all(tmp_path_factory):
    out = tmp_path_factory.mktemp("all") / "exp"
    res = export_default(out, "--target", "all", "--calib-size", "128", "--eval-limit", "1000")
    return out, json.loads((out / "report.json").read_text()), res


def _rows(report):
    return {(r["target"], r["precision"]): r for r in report["results"]}


@pytest.mark.slow
def test_openvino_rows_record_the_precision_that_ran(export_all):
    out, report, _ = export_all
    rows = _rows(report)
    fp32, int8 = rows[("openvino", "fp32")], rows[("openvino", "int8")]
    assert fp32["details"]["inference_precision"] == "f32"  # never silently bf16
    assert set(fp32["details"]["conv_runtime_precisions"]) == {"f32"}
    assert set(int8["details"]["conv_runtime_precisions"]) <= {"i8", "u8"}  # every conv runs int8 kernels
    for r in report["results"]:
        if r["target"] == "openvino":
            assert r["status"] == "ok" and "inference_precision" in r["details"]
            if r["precision"] in ("bf16", "fp16"):
                assert r["details"]["inference_precision"] == {"bf16": "bf16", "fp16": "f16"}[r["precision"]]
    assert int8["top1_drop_pp"] < 1.5 and int8["agreement"] > 0.97


@pytest.mark.slow
def test_openvino_ir_on_disk_with_int8_weights(export_all):
    out, report, _ = export_all
    for stem in ("fp32", "int8"):
        assert (out / f"model.{stem}.openvino.xml").exists()
    fp32_bin = (out / "model.fp32.openvino.bin").stat().st_size
    int8_bin = (out / "model.int8.openvino.bin").stat().st_size
    assert int8_bin < fp32_bin / 3  # weights stored int8, not re-expanded to float


@pytest.mark.slow
@pytest.mark.skipif(TRT_REASON is None, reason="TensorRT is installed here: the skip row does not apply")
def test_target_all_lists_skipped_trt_and_finishes_the_rest(export_all):
    out, report, res = export_all
    rows = _rows(report)
    assert {("ort", "int8"), ("openvino", "int8")} <= set(rows)
    assert rows[("trt", "int8")]["status"] == "skipped" and "TensorRT" in rows[("trt", "int8")]["reason"]
    assert "trt int8 skipped" in res.stdout


@pytest.mark.slow
def test_trt_bundle_qdq_follows_tensorrt_rules(export_all):
    out, _, _ = export_all
    model = onnx.load(str(out / "trt" / "model.int8.trt.qdq.onnx"))
    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert qs
    for q in qs:  # symmetric int8, zero point 0
        zp = inits[q.input[2]]
        assert zp.data_type == TensorProto.INT8 and int(numpy_helper.to_array(zp)) == 0
    adds = [n for n in model.graph.node if n.op_type == "Add"]
    assert len(adds) == 9
    for add in adds:  # every residual Add has an input from a DequantizeLinear
        assert any(getattr(producers.get(i), "op_type", None) == "DequantizeLinear" for i in add.input)


@pytest.mark.slow
def test_calibration_cache_parses_back_to_the_table(export_all):
    out, _, _ = export_all
    table = CalibrationTable.load(out / "calibration.json")
    header, scales = parse_calibration_cache((out / "trt" / "calibration.cache").read_text())
    assert header == "TRT-100300-EntropyCalibration2"
    classifier_input = "/Flatten_output_0"  # the Gemm stays in float on TensorRT (backends/tensorrt.PROFILE)
    assert classifier_input in table.scales and set(scales) == set(table.scales) - {classifier_input}
    for name, scale in scales.items():
        assert scale == pytest.approx(table.scales[name], rel=1e-6)


def test_cache_format_and_version_codes():
    assert trt_version_code("8.6.1") == 8601 and trt_version_code("8.5.2") == 8502
    assert trt_version_code("10.3.0") == 100300
    text = calibration_cache({"input": 1 / 127}, "8.5.2")
    assert text.splitlines() == ["TRT-8502-EntropyCalibration2", f"input: {struct.pack('>f', 1 / 127).hex()}"]
    assert text.splitlines()[1] == "input: 3c010204"


@pytest.mark.slow
def test_trtexec_lines_and_bundle_files(export_all):
    out, _, _ = export_all
    plan = json.loads((out / "trt" / "build.json").read_text())
    assert plan["batch_range"] == [1, 8, 32] and plan["input_chw"] == [1, 28, 28]
    cmds = trtexec_commands("input", (1, 28, 28), (1, 8, 32))
    assert "--minShapes=input:1x1x28x28" in cmds["int8"] and "--maxShapes=input:32x1x28x28" in cmds["int8"]
    dla = trtexec_commands("input", (1, 28, 28), (1, 8, 32), dla_core=0)  # DLA engines beside the GPU ones
    assert "--onnx=model.int8.trt.qdq.onnx" in dla["int8"] and "--useDLACore=0" in dla["fp16-dla"]
    assert "--onnx=../model.fp32.onnx" in dla["int8-dla"] and "--calib=calibration.cache" in dla["int8-dla"]
    assert "--minShapes=input:8x1x28x28" in dla["int8-dla"] and not any("DLA" in a for a in dla["fp32"] + dla["int8"])
    script = (out / "trt" / "trtexec.sh").read_text()
    assert "--saveEngine=model.int8.engine" in script and "--calib=calibration.cache" in script
    assert "edgeresnet build" in (out / "trt" / "README.md").read_text()


def test_layer_checks_name_float_convs_unfused_adds_and_reformats():
    info = {"Layers": [
        {"Name": "/conv1/Conv + /relu/Relu", "LayerType": "CaskConvolution",
         "Inputs": [{"Name": "input", "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}]},
        {"Name": "/layer1/layer1.0/conv2/Conv", "LayerType": "CaskConvolution",
         "Inputs": [{"Name": "x", "Format/Datatype": "Channel major FP16 format where channel % 2 == 0"}]},
        {"Name": "/layer1/layer1.0/Add", "LayerType": "PointWiseV2", "Inputs": []},
        {"Name": "Reformatting CopyNode for Input Tensor 0 to /fc/Gemm", "LayerType": "Reformat", "Inputs": []},
    ]}
    found = layer_warnings(info, "int8")
    assert len(found) == 3
    assert "conv2" in found[0] and "float" in found[0]
    assert "Add" in found[1] and "identity input" in found[1]
    assert "reformat" in found[2]
    assert layer_warnings(info, "fp16") == [found[2]]  # precision checks only for int8 engines


@pytest.mark.skipif(TRT_REASON is None, reason="TensorRT is installed here")
@pytest.mark.parametrize("spelling", ["trt", "tensorrt", "TRT"])
def test_target_trt_without_tensorrt_refuses_in_one_line(tmp_path, spelling):
    res = run_cli("export", "default", "--target", spelling, "--out", str(tmp_path / "x"))
    assert res.returncode == 4 and "TensorRT" in res.stderr and "--prepare-only" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "x").exists()
    res = run_cli("build", str(tmp_path))
    assert res.returncode != 0 and "Traceback" not in res.stderr


@pytest.mark.slow
@pytest.mark.skipif(TRT_REASON is not None, reason=f"needs TensorRT and a CUDA GPU: {TRT_REASON}")
def test_build_engines_on_the_device(export_all):
    out, _, _ = export_all
    res = run_cli("build", str(out), "--eval-limit", "1000")
    assert res.returncode == 0, res.stderr
    rows = _rows(json.loads((out / "report.json").read_text()))
    for p in ("fp32", "fp16", "int8"):
        assert rows[("trt", p)]["status"] == "ok" and (out / rows[("trt", p)]["artifact"]).exists()
    assert rows[("trt", "int8")]["top1_drop_pp"] < 1.0 and not rows[("trt", "int8")]["details"]["warnings"]


def test_target_names():
    assert expand_targets(("all",)) == names()  # every registered engine, in preference order
    assert expand_targets(("all",))[:3] == ("ort", "openvino", "trt")
    assert expand_targets(("ort", "openvino", "ort")) == ("ort", "openvino")
    assert expand_targets(("tensorrt",)) == expand_targets(("TRT",)) == expand_targets((" trt",)) == ("trt",)
    with pytest.raises(UsageError, match="did you mean openvino"):
        expand_targets(("openvin",))


def test_one_failing_engine_becomes_a_status_row(tmp_path):
    fp32 = tmp_path / "model.fp32.onnx"
    fp32.write_bytes(b"not read by the broken engine")
    rows_seen = []
    ctx = EngineContext(work=tmp_path, fp32_path=fp32, fp32_proto=None, table=None, threads=1,
                        measure=lambda row, run, art=None: rows_seen.append(row.precision),
                        qdq_paths={"trt": tmp_path / "model.int8.trt.qdq.onnx"})
    rows = engine_rows(FailingEngine(RuntimeError("engine compiler crashed")), ctx, int8=True)
    assert [(r.precision, r.status) for r in rows] == [("fp32", "ok"), ("int8", "failed")]
    assert "engine compiler crashed" in rows[1].reason and rows_seen == ["fp32"]
