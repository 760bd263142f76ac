"""`verify` on tiny real bundles (ONNX Runtime and OpenVINO run them; nothing is mocked): the
package command and the bundle's own device.py (run with a Python that cannot import
edgeresnet) reach the same verdicts; a corrupted INT8 scale fails and is never chosen;
verify.json is merged and read back with its types checked. The full export is `slow`."""

from __future__ import annotations

import glob
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeresnet.ondevice import device
from edgeresnet.bench.accuracy import fp32_reference
from edgeresnet.bundle.golden import write_golden
from edgeresnet.bundle.verify import (chosen_for, install_device_file, local_device_key, merge_entry, read_verify,
                                      verify_bundle)
from edgeresnet.data import Preprocess
from edgeresnet.data.sources import ArraySet
from edgeresnet.errors import InputError
from edgeresnet.bundle.manifest import write_manifest
from edgeresnet.report import ResultRow

from ..conftest import run_cli

PY38 = sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.8*/bin/python")))
PRE = Preprocess(1, 4, None, (0.5,), (0.5,))
CLASSES = ["a", "b", "c"]


def tiny_model(int8: bool = False, w_scale: float = 1 / 64):
    """input [N,1,4,4] -> (Q/DQ) -> Flatten -> MatMul(W, via DQ of int8 weights for int8) -> Add -> logits [N,3]."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.RandomState(0)
    w = rng.standard_normal((16, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(np.zeros(3, np.float32), "B")]
    nodes, src, weight = [], "input", "W"
    if int8:
        wq = np.clip(np.round(w / w_scale), -127, 127).astype(np.int8)
        inits += [numpy_helper.from_array(np.array(2 / 255, np.float32), "x_scale"),
                  numpy_helper.from_array(np.array(128, np.uint8), "x_zero"),
                  numpy_helper.from_array(wq, "W_q"), numpy_helper.from_array(np.array(w_scale, np.float32), "w_scale"),
                  numpy_helper.from_array(np.array(0, np.int8), "w_zero")]
        nodes += [helper.make_node("QuantizeLinear", ["input", "x_scale", "x_zero"], ["xq"], name="q_in"),
                  helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xdq"], name="dq_in"),
                  helper.make_node("DequantizeLinear", ["W_q", "w_scale", "w_zero"], ["W_dq"], name="dq_w")]
        src, weight = "xdq", "W_dq"
    else:
        inits.append(numpy_helper.from_array(w, "W"))
    nodes += [helper.make_node("Flatten", [src], ["flat"], name="flatten", axis=1),
              helper.make_node("MatMul", ["flat", weight], ["mm"], name="matmul"),
              helper.make_node("Add", ["mm", "B"], ["logits"], name="bias")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def make_verify_bundle(root: Path, openvino: bool = True, golden: bool = True) -> Path:
    """An export folder as `export` leaves it, made from tiny graphs: ORT fp32 + int8 (Q/DQ),
    OpenVINO fp32, device.py, golden.npz with each artifact's figures from the package's backends."""
    import onnx

    root.mkdir(parents=True)
    onnx.save(tiny_model(), str(root / "model.fp32.onnx"))
    onnx.save(tiny_model(int8=True), str(root / "model.int8.ort.onnx"))
    rows = [ResultRow("ort", "fp32", artifact="model.fp32.onnx", details={}),
            ResultRow("ort", "int8", artifact="model.int8.ort.onnx", details={}, kernel="any")]
    if openvino:
        import openvino as ov

        ov.save_model(ov.convert_model(str(root / "model.fp32.onnx")), str(root / "model.fp32.openvino.xml"),
                      compress_to_fp16=False)
        rows.append(ResultRow("openvino", "fp32", artifact="model.fp32.openvino.xml", details={}))
    images = np.random.RandomState(3).randint(0, 256, (300, 4, 4, 1)).astype(np.uint8)
    flat = PRE.normalize(images).reshape(300, -1)
    labels = (flat @ np.asarray(onnx.numpy_helper.to_array(tiny_model().graph.initializer[1]))).argmax(1)
    labels[:30] = (labels[:30] + 1) % 3  # top-1 90%: labels are not the model's own answers
    data = ArraySet(images, labels.astype(np.int64), CLASSES, "tiny [test]")
    meta = None
    if golden:
        meta = write_golden(root, data, np.arange(300), PRE, fp32_reference(None, root / "model.fp32.onnx"), rows,
                            {}, {"source": data.source, "split": "test"})
    install_device_file(root)
    report = {"model": {"arch": "tiny", "input_shape": [1, 1, 4, 4], "classes": CLASSES, "preprocess": PRE.to_dict()},
              "results": [r.to_dict() for r in rows], "golden": meta}
    write_manifest(root, report, {})
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_verify_bundle(tmp_path_factory.mktemp("verify") / "exp")


@pytest.fixture
def bundle(tiny, tmp_path) -> Path:
    """A fresh copy of the tiny bundle (tests write verify.json into it)."""
    return Path(shutil.copytree(tiny, tmp_path / "exp"))


# This venv has edgeresnet installed (editable): an import hook refuses it, so the run proves
# that device.py needs nothing from the package.
NO_EDGERESNET = """
import runpy, sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name == "edgeresnet" or name.startswith("edgeresnet."):
            raise ImportError("edgeresnet is not installed on this device")
sys.meta_path.insert(0, Refuse())
sys.argv = ["device.py"] + sys.argv[1:]
runpy.run_path("device.py", run_name="__main__")
"""


def run_device(root: Path, *args: str, python: str = sys.executable, env: dict | None = None) -> subprocess.CompletedProcess:
    """The bundle's own device.py with ``python -I`` from its folder, edgeresnet not importable."""
    return subprocess.run([python, "-I", "-c", NO_EDGERESNET, *args], cwd=root, capture_output=True, text=True,
                          timeout=300, env=env)


def verdicts(entry: dict) -> dict:
    keys = ("status", "agreement", "top1", "predictions_sha256", "kernel", "path")
    return {(r["target"], r["precision"]): tuple(r.get(k) for k in keys) for r in entry["engines"]}


def resign(root: Path, rel: str) -> None:
    """Re-hash one edited file in the manifest, as someone re-signing a bundle would."""
    manifest = json.loads((root / "edgeresnet.json").read_text())
    digest = hashlib.sha256((root / rel).read_bytes()).hexdigest()
    for files in [manifest["files"]] + [a["files"] for a in manifest["artifacts"]]:
        if rel in files:
            files[rel] = digest
    (root / "edgeresnet.json").write_text(json.dumps(manifest, indent=1))


def corrupt_int8_scale(root: Path, rel: str, factor: float = -1.0) -> str:
    """Multiply the first weight DequantizeLinear scale of an INT8 ONNX file by ``factor``; re-sign."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(root / rel))
    dq_scales = {n.input[1] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    weight_inputs = {n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"} & \
        {i.name for i in model.graph.initializer}
    scale_of_weight = next(n.input[1] for n in model.graph.node
                           if n.op_type == "DequantizeLinear" and n.input[0] in weight_inputs)
    assert scale_of_weight in dq_scales
    init = next(i for i in model.graph.initializer if i.name == scale_of_weight)
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), init.name))
    onnx.save(model, str(root / rel))
    resign(root, rel)
    return scale_of_weight


# ----------------------------------------------------------------------------- verdicts

def test_the_golden_set_is_in_the_manifest_with_every_artifacts_figures(tiny):
    manifest = json.loads((tiny / "edgeresnet.json").read_text())
    golden = manifest["golden"]
    assert golden["path"] == "golden.npz" and "golden.npz" in manifest["files"] and "device.py" in manifest["files"]
    assert golden["images"] == 300 and golden["reference"] == "onnx fp32" and Preprocess.from_dict(golden["preprocess"]) == PRE
    assert set(golden["expected"]) == {"ort/fp32", "ort/int8", "openvino/fp32"}
    assert golden["expected"]["ort/fp32"]["agreement"] == 1.0 and golden["expected"]["ort/fp32"]["top1"] == 0.9
    assert golden["expected"]["ort/int8"]["kernel"] and golden["expected"]["ort/int8"]["agreement"] > 0.9


def test_verify_passes_every_engine_records_it_and_chooses_the_fastest(bundle):
    entry = verify_bundle(bundle, time_seconds=0.05, rounds=2)
    rows = {(r["target"], r["precision"]): r for r in entry["engines"]}
    assert set(rows) == {("ort", "fp32"), ("ort", "int8"), ("openvino", "fp32")}
    for r in rows.values():
        assert r["status"] == "passed" and r["path"] and r["latency_ms"]["rounds"] == 2
        assert "Binomial(n=300" in r["tolerance"]["rule"] and r["tolerance"]["max_errors"] is not None
    assert rows[("ort", "int8")]["kernel"] == rows[("ort", "int8")]["expected"]["kernel"]
    fastest = min(rows.values(), key=lambda r: r["latency_ms"]["p50"])
    assert (entry["chosen"]["target"], entry["chosen"]["precision"]) == (fastest["target"], fastest["precision"])
    doc = read_verify(bundle)
    assert doc["bundle_sha256"] == hashlib.sha256((bundle / "edgeresnet.json").read_bytes()).hexdigest()
    assert chosen_for(bundle, local_device_key()) == (fastest["target"], fastest["precision"])
    assert "verify.json" not in json.loads((bundle / "edgeresnet.json").read_text())["files"]


def test_the_device_file_alone_gives_the_package_verdicts(bundle):
    package = verify_bundle(bundle, time_seconds=0, write=False)
    res = run_device(bundle, "verify", "--json", "--time-seconds", "0")
    assert res.returncode == 0, res.stderr
    alone = json.loads(res.stdout)
    assert verdicts(alone) == verdicts(package)
    assert alone["device"]["device_key"] == local_device_key() and alone["chosen"] is None
    assert read_verify(bundle)["devices"][local_device_key()]["via"] == "local"


def test_a_corrupted_int8_scale_fails_verify_and_is_never_chosen(bundle):
    corrupt_int8_scale(bundle, "model.int8.ort.onnx")
    res = run_cli("verify", str(bundle), "--json", "--time-seconds", "0.05")
    assert res.returncode == 1, res.stderr
    assert "ort int8" in res.stderr.splitlines()[0] and "openvino" not in res.stderr.splitlines()[0]
    entry = json.loads(res.stdout)
    rows = {(r["target"], r["precision"]): r for r in entry["engines"]}
    assert rows[("ort", "int8")]["status"] == "failed" and "disagree with FP32" in rows[("ort", "int8")]["reason"]
    assert rows[("ort", "fp32")]["status"] == "passed" and entry["chosen"] is not None
    assert (entry["chosen"]["target"], entry["chosen"]["precision"]) != ("ort", "int8")
    assert any("ort int8 failed verification" in f for f in entry["flags"])
    assert chosen_for(bundle, local_device_key()) != ("ort", "int8")
    res = run_device(bundle, "verify", "--time-seconds", "0")
    assert res.returncode == 1 and "ort" in res.stdout and "failed" in res.stdout


def test_the_table_names_each_engine_its_verdict_and_the_choice(bundle):
    res = run_cli("verify", str(bundle), "--time-seconds", "0.05", "--target", "ort")
    assert res.returncode == 0, res.stderr
    assert "passed" in res.stdout and "chosen here: ort" in res.stdout and "Binomial(n=300" in res.stdout
    assert "openvino" not in res.stdout


def test_a_bundle_without_a_golden_set_says_how_to_get_one(tmp_path):
    root = make_verify_bundle(tmp_path / "old", openvino=False, golden=False)
    res = run_cli("verify", str(root))
    assert res.returncode == 3 and "no golden set" in res.stderr and "--eval" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 2  # error + hint
    res = run_device(root, "verify")
    assert res.returncode == 3 and res.stderr.startswith("edgeresnet-device: no-golden: ")


def test_a_changed_file_is_refused_before_anything_runs(bundle):
    (bundle / "golden.npz").write_bytes(b"x" + (bundle / "golden.npz").read_bytes()[1:])
    assert run_cli("verify", str(bundle)).returncode == 3
    res = run_device(bundle, "verify")
    assert res.returncode == 3 and res.stderr.startswith("edgeresnet-device: hash-mismatch: golden.npz")
    assert not (bundle / "verify.json").exists()


@pytest.mark.skipif(not PY38, reason="needs a Python 3.8 without numpy (~/.pyenv/versions/3.8*)")
def test_no_numpy_is_one_line_and_exit_4(bundle):
    res = run_device(bundle, "verify", python=PY38[0])
    assert res.returncode == 4 and res.stderr.startswith("edgeresnet-device: no-numpy: ") and res.stdout == ""


def test_no_runtime_is_one_line_and_exit_4(bundle):
    pythons = [p for p in sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.1*/bin/python")))
               if subprocess.run([p, "-c", "import numpy"], capture_output=True).returncode == 0
               and subprocess.run([p, "-c", "import onnxruntime"], capture_output=True).returncode != 0
               and subprocess.run([p, "-c", "import openvino"], capture_output=True).returncode != 0]
    if not pythons:
        pytest.skip("needs a Python with numpy and no onnxruntime/openvino (~/.pyenv/versions/3.1*)")
    res = run_device(bundle, "verify", python=pythons[0])
    assert res.returncode == 4 and res.stderr.startswith("edgeresnet-device: no-runtime: ")
    assert "onnxruntime does not import" in res.stderr


def test_eval_and_bench_actions_give_rows(bundle):
    res = run_device(bundle, "eval", "--json", "--target", "ort")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["format"] == "edgeresnet-device/1" and [r["precision"] for r in doc["rows"]] == ["fp32", "int8"]
    assert all(r["status"] == "passed" and r["top1"] == 0.9 or r["precision"] == "int8" for r in doc["rows"])
    res = run_device(bundle, "bench", "--json", "--target", "ort", "--batch", "1,4", "--time-seconds", "0.05",
                     "--rounds", "2")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)["rows"]
    assert [(r["precision"], r["batch"]) for r in rows] == [("fp32", 1), ("int8", 1), ("fp32", 4), ("int8", 4)]
    for r in rows:
        lat = r["latency_ms"]
        assert r["status"] == "ok" and lat["p50"] > 0 and lat["samples"] >= 10 and "p50_spread_pct" in lat
        assert r["throughput_ips"] > 0 and r["mode"] == "latency"
    assert rows[1]["kernel"] and rows[0]["kernel"] is None


# ----------------------------------------------------------------------------- choice and flags

def row(target, precision, p50, spread=2.0, status="passed"):
    return {"target": target, "precision": precision, "status": status, "reason": None if status == "passed" else "bad",
            "latency_ms": {"p50": p50, "spread_pct": spread, "rounds": 3} if status == "passed" else None}


def test_int8_slower_than_its_float_beyond_the_spread_is_flagged_and_not_chosen():
    chosen, flags = device.choose([row("ov", "fp32", 1.0), row("ov", "int8", 1.2), row("ort", "int8", 1.1)])
    assert chosen == {"target": "ov", "precision": "fp32", "latency_ms": 1.0}
    assert flags == ["ov int8 is slower than ov fp32 here (p50 1.200 vs 1.000 ms, spread 2%): not chosen"]
    chosen, flags = device.choose([row("ov", "fp32", 1.0), row("ov", "int8", 1.01, spread=5.0)])
    assert flags == [] and chosen["precision"] == "fp32"  # within the spread: noise, not a finding
    chosen, flags = device.choose([row("ov", "fp32", 1.0, status="failed"), row("ov", "int8", 2.0)])
    assert chosen["precision"] == "int8" and flags == ["ov fp32 failed verification: bad: never chosen"]


def test_ort_picks_the_file_the_backend_picks_for_each_cpu_class():
    from edgeresnet.backends import executorch as et_backend
    from edgeresnet.backends import onnxruntime as ort_backend
    from edgeresnet.backends import openvino as ov_backend

    assert device.ORT_INT8_KERNELS == {cls: k for cls, (k, _) in ort_backend.KERNELS.items()}
    assert device.OV_INT8_KERNELS == {cls: k for cls, (k, _) in ov_backend.KERNELS.items()}
    assert device.ET_INT8_KERNELS == {cls: k for cls, (k, _) in et_backend.KERNELS.items()}
    assert device.ET_GENERIC == et_backend.int8_kernel("no-such-class")[0]
    entry = {"precision": "int8", "path": "model.int8.ort.onnx", "variants": {"u8s8-7bit": "model.int8.ort-w7.onnx"}}
    assert device.ort_choice(entry, "x86-avx2") == ("model.int8.ort-w7.onnx", "u8s8-7bit")
    assert device.ort_choice(entry, "x86-vnni") == ("model.int8.ort.onnx", "u8s8-vnni")
    assert device.ort_choice({**entry, "variants": None}, "x86-avx2") == ("model.int8.ort.onnx", "u8s8-saturating")
    assert device.ort_choice({"precision": "fp32", "path": "m.onnx"}, "arm") == ("m.onnx", None)


# ----------------------------------------------------------------------------- verify.json

def test_merge_keeps_other_devices_and_drops_another_bundles_entries(bundle):
    entry = verify_bundle(bundle, time_seconds=0, write=False)
    remote = json.loads(json.dumps(entry))
    remote["device"]["device_key"], remote["via"] = "jetson arm-dot Orin", "ssh jetson"
    merge_entry(bundle, entry)
    merge_entry(bundle, remote)
    assert set(read_verify(bundle)["devices"]) == {local_device_key(), "jetson arm-dot Orin"}
    assert chosen_for(bundle, "jetson arm-dot Orin") is None  # verified without timing: no choice
    resign(bundle, "device.py")  # the manifest's bytes change: the record is for another bundle now
    manifest = json.loads((bundle / "edgeresnet.json").read_text())
    (bundle / "edgeresnet.json").write_text(json.dumps(manifest))
    assert read_verify(bundle) is None and chosen_for(bundle, local_device_key()) is None
    merge_entry(bundle, entry)
    assert set(read_verify(bundle)["devices"]) == {local_device_key()}


@pytest.mark.parametrize("edit, what", [
    (lambda d: d.update(format="other"), "not an edgeresnet verify file"),
    (lambda d: next(iter(d["devices"].values()))["engines"][0].update(agreement="1.0"), "agreement is not a number"),
    (lambda d: next(iter(d["devices"].values()))["engines"][0].update(status="great"), "status"),
    (lambda d: next(iter(d["devices"].values())).update(chosen={"target": "ort", "precision": "int4",
                                                                "latency_ms": 1.0}), "did not pass"),
])
def test_read_verify_checks_every_type(bundle, edit, what):
    merge_entry(bundle, verify_bundle(bundle, time_seconds=0, write=False))
    doc = json.loads((bundle / "verify.json").read_text())
    edit(doc)
    (bundle / "verify.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match=what):
        read_verify(bundle)
    with pytest.raises(InputError):
        merge_entry(bundle, {"device": {}})


# ----------------------------------------------------------------------------- a real export (slow)

def corrupt_weight_scale(root: Path, rel: str, factor: float = 3.0) -> str:
    """One layer's weight scale times ``factor`` in an INT8 ONNX file, whichever form it has (a
    DequantizeLinear's scale, or the fused QLinearConv's weight scale), then re-sign the bundle."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(root / rel))
    inits = {i.name: i for i in model.graph.initializer}
    scales = [n.input[4] for n in model.graph.node if n.op_type == "QLinearConv"]
    scales += [n.input[1] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    name = scales[len(scales) // 2]
    inits[name].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(inits[name]) * np.float32(factor), name))
    onnx.save(model, str(root / rel))
    resign(root, rel)
    return name


@pytest.fixture
def export_copy(ort_ov_bundle, tmp_path) -> Path:
    """`edgeresnet export default --target ort,openvino` (conftest's shared export), copied."""
    return Path(shutil.copytree(ort_ov_bundle, tmp_path / "B"))


@pytest.mark.slow
def test_an_export_verifies_here_with_a_kernel_path_per_engine_and_a_choice(export_copy):
    manifest = json.loads((export_copy / "edgeresnet.json").read_text())
    assert {"golden.npz", "device.py"} <= set(manifest["files"])
    assert (export_copy / "golden.npz").stat().st_size < 4 << 20 and manifest["golden"]["images"] == 300
    assert manifest["golden"]["reference"] == "torch fp32" and manifest["golden"]["split"] == "test"
    res = run_cli("verify", str(export_copy), "--json")
    assert res.returncode == 0, res.stderr
    entry = json.loads(res.stdout)
    assert {r["target"] for r in entry["engines"]} == {"ort", "openvino"}
    for r in entry["engines"]:
        assert r["status"] == "passed" and r["agreement"] >= 0.99 and r["path"].startswith(local_device_key().split()[1])
    assert entry["chosen"] is not None and chosen_for(export_copy, local_device_key()) == (
        entry["chosen"]["target"], entry["chosen"]["precision"])


@pytest.mark.slow
def test_the_bundles_own_device_file_agrees_with_the_package(export_copy, tmp_path):
    """device.py run from a temp copy of the bundle with `python -I` (no edgeresnet importable)."""
    alone = Path(shutil.copytree(export_copy, tmp_path / "copy"))
    res = run_device(alone, "verify", "--json", "--time-seconds", "0")
    assert res.returncode == 0, res.stderr
    package = run_cli("verify", str(export_copy), "--json", "--time-seconds", "0")
    assert package.returncode == 0, package.stderr
    assert verdicts(json.loads(res.stdout)) == verdicts(json.loads(package.stdout))


@pytest.mark.slow
def test_a_resigned_export_with_one_int8_scale_corrupted_fails_and_is_skipped(export_copy):
    rel = device.ort_choice(next(a for a in json.loads((export_copy / "edgeresnet.json").read_text())["artifacts"]
                                 if a["target"] == "ort" and a["precision"] == "int8"), device.cpu_facts()["class"])[0]
    corrupt_weight_scale(export_copy, rel)
    assert run_device(export_copy, "check").returncode == 0  # re-signed: every hash matches
    res = run_cli("verify", str(export_copy), "--json", "--time-seconds", "0.1")
    assert res.returncode == 1 and "ort int8" in res.stderr and "openvino" not in res.stderr.splitlines()[-2]
    entry = json.loads(res.stdout)
    bad = next(r for r in entry["engines"] if (r["target"], r["precision"]) == ("ort", "int8"))
    assert bad["status"] == "failed" and bad["agreement"] < bad["expected"]["agreement"]
    assert entry["chosen"] and (entry["chosen"]["target"], entry["chosen"]["precision"]) != ("ort", "int8")
    res = run_device(export_copy, "verify", "--json", "--time-seconds", "0")
    assert res.returncode == 1 and verdicts(json.loads(res.stdout))[("ort", "int8")][0] == "failed"


# ----------------------------------------------------------------------------- TensorRT, on the stand-in

def test_tensorrt_engines_built_on_the_device_are_verified_through_trt_device(tmp_path):
    """The bundle's trt/trt_device.py imported by path, on tests/trt_standin (numpy tensorrt and
    libcudart test doubles: nothing here ran on a GPU). Engines built there have no export
    figure, so each is judged by its precision's default rate, and says so."""
    import os

    from ..ondevice.test_trt_device import STANDIN, make_tiny_bundle, tiny_logits

    root = tmp_path / "exp"
    make_tiny_bundle(root)
    pre = Preprocess(1, 2, None, (0.5,), (0.25,))
    images = np.random.RandomState(5).randint(0, 256, (60, 2, 2, 1)).astype(np.uint8)
    logits = tiny_logits(images).astype(np.float32)
    np.savez_compressed(root / "golden.npz", x=images, logits=logits, labels=logits.argmax(1).astype(np.int64),
                        index=np.arange(60, dtype=np.int64))
    install_device_file(root)
    meta = {"path": "golden.npz", "images": 60, "source": "tiny", "split": "test", "reference": "onnx fp32",
            "preprocess": pre.to_dict(), "expected": {}}
    write_manifest(root, {"model": {"arch": "tiny", "input_shape": [1, 1, 2, 2], "classes": ["a", "b", "c"],
                                    "preprocess": pre.to_dict()}, "results": [], "golden": meta}, {})
    env = {**os.environ, "PYTHONPATH": str(STANDIN), "TRT_STANDIN_VERSION": "10.3.0.30",
           "TRT_DEVICE_CUDART": "fake_cudart:library"}
    built = subprocess.run([sys.executable, "trt/trt_device.py", "build"], cwd=root, capture_output=True, text=True,
                           env=env, timeout=300)
    assert built.returncode == 0, built.stderr
    res = subprocess.run([sys.executable, "-c", NO_EDGERESNET, "verify", "--json", "--time-seconds", "0.05",
                          "--rounds", "1"], cwd=root, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    entry = json.loads(res.stdout)
    rows = {r["precision"]: r for r in entry["engines"]}
    assert set(rows) == {"fp32", "fp16", "int8", "int8-dla"} and {r["target"] for r in rows.values()} == {"trt"}
    assert rows["fp32"]["path"] == "TensorRT 10.3 GPU" and rows["int8-dla"]["path"] == "TensorRT 10.3 DLA core 0"
    for r in rows.values():
        assert r["status"] == "passed" and r["agreement"] >= 0.9 and "no export figure" in r["tolerance"]["rule"]
        assert r["latency_ms"]["p50"] > 0
    assert entry["chosen"]["target"] == "trt"


# ----------------------------------------------------------------------------- ExecuTorch, where it is not installed

# `python -c WITHOUT_ET <script or -m module> ARGS`: executorch refuses to import, as in a venv
# without the extra, whether or not this one has it (the et-venv runs this file too).
WITHOUT_ET = """
import runpy, sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name == "executorch" or name.startswith("executorch."):
            raise ImportError("No module named 'executorch'")
sys.meta_path.insert(0, Refuse())
if sys.argv[1] == "-m":
    sys.argv = [sys.argv[2]] + sys.argv[3:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
else:
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


def without_et(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_ET, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def add_executorch(root: Path) -> Path:
    """The manifest's entries an `--target executorch` export writes (model.<p>.executorch.pte,
    hashed, the int8 one with its kernel), re-signed; the files are stand-ins no test opens."""
    manifest = json.loads((root / "edgeresnet.json").read_text())
    for precision, kernel in (("fp32", None), ("int8", "xnnpack-qs8-avx2")):
        rel = f"model.{precision}.executorch.pte"
        (root / rel).write_bytes(b"a stand-in: never loaded without executorch")
        manifest["artifacts"].append({"target": "executorch", "precision": precision, "path": rel,
                                      "files": {rel: hashlib.sha256((root / rel).read_bytes()).hexdigest()},
                                      "inference_precision": None, "kernel": kernel, "variants": None})
    (root / "edgeresnet.json").write_text(json.dumps(manifest, indent=1))
    return root


def test_executorch_rows_without_executorch_are_skipped_with_the_reason(bundle):
    add_executorch(bundle)
    res = without_et("-m", "edgeresnet", "verify", str(bundle), "--json", "--time-seconds", "0.05", "--target",
                     "ort,executorch")
    assert res.returncode == 0, res.stderr
    entry = json.loads(res.stdout)
    rows = {(r["target"], r["precision"]): r for r in entry["engines"]}
    assert set(rows) == {("ort", "fp32"), ("ort", "int8"), ("executorch", "fp32"), ("executorch", "int8")}
    for precision in ("fp32", "int8"):
        et = rows[("executorch", precision)]
        assert et["status"] == "skipped" and et["latency_ms"] is None and et["agreement"] is None
        assert et["reason"].startswith("executorch.runtime does not import with ") and "No module named" in et["reason"]
        assert rows[("ort", precision)]["status"] == "passed"
    assert entry["chosen"]["target"] == "ort" and not any("executorch" in f for f in entry["flags"])
    table = without_et("-m", "edgeresnet", "verify", str(bundle), "--time-seconds", "0")
    assert table.returncode == 0 and "executorch int8 skipped: executorch.runtime does not import" in table.stdout
    alone = without_et("device.py", "verify", "--json", "--time-seconds", "0", "--no-write", "--target", "ort,executorch",
                       cwd=bundle)
    assert alone.returncode == 0, alone.stderr
    assert verdicts(json.loads(alone.stdout)) == verdicts(entry)  # the bundle's own file, the same rows


def test_a_bundle_of_only_executorch_says_which_runtime_is_missing(bundle):
    add_executorch(bundle)
    res = without_et("device.py", "verify", "--target", "executorch", cwd=bundle)
    assert res.returncode == 4 and res.stdout == ""
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("edgeresnet-device: no-runtime: ") and "executorch.runtime does not import" in line


def test_executorch_chosen_on_a_device_with_it_falls_back_here_without_it(bundle, tmp_path):
    """verify.json holds one entry per device key (host and CPU class): the same machine with
    and without the extra shares it. Where ExecuTorch verified fastest but does not import now,
    predict runs the next fastest that passed."""
    from PIL import Image

    add_executorch(bundle)
    entry = verify_bundle(bundle, targets=("ort",), time_seconds=0.05, rounds=1, write=False)
    fast = dict(next(r for r in entry["engines"] if r["precision"] == "int8"), target="executorch",
                kernel="xnnpack-qs8-avx2", path="x86-avx2 xnnpack-qs8-avx2",
                latency_ms={"p50": 1e-3, "spread_pct": 1.0, "rounds": 1})
    entry["engines"].append(fast)
    entry["chosen"] = {"target": "executorch", "precision": "int8", "latency_ms": 1e-3}
    merge_entry(bundle, entry)
    assert chosen_for(bundle, local_device_key()) == ("executorch", "int8")
    Image.fromarray(np.full((4, 4), 200, np.uint8)).save(tmp_path / "x.png")
    res = without_et("-m", "edgeresnet", "predict", str(bundle), str(tmp_path / "x.png"), "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    ort = min((r for r in entry["engines"] if r["target"] == "ort"), key=lambda r: r["latency_ms"]["p50"])
    assert (out["target"], out["precision"], out["chosen_by"]) == ("ort", ort["precision"], "verified")
