"""The bundle's device file (edgeresnet/ondevice/device.py) run as a device runs it: a separate
process, no edgeresnet on the path (python -I from the bundle's own folder), Python 3.8 too."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeresnet.ondevice import device
from edgeresnet.bundle.verify import install_device_file
from edgeresnet.host.machine import cpu_class

from ..conftest import make_bundle

PY38 = sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.8*/bin/python")))


def run_device(bundle: Path, *args: str, python: str = sys.executable) -> subprocess.CompletedProcess:
    """``python -I device.py ...`` in the bundle's folder: isolated, so edgeresnet cannot be imported."""
    return subprocess.run([python, "-I", "device.py", *args], cwd=bundle, capture_output=True, text=True, timeout=300)


@pytest.fixture
def small_bundle(tmp_path) -> Path:
    root = tmp_path / "b"
    root.mkdir()
    install_device_file(root)
    return make_bundle(root, {"model.fp32.onnx": b"not really onnx", "trt/build.json": b"{}"})


def test_check_hashes_every_listed_file_including_itself(small_bundle):
    manifest = json.loads((small_bundle / "edgeresnet.json").read_text())
    assert "device.py" in manifest["files"]
    res = run_device(small_bundle, "check")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out == {"ok": True, "files": len(manifest["files"]),
                   "bundle_sha256": hashlib.sha256((small_bundle / "edgeresnet.json").read_bytes()).hexdigest()}


@pytest.mark.parametrize("damage, kind", [
    (lambda b: (b / "trt" / "build.json").write_text('{"x": 1}'), "hash-mismatch"),
    (lambda b: (b / "model.fp32.onnx").unlink(), "missing-file"),
    (lambda b: (b / "edgeresnet.json").write_text("{not json"), "bad-manifest"),
])
def test_a_wrong_bundle_is_one_line_with_a_kind_and_exit_3(small_bundle, damage, kind):
    damage(small_bundle)
    res = run_device(small_bundle, "check")
    assert res.returncode == 3 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"edgeresnet-device: {kind}: ") and lines[0].endswith(")")


def test_a_bad_flag_is_usage_exit_2(small_bundle):
    res = run_device(small_bundle, "check", "--no-such-flag")
    assert res.returncode == 2 and res.stderr.startswith("edgeresnet-device: usage: ")
    res = run_device(small_bundle, "frobnicate")
    assert res.returncode == 2 and res.stderr.startswith("edgeresnet-device: usage: ")


def test_info_classifies_the_cpu_as_the_package_does(small_bundle):
    res = run_device(small_bundle, "info")
    assert res.returncode == 0, res.stderr
    facts = json.loads(res.stdout)
    assert facts["cpu"]["class"] == cpu_class() and facts["cpu"]["isa_source"] in ("cpuid", "hwcap", "/proc/cpuinfo")
    assert set(facts["runtimes"]) == {"onnxruntime", "openvino", "tensorrt", "executorch"}
    assert facts["runtimes"]["onnxruntime"] and facts["numpy"]
    assert facts["device_key"].startswith(f"{facts['hostname']} {cpu_class()}")


def test_the_package_reads_the_cpu_through_the_device_file():
    from edgeresnet.host import cpufeatures, machine

    assert cpufeatures.runtime_isa is device.runtime_isa
    assert machine.cpu() == device.cpu_facts()


@pytest.mark.skipif(not PY38, reason="needs a Python 3.8 (~/.pyenv/versions/3.8*)")
def test_runs_on_python_38_without_numpy(small_bundle):
    py = PY38[0]
    assert subprocess.run([py, "-c", "import numpy"], capture_output=True).returncode != 0, "this 3.8 has numpy"
    res = run_device(small_bundle, "check", python=py)
    assert res.returncode == 0 and json.loads(res.stdout)["ok"], res.stderr
    res = run_device(small_bundle, "info", python=py)
    facts = json.loads(res.stdout)
    assert res.returncode == 0 and facts["numpy"] is None and facts["python"].startswith("3.8")
    assert facts["cpu"]["class"] == cpu_class()


def test_the_device_file_is_python_3_8_by_vermin():
    """vermin --target=3.8-: no syntax, module or function newer than Python 3.8 (JetPack 5), in
    the runners too, which no Python 3.8 here can import (no runtime is installed for it)."""
    vermin = Path(sys.executable).with_name("vermin")  # the dev extra's console script, beside this Python
    if not vermin.exists():
        found = shutil.which("vermin")
        if not found:
            pytest.skip("vermin is not installed here (pip install vermin; it is in the dev extra)")
        vermin = Path(found)
    res = subprocess.run([str(vermin), "--target=3.8-", "--no-tips", "--eval-annotations", "--violations",
                          device.__file__], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_native_stderr_is_held_back_unless_the_call_fails(capfd):
    """held_stderr: what a native call writes to fd 2 (ExecuTorch's CPU probe) is dropped when the
    call returns, and shown when it raises, before the error."""
    from edgeresnet.ondevice.device import held_stderr

    def chatty(fail: bool):
        os.write(2, b"[cpuinfo_utils.cpp:71] probe\n")
        if fail:
            raise RuntimeError("native failure")
        return 7

    assert held_stderr(lambda: chatty(False)) == 7
    assert capfd.readouterr().err == ""
    with pytest.raises(RuntimeError, match="native failure"):
        held_stderr(lambda: chatty(True))
    assert capfd.readouterr().err == "[cpuinfo_utils.cpp:71] probe\n"
    os.write(2, b"after\n")  # fd 2 is the real stderr again
    assert capfd.readouterr().err == "after\n"
