"""`edgeresnet bench` and the reports, run the way a user runs them."""

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from edgeresnet.bench.timing import time_runner
from edgeresnet.report import ResultRow
from edgeresnet.report.table import speedup

from ..conftest import run_cli


@pytest.fixture(scope="module")
def export_dir(ort_ov_bundle, tmp_path_factory):
    """A private copy: `bench` rewrites the reports in it, never in the shared session bundle."""
    return Path(shutil.copytree(ort_ov_bundle, tmp_path_factory.mktemp("bench") / "exp"))


@pytest.fixture(scope="module")
def swept(export_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("json") / "bench.json"
    res = run_cli("bench", str(export_dir), "--target", "ort", "--batch", "1,4", "--mode", "latency,throughput",
                  "--min-runs", "20", "--min-seconds", "0.2", "--threads", "1", "--json", str(path))
    assert res.returncode == 0, res.stderr
    return json.loads(path.read_text()), res


@pytest.mark.slow
def test_bench_json_has_machine_and_report_rows(swept):
    data, res = swept
    machine = data["machine"]
    assert machine["cpu"]["cores"] >= 1 and isinstance(machine["cpu"]["isa"], list)
    assert machine["libraries"]["onnxruntime"] and "os" in machine and "gpus" in machine
    combos = {(r["target"], r["precision"], r["batch"], r["mode"]) for r in data["results"]}
    assert combos == {("ort", p, b, m) for p in ("fp32", "int8") for b in (1, 4) for m in ("latency", "throughput")}
    for r in data["results"]:
        assert r["status"] == "ok" and r["threads"] == 1 and r["throughput_ips"] > 0 and r["peak_memory_mb"] > 10
        assert r["top1"] is not None  # accuracy carried over from the export
        if r["mode"] == "latency":
            lat = r["latency_ms"]
            assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
            assert lat["samples"] >= 20 and len(r["samples_ms"]) >= 20
            # images/s from the mean latency, scaled by the batch
            assert r["throughput_ips"] == pytest.approx(r["batch"] * 1000 / lat["mean"], rel=1e-6)
    assert "vs fp32" in res.stdout


@pytest.mark.slow
def test_reports_are_written_with_plots(swept, export_dir):
    html = (export_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3  # accuracy/latency, distribution, throughput vs batch, per-class
    assert "Throughput against batch size" in html and "<table>" in html
    assert "## Benchmark" in (export_dir / "report.md").read_text()
    assert json.loads((export_dir / "bench.json").read_text())["results"]


def test_bench_one_model_file_and_openvino(export_dir):
    res = run_cli("bench", str(export_dir / "model.int8.openvino.xml"), "--min-runs", "10", "--min-seconds", "0.1",
                  "--rounds", "2")
    assert res.returncode == 0, res.stderr
    assert "openvino" in res.stdout and "int8" in res.stdout
    res = run_cli("bench", str(export_dir / "model.int8.ort.onnx"), "--min-runs", "10", "--min-seconds", "0.1",
                  "--rounds", "2")
    assert res.returncode == 0 and "int8" in res.stdout


@pytest.mark.parametrize("args,code", [(["/no/such/dir"], 3), (["README.md"], 3), ([".", "--batch", "x"], 2),
                                        ([".", "--mode", "fast"], 2)])
def test_bench_bad_input(args, code, tmp_path):
    from ..conftest import ROOT

    res = run_cli("bench", *args, cwd=ROOT)
    assert res.returncode == code and "Traceback" not in res.stderr


def test_time_runner_meets_count_and_duration():
    calls = []

    def run(x):
        calls.append(1)
        time.sleep(0.001)
        return x

    t0 = time.perf_counter()
    t = time_runner(run, np.zeros((2, 1)), warmup=3, min_runs=30, min_seconds=0.2)
    assert time.perf_counter() - t0 >= 0.2 and t.samples >= 30 and len(calls) == t.samples + 3
    assert 1.0 <= t.p50 < 20 and t.batch == 2


def test_speedup_compares_same_engine_batch_and_mode():
    def row(p, b, mode, p50=None, ips=None):
        return ResultRow("ort", p, batch=b, mode=mode, latency_ms=None if p50 is None else {"p50": p50}, throughput_ips=ips)

    rows = [row("fp32", 1, "latency", 10.0), row("int8", 1, "latency", 4.0), row("fp32", 8, "latency", 50.0),
            row("int8", 8, "latency", 10.0), row("fp32", 1, "throughput", ips=100.0), row("int8", 1, "throughput", ips=300.0)]
    assert [speedup(rows, r) for r in rows] == [None, 2.5, None, 5.0, None, 3.0]


def test_bench_refuses_a_tampered_bundle_and_rewrites_nothing(ort_ov_bundle, tmp_path):
    """bench checks every file against edgeresnet.json (and ONNX files by onnx.checker) before
    timing, like predict and eval: one flipped byte is refused, and no report is rewritten."""

    bad = tmp_path / "bad"
    shutil.copytree(ort_ov_bundle, bad)
    target = bad / "model.int8.ort.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    def outputs():  # what bench writes: report.md/html/json and bench.json
        return {p.name: p.read_bytes() for p in bad.iterdir() if p.name.startswith(("report", "bench"))}

    before = outputs()
    res = run_cli("bench", str(bad), "--min-runs", "5", "--min-seconds", "0.1")
    assert res.returncode == 3 and "changed since export" in res.stderr and "Traceback" not in res.stderr
    assert outputs() == before


def test_worker_peak_memory_is_its_own_not_the_parents(tmp_path):
    """ru_maxrss of a forked child starts at its parent's peak; the worker reports its own."""
    import onnx
    from onnx import TensorProto, helper

    from edgeresnet.backends.base import Artifact
    from edgeresnet.bench.worker import block_spec, spawn

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    ballast = np.ones(600 * 2**20 // 8)  # this process now peaks above 600 MB
    ballast += 1
    timed = spawn(block_spec(Artifact("ort", "fp32", path), chw=(1, 4, 4), threads=1, min_runs=5, min_seconds=0.05))
    assert timed["latency_ms"]["samples"] >= 5
    assert 10 < timed["peak_rss_mb"] < 400, timed["peak_rss_mb"]  # the worker's own (~70 MB), not our 600+
