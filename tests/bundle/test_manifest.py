"""The bundle manifest on a tiny bundle (fast tier): every artifact file hashed, every
change or escape refused with one line."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest
from onnx import TensorProto, helper

from edgeresnet.errors import InputError
from edgeresnet.bundle.manifest import NAME, read_manifest, verify_entry, write_manifest


@pytest.fixture
def bundle(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])])
    root = tmp_path / "b"
    root.mkdir()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(root / "model.fp32.onnx"))
    (root / "calibration.json").write_text("{}")
    report = {"model": {"arch": "toy", "input_shape": [1, 2], "classes": ["a", "b"],
                        "preprocess": {"channels": 1, "size": 2, "mean": [0.5], "std": [0.5]}},
              "results": [{"target": "ort", "precision": "fp32", "status": "ok", "artifact": "model.fp32.onnx",
                           "details": {}, "kernel": None},
                          {"target": "trt", "precision": "int8", "status": "skipped", "artifact": None}],
              "machine": {"cpu": {"model": "m", "class": "x86-avx2"}}}
    write_manifest(root, report, {"onnxruntime": "1"})
    return root


def test_every_artifact_and_extra_file_is_hashed(bundle):
    manifest = read_manifest(bundle)
    [entry] = manifest["artifacts"]  # the skipped row has no artifact
    assert entry["path"] == "model.fp32.onnx" and set(entry["files"]) == {"model.fp32.onnx"}
    assert set(manifest["files"]) == {"model.fp32.onnx", "calibration.json"}
    assert manifest["measured_on"]["class"] == "x86-avx2"
    verify_entry(bundle, entry)


@pytest.mark.parametrize("tamper, words", [
    (lambda root, e: (root / "model.fp32.onnx").write_bytes(b"x" + (root / "model.fp32.onnx").read_bytes()[1:]),
     "changed since export"),
    (lambda root, e: (root / "model.fp32.onnx").unlink(), "missing"),
    (lambda root, e: e.update(path="../outside.onnx"), "hashes do not cover"),
    (lambda root, e: e.update(path="/etc/passwd", files={"/etc/passwd": "0"}), "outside the bundle"),
])
def test_changed_missing_or_escaping_files_are_refused(bundle, tamper, words):
    entry = read_manifest(bundle)["artifacts"][0]
    tamper(bundle, entry)
    with pytest.raises(InputError, match=words):
        verify_entry(bundle, entry)


def test_not_a_bundle_is_one_input_error(tmp_path, bundle):
    with pytest.raises(InputError, match="is not a directory"):
        read_manifest(tmp_path / "nope")
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    (copy / NAME).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(InputError, match="not an edgeresnet bundle manifest"):
        read_manifest(copy)
    (copy / NAME).unlink()
    with pytest.raises(InputError, match=f"has no {NAME}"):
        read_manifest(copy)
