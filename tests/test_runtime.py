"""The deploy bundle: torch-free runtime, manifest checks, `predict`, `eval` of a bundle, `demo`."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from edgeresnet.errors import InputError
from edgeresnet.runtime import load

from .conftest import ROOT, run_cli

NO_TORCH = "import sys; sys.modules['torch'] = None; sys.argv = ['edgeresnet'] + sys.argv[1:]; " \
           "from edgeresnet.cli import app; app()"


def run_without_torch(*args):
    """The CLI with torch made unimportable, as on a torch-free install."""
    return subprocess.run([sys.executable, "-c", NO_TORCH, *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.fixture(scope="module")
def bundle(ort_ov_bundle):
    return ort_ov_bundle


@pytest.fixture(scope="module")
def pngs(tmp_path_factory, test_set):
    folder = tmp_path_factory.mktemp("pngs")
    for i in range(40):
        Image.fromarray(test_set.images[i, :, :, 0]).save(folder / f"{i:02d}_{test_set.labels[i]}.png")
    return folder


def test_runtime_preprocessing_equals_the_training_path(bundle, pngs, test_set):
    model = load(bundle, target="ort")
    files = sorted(pngs.glob("*.png"))
    from_files = model.preprocess_images(files)
    from_arrays = test_set.batch(np.arange(40), model.preprocess)  # what training/eval feed the model
    assert from_files.shape == (40, 1, 28, 28)
    np.testing.assert_allclose(from_files, from_arrays, atol=1e-6)


@pytest.mark.parametrize("target", ["ort", "openvino"])
def test_predict_without_torch_gets_the_pngs_right(bundle, pngs, target):
    res = run_without_torch("predict", str(bundle), str(pngs), "--target", target, "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    preds = data["predictions"]
    assert len(preds) == 40 and data["precision"] == "int8" and data["target"] == target
    right = sum(int(p["image"].rsplit("_", 1)[1].split(".")[0]) == p["class_index"] for p in preds)
    assert right >= 34
    first = preds[0]
    assert set(first) == {"image", "class_index", "class_name", "score", "top_k"}
    assert len(first["top_k"]) == 5 and first["top_k"][0]["class_name"] == first["class_name"]
    assert 0 < first["score"] <= 1 and first["score"] >= first["top_k"][1]["score"]


def test_eval_and_bench_of_a_bundle_without_torch(bundle):
    res = run_without_torch("eval", str(bundle), "--data", "default", "--limit", "300", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads((bundle / "report.json").read_text())
    int8 = next(r for r in report["results"] if (r["target"], r["precision"]) == ("ort", "int8"))
    assert json.loads(res.stdout)["top1"] == pytest.approx(int8["top1"], abs=1e-9)
    res = run_without_torch("bench", str(bundle), "--target", "ort", "--min-runs", "5", "--min-seconds", "0.1",
                            "--rounds", "2")
    assert res.returncode == 0, res.stderr


def test_python_api_takes_paths_images_and_arrays(bundle, pngs, test_set):
    model = load(bundle)
    files = sorted(pngs.glob("*.png"))[:3]
    by_path = model.predict(files)
    by_image = model.predict([Image.open(f) for f in files])
    by_array = model.predict([test_set.images[i] for i in range(3)])
    assert [p.class_index for p in by_path] == [p.class_index for p in by_image] == [p.class_index for p in by_array]


def test_manifest_lists_every_artifact_with_hashes(bundle):
    manifest = json.loads((bundle / "edgeresnet.json").read_text())
    kinds = {(a["target"], a["precision"]) for a in manifest["artifacts"]}
    assert {("ort", "fp32"), ("ort", "int8"), ("openvino", "fp32"), ("openvino", "int8")} <= kinds
    ov = next(a for a in manifest["artifacts"] if a["target"] == "openvino" and a["precision"] == "int8")
    assert set(ov["files"]) == {"model.int8.openvino.xml", "model.int8.openvino.bin"}
    assert manifest["preprocess"]["size"] == 28 and len(manifest["classes"]) == 10
    assert manifest["calibration"]["images"] == 64 and manifest["libraries"]["onnxruntime"]


def test_changed_or_missing_files_are_reported(bundle, tmp_path, pngs):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    with open(copy / "model.int8.ort.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(InputError, match="changed since export"):
        load(copy, target="ort")
    res = run_cli("predict", str(copy), str(pngs), "--target", "ort")
    assert res.returncode == 3 and "changed since export" in res.stderr and "Traceback" not in res.stderr
    (copy / "model.int8.openvino.bin").unlink()
    with pytest.raises(InputError, match="missing"):
        load(copy, target="openvino")
    with pytest.raises(InputError, match="no .*fp16"):
        load(bundle, target="ort", precision="fp16")


@pytest.mark.parametrize("args,words", [(["/no/such/bundle", "x.png"], "not a directory"),
                                        (["BUNDLE", "/no/such.png"], "does not exist"),
                                        (["BUNDLE", "/tmp/*.nomatch"], "no files match")])
def test_predict_bad_input(bundle, args, words):
    res = run_cli("predict", *[str(bundle) if a == "BUNDLE" else a for a in args])
    assert res.returncode == 3 and words in res.stderr and "Traceback" not in res.stderr


def test_cli_imports_no_runtime_at_startup():
    code = "import sys, edgeresnet.cli; print(sorted(m for m in ('torch', 'onnxruntime', 'openvino', 'onnx', 'matplotlib') if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.stdout.strip() == "[]"


@pytest.mark.slow
def test_demo_end_to_end(demo_run, tmp_path):
    res, out = demo_run
    assert res.returncode == 0, res.stderr
    assert "FP32 vs INT8" in res.stdout and "ort" in res.stdout and "openvino" in res.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["evaluation"]["images"] == 10000
    rows = {(r["target"], r["precision"]): r for r in report["results"]}
    assert rows[("ort", "int8")]["top1_drop_pp"] <= 0.5 and rows[("openvino", "int8")]["top1_drop_pp"] <= 0.5
    assert (out / "report.html").exists() and (out / "bench.json").exists()
    again = tmp_path / "demo"  # rerunnable: a second demo replaces its own earlier one (on a copy)
    shutil.copytree(out, again)
    (again / "left-over.txt").write_text("from the earlier demo")
    assert run_cli("demo", "--out", str(again)).returncode == 0
    assert not (again / "left-over.txt").exists() and json.loads((again / "report.json").read_text())["results"]


def test_engine_options_reach_the_engine_by_their_declared_keyword(bundle):
    """The runtime takes the engines' own options as they declare them (OpenVINO's device), and
    refuses a keyword no engine declares."""
    from edgeresnet.errors import UsageError

    model = load(bundle, target="openvino", precision="fp32", options={"device": "CPU"}, verified=False)
    assert model.target == "openvino" and model.logits(np.zeros((1, 1, 28, 28), np.float32)).shape == (1, 10)
    with pytest.raises(UsageError, match="no engine takes the option"):
        load(bundle, target="ort", options={"no_such_option": 1})
