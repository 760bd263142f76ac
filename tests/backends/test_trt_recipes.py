"""TensorRT per line (8.5/8.6, 10.x, 11.x) without TensorRT: the recipes, the bundle files each
line gets, `build --dry-run` and the FP16-typed ONNX for 11. The device side (build, run, bench)
is tests/ondevice/test_trt_device.py."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from edgeresnet.backends.tensorrt.bundle import layer_warnings, parse_calibration_cache
from edgeresnet.backends.tensorrt.recipes import LINES as RECIPE_LINES
from edgeresnet.backends.tensorrt.recipes import RECIPES, all_plans, lines_table, plan, recipe_for, trtexec_command
from edgeresnet.backends.tensorrt.recipes import version_in_line
from edgeresnet.errors import BackendUnavailable, UsageError

from ..conftest import export_default, make_bundle, run_cli, run_inprocess

LINES = {"8.5.2": ("8.5", "TRT-8502-EntropyCalibration2"), "10.3": ("10.3", "TRT-100300-EntropyCalibration2"),
         "11.4": ("11.4", None)}
REMOVED_IN_11 = ("--int8", "--fp16", "--calib", "--precisionConstraints", "--layerPrecisions", "--best")


@pytest.mark.parametrize("given,line,full", [
    ("8.4", "8.4", "8.4.1"), ("8.4.1", "8.4", "8.4.1"),  # JetPack 5.0.2
    ("8", "8.5", "8.5.2"), ("8.5", "8.5", "8.5.2"), ("8.5.2", "8.5", "8.5.2"),  # JetPack 5.1.x
    ("8.6", "8.6", "8.6.2"), ("8.6.1", "8.6", "8.6.1"),  # JetPack 6.0 (8.6.2); x86 8.6.1
    (None, "10.3", "10.3.0"), ("10", "10.3", "10.3.0"), ("trt-10.3", "10.3", "10.3.0"), ("10.7", "10.3", "10.7.0"),
    ("10.8", "10", "10.8.0"), ("10.13.1", "10", "10.13.1"), ("10.3.0.30", "10.3", "10.3.0"),
    ("11", "11.4", "11.4.1"), ("11.2", "11", "11.2.0"), ("11.4.0", "11", "11.4.0"), ("11.4", "11.4", "11.4.1"),
    ("11.9.2", "11.4", "11.9.2")])
def test_a_version_picks_its_line(given, line, full):
    recipe, version = recipe_for(given)
    assert (recipe.line, version) == (line, full)


@pytest.mark.parametrize("bad", ["7.1", "12", "8.2", "9.3", "ten", "", "10.3.0.1.2"])
def test_unknown_versions_are_refused_in_one_line(bad):
    with pytest.raises(UsageError, match="--trt-version"):
        recipe_for(bad)


def test_the_lines_table_maps_every_version_to_exactly_one_line():
    """build.json's "lines" is what the device file reads to pick its plan: every version the tests
    name falls in exactly one line, the one recipe_for picks."""
    for version in ("8.4.1", "8.5.2", "8.6.2", "10.0.1", "10.3.0", "10.7.0", "10.8.0", "10.16.1", "11.0.0", "11.4.0",
                    "11.4.1", "11.7.3"):
        owners = [r.line for r in RECIPE_LINES if version_in_line(version, r)]
        assert owners == [recipe_for(version)[0].line], version
    assert [row["line"] for row in lines_table()] == [r.line for r in RECIPE_LINES]


def test_flags_per_line_follow_each_lines_docs():
    chw, br = (1, 28, 28), (1, 8, 32)
    for name in ("8.4", "8.5", "8.6", "10.3", "10"):
        r = RECIPES[name]
        assert trtexec_command(r, "int8", "input", chw, br)[3:5] == ["--int8", "--fp16"]  # QDQ + FP16 float layers
        assert "--fp16" in trtexec_command(r, "fp16", "input", chw, br)
        fp32 = trtexec_command(r, "fp32", "input", chw, br)
        assert "--noTF32" in fp32 and "--fp16" not in fp32 and "--int8" not in fp32
    for name in ("11", "11.4"):
        r = RECIPES[name]
        lines = {e: trtexec_command(r, e, "input", chw, br, 0) for e in ("int8", "fp16", "fp32", "int8-dla", "fp16-dla")}
        for cmd in lines.values():
            assert not [a for a in cmd if a.split("=")[0] in REMOVED_IN_11]  # trtexec 11 exits on these
        assert "--onnx=model.int8.trt.fp16.qdq.onnx" in lines["int8"] and "--onnx=model.fp16.onnx" in lines["fp16"]
        assert "--noTF32" in lines["fp32"]


BR = (1, 8, 32)


def _plan(line, dla_core=None, **kw):
    r = RECIPES[line]
    return plan(r, r.default_version, input_name="input", chw=(1, 28, 28), batch_range=BR, dla_core=dla_core, **kw)


@pytest.mark.parametrize("line", ["8.4", "8.5", "8.6", "10.3"])
def test_dla_int8_is_nvidias_implicit_recipe_on_weakly_typed_lines(line):
    """NVIDIA's DLA recipe (Deep-Learning-Accelerator-SW tools/qdq-translator): the FP32 ONNX, the
    calibration cache, --int8 --fp16, --useDLACore, GPU fallback, FP16 by name for the layers without
    a scale. No DLA engine reads the Q/DQ file; the GPU engines stay, fp32 only on the GPU."""
    p = _plan(line, dla_core=1, float_layers=("/layer1/layer1.0/conv1/Conv",),
              dla_float_layers=("/layer1/layer1.0/conv1/Conv", "/fc/Gemm"))
    assert list(p["engines"]) == ["int8", "fp16", "fp32", "int8-dla", "fp16-dla"]
    e = p["engines"]["int8-dla"]
    assert e["onnx"] == "../model.fp32.onnx" and e["calibration_cache"] == "calibration.cache"
    assert e["builder_flags"] == ["INT8", "FP16", "GPU_FALLBACK", "PREFER_PRECISION_CONSTRAINTS"]
    assert e["layer_precisions"] == {"/layer1/layer1.0/conv1/Conv": "fp16", "/fc/Gemm": "fp16"}
    assert e["precision_constraints"] == "prefer" and e["dla_core"] == 1 and e["strongly_typed"] is False
    assert e["expected_float_layers"] == ["/layer1/layer1.0/conv1/Conv", "/fc/Gemm"]
    cmd = shlex.split(e["trtexec"])
    for flag in ("--onnx=../model.fp32.onnx", "--int8", "--fp16", "--calib=calibration.cache", "--useDLACore=1",
                 "--allowGPUFallback", "--precisionConstraints=prefer",
                 "--layerPrecisions=/layer1/layer1.0/conv1/Conv:fp16,/fc/Gemm:fp16", "--minShapes=input:8x1x28x28",
                 "--maxShapes=input:8x1x28x28"):
        assert flag in cmd, flag
    fp16 = p["engines"]["fp16-dla"]
    assert fp16["onnx"] == "../model.fp32.onnx" and fp16["builder_flags"] == ["FP16", "GPU_FALLBACK"]
    assert fp16["calibration_cache"] is None and fp16["profile"] == {"min": 8, "opt": 8, "max": 8}
    for name, engine in p["engines"].items():
        if name.endswith("-dla"):
            assert "qdq" not in engine["onnx"] and "qdq" not in engine["trtexec"]
        else:
            assert engine["dla_core"] is None and "useDLACore" not in engine["trtexec"] and engine["profile"]["max"] == 32
    assert p["engines"]["int8"]["onnx"] == "model.int8.trt.qdq.onnx" and p["engines"]["int8"]["calibration_cache"] is None
    assert p["engines"]["int8"]["expected_float_layers"] == ["/layer1/layer1.0/conv1/Conv"]


def test_dla_on_11_4_is_strongly_typed_explicit_int8():
    """TensorRT 11.4.1 brings DLA back on AGX Orin (JetPack 7.2.2+) with strongly typed networks only
    ("Strongly Typed Networks for DLA"): no precision flags, no calibrator, so INT8 on the DLA can
    only be the Q/DQ model, with FP16 float tensors; GPU fallback as in 10.x."""
    p = _plan("11.4", dla_core=0)
    e = p["engines"]["int8-dla"]
    assert e["onnx"] == "model.int8.trt.fp16.qdq.onnx" and e["strongly_typed"] is True
    assert e["builder_flags"] == ["GPU_FALLBACK"] and e["calibration_cache"] is None and e["layer_precisions"] == {}
    assert "--useDLACore=0" in e["trtexec"] and p["engines"]["fp16-dla"]["onnx"] == "model.fp16.onnx"
    assert p["cache_header"] is None


@pytest.mark.parametrize("line", ["10", "11"])
def test_lines_without_dla_refuse_a_dla_core_in_one_line(line):
    with pytest.raises(UsageError, match="DLA") as err:
        _plan(line, dla_core=0)
    assert "11.4" in err.value.hint and "10.3" in err.value.hint


def test_every_plan_carries_the_fields_the_device_file_reads():
    plans = all_plans(input_name="input", chw=(1, 28, 28), batch_range=BR, dla_core=0, dla_float_layers=("/fc/Gemm",))
    assert list(plans) == [r.line for r in RECIPE_LINES]
    fields = {"onnx", "builder_flags", "strongly_typed", "tf32", "profile", "dla_core", "calibration_cache",
              "layer_precisions", "precision_constraints", "expected_float_layers", "trtexec"}
    for line, p in plans.items():
        assert {"trt_line", "trt_label", "cache_header", "engines"} <= set(p)
        for engine in p["engines"].values():
            assert fields <= set(engine)
            assert (engine["precision_constraints"] is None) == (not engine["layer_precisions"])
        assert ("int8-dla" in p["engines"]) == RECIPES[line].dla
        assert ("dla_note" in p) == (not RECIPES[line].dla)


def test_inspector_keys_per_line():
    """10.x writes 'Format/Datatype'; 11 splits it into 'Format' and 'DataType'. Read with the
    wrong key, every INT8 conv would look like float (or every float one like INT8)."""
    conv = {"Name": "/conv1/Conv", "LayerType": "CaskConvolution"}
    ten = {"Layers": [{**conv, "Inputs": [{"Name": "x", "Format/Datatype": "Channel major FP16 format"}]}]}
    eleven_int8 = {"Layers": [{**conv, "Inputs": [{"Name": "x", "Format": "Thirty-two wide channel vectorized "
                                                   "row major", "DataType": "Int8"}]}]}
    eleven_half = {"Layers": [{**conv, "Inputs": [{"Name": "x", "Format": "Channel major", "DataType": "Half"}]}]}
    assert len(layer_warnings(ten, "int8", recipe=RECIPES["10.3"])) == 1
    assert layer_warnings(eleven_int8, "int8", recipe=RECIPES["11.4"]) == []
    assert "Half" in layer_warnings(eleven_half, "int8", recipe=RECIPES["11.4"])[0]


def _types(model) -> dict[str, int]:
    return {i.name: i.data_type for i in model.graph.initializer}


def test_fp16_copies_keep_float32_io_and_give_the_same_answers(ort_ov_bundle, test_set):
    """TensorRT 11's FP16 comes from the ONNX: our FP16-typed copies of the FP32 and QDQ models
    run in ONNX Runtime and agree with the float32 originals on real images. Both run unfused
    (the graph as written): a fused float32 QDQ graph would take the CPU's own INT8 kernels,
    which saturate on AVX2-only x86, and the comparison would measure the CPU, not the copy."""
    from edgeresnet.backends.tensorrt.fp16 import to_fp16
    from edgeresnet.onnxfile.reference import session_with_outputs
    from edgeresnet.data import Preprocess
    from edgeresnet.bundle.manifest import read_manifest

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
    # every line's plan is in build.json, and the dry run of the bundle's own line is that entry
    assert set(saved["plans"]) == {r.line for r in RECIPE_LINES} and saved["plans"][line] == saved["plan"]
    assert {k: v for k, v in shown.items() if k not in ("bundle_written_for", "version_source")} == saved["plan"]
    assert (bundle / "model.fp16.onnx").exists() and "unavailable" not in saved["plans"]["11.4"]


@pytest.mark.slow
@pytest.mark.parametrize("version", ["8.4", "8.5", "10.3", "11.4"])
def test_a_dla_export_writes_nvidias_dla_line_and_dry_run_shows_it(tmp_path, version):
    """The issue's acceptance: `export --target trt --prepare-only --dla-core 0 --trt-version 8.5` (and
    10.3) writes a DLA INT8 line with the FP32 ONNX, --calib and --useDLACore, no DLA line uses a Q/DQ
    file on those lines, and `build --dry-run` shows it; 8.4 and 11.4 (DLA on AGX Orin) are accepted."""
    out = tmp_path / "exp"
    res = export_default(out, "--target", "trt", "--prepare-only", "--dla-core", "0", "--trt-version", version,
                         "--calib-size", "64", "--no-eval")
    assert res.returncode == 0, res.stderr
    saved = json.loads((out / "trt" / "build.json").read_text())
    line = saved["trt_line"]
    dla = saved["plans"][line]["engines"]["int8-dla"]
    script = (out / "trt" / "trtexec.sh").read_text()
    if line != "11.4":
        assert dla["onnx"] == "../model.fp32.onnx" and "--calib=calibration.cache" in dla["trtexec"]
        assert "--useDLACore=0" in dla["trtexec"] and dla["layer_precisions"] == {"/fc/Gemm": "fp16"}
        for other in saved["plans"].values():  # on every weakly typed line, no DLA engine reads a Q/DQ file
            for name, e in other["engines"].items():
                if name.endswith("-dla") and not e["strongly_typed"]:
                    assert "qdq" not in e["onnx"], (other["trt_line"], name)
        assert [ln for ln in script.splitlines() if ln.startswith("trtexec ") and "model.int8-dla.engine" in ln] == \
            [dla["trtexec"]]
    else:
        assert dla["onnx"] == "model.int8.trt.fp16.qdq.onnx" and dla["calibration_cache"] is None
    dry = run_cli("build", str(out), "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["engines"]["int8-dla"] == dla
    readable = run_cli("build", str(out), "--dry-run")
    assert readable.returncode == 0 and "int8-dla" in readable.stdout and "--useDLACore=0" in readable.stdout


def test_dry_run_and_version_flags_refuse_bad_combinations(tmp_path):
    res = run_inprocess("export", "default", "--target", "ort", "--trt-version", "10.3", "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "--target trt" in res.stderr and "Traceback" not in res.stderr
    for version in ("11.2", "10.13"):  # no DLA: 11.0-11.4.0, and 10.8+ (10.7 was the last 10.x with DLA)
        res = run_inprocess("export", "default", "--target", "trt", "--prepare-only", "--trt-version", version,
                      "--dla-core", "0", "--out", str(tmp_path / "y"))
        assert res.returncode == 2 and "DLA" in res.stderr and not (tmp_path / "y").exists()
    res = run_inprocess("build", str(tmp_path), "--trt-version", "11")
    assert res.returncode == 2 and "--dry-run" in res.stderr


def test_a_weight_beyond_float16_is_refused_in_one_line():
    from onnx import helper, numpy_helper

    from edgeresnet.backends.tensorrt.fp16 import to_fp16
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
    from edgeresnet.backends.tensorrt.bundle import calibration_cache
    from edgeresnet.backends.tensorrt.build import retarget_cache
    from edgeresnet.bundle import Bundle

    scales = {"input": 0.0125, "/conv1/Conv_output_0": 0.3}
    root = make_bundle(tmp_path / "exp", {"trt/calibration.cache": calibration_cache(scales, "8.5.2").encode()})
    assert retarget_cache(Bundle(root), "calibration.cache", "10.3.0") is True
    header, back = parse_calibration_cache((root / "trt" / "calibration.cache").read_text())
    assert header == "TRT-100300-EntropyCalibration2" and back == pytest.approx(scales, rel=1e-7)
    assert retarget_cache(Bundle(root), "calibration.cache", "10.3.0") is False
    assert sorted(p.name for p in (root / "trt").iterdir()) == ["calibration.cache"]  # no temp file left
    assert sorted(p.name for p in root.iterdir()) == ["edgeresnet.json", "trt"]


def test_an_import_error_is_reported_as_what_it_is():
    """A missing module names the module; a module that is there but fails to load (a missing
    libnvinfer.so.8, say) is reported with its own message, not as "not installed"."""
    from edgeresnet.backends.tensorrt.backend import import_error_reason

    missing = ModuleNotFoundError("No module named 'tensorrt'", name="tensorrt")
    assert import_error_reason(missing) == "TensorRT is not installed (no module named 'tensorrt')"
    broken = ImportError("libnvinfer.so.8: cannot open shared object file: No such file or directory")
    reason = import_error_reason(broken)
    assert "libnvinfer.so.8" in reason and "not installed" not in reason


def test_the_dla_float_layers_follow_qdq_translators_rule():
    """qdq-translator's rule (Deep-Learning-Accelerator-SW): scales carried through ops that do not
    rescale (Relu, MaxPool, Flatten, ...) forward and back, then every consumer of a tensor still
    without a scale is FP16 by name. A pre-ReLU conv output takes its ReLU's scale, so the ReLU is
    not listed; the classifier reads a tensor kept scale-less on purpose, so it is."""
    from onnx import helper, numpy_helper

    from edgeresnet.backends.tensorrt.bundle import implicit_float_layers

    w = numpy_helper.from_array(np.ones((4, 1, 3, 3), np.float32), "w")
    fc = numpy_helper.from_array(np.ones((10, 4), np.float32), "fc_w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="/conv1/Conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="/relu/Relu"),
             helper.make_node("Conv", ["r", "w2"], ["c2"], name="/conv2/Conv"),
             helper.make_node("GlobalAveragePool", ["c2"], ["g"], name="/avgpool/GlobalAveragePool"),
             helper.make_node("Flatten", ["g"], ["f"], name="/Flatten"),
             helper.make_node("Gemm", ["f", "fc_w"], ["logits"], name="/fc/Gemm", transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], [w, fc])
    scales = {"x": 0.01, "r": 0.02, "c2": 0.03, "g": 0.03}
    assert implicit_float_layers(graph, scales, keep_float={"/fc/Gemm"}) == ["/fc/Gemm"]
    # without the classifier kept float, the GAP scale flows through Flatten and nothing is float
    assert implicit_float_layers(graph, scales) == []
    # a conv kept in float by --max-drop: the cache holds no scale for its input, so it and the ReLU that
    # makes that input (whose own input has none either) are FP16 by name
    assert implicit_float_layers(graph, {"x": 0.01, "c2": 0.03, "g": 0.03}, {"/conv2/Conv", "/fc/Gemm"}) == \
        ["/relu/Relu", "/conv2/Conv", "/fc/Gemm"]
