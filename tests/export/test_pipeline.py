"""export/pipeline.py in-process on a tiny real ONNX model and a tiny npz dataset: the stages
run end to end in seconds (fold, calibrate, Q/DQ, the ORT engine, evaluation, the report and
the manifest; `slow`), and what can be refused is refused by `validate` before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeresnet.bundle.manifest import read_manifest
from edgeresnet.errors import InputError, UsageError
from edgeresnet.export.pipeline import ExportConfig, run_export, validate

from .test_onnx_source import conv_bn


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    model = conv_bn(root / "tiny.onnx", side=8, classes=3, batch=1)
    rng = np.random.RandomState(0)
    np.savez(root / "data.npz", x_train=rng.randint(0, 256, (64, 8, 8, 1)).astype(np.uint8),
             y_train=rng.randint(0, 3, 64), x_test=rng.randint(0, 256, (48, 8, 8, 1)).astype(np.uint8),
             y_test=rng.randint(0, 3, 48))
    return model, f"npz:{root / 'data.npz'}"


def config(sources, out, **changes):
    model, data = sources
    fields = dict(model=str(model), out=out, targets=("ort",), calib=data, calib_size=32, calib_method="minmax",
                  rounds=1, price=False)
    return ExportConfig(**{**fields, **changes})


@pytest.mark.slow  # ~5-10 s on 2 cores (the latency table's timing blocks): over the fast tier's share
def test_a_tiny_export_runs_every_stage_and_writes_a_bundle(sources, tmp_path):
    out = tmp_path / "exp"
    report = run_export(config(sources, out))
    rows = {(r.target, r.precision): r for r in report.results}
    assert {("ort", "fp32"), ("ort", "int8")} <= set(rows)
    for key in (("ort", "fp32"), ("ort", "int8")):
        assert rows[key].status == "ok" and (out / rows[key].artifact).is_file()
        assert 0 <= rows[key].top1 <= 1 and rows[key].agreement is not None
    assert json.loads((out / "report.json").read_text())["results"]
    manifest = read_manifest(out)
    assert {(a["target"], a["precision"]) for a in manifest["artifacts"]} >= {("ort", "fp32"), ("ort", "int8")}
    table = json.loads((out / "calibration.json").read_text())
    assert table["method"] == "minmax" and table["images"] == 32


@pytest.mark.parametrize("changes,error,words", [
    (dict(calib_method="median"), UsageError, "unknown --calib-method"),
    (dict(percentile=0.0), UsageError, "--percentile"),
    (dict(targets=("nosuch",)), UsageError, "nosuch"),
    (dict(calib="npz:/no/such.npz"), InputError, "no such file"),
])
def test_validate_refuses_before_any_work(sources, tmp_path, changes, error, words):
    with pytest.raises(error, match=words):
        validate(config(sources, tmp_path / "exp", **changes))
    assert not (tmp_path / "exp").exists()
