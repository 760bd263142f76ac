"""End-to-end export on a small real subset, checked the way a user reads the results."""

import json

import numpy as np

import onnx
import pytest
from onnx import TensorProto

from ..conftest import export_default, run_cli

pytestmark = pytest.mark.slow  # full exports; the fast tier covers the stages on tiny graphs


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "default"
    return out, export_default(out, "--int8", "--target", "ort", "--calib-size", "128", "--eval-limit", "1000")


def test_export_writes_the_bundle(export_dir):
    out, res = export_dir
    names = {p.name for p in out.iterdir()}
    assert {"model.fp32.onnx", "model.int8.ort.qdq.onnx", "model.int8.ort.onnx", "calibration.json",
            "report.json", "report.md"} <= names
    assert "FP32 vs INT8" in res.stdout


def test_report_json_contract(export_dir):
    out, _ = export_dir
    report = json.loads((out / "report.json").read_text())
    assert set(report["model"]) >= {"arch", "params", "input_shape"}
    assert set(report["calibration"]) >= {"method", "images", "source", "seconds"}
    assert report["calibration"]["images"] == 128 and report["calibration"]["method"] == "percentile"
    assert "[train]" in report["calibration"]["source"] and "[test]" in report["evaluation"]["source"]
    assert report["evaluation"]["images"] == 1000
    rows = {(r["target"], r["precision"]): r for r in report["results"]}
    int8, fp32 = rows[("ort", "int8")], rows[("ort", "fp32")]
    for row in (int8, fp32):
        assert set(row) >= {"target", "precision", "artifact", "size_bytes", "top1", "top5", "top1_drop_pp",
                            "agreement", "latency_ms", "throughput_ips", "batch", "threads"}
        assert set(row["latency_ms"]) >= {"p50", "p90", "p99"} and 0 <= row["top1"] <= 1
        assert (out / row["artifact"]).exists()
    assert int8["top1_drop_pp"] == pytest.approx((fp32["top1"] - int8["top1"]) * 100, abs=1e-6)
    assert int8["top1_drop_pp"] < 1.5 and int8["agreement"] > 0.97
    assert int8["details"]["qdq_profile"]["name"] == "ort"
    assert report["fold"]["folded"] == 21 and report["fold"]["max_rel_error"] < 1e-4
    assert report["onnx"]["opset"] >= 17 and report["onnx"]["max_rel_error_vs_torch"] < 1e-4


def test_int8_onnx_is_really_int8(export_dir):
    out, _ = export_dir
    for name in ("model.int8.ort.qdq.onnx", "model.int8.ort.onnx"):
        model = onnx.load(str(out / name))
        ops = {n.op_type for n in model.graph.node}
        assert "BatchNormalization" not in ops
        assert ops & {"QuantizeLinear", "QLinearConv"}
    qdq = onnx.load(str(out / "model.int8.ort.qdq.onnx"))
    inits = {i.name: i for i in qdq.graph.initializer}
    conv_weights = [inits[n.input[1].replace("_dequantized", "_quantized")] for n in qdq.graph.node if n.op_type == "Conv"]
    assert conv_weights and all(w.data_type == TensorProto.INT8 for w in conv_weights)
    optimized = onnx.load(str(out / "model.int8.ort.onnx"))
    ops = [n.op_type for n in optimized.graph.node]
    # ORT fused every Q/DQ node unit: no conv or residual Add left in float.
    assert ops.count("QLinearConv") == 21 and "Conv" not in ops
    assert ops.count("QLinearAdd") == 9 and "Add" not in ops
    meta = {p.key for p in onnx.load(str(out / "model.fp32.onnx")).metadata_props}
    assert {"edgeresnet.preprocess", "edgeresnet.classes"} <= meta


def test_non_empty_out_is_refused_then_replaced_with_force(export_dir, tmp_path):
    out, _ = export_dir
    before = (out / "report.json").read_bytes()
    res = run_cli("export", "default", "--calib", "default", "--no-eval", "--out", str(out))
    assert res.returncode == 3 and "--force" in res.stderr and "Traceback" not in res.stderr
    assert (out / "report.json").read_bytes() == before
    table = out / "calibration.json"
    again = tmp_path / "again"
    res = run_cli("export", "default", "--calib-table", str(table), "--calib-method", "minmax", "--eval", "default",
                  "--eval-limit", "300", "--out", str(again))
    assert res.returncode == 0, res.stderr
    report = json.loads((again / "report.json").read_text())
    assert report["calibration"]["method"] == "minmax" and report["calibration"]["reused_from"] == str(table)


def test_table_from_other_weights_is_refused(export_dir, tmp_path):
    import torch

    from edgeresnet import build_model
    out, _ = export_dir
    torch.save(build_model("resnet20", num_classes=10, in_channels=1).state_dict(), tmp_path / "other.pth")
    res = run_cli("export", str(tmp_path / "other.pth"), "--arch", "resnet20", "--calib", "default", "--no-eval",
                  "--calib-table", str(out / "calibration.json"), "--out", str(tmp_path / "x"))
    assert res.returncode == 3 and "other weights" in res.stderr
    assert not (tmp_path / "x").exists()


def test_unlabelled_calibration_reports_agreement(tmp_path, calib_set):
    """A flat folder (or glob) of images calibrates; without labelled --eval, every engine is
    scored by its agreement with FP32 on images calibration did not use."""
    from PIL import Image

    (tmp_path / "flat").mkdir()
    for i in range(160):
        Image.fromarray(calib_set.images[i, :, :, 0]).save(tmp_path / "flat" / f"{i}.png")
    out = tmp_path / "exp"
    res = run_cli("export", "default", "--calib", str(tmp_path / "flat" / "*.png"), "--calib-size", "100",
                  "--target", "ort", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "has no labels" in res.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["evaluation"]["images"] == 60 and report["evaluation"]["labelled"] is False
    assert report["calibration"]["images"] == 100
    int8 = next(r for r in report["results"] if r["precision"] == "int8")
    assert int8["top1"] is None and int8["top1_drop_pp"] is None and 0.9 <= int8["agreement"] <= 1.0


@pytest.mark.slow
def test_calibration_data_with_other_classes_scores_agreement(tmp_path, calib_set):
    """A model with other classes than the calibration folder (a 1000-class checkpoint on a
    3-class folder, as in the README) calibrates; its labels cannot score the model, so the
    engines are scored by agreement, on held-out images, and an explicit --eval still must match."""
    import torch
    from PIL import Image

    from edgeresnet import build_model

    for c in range(3):
        (tmp_path / "photos" / f"c{c}").mkdir(parents=True)
        for i in np.flatnonzero(calib_set.labels == c)[:30]:
            Image.fromarray(calib_set.images[i, :, :, 0]).save(tmp_path / "photos" / f"c{c}" / f"{i}.png")
    torch.save(build_model("resnet20", num_classes=7, in_channels=1).state_dict(), tmp_path / "seven.pth")
    out = tmp_path / "exp"
    res = run_cli("export", str(tmp_path / "seven.pth"), "--arch", "resnet20", "--calib", str(tmp_path / "photos"),
                  "--calib-size", "60", "--target", "ort", "--size", "28", "--resize", "28", "--mean", "0.3",
                  "--std", "0.35", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "3 classes and the model 7" in " ".join(res.stderr.split())
    report = json.loads((out / "report.json").read_text())
    assert report["evaluation"]["labelled"] is False and report["evaluation"]["images"] == 30
    int8 = next(r for r in report["results"] if r["precision"] == "int8")
    assert int8["top1"] is None and int8["agreement"] is not None
    res = run_cli("export", str(tmp_path / "seven.pth"), "--arch", "resnet20", "--calib", str(tmp_path / "photos"),
                  "--eval", "default", "--target", "ort", "--size", "28", "--resize", "28", "--mean", "0.3",
                  "--std", "0.35", "--out", str(tmp_path / "x"))
    assert res.returncode == 3 and "7 classes" in res.stderr


def test_an_onnx_model_exports_like_a_checkpoint(tmp_path, calib_set):
    """An FP32 ONNX ResNet exported by plain torch code (BNs unfolded, other names, fixed batch)
    goes through the same calibration, engines and report; unlabelled --calib: agreement."""
    import torch
    from PIL import Image

    from edgeresnet import build_model

    model = build_model("resnet18", num_classes=5, in_channels=3).eval()
    torch.onnx.export(model, (torch.zeros(2, 3, 64, 64),), str(tmp_path / "r18.onnx"), input_names=["x"],
                      output_names=["y"], dynamo=False, do_constant_folding=False, opset_version=17)
    assert sum(n.op_type == "BatchNormalization" for n in onnx.load(str(tmp_path / "r18.onnx")).graph.node) == 20
    (tmp_path / "flat").mkdir()
    for i in range(120):
        Image.fromarray(calib_set.images[i, :, :, 0]).save(tmp_path / "flat" / f"{i}.png")
    out = tmp_path / "exp"
    res = run_cli("export", str(tmp_path / "r18.onnx"), "--calib", str(tmp_path / "flat"), "--calib-size", "64",
                  "--target", "ort,openvino", "--out", str(out))
    assert res.returncode == 0, res.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["fold"]["folded"] == 20 and report["fold"]["max_rel_error"] < 1e-4
    assert report["model"]["input_shape"] == [1, 3, 64, 64] and report["model"]["arch"] == "onnx:r18.onnx"
    rows = {(r["target"], r["precision"]): r for r in report["results"]}
    assert "torch" not in {t for t, _ in rows}
    assert rows[("ort", "int8")]["status"] == "ok" and rows[("ort", "int8")]["agreement"] >= 0.5
    fp32 = onnx.load(str(out / "model.fp32.onnx"))
    assert [i.name for i in fp32.graph.input] == ["input"] and not any(n.op_type == "BatchNormalization" for n in fp32.graph.node)


def test_unlabelled_eval_images_score_agreement(tmp_path, test_set):
    from PIL import Image

    (tmp_path / "flat").mkdir()
    for i in range(50):
        Image.fromarray(test_set.images[i, :, :, 0]).save(tmp_path / "flat" / f"{i}.png")
    out = tmp_path / "exp"
    res = run_cli("export", "default", "--calib", "default", "--calib-size", "64", "--eval", str(tmp_path / "flat"),
                  "--target", "ort", "--out", str(out))
    assert res.returncode == 0, res.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["evaluation"]["labelled"] is False and report["evaluation"]["images"] == 50
    assert report["evaluation"]["split"] == "test (unlabelled: agreement only)"
    int8 = next(r for r in report["results"] if r["precision"] == "int8")
    assert int8["top1"] is None and 0.9 <= int8["agreement"] <= 1.0
