"""`edgeresnet report`: the rows the device file writes (trt/device.{build,eval,bench}.json) merged
into the export's report.json, bench.json and reports on the workstation.

The device side runs on the TEST DOUBLES of tests/trt_standin (a numpy tensorrt and a host-memory
libcudart), as the bundle's own trt/trt_device.py in a subprocess, the way a user runs it on a
Jetson; the Jetson's power and clocks come from the fixture sysfs tree tests/data/jetson/orin.
Nothing here ran on a GPU, a Jetson or a real TensorRT."""

from __future__ import annotations

import json
import platform
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeresnet.ondevice import trt_device as td
from edgeresnet.bundle.manifest import write_manifest

from ..test_reliability import run_inprocess
from ..ondevice.test_trt_device import FAST, STANDIN, make_tiny_bundle, run_device, standin  # noqa: F401 - fixture

ORIN = Path(__file__).resolve().parents[1] / "data" / "jetson" / "orin"
ENGINES = ["fp32", "fp16", "int8", "int8-dla"]
WRITTEN = ("report.json", "report.md", "report.html", "bench.json", "edgeresnet.json")


def export_with_bundle(root: Path) -> Path:
    """The tiny TensorRT bundle of test_trt_device inside an export as `export --target trt
    --prepare-only` leaves it: report.json with an ORT row and the trt placeholder rows, and a
    manifest hashing every file. Returns the export folder."""
    make_tiny_bundle(root)
    model = {"arch": "tiny", "source": "test", "params": 15, "input_shape": [1, 1, 2, 2], "classes": ["a", "b", "c"],
             "preprocess": {"channels": 1, "size": 2, "resize": 2, "mean": [0.5], "std": [0.25]}}
    skipped = {"status": "skipped", "reason": "--prepare-only", "details": {"bundle": "trt"}}
    report = {"model": model, "calibration": None, "evaluation": {"images": 40, "source": "tiny"}, "command": "test",
              "results": [{"target": "ort", "precision": "fp32", "artifact": "model.fp32.onnx", "top1": 1.0},
                          *({"target": "trt", "precision": p, **skipped} for p in ("fp32", "fp16", "int8"))]}
    (root / "report.json").write_text(json.dumps(report))
    write_manifest(root, report, {})
    return root


def device_run(export: Path, *command: str) -> None:
    """The bundle's own trt/trt_device.py on the stand-in, in its own process, as on the device."""
    env = {**os.environ, "PYTHONPATH": str(STANDIN), "TRT_STANDIN_VERSION": "10.3.0.30",
           td.CUDART_ENV: "fake_cudart:library"}
    res = subprocess.run([sys.executable, str(export / "trt" / "trt_device.py"), *command], capture_output=True,
                         text=True, env=env, cwd=export, timeout=300)
    assert res.returncode == 0, res.stderr


@pytest.fixture(scope="module")
def device_session(tmp_path_factory) -> Path:
    """An export whose trt/ came back from a device session: build, eval, bench (batch 1 and 4)."""
    export = export_with_bundle(tmp_path_factory.mktemp("device") / "exp")
    device_run(export, "build")
    device_run(export, "eval")
    device_run(export, "bench", "--batch", "1,4", *FAST)
    return export


@pytest.fixture
def session_copy(device_session, tmp_path) -> Path:
    import shutil

    export = tmp_path / "exp"
    shutil.copytree(device_session, export)
    return export


def results(export: Path) -> list[dict]:
    return json.loads((export / "report.json").read_text())["results"]


def bench_rows(export: Path) -> list[dict]:
    return json.loads((export / "bench.json").read_text())["results"]


def stamps(export: Path) -> dict:
    return {**{p.name: p.stat().st_mtime_ns for p in export.iterdir() if p.is_file()},
        **{f"trt/{p.name}": p.stat().st_mtime_ns for p in (export / "trt").iterdir()}}


# ----------------------------------------------------------------------------- the merge

def test_report_merges_the_device_rows_into_the_reports(session_copy):
    res = run_inprocess("report", str(session_copy), "--device", "orin-1")
    assert res.exit_code == 0, (res.stderr, res.exception)
    rows = results(session_copy)
    trt = {r["precision"]: r for r in rows if r["target"] == "trt"}
    assert [r["target"] for r in rows] == ["ort"] + ["trt"] * 4  # the --prepare-only placeholders replaced
    assert list(trt) == ENGINES
    for name, r in trt.items():
        tag = r["details"]["ran_on"]
        assert tag["device"] == "orin-1" and tag["tensorrt"] == "10.3.0.30" and tag["python"] == sys.version.split()[0]
        assert set(tag["files"]) == {"build", "eval", "bench"} or set(tag["files"]) == {"build", "eval"}
        assert r["status"] == "ok" and r["size_bytes"] > 0 and r["top1"] == 1.0 and r["agreement"] == 1.0
        assert r["artifact"] is None  # a record of the device's engine, not an artifact loadable here
        assert r["details"]["engine"] == f"trt/model.{name}.engine"
        assert r["details"]["trt_line"] == "10.3" and r["details"]["eval_images"] == 40
        assert isinstance(r["details"]["warnings"], list) and " layers, " in r["details"]["audit"]
    assert trt["int8"]["top1_drop_pp"] == 0.0 and trt["fp32"]["top1_drop_pp"] == 0.0
    assert trt["int8-dla"]["details"]["layers_on"] == {"dla": 2, "gpu": 0} and trt["int8-dla"]["engine_batch"] == 8
    bench = bench_rows(session_copy)
    assert {(r["precision"], r["batch"]) for r in bench} == {(e, b) for e in ENGINES for b in (1, 4)}
    for r in bench:
        assert r["details"]["ran_on"]["device"] == "orin-1" and r["top1"] == 1.0
        assert r["gpu_compute_ms"]["p50"] > 0 and r["avg_w"] == "n/a" and r["energy_na_reason"]
    dla = next(r for r in bench if r["precision"] == "int8-dla" and r["batch"] == 4)
    assert dla["engine_batch"] == 8 and dla["per_image_ms"] == pytest.approx(dla["latency_ms"]["p50"] / 8)
    md = (session_copy / "report.md").read_text()
    assert "## On the device" in md and "| device | engine | precision | batch | mode | engine batch | wall ms | GPU ms |" in md
    assert "orin-1 (TRT 10.3.0.30)" in md and "W and mJ/image n/a: " in md and "| n/a |" in md
    page = (session_copy / "report.html").read_text()
    assert "<h2>On the device</h2>" in page and "<th>mJ/image</th>" in page and "<th>power mode</th>" in page
    manifest = json.loads((session_copy / "edgeresnet.json").read_text())
    assert "trt/device.bench.json" in manifest["files"] and all(a["target"] != "trt" for a in manifest["artifacts"])
    assert "TensorRT engines on the device" in res.stdout and "bench on the device: power and clocks" in res.stdout
    assert "wrote bench.json, report.json, report.md, report.html, edgeresnet.json" in " ".join(res.stdout.split())


def test_report_twice_keeps_one_row_per_device_engine_batch_and_mode(session_copy):
    for _ in range(2):
        assert run_inprocess("report", str(session_copy), "--device", "orin-1").exit_code == 0
    assert sum(r["target"] == "trt" for r in results(session_copy)) == 4
    assert len(bench_rows(session_copy)) == 8
    first = (session_copy / "report.json").read_text()
    assert run_inprocess("report", str(session_copy), "--device", "orin-1").exit_code == 0
    assert (session_copy / "report.json").read_text() == first  # idempotent
    # another device's rows are added beside, never over, the first one's
    assert run_inprocess("report", str(session_copy), "--device", "orin-2").exit_code == 0
    devices = [r["details"]["ran_on"]["device"] for r in results(session_copy) if r["target"] == "trt"]
    assert devices == ["orin-1"] * 4 + ["orin-2"] * 4 and len(bench_rows(session_copy)) == 16


def test_eval_rows_alone_add_accuracy_to_the_built_rows(session_copy):
    """An eval of one engine later (only device.eval.json passed): the built row keeps its build
    details and gains the new accuracy, the drop against the same device's fp32 from before."""
    assert run_inprocess("report", str(session_copy), "--device", "d").exit_code == 0
    doc = json.loads((session_copy / "trt" / "device.eval.json").read_text())
    doc["rows"] = [dict(r, top1=0.95, top1_drop_pp=None, agreement=None)
                   for r in doc["rows"] if r["precision"] == "int8"]
    later = session_copy / "later.eval.json"
    later.write_text(json.dumps(doc))
    assert run_inprocess("report", str(session_copy), str(later), "--device", "d").exit_code == 0
    int8 = next(r for r in results(session_copy) if r["precision"] == "int8" and r["target"] == "trt")
    assert int8["top1"] == 0.95 and int8["top1_drop_pp"] == pytest.approx(5.0) and int8["size_bytes"] > 0
    assert set(int8["details"]["ran_on"]["files"]) == {"build", "eval"} and int8["details"]["audit"]


def test_a_missing_layer_list_makes_the_audit_na_with_the_reason(session_copy):
    (session_copy / "trt" / "model.int8.layers.json").unlink()
    assert run_inprocess("report", str(session_copy)).exit_code == 0
    int8 = next(r for r in results(session_copy) if r["precision"] == "int8" and r["target"] == "trt")
    assert int8["details"]["audit"] == "n/a" and "was not copied back" in int8["details"]["audit_na_reason"]
    assert "layer audit n/a" in (session_copy / "report.md").read_text()


def test_without_device_files_it_says_how_to_get_them(tmp_path):
    export = export_with_bundle(tmp_path / "exp")
    before = stamps(export)
    res = run_inprocess("report", str(export))
    assert res.exit_code == 3 and "no device rows in" in res.stderr and "trt_device.py build" in res.stderr
    assert stamps(export) == before


# ----------------------------------------------------------------------------- hostile inputs

def _wrong_type(doc: dict) -> str:
    doc["rows"][0]["top1"] = "high"
    return json.dumps(doc)


def _wrong_column(doc: dict) -> str:
    doc["rows"][0]["gpu_compute_ms"] = {"p50": "fast"}
    return json.dumps(doc)


def _bad_engine_name(doc: dict) -> str:
    doc["rows"][0]["precision"] = "../../etc/passwd"
    return json.dumps(doc)


HOSTILE = [
    ("wrong-type", _wrong_type, "'top1' is 'high'"),
    ("wrong-column", _wrong_column, "'gpu_compute_ms'"),
    ("engine-name", _bad_engine_name, "engine name"),
    ("deep", lambda doc: "[" * 50_000 + "]" * 50_000, "nested too deeply"),
    ("other-format", lambda doc: json.dumps({**doc, "format": "edgeresnet-bundle/1"}), "format 'edgeresnet-bundle/1'"),
    ("a-report", lambda doc: json.dumps({"model": {}, "results": doc["rows"]}), "no 'format'"),
    ("not-json", lambda doc: "{rows: [", "cannot read"),
    ("no-rows", lambda doc: json.dumps({k: v for k, v in doc.items() if k != "rows"}), "'rows' is not a list"),
]


@pytest.mark.parametrize("name,spoil,words", HOSTILE, ids=[h[0] for h in HOSTILE])
@pytest.mark.parametrize("where", ["default", "argument"])
def test_a_bad_rows_file_is_exit_3_and_nothing_is_written(session_copy, tmp_path, name, spoil, words, where):
    doc = json.loads((session_copy / "trt" / "device.bench.json").read_text())
    bad = session_copy / "trt" / "device.bench.json" if where == "default" else tmp_path / "rows.json"
    bad.write_text(spoil(doc))
    before = stamps(session_copy)
    given = [] if where == "default" else [str(session_copy / "trt" / "device.build.json"), str(bad)]
    args = [str(session_copy), *given]
    res = run_inprocess("report", *args)
    assert res.exit_code == 3, (res.stderr, res.exception)
    assert words in res.stderr and str(bad) in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) <= 3 and res.stderr.strip().splitlines()[-1].startswith("hint: ")
    assert stamps(session_copy) == before  # nothing written, the good files included
    assert not [p for p in session_copy.rglob(".*.tmp")]


def test_a_rows_file_that_is_a_link_out_of_the_bundle_is_refused(session_copy, tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text((session_copy / "trt" / "device.bench.json").read_text())
    (session_copy / "trt" / "device.bench.json").unlink()
    (session_copy / "trt" / "device.bench.json").symlink_to(target)
    before = stamps(session_copy)
    res = run_inprocess("report", str(session_copy))
    assert res.exit_code == 3 and "is a link to a file outside the bundle" in res.stderr
    assert stamps(session_copy) == before


def test_a_malformed_layer_list_is_exit_3_and_nothing_is_written(session_copy):
    (session_copy / "trt" / "model.int8.layers.json").write_text("[" * 50_000)
    before = stamps(session_copy)
    res = run_inprocess("report", str(session_copy))
    assert res.exit_code == 3 and "model.int8.layers.json" in res.stderr and "Traceback" not in res.stderr
    assert stamps(session_copy) == before


def test_the_host_a_rows_file_records_names_the_device(session_copy):
    for command in ("build", "eval", "bench"):
        path = session_copy / "trt" / f"device.{command}.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "host": "orin-nano-7", "board": "Orin Nano"}))
    assert run_inprocess("report", str(session_copy)).exit_code == 0
    tags = [r["details"]["ran_on"] for r in results(session_copy) + bench_rows(session_copy) if r["target"] == "trt"]
    assert len(tags) == 12 and all(t["device"] == "orin-nano-7" and t["board"] == "Orin Nano" for t in tags)
    assert "orin-nano-7 (TRT 10.3.0.30)" in (session_copy / "report.md").read_text()


def test_a_bad_device_name_is_a_usage_error(session_copy):
    assert run_inprocess("report", str(session_copy), "--device", "a\nb").exit_code == 2


# ----------------------------------------------------------------------------- a Jetson's telemetry

def test_a_jetsons_power_and_clocks_reach_the_report(tmp_path, standin, monkeypatch):
    """The device file's bench with its telemetry reading the Orin fixture tree (MAXN_SUPER,
    jetson_clocks run, INA3221 rails): the merged rows carry the power mode, W and mJ/image.
    TRT_DEVICE_SYSFS_ROOT points the device file's telemetry at the fixture board."""
    export = export_with_bundle(tmp_path / "exp")
    monkeypatch.setenv(td.SYSFS_ENV, str(ORIN))
    bundle = export / "trt"
    assert run_device(bundle, "build", "--engines", "fp32,int8-dla") == 0
    assert run_device(bundle, "bench", "--engines", "fp32,int8-dla", *FAST) == 0
    res = run_inprocess("report", str(export))
    assert res.exit_code == 0, (res.stderr, res.exception)
    bench = {r["precision"]: r for r in bench_rows(export)}
    for r in bench.values():
        assert r["power_mode"] == {"id": 2, "name": "MAXN_SUPER"} and r["clocks_locked"] is True
        assert r["avg_w"] > 0 and r["mj_per_image"] > 0 and r["energy_source"] == "ina3221"
        assert r["details"]["ran_on"]["device"] == platform.node() and r["details"]["ran_on"]["tensorrt"] == "10.3.0.30"
    md = (export / "report.md").read_text()
    assert "MAXN_SUPER" in md and "energy from ina3221" in md and f"{platform.node()} (TRT 10.3.0.30)" in md
    assert "MAXN_SUPER" in res.stdout


# ----------------------------------------------------------------------------- the other writers keep them

def test_a_bench_here_keeps_the_device_rows(session_copy):
    """`edgeresnet bench` on the workstation rewrites bench.json with its own rows and keeps the
    device's; the device rows have no artifact, so it never tries to load a Jetson's engine."""
    assert run_inprocess("report", str(session_copy), "--device", "orin-1").exit_code == 0
    res = run_inprocess("bench", str(session_copy), "--min-runs", "3", "--min-seconds", "0.01", "--warmup", "1")
    assert res.exit_code == 0, (res.stderr, res.exception)
    rows = bench_rows(session_copy)
    assert [r["target"] for r in rows] == ["ort"] + ["trt"] * 8
    md = (session_copy / "report.md").read_text()
    assert "## Benchmark" in md and "## On the device" in md


@pytest.mark.slow
def test_export_device_session_report_then_build_and_bench_here(tmp_path):
    """The README's session: `export --target trt --prepare-only`, the bundle's own device file
    (on the stand-in) builds, evaluates and benches, `edgeresnet report` merges its rows; then the
    package's own `build` and `bench --target trt` on a GPU host (the stand-in again) add this
    machine's trt rows beside the device's instead of over them."""
    from ..conftest import export_default, run_cli

    out = tmp_path / "exp"
    export_default(out, "--target", "trt", "--prepare-only", "--dla-core", "0", "--calib-size", "64",
                   "--eval-limit", "100")
    device_run(out, "build")
    device_run(out, "eval")
    device_run(out, "bench", *FAST)
    res = run_cli("report", str(out), "--device", "orin-1")
    assert res.returncode == 0, res.stderr
    trt = [r for r in results(out) if r["target"] == "trt"]
    assert [r["precision"] for r in trt] == ["fp32", "fp16", "int8", "int8-dla", "fp16-dla"]
    assert all(r["status"] == "ok" and r["top1"] > 0.8 and r["details"]["ran_on"]["device"] == "orin-1" for r in trt)
    assert trt[2]["top1_drop_pp"] is not None and trt[3]["details"]["layers_on"]["dla"] > 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), str(STANDIN)]),
           "TRT_STANDIN_VERSION": "10.3.0.30", td.CUDART_ENV: "fake_cudart:library"}
    res = run_cli("build", str(out), "--eval-limit", "100", env=env)
    assert res.returncode == 0, res.stderr
    trt = [r for r in results(out) if r["target"] == "trt"]
    here = [r for r in trt if "ran_on" not in r["details"]]
    assert len(trt) - len(here) == 5 and len(here) >= 3
    res = run_cli("bench", str(out), "--target", "trt", "--min-seconds", "0.05", env=env)
    assert res.returncode == 0, res.stderr
    bench = bench_rows(out)
    assert sum(1 for r in bench if "ran_on" in r["details"]) == 5 and any("ran_on" not in r["details"] for r in bench)
    assert "## On the device" in (out / "report.md").read_text()
