"""TensorRT per line (8.5/8.6, 10.x, 11.x) without TensorRT: the recipes, the bundle files each
line gets, `build --dry-run` and the FP16-typed ONNX for 11. The device side (build, run, bench)
is tests/test_trt_device.py."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from edgeresnet.backends.tensorrt_bundle import layer_warnings, parse_calibration_cache
from edgeresnet.backends.tensorrt_recipes import RECIPES, plan, recipe_for, trtexec_command
from edgeresnet.errors import UsageError

from .conftest import export_default, make_bundle, run_cli

LINES = {"8.5.2": ("8.6", "TRT-8502-EntropyCalibration2"), "10.3": ("10", "TRT-100300-EntropyCalibration2"),
         "11.4": ("11", None)}
REMOVED_IN_11 = ("--int8", "--fp16", "--calib", "--precisionConstraints", "--layerPrecisions", "--best")


@pytest.mark.parametrize("given,line,full", [("8", "8.6", "8.5.2"), ("8.5", "8.6", "8.5.2"), ("8.6", "8.6", "8.6.1"),
                                             ("8.5.2", "8.6", "8.5.2"), (None, "10", "10.3.0"), ("10.13.1", "10", "10.13.1"),
                                             ("11", "11", "11.4.0"), ("trt-10.3", "10", "10.3.0")])
def test_a_version_picks_its_line(given, line, full):
    recipe, version = recipe_for(given)
    assert (recipe.line, version) == (line, full)


@pytest.mark.parametrize("bad", ["7.1", "12", "8.4", "ten", "", "10.3.0.1.2"])
def test_unknown_versions_are_refused_in_one_line(bad):
    with pytest.raises(UsageError, match="--trt-version"):
        recipe_for(bad)


def test_flags_per_line_follow_each_lines_docs():
    chw, br = (1, 28, 28), (1, 8, 32)
    for name in ("8.6", "10"):
        r = RECIPES[name]
        assert trtexec_command(r, "int8", "input", chw, br)[3:5] == ["--int8", "--fp16"]  # QDQ + FP16 float layers
        assert "--fp16" in trtexec_command(r, "fp16", "input", chw, br)
        fp32 = trtexec_command(r, "fp32", "input", chw, br)
        assert "--noTF32" in fp32 and "--fp16" not in fp32 and "--int8" not in fp32
    r = RECIPES["11"]
    lines = {p: trtexec_command(r, p, "input", chw, br) for p in ("int8", "fp16", "fp32")}
    for cmd in lines.values():
        assert not [a for a in cmd if a.split("=")[0] in REMOVED_IN_11]  # trtexec 11 exits on these
    assert "--onnx=model.int8.trt.fp16.qdq.onnx" in lines["int8"] and "--onnx=model.fp16.onnx" in lines["fp16"]
    assert "--noTF32" in lines["fp32"]


def test_dla_gets_a_static_profile_and_no_fp32_engine():
    r = RECIPES["10"]
    p = plan(r, "10.3.0", input_name="input", chw=(1, 28, 28), batch_range=(1, 8, 32), dla_core=1)
    for precision in ("int8", "fp16"):
        e = p["engines"][precision]
        assert e["profile"] == {"min": 8, "opt": 8, "max": 8} and e["device"].startswith("DLA core 1")
        assert "--useDLACore=1" in e["trtexec"] and "--minShapes=input:8x1x28x28" in e["trtexec"]
    fp32 = p["engines"]["fp32"]
    assert fp32["device"] == "GPU" and "useDLACore" not in fp32["trtexec"] and fp32["profile"]["max"] == 32
    with pytest.raises(UsageError, match="DLA"):
        plan(RECIPES["11"], "11.4.0", input_name="input", chw=(1, 28, 28), batch_range=(1, 8, 32), dla_core=0)


def test_inspector_keys_per_line():
    """10.x writes 'Format/Datatype'; 11 splits it into 'Format' and 'DataType'. Read with the
    wrong key, every INT8 conv would look like float (or every float one like INT8)."""
    conv = {"Name": "/conv1/Conv", "LayerType": "CaskConvolution"}
    ten = {"Layers": [{**conv, "Inputs": [{"Name": "x", "Format/Datatype": "Channel major FP16 format"}]}]}
    eleven_int8 = {"Layers": [{**conv, "Inputs": [{"Name": "x", "Format": "Thirty-two wide channel vectorized "
                                                   "row major", "DataType": "Int8"}]}]}
    eleven_half = {"Layers": [{**conv, "Inputs": [{"Name": "x", "Format": "Channel major", "DataType": "Half"}]}]}
    assert len(layer_warnings(ten, "int8", recipe=RECIPES["10"])) == 1
    assert layer_warnings(eleven_int8, "int8", recipe=RECIPES["11"]) == []
    assert "Half" in layer_warnings(eleven_half, "int8", recipe=RECIPES["11"])[0]


def _types(model) -> dict[str, int]:
    return {i.name: i.data_type for i in model.graph.initializer}


def test_fp16_copies_keep_float32_io_and_give_the_same_answers(ort_ov_bundle, test_set):
    """TensorRT 11's FP16 comes from the ONNX: our FP16-typed copies of the FP32 and QDQ models
    run in ONNX Runtime and agree with the float32 originals on real images. Both run unfused
    (the graph as written): a fused float32 QDQ graph would take the CPU's own INT8 kernels,
    which saturate on AVX2-only x86, and the comparison would measure the CPU, not the copy."""
    from edgeresnet.backends.tensorrt_fp16 import to_fp16
    from edgeresnet.onnxrun import session_with_outputs
    from edgeresnet.data import Preprocess
    from edgeresnet.manifest import read_manifest

    pre = Preprocess.from_dict(read_manifest(ort_ov_bundle)["preprocess"])
    x = test_set.batch(np.arange(200), pre)
    for name in ("model.fp32.onnx", "model.int8.ort.qdq.onnx"):
        model = onnx.load(str(ort_ov_bundle / name))
        half = to_fp16(model)
        onnx.checker.check_model(half, full_check=True)  # type constraints: Q/DQ scale type = data type
        assert {t for t in _types(half).values()} <= {TensorProto.FLOAT16, TensorProto.INT8, TensorProto.UINT8,
                                                      TensorProto.INT64, TensorProto.INT32}
        assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
        assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
        assert max(o.version for o in half.opset_import if o.domain in ("", "ai.onnx")) >= 19
        runs = [session_with_outputs(m, [], level="none") for m in (model, half)]
        y32, y16 = (s.run(None, {s.get_inputs()[0].name: x})[0] for s in runs)
        assert y16.dtype == np.float32
        assert (y32.argmax(1) == y16.argmax(1)).mean() >= 0.98
        assert np.abs(y32 - y16).max() < 0.25 * np.abs(y32).max()


@pytest.mark.slow
@pytest.mark.parametrize("version", list(LINES))
def test_each_lines_bundle_and_dry_run(tmp_path, version):
    line, header = LINES[version]
    out = tmp_path / "exp"
    res = export_default(out, "--target", "trt", "--prepare-only", "--trt-version", version, "--calib-size", "64",
                         "--no-eval")
    assert res.returncode == 0, res.stderr
    bundle = out / "trt"
    saved = json.loads((bundle / "build.json").read_text())
    assert saved["trt_line"] == line and saved["plan"]["trt_line"] == line
    cache_header, scales = parse_calibration_cache((bundle / "calibration.cache").read_text())
    script = (bundle / "trtexec.sh").read_text()
    lines = [ln for ln in script.splitlines() if ln.startswith("trtexec ")]
    assert len(lines) == 3 and "--noTF32" in lines[2]
    if header:
        assert cache_header == header and "--calib=calibration.cache" in script
        assert all("--int8" in ln for ln in lines[:1])
    else:  # 11: nothing trtexec 11 refuses, and the FP16-typed sources exist
        assert not [a for ln in lines for a in ln.split() if a.split("=")[0] in REMOVED_IN_11]
        assert (bundle / "model.fp16.onnx").exists() and (bundle / "model.int8.trt.fp16.qdq.onnx").exists()
    assert "bench` has not landed" not in (bundle / "README.md").read_text()
    dry = run_cli("build", str(out), "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    shown = json.loads(dry.stdout)
    assert shown["trt_line"] == line and shown["engines"]["fp32"]["tf32"] is False
    assert shown["engines"]["int8"]["trtexec"] == lines[0]
    readable = run_cli("build", str(out), "--dry-run")
    assert readable.returncode == 0 and "plan for" in readable.stdout and "int8" in readable.stdout


def test_dry_run_and_version_flags_refuse_bad_combinations(tmp_path):
    res = run_cli("export", "default", "--target", "ort", "--trt-version", "10.3", "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "--target trt" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("export", "default", "--target", "trt", "--prepare-only", "--trt-version", "11", "--dla-core", "0",
                  "--out", str(tmp_path / "y"))
    assert res.returncode == 2 and "DLA" in res.stderr and not (tmp_path / "y").exists()
    res = run_cli("build", str(tmp_path), "--trt-version", "11")
    assert res.returncode == 2 and "--dry-run" in res.stderr


def test_a_weight_beyond_float16_is_refused_in_one_line():
    from onnx import helper, numpy_helper

    from edgeresnet.backends.tensorrt_fp16 import to_fp16
    from edgeresnet.errors import InputError

    big = numpy_helper.from_array(np.full((1,), 1e6, np.float32), "scale")
    graph = helper.make_graph([helper.make_node("Mul", ["x", "scale"], ["y"], name="mul")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [big])
    with pytest.raises(InputError, match="float16's range") as err:
        to_fp16(helper.make_model(graph))
    assert "--trt-version 10.3" in err.value.hint


def test_build_rewrites_the_cache_header_for_the_installed_tensorrt(tmp_path):
    """TensorRT skips a calibration cache whose header names another version, so `build`
    rewrites it for the TensorRT it finds; the scales stay bit for bit, and the manifest's hash
    follows at once, so the bundle still verifies (a fresh reader sees nothing to change)."""
    from edgeresnet.backends.tensorrt_bundle import calibration_cache
    from edgeresnet.build import retarget_cache
    from edgeresnet.bundle import Bundle

    scales = {"input": 0.0125, "/conv1/Conv_output_0": 0.3}
    root = make_bundle(tmp_path / "exp", {"trt/calibration.cache": calibration_cache(scales, "8.5.2").encode()})
    assert retarget_cache(Bundle(root), "calibration.cache", "10.3.0") is True
    header, back = parse_calibration_cache((root / "trt" / "calibration.cache").read_text())
    assert header == "TRT-100300-EntropyCalibration2" and back == pytest.approx(scales, rel=1e-7)
    assert retarget_cache(Bundle(root), "calibration.cache", "10.3.0") is False
    assert sorted(p.name for p in (root / "trt").iterdir()) == ["calibration.cache"]  # no temp file left
    assert sorted(p.name for p in root.iterdir()) == ["edgeresnet.json", "trt"]
