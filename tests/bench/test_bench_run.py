"""bench/run.py on tiny real ONNX files: one model file is timed through the worker as its
engine and precision, the precision is told from the file, and bad flags or sources are one
typed error before anything is timed."""

from __future__ import annotations

import numpy as np
import pytest

from edgeresnet.bench.run import BenchConfig, bench, discover
from edgeresnet.errors import InputError, UsageError


def tiny_onnx(path, int8: bool):
    """input [N,1,4,4] -> (Q/DQ) -> Flatten -> MatMul -> logits [N,3]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.RandomState(0).standard_normal((16, 3)).astype(np.float32)
    inits, nodes, src = [numpy_helper.from_array(w, "W")], [], "input"
    if int8:
        inits += [numpy_helper.from_array(np.array(2 / 255, np.float32), "s"),
                  numpy_helper.from_array(np.array(128, np.uint8), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"], name="q"),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="dq")]
        src = "dq"
    nodes += [helper.make_node("Flatten", [src], ["flat"], name="flatten", axis=1),
              helper.make_node("MatMul", ["flat", "W"], ["logits"], name="matmul")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("int8,precision", [(False, "fp32"), (True, "int8")])
def test_one_model_file_is_found_as_its_engine_and_precision(tmp_path, int8, precision):
    path = tiny_onnx(tmp_path / "model.onnx", int8)  # no precision in the name: told from the graph
    items, report = discover(path)
    assert report is None and len(items) == 1
    assert (items[0].artifact.target, items[0].artifact.precision, items[0].artifact.path) == ("ort", precision, path)


def test_one_model_file_is_timed(tmp_path):
    path = tiny_onnx(tmp_path / "m.int8.onnx", True)
    rows, report = bench(BenchConfig(path, batches=(1, 2), warmup=1, min_runs=5, min_seconds=0.01, rounds=1, threads=1))
    assert report is None
    assert [(r.target, r.precision, r.batch, r.mode, r.status) for r in rows] == \
        [("ort", "int8", 1, "latency", "ok"), ("ort", "int8", 2, "latency", "ok")]
    for r in rows:
        lat = r.latency_ms
        assert 0 < lat["min"] <= lat["p50"] <= lat["max"] and lat["samples"] >= 5 and r.artifact == "m.int8.onnx"


@pytest.mark.parametrize("cfg,error,words", [
    (dict(modes=("fast",)), UsageError, "unknown --mode 'fast'"),
    (dict(rounds=0), UsageError, "--rounds"),
    (dict(targets=("openvino",)), InputError, "nothing to benchmark"),
])
def test_bad_flags_are_one_typed_error(tmp_path, cfg, error, words):
    path = tiny_onnx(tmp_path / "m.onnx", False)
    with pytest.raises(error, match=words):
        bench(BenchConfig(path, **cfg))


@pytest.mark.parametrize("name,words", [("missing.onnx", "does not exist"), ("notes.txt", "cannot benchmark notes.txt")])
def test_a_source_that_is_not_a_model_is_refused(tmp_path, name, words):
    if name.endswith(".txt"):
        (tmp_path / name).write_text("hello")
    with pytest.raises(InputError, match=words):
        discover(tmp_path / name)
