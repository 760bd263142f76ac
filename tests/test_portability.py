"""INT8 that is right on the CPU it runs on: CPU classes, the per-CPU ORT file, the kernel path
recorded in rows and manifests, and the warning when a bundle moves to another CPU class.

Accuracy assertions here hold on every CPU class (AVX2-only, VNNI, AMX, ARM); the one test
about saturation itself needs an x86 CPU without VNNI and skips elsewhere, saying why.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from edgeresnet.backends.base import Artifact
from edgeresnet.backends.onnxruntime import SATURATING, OnnxRuntimeBackend, int8_kernel
from edgeresnet.data import Preprocess
from edgeresnet.errors import InputError
from edgeresnet.host.machine import cpu_class
from edgeresnet.bundle.manifest import read_manifest
from edgeresnet.runtime import cpu_mismatch, load

from .conftest import run_cli

NO_VNNI_X86 = cpu_class() in ("x86-avx2", "x86-avx512", "x86")


@pytest.mark.parametrize("arch, isa, expected", [
    ("x86_64", ["AVX2", "FMA"], "x86-avx2"),
    ("x86_64", ["AVX2", "FMA", "AVX-512F"], "x86-avx512"),
    ("x86_64", ["AVX2", "AVX-512F", "AVX-512 VNNI"], "x86-vnni"),
    ("x86_64", ["AVX2", "AVX-VNNI"], "x86-vnni"),
    ("x86_64", ["AVX2", "AVX-512F", "AVX-512 VNNI", "AMX-INT8"], "x86-amx"),
    ("x86_64", [], "x86"),
    ("aarch64", ["NEON", "ARM dot-product"], "arm-dot"),
    ("aarch64", ["NEON", "ARM dot-product", "ARM i8mm"], "arm-i8mm"),
    ("aarch64", ["NEON"], "arm"),
])
def test_cpu_class_follows_the_int8_instructions(arch, isa, expected):
    assert cpu_class({"arch": arch, "isa": isa}) == expected


def test_isa_is_read_as_the_runtimes_read_it_and_agrees_with_numpys_cpuid():
    """CPUID (x86) / HWCAP (ARM), not /proc/cpuinfo, which qemu-user and some VMs misreport.
    numpy detects features by CPUID too: the features both know must agree on any CPU."""
    import platform

    from edgeresnet.host.machine import cpu

    info = cpu()
    if platform.machine().lower() not in ("x86_64", "amd64", "aarch64", "arm64"):
        pytest.skip(f"CPUID/HWCAP reading is for x86-64 and arm64 (this is {platform.machine()})")
    if info["isa_source"] == "/proc/cpuinfo":
        pytest.skip("this kernel refuses executable memory: the ISA falls back to /proc/cpuinfo")
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as numpy_has
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as numpy_has
    both = {"AVX2": "AVX2", "FMA": "FMA3", "AVX-512F": "AVX512F", "AVX-512 VNNI": "AVX512VNNI",
            "AVX-512 FP16": "AVX512FP16", "ARM dot-product": "ASIMDDP", "NEON": "ASIMD"}
    arm = info["arch"] in ("aarch64", "arm64")
    checked = 0
    for ours, theirs in both.items():
        if theirs in numpy_has and (ours in ("NEON", "ARM dot-product")) == arm:
            assert (ours in info["isa"]) == bool(numpy_has[theirs]), (ours, info["isa"])
            checked += 1
    assert checked >= 2


def test_only_x86_without_vnni_takes_the_7bit_file():
    for cls in ("x86-avx2", "x86-avx512", "x86"):
        assert int8_kernel(cls)[0] == "u8s8-7bit"
    assert {int8_kernel(c)[0] for c in ("x86-vnni", "x86-amx", "arm-dot", "arm-i8mm", "arm")} == \
        {"u8s8-vnni", "u8s8-amx", "arm-dot", "arm-i8mm", "arm-neon"}
    assert {k: p.name for k, p in OnnxRuntimeBackend.capabilities.qdq_variants.items()} == {"u8s8-7bit": "ort-w7"}


def _weights(model) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer
            if i.data_type == onnx.TensorProto.INT8 and i.name.endswith("_quantized")}


def test_7bit_twin_keeps_int16_pair_sums_exact(ort_ov_bundle):
    """Every u8 x s8 pair of the twin fits VPMADDUBSW's int16; the 8-bit file's may not."""
    w7 = _weights(onnx.load(str(ort_ov_bundle / "model.int8.ort-w7.qdq.onnx")))
    w8 = _weights(onnx.load(str(ort_ov_bundle / "model.int8.ort.qdq.onnx")))
    assert set(w7) == set(w8) and len(w7) == 22
    assert max(int(np.abs(w).max()) for w in w7.values()) == 63
    assert 2 * 255 * 63 <= 32767 < 2 * 255 * max(int(np.abs(w).max()) for w in w8.values())
    for name in w7:  # the same weights at half the resolution, not another model
        assert np.abs(w7[name].astype(int) * 2 - w8[name].astype(int)).max() <= 3


def test_manifest_hashes_both_files_and_records_the_kernel(ort_ov_bundle):
    manifest = read_manifest(ort_ov_bundle)
    entry = next(a for a in manifest["artifacts"] if a["target"] == "ort" and a["precision"] == "int8")
    assert entry["variants"] == {"u8s8-7bit": "model.int8.ort-w7.onnx"}
    assert set(entry["files"]) == {"model.int8.ort.onnx", "model.int8.ort-w7.onnx"}
    assert entry["kernel"] == int8_kernel()[0]
    assert manifest["measured_on"]["class"] == cpu_class() and manifest["measured_on"]["isa"] is not None
    ov = next(a for a in manifest["artifacts"] if a["target"] == "openvino" and a["precision"] == "int8")
    assert isinstance(ov["kernel"], str) and ov["kernel"]  # the primitive OpenVINO really ran
    report = json.loads((ort_ov_bundle / "report.json").read_text())
    assert report["machine"]["cpu"]["class"] == cpu_class()
    assert any(r.get("kernel") == entry["kernel"] for r in report["results"])
    assert "INT8 kernels: ort" in (ort_ov_bundle / "report.md").read_text()


def _exact(path, x):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


@pytest.fixture(scope="module")
def test_batch(ort_ov_bundle, test_set):
    pre = Preprocess.from_dict(read_manifest(ort_ov_bundle)["preprocess"])
    return test_set.batch(np.arange(1000), pre)


def test_the_engine_this_cpu_loads_computes_the_int8_grid(ort_ov_bundle, test_batch):
    """Whatever the CPU, the loaded file's fused kernels agree with the exact int8 grid of its QDQ."""
    model = load(ort_ov_bundle, target="ort")
    assert model.kernel == int8_kernel()[0] != SATURATING
    qdq = ort_ov_bundle / ("model.int8.ort-w7.qdq.onnx" if model.kernel == "u8s8-7bit" else "model.int8.ort.qdq.onnx")
    fused, exact = model.logits(test_batch), _exact(qdq, test_batch)
    assert (fused.argmax(1) == exact.argmax(1)).mean() >= 0.99
    fp32 = _exact(ort_ov_bundle / "model.fp32.onnx", test_batch)
    assert (fused.argmax(1) == fp32.argmax(1)).mean() >= 0.985


@pytest.mark.skipif(not NO_VNNI_X86, reason=f"needs x86 without VNNI (this CPU is {cpu_class()}): "
                    "only there do U8S8 kernels saturate int16 pair sums")
def test_without_vnni_the_8bit_file_saturates_and_the_twin_does_not(ort_ov_bundle, test_batch):
    """Why the twin exists: on this CPU class the 8-bit file drifts off its own exact grid."""
    backend = OnnxRuntimeBackend()
    plain = backend.load(Artifact("ort", "int8", ort_ov_bundle / "model.int8.ort.onnx", {}))
    exact8 = _exact(ort_ov_bundle / "model.int8.ort.qdq.onnx", test_batch).argmax(1)
    twin = load(ort_ov_bundle, target="ort")
    exact7 = _exact(ort_ov_bundle / "model.int8.ort-w7.qdq.onnx", test_batch).argmax(1)
    plain_agree = (plain(test_batch).argmax(1) == exact8).mean()
    twin_agree = (twin.logits(test_batch).argmax(1) == exact7).mean()
    assert plain_agree < 0.985 < twin_agree


def test_a_bundle_without_the_twin_reports_the_saturating_path():
    backend = OnnxRuntimeBackend()
    art = Artifact("ort", "int8", __import__("pathlib").Path("model.int8.ort.onnx"), {})
    _, kernel = backend.choose(art)
    assert kernel == (SATURATING if NO_VNNI_X86 else int8_kernel()[0])
    _, kernel = backend.choose(Artifact("ort", "int8", art.path, {"variants": {"u8s8-7bit": "model.int8.ort-w7.onnx"}}))
    assert kernel == int8_kernel()[0]


def test_cpu_mismatch_names_both_cpus_and_is_silent_on_a_match():
    here = {"model": "AMD EPYC", "class": cpu_class()}
    entry = {"target": "ort", "precision": "int8", "kernel": int8_kernel()[0]}
    assert cpu_mismatch({"measured_on": here}, entry, int8_kernel()[0]) is None
    assert cpu_mismatch({"measured_on": here}, {**entry, "precision": "fp32"}, None) is None
    other = "arm-dot" if cpu_class() != "arm-dot" else "x86-vnni"
    note = cpu_mismatch({"measured_on": {"model": "Jetson Orin", "class": other}}, entry, int8_kernel()[0])
    assert note and "Jetson Orin" in note and other in note and cpu_class() in note and "edgeresnet eval" in note


def test_predict_and_eval_warn_once_when_moved_to_another_cpu_class(ort_ov_bundle, tmp_path, test_set):
    moved = tmp_path / "moved"
    shutil.copytree(ort_ov_bundle, moved)
    manifest = json.loads((moved / "edgeresnet.json").read_text())
    manifest["measured_on"] = {"model": "Some Other CPU", "class": "x86-amx" if cpu_class() != "x86-amx" else "arm-dot"}
    (moved / "edgeresnet.json").write_text(json.dumps(manifest))
    from PIL import Image

    for i in range(3):
        Image.fromarray(test_set.images[i, :, :, 0]).save(tmp_path / f"{i}.png")
    res = run_cli("predict", str(moved), str(tmp_path / "0.png"), str(tmp_path / "1.png"), str(tmp_path / "2.png"))
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("Some Other CPU") == 1 and "Traceback" not in res.stderr
    res = run_cli("eval", str(ort_ov_bundle), "--data", "default", "--limit", "40")
    assert res.returncode == 0 and "warning" not in res.stderr  # same CPU: nothing to warn about


def test_eval_of_a_bundle_prints_its_drop_against_the_reports_fp32_row(ort_ov_bundle):
    report = json.loads((ort_ov_bundle / "report.json").read_text())
    images = report["evaluation"]["images"]
    res = run_cli("eval", str(ort_ov_bundle), "--data", "default", "--limit", str(images), "--json", "--target", "ort")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    fp32 = next(r for r in report["results"] if r["target"] == "ort" and r["precision"] == "fp32")
    assert got["same_images_as_report"] is True and got["kernel"] == int8_kernel()[0]
    assert got["drop_vs_report_fp32_pp"] == pytest.approx((fp32["top1"] - got["top1"]) * 100, abs=1e-4)
    assert got["drop_vs_report_fp32_pp"] <= 1.0  # 3 images of 300, on any CPU class
    res = run_cli("eval", str(ort_ov_bundle), "--data", "default", "--limit", "50", "--target", "ort")
    assert "drop vs the export's ort fp32 row" in res.stdout and "the export scored" in res.stdout


def test_a_manifest_path_outside_its_hashes_is_refused(ort_ov_bundle, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(ort_ov_bundle, bad)
    manifest = json.loads((bad / "edgeresnet.json").read_text())
    entry = next(a for a in manifest["artifacts"] if a["target"] == "ort" and a["precision"] == "int8")
    entry["path"] = "model.int8.ort.qdq.onnx"  # a real file, but not one the entry hashes
    (bad / "edgeresnet.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="hashes do not cover"):
        load(bad, target="ort")


def test_doctor_names_the_int8_kernel_path_of_each_engine():
    res = run_cli("doctor", "--json")
    assert res.returncode == 0, res.stderr
    facts = json.loads(res.stdout)
    assert facts["cpu"]["class"] == cpu_class()
    assert facts["int8_kernels"]["ort"]["kernel"] == int8_kernel()[0]
    assert facts["int8_kernels"]["openvino"]["kernel"] and facts["int8_kernels"]["ort"]["meaning"]
    res = run_cli("doctor")
    assert "ort int8" in res.stdout and int8_kernel()[0] in res.stdout
