"""onnxfile: the checks an ONNX file passes before a runtime opens it, and the typed, bounded
reader of edgeresnet's metadata in it (fast tier: tiny graphs, no export)."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeresnet.data import Preprocess
from edgeresnet.errors import InputError
from edgeresnet.onnxfile import STANDARD, check_onnx_file, read_metadata
from edgeresnet.onnxfile.metadata import MAX_CHARS
from edgeresnet.onnxfile.reference import user_session

from ..test_reliability import tiny_classifier

PRE = {"channels": 3, "size": 8, "resize": 8, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def _with_meta(**props: str):
    model = onnx.ModelProto()
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key.replace("_", "."), value
    return model


def test_our_metadata_reads_back_typed_and_others_keys_pass_through():
    meta = read_metadata(_with_meta(edgeresnet_arch="resnet20", edgeresnet_preprocess=json.dumps(PRE),
                                    edgeresnet_classes=json.dumps(list("abcdefghij")), producer="x"), "m.onnx")
    assert meta.arch == "resnet20" and meta.preprocess == Preprocess.from_dict(PRE)
    assert meta.classes == list("abcdefghij") and meta.other == {"producer": "x"}
    assert read_metadata(onnx.ModelProto(), "m.onnx").classes is None  # not one of ours: no names


@pytest.mark.parametrize("props, words", [
    ({"edgeresnet_classes": "12"}, "edgeresnet.classes must be a JSON list of strings, one per output, got int"),
    ({"edgeresnet_classes": json.dumps(["a", 3])}, "edgeresnet.classes must be a list of at most"),
    ({"edgeresnet_classes": "[1,"}, "edgeresnet.classes is not valid JSON"),
    ({"edgeresnet_preprocess": "[" * 50_000 + "]" * 50_000}, "nested 50000 deep; the limit is 8"),
    ({"edgeresnet_preprocess": '{"a": "[[[[[[[[[[[[[["}'}, "spec's a is not a preprocessing field"),  # brackets in a string
    ({"edgeresnet_preprocess": json.dumps([1])}, "edgeresnet.preprocess must be a JSON object"),
    ({"edgeresnet_preprocess": json.dumps({**PRE, "size": 100_000})}, "size must be an integer from 1 to 4,096, got 100000"),
    ({"edgeresnet_arch": "r" * 5000}, "edgeresnet.arch is 5,000 characters"),
    ({"edgeresnet_source": " " * (MAX_CHARS + 1)}, "the limit is 8,000,000"),
])
def test_bad_metadata_is_one_input_error_naming_the_key(props, words):
    with pytest.raises(InputError, match=words) as err:
        read_metadata(_with_meta(**props), "m.onnx")
    assert err.value.message.startswith("m.onnx: metadata edgeresnet.") and err.value.hint


def test_a_clean_file_and_its_external_data_pass(tmp_path):
    tiny_classifier(tmp_path / "ok.onnx")
    model = onnx.load(str(tmp_path / "ok.onnx"))
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.bin", size_threshold=0)
    for name in ("ok.onnx", "ext.onnx"):
        assert check_onnx_file(tmp_path / name, STANDARD).graph.node
        user_session(tmp_path / name)


def _external(tmp_path, location: str, length: str = "120"):
    tiny_classifier(tmp_path / "m.onnx", external=120)
    model = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    info = {e.key: e for e in model.graph.initializer[0].external_data}
    info["location"].value, info["length"].value = location, length
    onnx.save(model, str(tmp_path / "m.onnx"))
    return tmp_path / "m.onnx"


@pytest.mark.parametrize("location, length, words", [
    ("../../etc/passwd", "120", "outside the model's folder"),
    ("nothere.bin", "120", "missing or not a regular file"),
    ("fifo.bin", "120", "missing or not a regular file"),
    ("w.bin", "-1", "claims -1 bytes"),
    ("w.bin", "1e3", "non-integer external data"),
])
def test_external_data_is_confined_and_bounded(tmp_path, location, length, words):
    path = _external(tmp_path, location, length)
    os.mkfifo(tmp_path / "fifo.bin")
    with pytest.raises(InputError, match=words):
        check_onnx_file(path)


def test_a_custom_op_in_a_subgraph_is_refused(tmp_path):
    branch = helper.make_graph([helper.make_node("Evil", ["x"], ["z"], domain="com.evil")], "b", [],
                               [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    cond = numpy_helper.from_array(np.array(True), "c")
    graph = helper.make_graph([helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [cond])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.evil", 1)])
    onnx.save(model, str(tmp_path / "if.onnx"))
    with pytest.raises(InputError, match="op Evil from domain com.evil"):
        check_onnx_file(tmp_path / "if.onnx")


def test_ort_contrib_ops_pass_for_bench_but_not_as_an_export_source(tmp_path):
    tiny_classifier(tmp_path / "ms.onnx", op=("com.microsoft", "Gelu"))
    check_onnx_file(tmp_path / "ms.onnx")  # ORT's fused INT8 files (ours) use com.microsoft ops
    with pytest.raises(InputError, match="op Gelu from domain com.microsoft") as err:
        check_onnx_file(tmp_path / "ms.onnx", STANDARD)
    assert err.value.message.endswith("edgeresnet runs standard ONNX ops")


def test_what_ort_still_refuses_is_an_input_error_naming_the_file(tmp_path):
    tiny_classifier(tmp_path / "m.onnx", op=("com.microsoft", "NoSuchOp"))
    check_onnx_file(tmp_path / "m.onnx")  # onnx knows no com.microsoft schemas: only ORT can tell
    with pytest.raises(InputError, match=f"ONNX Runtime cannot load {tmp_path / 'm.onnx'}: .*NoSuchOp") as err:
        user_session(tmp_path / "m.onnx")
    assert "[ONNXRuntimeError]" not in err.value.message and err.value.hint
