"""The TensorRT device side (edgeresnet/ondevice/trt_device.py) end to end on the TEST DOUBLES in
tests/trt_standin (a numpy-backed tensorrt whose names are NVIDIA's bindings for the line its
__version__ names, and a host-memory libcudart): build -> eval -> bench for every line, DLA's
padded static batch, one execution context per thread, the bundle checks, Python 3.8 and the
oldest numpy. Nothing here ran on a GPU or a real TensorRT."""

from __future__ import annotations

import ast
import glob
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from edgeresnet.ondevice import trt_device as td

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "tests" / "trt_standin"
API = ROOT / "tests" / "data" / "trt_api"
DEVICE_FILE = ROOT / "edgeresnet" / "ondevice" / "trt_device.py"
LINES = {"8.5.2.2": ("8.5", "release-8.5"), "10.3.0.30": ("10.3", "release-10.3"), "11.1.0.5": ("11", "release-11.1")}
FAST = ["--duration", "0.05", "--warmup-ms", "5", "--iterations", "3"]


# ----------------------------------------------------------------------------- a tiny bundle

def tiny_onnx(qdq: bool = False) -> bytes:
    """input [N,1,2,2] -> (Q/DQ) -> Flatten -> Gemm -> logits [N,3]: ops the stand-in's numpy
    interpreter runs, so the same bundle works on Python 3.8 without onnxruntime."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.RandomState(1).standard_normal((4, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.zeros(3, np.float32), "B")]
    nodes, src = [], "input"
    if qdq:
        inits += [numpy_helper.from_array(np.array(1 / 32, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"], name="quant"),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="dequant")]
        src = "dq"
    nodes += [helper.make_node("Flatten", [src], ["flat"], name="flatten", axis=1),
              helper.make_node("Gemm", ["flat", "W", "B"], ["logits"], name="gemm")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 2, 2])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def engine(onnx: str, flags: list, profile=(1, 8, 32), **fields) -> dict:
    """One ENGINE in the contract's shape (PREAMBLE: rec's plans carry exactly these fields)."""
    return {"onnx": onnx, "builder_flags": flags, "strongly_typed": False, "tf32": True,
            "profile": dict(zip(("min", "opt", "max"), profile)), "dla_core": None, "calibration_cache": None,
            "layer_precisions": {}, "precision_constraints": None, "expected_float_layers": [], "trtexec": "", **fields}


def weak_plan(line: str, header: str) -> dict:
    """8.x / 10.x: builder flags; DLA INT8 the NVIDIA way (FP32 ONNX + cache + INT8/FP16 + fallback)."""
    return {"trt_line": line, "trt_label": f"TensorRT {line}", "cache_header": header, "engines": {
        "fp32": engine("../model.fp32.onnx", [], tf32=False),
        "fp16": engine("../model.fp32.onnx", ["FP16"]),
        "int8": engine("model.int8.qdq.onnx", ["INT8", "FP16"]),
        "int8-dla": engine("../model.fp32.onnx", ["INT8", "FP16", "GPU_FALLBACK"], (8, 8, 8), dla_core=0,
                           calibration_cache="calibration.cache", layer_precisions={"gemm": "fp16"},
                           precision_constraints="prefer")}}


def strong_plan() -> dict:
    """11.x: strongly typed, no precision flags, no calibrator; DLA (AGX Orin, 11.4+) from the Q/DQ file."""
    return {"trt_line": "11", "trt_label": "TensorRT 11.x", "cache_header": None, "engines": {
        "fp32": engine("../model.fp32.onnx", [], strongly_typed=True, tf32=False),
        "fp16": engine("model.fp16.onnx", [], strongly_typed=True),
        "int8": engine("model.int8.qdq.onnx", [], strongly_typed=True),
        "int8-dla": engine("model.int8.qdq.onnx", ["GPU_FALLBACK"], (8, 8, 8), strongly_typed=True, dla_core=0)}}


PLANS = {"8.5": weak_plan("8.5", "TRT-8502-EntropyCalibration2"), "10.3": weak_plan("10.3", "TRT-100300-EntropyCalibration2"),
         "11": strong_plan()}
PLAN_LINES = [{"line": "8.5", "min_version": "8.5", "max_version": "8.6"},
              {"line": "10.3", "min_version": "10.0", "max_version": "10"},
              {"line": "11", "min_version": "11.0", "max_version": None}]
MEAN, STD = 0.5, 0.25


def tiny_logits(images: np.ndarray) -> np.ndarray:
    import onnx
    from onnx import numpy_helper

    w = {i.name: numpy_helper.to_array(i) for i in onnx.load_from_string(tiny_onnx()).graph.initializer}
    x = (images.astype(np.float32) / np.float32(255.0) - np.float32(MEAN)) / np.float32(STD)
    return x.transpose(0, 3, 1, 2).reshape(len(x), -1) @ w["W"] + w["B"]


def make_tiny_bundle(root: Path, plans: dict | None = None, images: int = 40) -> Path:
    """An export folder with model.fp32.onnx and trt/ (plans, Q/DQ and FP16 ONNX, calibration
    cache, eval.npz), hashed in edgeresnet.json as an export hashes it. Returns trt/."""
    from edgeresnet.bundle.manifest import write_manifest

    trt = root / "trt"
    trt.mkdir(parents=True)
    (root / "model.fp32.onnx").write_bytes(tiny_onnx())
    (trt / "model.int8.qdq.onnx").write_bytes(tiny_onnx(qdq=True))
    (trt / "model.fp16.onnx").write_bytes(tiny_onnx())  # stands for 11's FP16-typed copy
    (trt / "calibration.cache").write_text("TRT-8502-EntropyCalibration2\ninput: 3c010204\nflat: 3c010204\n")
    pixels = np.random.RandomState(2).randint(0, 256, (images, 2, 2, 1)).astype(np.uint8)
    np.savez_compressed(trt / "eval.npz", images=pixels, labels=tiny_logits(pixels).argmax(1).astype(np.int64),
                        labelled=np.asarray(True), mean=np.array([MEAN], np.float32), std=np.array([STD], np.float32),
                        classes=np.array(["a", "b", "c"]), source=np.asarray("tiny"))
    (trt / "build.json").write_text(json.dumps({"input_name": "input", "plans": plans or PLANS, "lines": PLAN_LINES}))
    shutil.copyfile(DEVICE_FILE, trt / "trt_device.py")
    write_manifest(root, {"model": {"input_shape": [1, 1, 2, 2]}, "results": []}, {})
    return trt


# ----------------------------------------------------------------------------- the test doubles

def _drop_standin() -> None:
    for name in [m for m in sys.modules if m == "tensorrt" or m.startswith("tensorrt.") or m == "fake_cudart"]:
        del sys.modules[name]


@pytest.fixture
def standin(monkeypatch):
    """(tensorrt stand-in, fake libcudart) wired into trt_device for one test."""
    _drop_standin()
    monkeypatch.syspath_prepend(str(STANDIN))
    import fake_cudart
    import tensorrt

    tensorrt.USED.clear()
    tensorrt.CONTEXT_THREADS.clear()
    fake = fake_cudart.FakeCudart()
    monkeypatch.setattr(td, "_CUDA", td.CudartLibrary(fake, "fake_cudart (test double)"))
    yield tensorrt, fake
    _drop_standin()


def run_device(bundle: Path, *args: str) -> int:
    return td.main([args[0], "--bundle", str(bundle), *args[1:]])


def rows_of(bundle: Path, command: str) -> dict:
    doc = json.loads((bundle / f"device.{command}.json").read_text())
    assert doc["format"] == td.FORMAT
    return {(r["precision"], r["batch"], r["mode"]): r for r in doc["rows"]}


def api_names(branch: str) -> set:
    return {ln.strip() for ln in (API / f"{branch}.txt").read_text().splitlines() if ln.strip() and not ln.startswith("#")}


def used_fixture() -> dict:
    """tests/data/trt_api/used.txt: the names trt_device touches, each with the lines it uses them on."""
    used = {}
    for ln in (API / "used.txt").read_text().splitlines():
        if ln.strip() and not ln.startswith("#"):
            name, lines = ln.split()
            used[name] = set(lines.split(","))
    return used


# ----------------------------------------------------------------------------- end to end per line

@pytest.mark.parametrize("version", list(LINES))
def test_build_eval_bench_on_every_line(tmp_path, standin, version):
    trt, fake = standin
    trt.__version__ = version
    line, branch = LINES[version]
    bundle = make_tiny_bundle(tmp_path / "exp")
    assert run_device(bundle, "build") == 0
    built = rows_of(bundle, "build")
    assert {k[0] for k in built} == {"fp32", "fp16", "int8", "int8-dla"}
    for (name, _, _), row in built.items():
        assert row["status"] == "ok" and row["details"]["trt_line"] == line
        assert (bundle / f"model.{name}.engine").is_file()
        assert "Layers" in json.loads((bundle / f"model.{name}.layers.json").read_text())
    assert built[("fp32", 1, "latency")]["details"]["tf32"] is False
    dla = built[("int8-dla", 1, "latency")]
    assert dla["details"]["device"] == "DLA core 0 (GPU fallback)" and dla["engine_batch"] == 8
    if line != "11":  # implicit INT8 from the cache, its header retargeted to the TensorRT found
        assert dla["details"]["cache_header"] == f"TRT-{td.version_code(version)}-EntropyCalibration2"
        assert dla["details"]["layer_precisions_set"] == 1 and "PREFER_PRECISION_CONSTRAINTS" in dla["details"]["builder_flags"]

    assert run_device(bundle, "eval") == 0
    evaluated = rows_of(bundle, "eval")
    assert evaluated[("fp32", 1, "latency")]["top1"] == 1.0  # labels are the model's own argmax
    for row in evaluated.values():
        assert row["agreement"] >= 0.9 and row["details"]["eval_images"] == 40

    assert run_device(bundle, "bench", "--batch", "1,3", "--mode", "latency,throughput", "--threads", "3", *FAST) == 0
    benched = rows_of(bundle, "bench")
    assert len(benched) == 4 * 2 * 2
    for (name, batch, mode), row in benched.items():
        assert row["status"] == "ok" and row["latency_ms"]["samples"] >= 3
        assert row["gpu_compute_ms"]["samples"] == row["h2d_ms"]["samples"] == row["latency_ms"]["samples"]
        assert row["engine_batch"] == (8 if name == "int8-dla" else batch)
        assert row["per_image_ms"] == pytest.approx(row["latency_ms"]["p50"] / row["engine_batch"])
        assert row["threads"] == (3 if mode == "throughput" else 1)
        assert row["avg_w"] == "n/a" and row["energy_na_reason"]  # the telemetry placeholder, never a figure
    assert not trt.USED - api_names(branch)  # the stand-in allows nothing else, so this always holds
    missing = {n for n in trt.USED if line.split(".")[0] not in {v.split(".")[0] for v in used_fixture().get(n, ())}}
    assert not missing, f"add these to tests/data/trt_api/used.txt: {sorted(missing)}"


def test_the_api_trt_device_uses_exists_on_each_line_it_claims():
    """Every name in the used-API fixture is in NVIDIA's bindings (release/8.5, 10.3, 11.1) for
    each line it is marked with: pyCore.cpp, pyInt8.cpp, pyOnnx.cpp, pyFoundationalTypes.cpp."""
    lists = {branch.split("-")[1]: api_names(branch) for _, branch in LINES.values()}
    for name, lines in used_fixture().items():
        for line in lines:
            assert name in lists[line], f"{name} is not in release-{line}'s bindings"
    for branch in ("release-8.5", "release-10.3", "release-11.1"):
        head = (API / f"{branch}.txt").read_text().splitlines()[0]
        assert head.startswith(f"# https://github.com/NVIDIA/TensorRT/tree/{branch.replace('-', '/')}/python at ")


def test_the_row_has_the_reports_keys():
    from edgeresnet.report.schema import ResultRow, row_problem

    assert set(td.ROW) == set(ResultRow.__dataclass_fields__)
    row = td.make_row("int8", latency_ms={"p50": 1.0, "cv_pct": 2.0}, avg_w="n/a", engine_batch=8, per_image_ms=0.1)
    assert row_problem(row) is None
    assert ResultRow(**row).to_dict() == row


# ----------------------------------------------------------------------------- DLA: padded static batches

def _engine(trt, bundle: Path, name: str, version: str = "10.3.0.30"):
    trt.__version__ = version
    b = td.DeviceBundle(str(bundle))
    line, plan = td.select_plan(b.build_json(), version)
    td.build_engine(trt, b, name, plan["engines"][name], line=line)
    return td.load_engine(trt, (bundle / td.engine_file(name)).read_bytes(), plan["engines"][name]["dla_core"])


def test_a_static_engine_pads_the_last_chunk_and_drops_the_padding(tmp_path, standin):
    trt, fake = standin
    bundle = make_tiny_bundle(tmp_path / "exp")
    info = _engine(trt, bundle, "int8-dla")
    assert info.static and info.profile == (8, 8, 8) and info.engine_batch(1) == 8
    data = td.load_eval(td.DeviceBundle(str(bundle)), limit=13)
    runner = td.Runner(info)
    logits = td.predict_all(runner, data)
    runner.close()
    assert logits.shape == (13, 3)  # 8 + 5 real images; the 3 padding images are gone
    assert np.allclose(logits, tiny_logits(data["images"]), atol=1e-4)
    assert fake.calls.count("cudaMemcpyAsync:1") == 2  # two batches of 8 went to the "device"
    assert not fake.memory and not fake.streams  # every buffer and stream freed


def test_batch_one_on_a_dla_engine_says_what_it_ran(tmp_path, standin):
    trt, _ = standin
    info = _engine(trt, make_tiny_bundle(tmp_path / "exp"), "int8-dla")
    block = td.bench_engine(info, batch=1, duration_s=0.05, warmup_ms=5, iterations=5)
    d = block["details"]
    assert (d["engine_batch"], d["requested_batch"], d["padding_images"]) == (8, 1, 7)
    assert "batch 8 (1 image + 7 padding)" in d["ran"] and "static" in d["ran"]
    assert block["row"]["per_image_ms"] == pytest.approx(block["latency_ms"]["p50"] / 8)
    images_per_call = block["throughput_ips"] * block["latency_ms"]["mean"] / 1e3
    assert images_per_call == pytest.approx(1, rel=0.3)  # useful images: the padding is not counted
    with pytest.raises(td.DeviceError, match="above the engine's profile"):
        td.bench_engine(info, batch=9, duration_s=0.01, warmup_ms=0)


def test_a_dynamic_engine_chunks_by_its_profile(tmp_path, standin):
    trt, fake = standin
    plans = json.loads(json.dumps(PLANS))
    plans["10.3"]["engines"]["fp32"]["profile"] = {"min": 1, "opt": 2, "max": 4}
    bundle = make_tiny_bundle(tmp_path / "exp", plans)
    runner = td.Runner(_engine(trt, bundle, "fp32"))
    x = np.random.RandomState(0).standard_normal((10, 1, 2, 2)).astype(np.float32)
    y = runner(x)
    assert y.shape == (10, 3) and fake.calls.count("cudaMemcpyAsync:1") == 3 == fake.calls.count("cudaMemcpyAsync:2")
    assert runner(x[:0]).shape == (0, 3)
    runner.close()


# ----------------------------------------------------------------------------- threads

def test_throughput_gives_every_thread_its_own_context(tmp_path, standin):
    trt, _ = standin
    info = _engine(trt, make_tiny_bundle(tmp_path / "exp"), "fp32")
    block = td.bench_engine(info, batch=2, mode="throughput", requests=4, duration_s=0.1, warmup_ms=5, iterations=5)
    assert block["requests"] == 4 and block["throughput_ips"] > 0
    assert len(trt.CONTEXT_THREADS) == 4  # four contexts ...
    assert all(len(threads) == 1 for threads in trt.CONTEXT_THREADS.values())  # ... each run by one thread
    assert len({t for threads in trt.CONTEXT_THREADS.values() for t in threads}) == 4


def test_the_standin_refuses_one_context_on_two_threads(tmp_path, standin):
    """The check above means something: sharing a Lane (context, stream, buffers) across
    threads, as the old throughput mode did, raises in the stand-in."""
    trt, _ = standin
    trt.STATE["execute_ms"] = 5
    lane = td.Lane(_engine(trt, make_tiny_bundle(tmp_path / "exp"), "fp32"), td.open_cuda(), 2)
    errors = []

    def hammer() -> None:
        try:
            for _ in range(20):
                lane.run(2)
        except RuntimeError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lane.close()
    assert errors and "two threads at once" in errors[0]


# ----------------------------------------------------------------------------- plans, lines, refusals

@pytest.mark.parametrize("version, line", [("8.5.2.2", "8.5"), ("8.6.1", "8.5"), ("10.3.0.30", "10.3"),
                                           ("10.13.1", "10.3"), ("11.4.0", "11")])
def test_a_version_picks_its_plan_by_the_lines_table(version, line):
    assert td.select_plan({"plans": PLANS, "lines": PLAN_LINES}, version)[0] == line


def test_a_version_without_a_plan_is_exit_4_naming_the_lines():
    with pytest.raises(td.DeviceError, match="no plan for TensorRT 7.1") as err:
        td.select_plan({"plans": PLANS, "lines": PLAN_LINES}, "7.1.3")
    assert err.value.code == td.EXIT_UNAVAILABLE and "8.5" in err.value.hint
    with pytest.raises(td.DeviceError, match="no 'plans'") as err:
        td.select_plan({"trt_line": "10"}, "10.3")
    assert err.value.code == td.EXIT_INPUT


def test_a_plan_for_another_line_fails_its_engine_not_the_run(tmp_path, standin, capsys):
    """A 10.x plan run by TensorRT 11 (no BuilderFlag.INT8, no calibrators): the engines that
    cannot be built are failed rows naming the missing API, the rest build, exit code 1."""
    trt, _ = standin
    trt.__version__ = "11.1.0.5"
    plans = {**PLANS, "11": PLANS["10.3"]}
    bundle = make_tiny_bundle(tmp_path / "exp", plans)
    assert run_device(bundle, "build") == 1
    rows = rows_of(bundle, "build")
    assert rows[("fp32", 1, "latency")]["status"] == "ok"
    assert "has no BuilderFlag.FP16" in rows[("fp16", 1, "latency")]["reason"]
    assert rows[("int8-dla", 1, "latency")]["status"] == "failed"


def test_dla_on_a_device_without_dla_cores_is_one_line(tmp_path, standin):
    trt, _ = standin
    trt.STATE["dla_cores"] = 0
    with pytest.raises(td.DeviceError, match="this device has 0 DLA cores") as err:
        _engine(trt, make_tiny_bundle(tmp_path / "exp"), "int8-dla")
    assert err.value.code == td.EXIT_UNAVAILABLE


def test_the_cache_header_is_retargeted_and_a_stale_one_fails_the_build(tmp_path, standin):
    """TensorRT skips a cache whose header names another version and calibrates instead; a
    calibrator without images then fails. trt_device rewrites the header in memory."""
    trt, _ = standin
    trt.__version__ = "10.3.0.30"
    cache, was, now = td.retarget_cache(b"TRT-8502-EntropyCalibration2\ninput: 3c010204\n", trt.__version__)
    assert (was, now) == ("TRT-8502-EntropyCalibration2", "TRT-100300-EntropyCalibration2")
    assert cache == b"TRT-100300-EntropyCalibration2\ninput: 3c010204\n"
    bundle = td.DeviceBundle(str(make_tiny_bundle(tmp_path / "exp")))
    plan = td.select_plan(bundle.build_json(), trt.__version__)[1]["engines"]["int8-dla"]
    stale = td.retarget_cache(bundle.read("calibration.cache"), "8.5.2")[0]
    original = td.retarget_cache
    try:
        td.retarget_cache = lambda data, version: (stale, "", "")  # what a build without the rewrite would read
        with pytest.raises(td.DeviceError, match="could not build"):
            td.build_engine(trt, bundle, "int8-dla", plan)
    finally:
        td.retarget_cache = original
    assert td.build_engine(trt, bundle, "int8-dla", plan)["cache_header_was"] == "TRT-8502-EntropyCalibration2"


def test_an_edited_or_outside_bundle_file_is_refused(tmp_path, standin):
    trt, _ = standin
    bundle = make_tiny_bundle(tmp_path / "exp")
    build = json.loads((bundle / "build.json").read_text())
    build["plans"]["10.3"]["engines"]["fp32"]["onnx"] = "../../../etc/passwd"
    (bundle / "build.json").write_text(json.dumps(build))
    assert run_device(bundle, "build") == td.EXIT_INPUT  # build.json no longer matches its hash
    assert run_device(bundle, "build", "--no-verify") == 1  # unchecked: the outside path is still refused
    assert "outside the bundle" in rows_of(bundle, "build")[("fp32", 1, "latency")]["reason"]
    (bundle.parent / "edgeresnet.json").unlink()
    assert run_device(bundle, "eval") == td.EXIT_INPUT


def test_flags_are_checked_as_usage_errors(tmp_path, standin, capsys):
    bundle = make_tiny_bundle(tmp_path / "exp")
    with pytest.raises(SystemExit) as err:
        run_device(bundle, "bench", "--batch", "0")
    assert err.value.code == td.EXIT_USAGE
    assert run_device(bundle, "bench", "--engines", "int4") == td.EXIT_USAGE
    assert "the plan has fp32, fp16, int8, int8-dla" in capsys.readouterr().err


# ----------------------------------------------------------------------------- CUDA layer

def test_cuda_errors_are_one_line_with_the_cuda_name(tmp_path, standin):
    trt, fake = standin
    info = _engine(trt, make_tiny_bundle(tmp_path / "exp"), "fp32")
    fake.fail["cudaMalloc"] = 2
    with pytest.raises(td.DeviceError, match=r"CUDA cudaMalloc failed: cudaErrorMemoryAllocation \(2\)") as err:
        td.Runner(info)
    assert err.value.code == td.EXIT_UNAVAILABLE


def test_no_libcudart_is_exit_4_naming_where_jetpack_keeps_it(monkeypatch):
    monkeypatch.setattr(td, "_CUDA", None)
    monkeypatch.setenv(td.CUDART_ENV, "/nonexistent/libcudart.so.12")
    with pytest.raises(td.DeviceError, match="no CUDA runtime library") as err:
        td.open_cuda()
    assert err.value.code == td.EXIT_UNAVAILABLE and "/usr/local/cuda/lib64" in err.value.hint


def test_the_library_search_covers_jetpack_and_cuda_11_and_12():
    names = td._cudart_candidates()
    assert names[:4] == ["libcudart.so", "libcudart.so.12", "libcudart.so.13", "libcudart.so.11.0"]
    assert "/usr/local/cuda/targets/aarch64-linux/lib" in td.CUDART_DIRS


# ----------------------------------------------------------------------------- Python 3.8, numpy, imports

ALLOWED = {"__future__", "numpy", "tensorrt", "cuda", "pynvml"}


def test_the_device_file_imports_only_stdlib_numpy_tensorrt_and_cuda():
    tree = ast.parse(DEVICE_FILE.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import: the file must run outside the package"
            found.add(node.module.split(".")[0])
    assert found - ALLOWED <= set(sys.stdlib_module_names), found - ALLOWED - set(sys.stdlib_module_names)
    assert {"numpy", "tensorrt"} <= found and "edgeresnet" not in found


def test_help_runs_without_tensorrt():
    res = subprocess.run([sys.executable, str(DEVICE_FILE), "bench", "--help"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": ""})
    assert res.returncode == 0 and "--warmup-ms" in res.stdout and "trtexec" in res.stdout


def test_the_device_file_is_python_3_8_by_vermin():
    """vermin --target=3.8-: no syntax, module or function newer than Python 3.8 (JetPack 5)."""
    vermin = Path(sys.executable).with_name("vermin")  # the dev extra's console script, beside this Python
    if not vermin.exists():
        found = shutil.which("vermin")
        if not found:
            pytest.skip("vermin is not installed here (pip install vermin; it is in the dev extra)")
        vermin = Path(found)
    res = subprocess.run([str(vermin), "--target=3.8-", "--no-tips", "--eval-annotations", "--violations", str(DEVICE_FILE)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def _python38() -> str | None:
    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.8*/bin/python"))) or \
        [p for p in (shutil.which("python3.8"),) if p]
    return found[-1] if found else None


def test_the_device_file_compiles_on_python_3_8():
    python = _python38()
    if python is None:
        pytest.skip("no Python 3.8 interpreter here")
    res = subprocess.run([python, "-c", "import ast, sys; ast.parse(open(sys.argv[1]).read(), feature_version=(3, 8)); "
                          "compile(open(sys.argv[1]).read(), sys.argv[1], 'exec')", str(DEVICE_FILE)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


@pytest.fixture(scope="session")
def py38_numpy117(tmp_path_factory):
    """A Python 3.8 venv with only numpy 1.17.3, the oldest numpy with a Python 3.8 wheel."""
    python = _python38()
    if python is None:
        pytest.skip("no Python 3.8 interpreter here")
    venv = tmp_path_factory.mktemp("py38") / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "numpy==1.17.3"], capture_output=True, text=True)
    if pip.returncode != 0:
        pytest.skip(f"numpy 1.17.3 did not install (no package index?): {pip.stderr.strip()[-200:]}")
    return venv / "bin" / "python"


@pytest.mark.slow
def test_build_eval_bench_on_python_3_8_with_numpy_1_17(tmp_path, py38_numpy117):
    """JetPack 5's Python with the oldest numpy: --help with numpy only, then the bundle's own copy
    of the device file runs build -> eval -> bench on the stand-in (numpy interpreter, no ORT)."""
    bundle = make_tiny_bundle(tmp_path / "exp")
    device = str(bundle / "trt_device.py")
    res = subprocess.run([str(py38_numpy117), device, "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "build" in res.stdout, res.stderr
    env = {**os.environ, "PYTHONPATH": str(STANDIN), "TRT_STANDIN_VERSION": "8.5.2.2",
           td.CUDART_ENV: "fake_cudart:library"}
    version = subprocess.run([str(py38_numpy117), "-c", "import sys, numpy; print(sys.version_info[:2], numpy.__version__)"],
                             capture_output=True, text=True)
    assert version.stdout.strip() == "(3, 8) 1.17.3"
    for command in (["build"], ["eval"], ["bench", "--batch", "1,4", "--mode", "latency,throughput", *FAST]):
        res = subprocess.run([str(py38_numpy117), device, *command], capture_output=True, text=True, env=env,
                             cwd=bundle.parent, timeout=300)
        assert res.returncode == 0, res.stderr
    rows = rows_of(bundle, "bench")
    assert rows[("int8-dla", 1, "latency")]["engine_batch"] == 8 and rows[("fp32", 4, "throughput")]["status"] == "ok"
    assert json.loads((bundle / "device.bench.json").read_text())["numpy"] == "1.17.3"


# ----------------------------------------------------------------------------- the package's side

def test_the_bundles_eval_images_normalise_on_the_device_as_in_the_package(tmp_path, test_set):
    """trt/eval.npz holds the export's evaluation images before normalisation; the device's
    numpy normalisation gives the package's model input bit for bit."""
    from types import SimpleNamespace

    from edgeresnet.backends.tensorrt.backend import write_device_files
    from edgeresnet.data import Preprocess

    pre = Preprocess(channels=1, size=28, mean=(0.2860,), std=(0.3530,))
    idx = np.arange(0, 3000, 7)
    bundle = tmp_path / "trt"
    bundle.mkdir()
    write_device_files(bundle, SimpleNamespace(evaluation_images=lambda: (test_set, pre, idx)))
    assert (bundle / "trt_device.py").read_bytes() == DEVICE_FILE.read_bytes()
    data = td.load_eval(td.DeviceBundle(str(bundle), verify=False))
    assert len(data["labels"]) == len(idx) and data["labelled"] and data["classes"] == list(test_set.classes)
    assert np.array_equal(td.normalize(data["images"], data["mean"], data["std"]), test_set.batch(idx, pre))
    assert np.array_equal(data["labels"], test_set.labels[idx])
    assert (bundle / "eval.npz").stat().st_size < 1 << 20


def test_bundles_without_plans_build_from_the_recipes_plan():
    """Bundles written before build.json had per-line plans: the package makes the plan its recipe
    would, with every field trt_device reads."""
    from edgeresnet.backends.tensorrt.backend import plan_for
    from edgeresnet.errors import UsageError

    old = {"input_name": "input", "input_chw": [1, 28, 28], "batch_range": [1, 8, 32], "dla_core": 0, "float_nodes": []}
    line, plan = plan_for(old, "10.3.0")
    assert line == "10.3" and list(plan["engines"]) == ["int8", "fp16", "fp32", "int8-dla", "fp16-dla"]
    for name, e in plan["engines"].items():
        td.check_engine_plan(name, e)
    assert plan["engines"]["int8"]["dla_core"] is None and plan["engines"]["fp32"]["dla_core"] is None
    dla = plan["engines"]["int8-dla"]  # NVIDIA's DLA recipe: the FP32 ONNX and the calibration cache
    assert (dla["dla_core"], dla["onnx"], dla["calibration_cache"]) == (0, "../model.fp32.onnx", "calibration.cache")
    line, plan = plan_for({"plans": PLANS, "lines": PLAN_LINES}, "8.5.2", batch_range=(2, 4, 16), dla_core=0)
    assert line == "8.5" and plan["engines"]["fp32"]["profile"] == {"min": 2, "opt": 4, "max": 16}
    assert plan["engines"]["int8-dla"]["profile"] == {"min": 8, "opt": 8, "max": 8}  # static stays static
    assert PLANS["8.5"]["engines"]["fp32"]["profile"]["min"] == 1  # the bundle's record is untouched
    with pytest.raises(UsageError, match="--dla-core 1"):
        plan_for({"plans": PLANS, "lines": PLAN_LINES}, "8.5.2", dla_core=1)


@pytest.mark.slow
def test_export_build_bench_eval_through_the_package_on_the_standin(tmp_path):
    """`export --target trt --prepare-only`, then `edgeresnet build` and `bench` with the stand-in
    as the device's TensorRT: the package's own TensorRT path runs through trt_device (engines,
    accuracy rows, trtexec-like bench columns), and the bundle carries the device file."""
    from ..conftest import export_default, run_cli

    out = tmp_path / "exp"
    export_default(out, "--target", "trt", "--prepare-only", "--calib-size", "64", "--eval-limit", "100")
    manifest = json.loads((out / "edgeresnet.json").read_text())
    assert {"trt/trt_device.py", "trt/eval.npz"} <= set(manifest["files"])
    res = subprocess.run([sys.executable, str(out / "trt" / "trt_device.py"), "--help"], capture_output=True, text=True)
    assert res.returncode == 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(STANDIN)]), "TRT_STANDIN_VERSION": "10.3.0.30",
           td.CUDART_ENV: "fake_cudart:library"}
    res = run_cli("build", str(out), "--eval-limit", "100", env=env)
    assert res.returncode == 0, res.stderr
    rows = {r["precision"]: r for r in json.loads((out / "report.json").read_text())["results"] if r["target"] == "trt"}
    assert list(rows) == ["fp32", "fp16", "int8"] and all(r["status"] == "ok" for r in rows.values())
    assert rows["fp32"]["top1"] > 0.8 and rows["int8"]["agreement"] > 0.95
    assert rows["int8"]["details"]["trt_line"] == "10.3" and rows["fp32"]["details"]["tf32"] is False
    assert rows["int8"]["gpu_compute_ms"]["samples"] > 0 and rows["int8"]["engine_batch"] == 1
    res = run_cli("bench", str(out), "--target", "trt", "--mode", "latency,throughput", "--min-seconds", "0.2", env=env)
    assert res.returncode == 0, res.stderr
    bench = json.loads((out / "bench.json").read_text())["results"]
    throughput = [r for r in bench if r["mode"] == "throughput"]
    assert len(throughput) == 3 and all(r["details"]["requests"] == 2 and r["h2d_ms"]["samples"] for r in throughput)
    assert all(r["avg_w"] == "n/a" and "no INA3221 rails" in r["energy_na_reason"] for r in bench)  # this machine: why, no figure


def test_cuda_python_is_used_the_same_way_when_installed(tmp_path, standin, monkeypatch):
    """cuda-python's convention ((error, *values) tuples, enum copy kinds) through the same fake."""
    trt, fake = standin
    import fake_cudart

    monkeypatch.setattr(td, "_CUDA", td.CudaPython(fake_cudart.CudaPythonStyle(fake), "cuda.bindings.runtime (fake)"))
    info = _engine(trt, make_tiny_bundle(tmp_path / "exp"), "int8-dla")
    block = td.bench_engine(info, batch=3, duration_s=0.02, warmup_ms=1, iterations=3)
    assert block["row"]["engine_batch"] == 8 and "cuda-python" in block["details"]["cuda"]
    fake.fail["cudaMallocHost"] = 2
    with pytest.raises(td.DeviceError, match="cudaErrorMemoryAllocation") as err:
        td.Runner(info)
    assert "cuda-python's major" in err.value.hint


def test_a_cuda_python_that_does_not_work_falls_back_to_libcudart(monkeypatch, capsys):
    """cuda-python newer than the driver (pip picks 12.9 on JetPack 6's 12.2/12.6 drivers) fails its
    first call; libcudart, which JetPack ships matched, still works."""
    sys.path.insert(0, str(STANDIN))
    try:
        import fake_cudart
    finally:
        sys.path.remove(str(STANDIN))
    broken = fake_cudart.FakeCudart()
    broken.fail["cudaGetDeviceCount"] = 35
    working = fake_cudart.FakeCudart()
    monkeypatch.setattr(td, "_CUDA", None)
    monkeypatch.delenv(td.CUDART_ENV, raising=False)
    monkeypatch.setattr(td, "_cuda_python", lambda: td.CudaPython(fake_cudart.CudaPythonStyle(broken), "cuda.bindings"))
    monkeypatch.setattr(td, "_load_library", lambda spec: (working, "libcudart.so.12"))
    cuda = td.open_cuda()
    assert cuda.kind == "ctypes" and cuda.device_count() == 1
    assert "cudaErrorInsufficientDriver" in capsys.readouterr().err
    sys.modules.pop("fake_cudart", None)


def test_a_failed_allocation_frees_what_was_allocated(tmp_path, standin):
    trt, fake = standin
    info = _engine(trt, make_tiny_bundle(tmp_path / "exp"), "fp32")
    fake.fail["cudaMalloc"] = 2  # after the stream, the events and the pinned buffers
    with pytest.raises(td.DeviceError, match="cudaMalloc"):
        td.Lane(info, td.open_cuda(), 4)
    assert not fake.memory and not fake.streams and not fake.events


def test_eval_without_images_says_how_to_get_them(tmp_path, standin, capsys):
    bundle = make_tiny_bundle(tmp_path / "exp")
    (bundle / "eval.npz").unlink()
    assert run_device(bundle, "build") == 0
    assert run_device(bundle, "eval") == td.EXIT_INPUT
    assert "no evaluation images" in capsys.readouterr().err


@pytest.mark.parametrize("board", ["orin", "xavier", "nano"])
def test_bench_rows_on_a_fixture_jetson_carry_power_clocks_and_energy(tmp_path, standin, monkeypatch, board):
    """The device file's own `bench --json` with its telemetry reading a fixture board's sysfs
    (tests/data/jetson/<board>): every row carries the power mode, the clock state, watts,
    mJ per image and images per joule, GPU compute next to wall time, and the throttling flag."""
    trt, _ = standin
    trt.__version__ = "10.3.0.30"
    bundle = make_tiny_bundle(tmp_path / "exp")
    assert run_device(bundle, "build", "--engines", "fp32,int8") == 0
    monkeypatch.setenv(td.SYSFS_ENV, str(Path(__file__).parents[1] / "data" / "jetson" / board))
    assert run_device(bundle, "bench", "--engines", "fp32,int8", *FAST) == 0
    for row in rows_of(bundle, "bench").values():
        assert isinstance(row["power_mode"], dict) and row["power_mode"]["name"]
        assert row["clocks_locked"] in (True, False) and row["clocks"] != "n/a"
        assert row["avg_w"] > 0 and row["mj_per_image"] > 0 and row["images_per_joule"] > 0
        assert row["energy_source"] == "ina3221" and row["throttled"] in (True, False)
        assert row["gpu_compute_ms"]["p50"] <= row["latency_ms"]["p50"]


def test_an_engine_without_the_tensor_api_says_so(tmp_path, standin, monkeypatch):
    """TensorRT 8.4 (JetPack 5.0.2) has only the bindings API: its engines build, but eval and
    bench stop with one line naming the upgrade, never an AttributeError."""
    trt, _ = standin
    bundle = make_tiny_bundle(tmp_path / "exp")
    _engine(trt, bundle, "fp32")  # built and loadable with the tensor API
    engine_type = type(trt.Runtime(trt.Logger()).deserialize_cuda_engine((bundle / td.engine_file("fp32")).read_bytes()))
    monkeypatch.delattr(engine_type, "num_io_tensors")
    with pytest.raises(td.DeviceError, match="bindings API only") as err:
        td.load_engine(trt, (bundle / td.engine_file("fp32")).read_bytes())
    assert err.value.code == 4 and "TensorRT 8.5.2" in err.value.hint
