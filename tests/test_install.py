"""The README's install for a machine with no package index behind edgeresnet: build the wheel,
install it with the `ort` extra in a fresh venv, and run a bundle there without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NO_INDEX = ("No matching distribution found", "Could not find a version", "Network is unreachable",
            "Failed to establish a new connection", "No module named ensurepip")


def _run(*cmd, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, cwd=cwd, env=env)


@pytest.mark.slow
def test_the_wheel_installs_torch_free_in_a_fresh_venv_and_runs_a_bundle(tmp_path, ort_ov_bundle):
    dist = tmp_path / "dist"
    built = _run(sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps", "-w", dist, cwd=tmp_path)
    if built.returncode and any(s in built.stderr for s in NO_INDEX):
        pytest.skip("pip cannot reach an index for the build backend (hatchling): " + built.stderr.strip()[-200:])
    assert built.returncode == 0, built.stderr[-3000:]
    wheel, = dist.glob("edgeresnet-*-py3-none-any.whl")

    venv = tmp_path / "venv"
    made = _run(sys.executable, "-m", "venv", venv)
    if made.returncode:
        pytest.skip("python -m venv does not work here: " + made.stderr.strip()[-200:])
    py = venv / "bin" / "python"
    installed = _run(py, "-m", "pip", "install", "-q", f"{wheel}[ort]")  # what the README tells a device to run
    if installed.returncode and any(s in installed.stderr for s in NO_INDEX):
        pytest.skip("pip cannot reach an index for numpy/Pillow/onnxruntime: " + installed.stderr.strip()[-200:])
    assert installed.returncode == 0, installed.stderr[-3000:]

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EDGERESNET_DATA")}
    probe = _run(py, "-c", "import importlib.util as u; print(u.find_spec('torch') is None, "
                 "u.find_spec('onnxruntime') is not None)", cwd=tmp_path, env=env)
    assert probe.stdout.split() == ["True", "True"], probe  # torch-free, with the runtime

    cli = venv / "bin" / "edgeresnet"
    helped = _run(cli, "--help", cwd=tmp_path, env=env)
    assert helped.returncode == 0 and "export" in helped.stdout
    # The shipped evaluation images travel inside the wheel: `--data default` works from any directory.
    res = _run(cli, "eval", ort_ov_bundle, "--data", "default", "--limit", "300", "--target", "ort", "--json",
               cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    row = json.loads(res.stdout)
    assert row["model"].endswith("(ort int8)") and row["images"] == 300 and row["top1"] > 0.8
    assert str(venv) in row["data"]  # read from the installed wheel's _calibration, not the source tree
    where = _run(py, "-c", "import edgeresnet; print(edgeresnet.__file__)", cwd=tmp_path, env=env).stdout
    assert where.startswith(str(venv)), where
