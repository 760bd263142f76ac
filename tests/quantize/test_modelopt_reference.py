"""Our TensorRT Q/DQ placement and scales against NVIDIA's Model Optimizer on the same FP32
ONNX and the same calibration images (fixture: tests/data/modelopt/, made with ModelOpt 0.47).

Every difference allowed here is intended, and named with its reason; a new one fails."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from ..conftest import run_cli
from ..qdq_placement import placement, quantized_inputs

FIXTURES = Path(__file__).parents[1] / "data" / "modelopt"

# (op type, input index) -> why we differ from ModelOpt there.
WE_QUANTIZE_MODELOPT_DOES_NOT: dict[tuple[str, str], str] = {}
MODELOPT_QUANTIZES_WE_DO_NOT = {
    ("MaxPool", "0"): "TensorRT propagates a Quantize backward through MaxPool (they commute: Developer Guide, "
                      "'Q/DQ Layer-Placement Recommendations'), so our Q/DQ on the next conv's input gives the same "
                      "INT8 MaxPool in the engine",
    ("GlobalAveragePool", "0"): "the average is taken in float before the float classifier: one requantization "
                                "fewer on a 1/49th-size tensor; ModelOpt quantizes it to keep the pool in INT8 "
                                "(speed difference not measured here: no TensorRT)",
}


def _export(tmp_path: Path, fixture: dict) -> dict:
    args = fixture["export"].split()[2:]  # after "edgeresnet export"
    out = tmp_path / "exp"
    res = run_cli("export", *args, "--out", str(out))
    assert res.returncode == 0, res.stderr
    return placement(onnx.load(str(out / "trt" / "model.int8.trt.qdq.onnx")))


def _compare(ours: dict, reference: dict) -> list[str]:
    problems = []
    ours_only = quantized_inputs(ours) - quantized_inputs(reference)
    ref_only = quantized_inputs(reference) - quantized_inputs(ours)
    problems += [f"we quantize {op} {node} input {i}, ModelOpt does not" for op, node, i in sorted(ours_only)
                 if (op, i) not in WE_QUANTIZE_MODELOPT_DOES_NOT]
    problems += [f"ModelOpt quantizes {op} {node} input {i}, we do not" for op, node, i in sorted(ref_only)
                 if (op, i) not in MODELOPT_QUANTIZES_WE_DO_NOT]
    for node, entry in reference.items():
        for idx, ref in entry["inputs"].items():
            mine = ours.get(node, {}).get("inputs", {}).get(idx)
            if mine is None:
                continue
            for key in ("kind", "axis", "zero_point", "dtype"):
                if mine[key] != ref[key]:
                    problems.append(f"{node} input {idx}: {key} {mine[key]} vs ModelOpt's {ref[key]}")
            if mine["kind"] == "activation" and mine["tensor"] != ref["tensor"]:
                problems.append(f"{node} input {idx}: quantizes {mine['tensor']}, ModelOpt {ref['tensor']}")
    return problems


def _named_differences_occur(ours: dict, reference: dict) -> set[tuple[str, str]]:
    ref_only = quantized_inputs(reference) - quantized_inputs(ours)
    return {(op, i) for op, _, i in ref_only}


@pytest.mark.slow  # a real export of ResNet-20 (about 7 s on 2 cores)
def test_resnet20_placement_and_scales_match_modelopt(tmp_path):
    fixture = json.loads((FIXTURES / "resnet20.json").read_text())
    reference, ours = fixture["placement"], _export(tmp_path, fixture)
    assert _compare(ours, reference) == []
    assert _named_differences_occur(ours, reference) == {("GlobalAveragePool", "0")}  # no MaxPool in a CIFAR net
    assert not any(v["op"] == "Gemm" for v in ours.values())  # the classifier in float, as ModelOpt does
    checked = 0
    for node, entry in reference.items():
        for idx, ref in entry["inputs"].items():
            mine = ours.get(node, {}).get("inputs", {}).get(idx)
            if mine is not None:  # same images, same statistic: the same scales (float32 rounding apart)
                assert mine["scale"] == pytest.approx(ref["scale"], rel=1e-6), (node, idx)
                checked += 1
    assert checked >= 40  # 21 convs' activations and weights, 9 residual Adds


@pytest.mark.slow
def test_resnet18_placement_matches_modelopt(tmp_path):
    fixture = json.loads((FIXTURES / "resnet18.json").read_text())
    reference, ours = fixture["placement"], _export(tmp_path, fixture)
    assert _compare(ours, reference) == []
    assert _named_differences_occur(ours, reference) == {("GlobalAveragePool", "0"), ("MaxPool", "0")}
