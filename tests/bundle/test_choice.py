"""Which artifact `predict` and `runtime.load` run: the fastest that passed `verify` on this
device; explicit --target/--precision win; a failed artifact never runs unless named."""

import json
import shutil
import warnings

import pytest

from edgeresnet.bundle.verify import local_device_key, merge_entry, read_verify
from edgeresnet.errors import InputError, PortabilityWarning
from edgeresnet.runtime import load

from ..conftest import run_cli


def _engine(target, precision, status, p50, reason=None):
    return {"target": target, "precision": precision, "artifact": None, "status": status, "reason": reason,
            "top1": 0.9, "agreement": 1.0 if status == "passed" else 0.5, "max_abs_logit_diff": 0.1,
            "kernel": None, "path": "test", "expected": {}, "tolerance": {"rule": "test", "max_disagreements": 0,
                                                                          "max_errors": None},
            "latency_ms": {"p50": p50, "spread_pct": 1.0, "rounds": 3}}


def _entry(engines, chosen):
    return {"device": {"device_key": local_device_key()}, "via": "local", "time": "2026-11-30T00:00:00Z",
            "golden": {"images": 10, "sha256": "0" * 64}, "engines": engines, "chosen": chosen, "flags": []}


@pytest.fixture()
def copy(ort_ov_bundle, tmp_path):
    """A private copy: these tests write verify.json, never into the shared bundle."""
    return shutil.copytree(ort_ov_bundle, tmp_path / "b")


def _verified(copy, engines):
    passed = sorted((e for e in engines if e["status"] == "passed"), key=lambda e: e["latency_ms"]["p50"])
    chosen = {"target": passed[0]["target"], "precision": passed[0]["precision"],
              "latency_ms": passed[0]["latency_ms"]["p50"]} if passed else None
    merge_entry(copy, _entry(engines, chosen))
    assert read_verify(copy)["devices"][local_device_key()]["chosen"] == chosen


def test_unverified_bundle_runs_the_default_and_says_so_once(copy):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        first = load(copy)
        load(copy)
    notes = [w for w in seen if issubclass(w.category, PortabilityWarning) and "not been verified" in str(w.message)]
    assert len(notes) == 1 and "edgeresnet verify" in str(notes[0].message)
    assert (first.target, first.precision, first.chosen_by) == ("ort", "int8", "unverified")


def test_the_fastest_passed_artifact_is_chosen(copy):
    _verified(copy, [_engine("ort", "int8", "passed", 0.30), _engine("openvino", "int8", "passed", 0.20),
                     _engine("ort", "fp32", "passed", 0.40)])
    model = load(copy)
    assert (model.target, model.precision, model.chosen_by) == ("openvino", "int8", "verified")
    only_ort = load(copy, target="ort")
    assert (only_ort.target, only_ort.precision) == ("ort", "int8")
    fp32 = load(copy, precision="fp32")
    assert (fp32.target, fp32.precision) == ("ort", "fp32")


def test_a_failed_artifact_is_skipped_even_when_fastest(copy):
    _verified(copy, [_engine("ort", "int8", "failed", 0.10, reason="agreement 0.50 < 0.97"),
                     _engine("ort", "fp32", "passed", 0.40), _engine("openvino", "int8", "passed", 0.30)])
    model = load(copy)
    assert (model.target, model.precision) == ("openvino", "int8")
    assert (load(copy, target="ort").precision) == "fp32"  # ort's int8 failed: its fp32 passed


def test_asking_for_a_precision_that_only_failed_names_the_failures(copy):
    _verified(copy, [_engine("ort", "int8", "failed", 0.10, reason="agreement 0.50 < 0.97"),
                     _engine("openvino", "int8", "failed", 0.12, reason="top-1 0.40 < 0.85"),
                     _engine("ort", "fp32", "passed", 0.40)])
    with pytest.raises(InputError, match="int8 failed verification") as info:
        load(copy, precision="int8")
    assert "ort int8 (agreement 0.50" in info.value.message and "openvino int8 (top-1" in info.value.message
    res = run_cli("predict", str(copy), "nothing.png", "--precision", "int8")
    assert res.returncode == 3 and "failed verification" in res.stderr and "Traceback" not in res.stderr


def test_naming_a_failed_artifact_runs_it_with_a_warning(copy):
    _verified(copy, [_engine("ort", "int8", "failed", 0.10, reason="agreement 0.50 < 0.97"),
                     _engine("ort", "fp32", "passed", 0.40)])
    with pytest.warns(PortabilityWarning, match="failed verification"):
        model = load(copy, target="ort", precision="int8")
    assert (model.precision, model.chosen_by) == ("int8", "asked")


def test_predict_cli_reports_how_it_chose(copy, pngs_dir):
    _verified(copy, [_engine("openvino", "fp32", "passed", 0.20), _engine("ort", "int8", "passed", 0.30)])
    res = run_cli("predict", str(copy), str(pngs_dir), "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert (data["target"], data["precision"], data["chosen_by"]) == ("openvino", "fp32", "verified")
    assert "not been verified" not in res.stderr


@pytest.fixture()
def pngs_dir(tmp_path, test_set):
    from PIL import Image

    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(test_set.images[i, :, :, 0]).save(folder / f"{i}.png")
    return folder
