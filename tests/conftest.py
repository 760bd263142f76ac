"""Shared fixtures: real Fashion-MNIST images (the shipped calibration/ files, always present)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeresnet.data import load_split

ROOT = Path(__file__).resolve().parent.parent
DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def calib_set():
    """1,000 real Fashion-MNIST train images shipped in calibration/."""
    return load_split("default", "train")


@pytest.fixture(scope="session")
def test_set():
    """The real 10,000-image Fashion-MNIST test split shipped in calibration/."""
    return load_split("default", "test")


@pytest.fixture(scope="session")
def real_images(calib_set) -> np.ndarray:
    """32 real images (uint8, N x 28 x 28) spread over the classes."""
    return calib_set.images[::31][:32, :, :, 0]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """One `edgeresnet demo` as a user runs it (about 75 s), shared read-only by the slow tests that
    check its output: the CLI's result and the folder it wrote. A test that changes the folder
    works on a copy."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    return run_cli("demo", "--out", str(out)), out


TEST_ROUNDS = ("--rounds", "2")  # timing rounds of an export's or bench's table in tests that do not set them


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: a separate process, so exit codes and stderr are real. An
    `export` or `bench` that does not set --rounds times 2 rounds (a spread, in seconds) instead
    of the adaptive plan's 5 to 11 (up to 30 s a table): tests that check the plan set it, or run
    `demo`, and tests/bench/test_latency.py checks the plan itself."""
    words = list(args)
    if words[:1] in (["export"], ["bench"]) and "--rounds" not in words and "--help" not in words:
        words += TEST_ROUNDS
    return subprocess.run([sys.executable, "-m", "edgeresnet", *words], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


# Session fixtures that run a full `edgeresnet export`: a test that uses one (directly or through
# another fixture) is `slow` whatever its own marks say, so the fast tier (-m "not slow") builds
# no full export. Fast tests use tiny real graphs and bundles (make_bundle, tests/bundle/test_verify.py).
FULL_EXPORTS = {"ort_ov_bundle", "trt_bundle"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if FULL_EXPORTS & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def run_inprocess(*args: str) -> subprocess.CompletedProcess:
    """The CLI in this process (typer's runner), returned as run_cli returns it: the exit code
    and stderr a user sees, without a new interpreter that imports torch again (about 2 CPU
    seconds a call): for tables of error paths in the fast tier. run_cli stays the real thing."""
    from typer.testing import CliRunner

    from edgeresnet.cli import app

    res = CliRunner().invoke(app, list(args))
    return subprocess.CompletedProcess(args, res.exit_code, res.stdout, res.stderr)


def export_default(out: Path, *extra: str) -> subprocess.CompletedProcess:
    """`edgeresnet export default` on the shipped images, as a user runs it."""
    res = run_cli("export", "default", "--calib", "default", "--eval", "default", "--out", str(out), *extra)
    assert res.returncode == 0, res.stderr
    return res


@pytest.fixture(scope="session")
def ort_ov_bundle(tmp_path_factory) -> Path:
    """One small ORT + OpenVINO export shared by the bench, runtime and reliability tests."""
    out = tmp_path_factory.mktemp("bundle") / "exp"
    export_default(out, "--target", "ort,openvino", "--calib-size", "64", "--eval-limit", "300", "--rounds", "2")
    return out


def make_bundle(root: Path, files: dict[str, bytes]) -> Path:
    """A tiny bundle of ``files`` (paths relative to ``root``), hashed in edgeresnet.json as an
    export hashes its files (model.fp32.onnx, calibration.json, every file in trt/)."""
    from edgeresnet.bundle.manifest import write_manifest

    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    report = {"model": {"arch": "toy", "input_shape": [1, 1, 2, 2], "classes": ["a", "b"],
                        "preprocess": {"channels": 1, "size": 2, "mean": [0.5], "std": [0.5]}}, "results": []}
    write_manifest(root, report, {})
    return root


@pytest.fixture(scope="session")
def trt_bundle(tmp_path_factory) -> Path:
    """One TensorRT bundle written here without TensorRT (--prepare-only): trt/ holds build.json,
    the QDQ ONNX and the calibration cache, all hashed in edgeresnet.json, as `build` reads them."""
    out = tmp_path_factory.mktemp("trt_bundle") / "exp"
    export_default(out, "--target", "trt", "--prepare-only", "--calib-size", "64", "--no-eval")
    return out


from edgeresnet.backends.base import Artifact, Backend, Capabilities, Input  # noqa: E402


class ToyEngine(Backend):
    """Every declaration of the engine contract, filled with the least a test engine needs:
    subclass it and override what the test is about (not registered unless a test does so)."""

    name = "toy-engine"
    suffixes = ()
    extra = "ort"
    libraries = ()
    takes = frozenset({Input.FP32_ONNX})
    option_specs = ()
    capabilities = Capabilities(thread_safe=True)
    qdq_profile = None

    def unavailable_reason(self):
        return None

    def precisions(self, int8):
        return ["fp32", "int8"] if int8 else ["fp32"]

    def build(self, inputs, precision, out_dir):
        return Artifact(self.name, precision, inputs.fp32_onnx)

    def load(self, artifact, threads=None, mode="latency"):
        return lambda x: np.zeros((len(x), 10), np.float32)

    def int8_kernel(self):
        return "", "a test engine"

    def input_chw(self, path):
        return (1, 4, 4)

    def precision_of(self, path):
        return None

    @classmethod
    def runtime_facts(cls):
        return {}


class FailingEngine(ToyEngine):
    """An engine whose int8 build raises ``error`` while fp32 works: what a per-engine failure
    turns into (a status row), and what it must not swallow (an interrupt, a full disk)."""

    name = "failing"

    def __init__(self, error: BaseException):
        super().__init__()
        self.error = error

    def build(self, inputs, precision, out_dir):
        if precision == "int8":
            raise self.error
        return Artifact(self.name, precision, inputs.fp32_onnx)

