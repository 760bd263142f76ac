"""QDQ graph checks: placement, residual Adds, zero points, dtypes, numerics vs FP32."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper

from edgeresnet.calibrate.collect import calibrate
from edgeresnet.checkpoint import load_checkpoint
from edgeresnet.export import export_onnx
from edgeresnet.fold import fold_bn
from edgeresnet.quantize.plan import plan
from edgeresnet.quantize.qdq import PROFILES, emit_qdq


@pytest.fixture(scope="module")
def fp32(tmp_path_factory, calib_set):
    ckpt = load_checkpoint("default")
    folded, _ = fold_bn(ckpt.model)
    path = tmp_path_factory.mktemp("q") / "m.onnx"
    export_onnx(folded, ckpt.meta, path)
    model = onnx.load(str(path))
    sites = plan(model)
    table = calibrate(model, sites.all_tensors, calib_set, ckpt.meta.preprocess, np.arange(128))
    return model, sites, table, ckpt.meta.preprocess


def _run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def test_plan_covers_every_conv_gemm_and_residual_add(fp32):
    model, sites, _, _ = fp32
    ops = [n.op_type for n in model.graph.node]
    assert len(sites.weights) == ops.count("Conv") + ops.count("Gemm") == 22
    residual_adds = [n for n in model.graph.node if n.op_type == "Add"]
    assert len(sites.residual_adds) == len(residual_adds) == 9
    assert "BatchNormalization" not in ops


@pytest.mark.parametrize("profile", ["trt", "ort"])
def test_qdq_graph_structure(fp32, profile):
    model, sites, table, _ = fp32
    q = emit_qdq(model, table.scales, PROFILES[profile])
    inits = {i.name: i for i in q.graph.initializer}
    producers = {o: n for n in q.graph.node for o in n.output}
    want_type = TensorProto.INT8 if profile == "trt" else TensorProto.UINT8
    qs = [n for n in q.graph.node if n.op_type == "QuantizeLinear"]
    # TensorRT: Q/DQ on layer inputs only; ORT: also on every op's output (whole node units).
    assert len(qs) == len(sites.activations) + (len(sites.outputs) if profile == "ort" else 0)
    for n in qs:
        zp = inits[n.input[2]]
        # ORT: uint8 with 128 for signed tensors (the int8 grid), 0 after a ReLU (ReLU folds away).
        want_zp = 0 if profile == "trt" or n.input[0] in sites.nonnegative else 128
        assert zp.data_type == want_type and int(numpy_helper.to_array(zp)) == want_zp
    if profile == "ort":
        assert int(numpy_helper.to_array(inits["input_zero_point"])) == 128
        consumers = {}
        for n in q.graph.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n.op_type)
        for n in q.graph.node:
            if n.op_type in ("Conv", "Add"):
                out = n.output[0]
                nxt = consumers[out]
                if nxt == ["Relu"]:
                    out = next(m.output[0] for m in q.graph.node if m.input and m.input[0] == out)
                assert consumers[out] == ["QuantizeLinear"], n.name
    for n in q.graph.node:
        if n.op_type in ("Conv", "Gemm"):
            assert producers[n.input[0]].op_type == "DequantizeLinear"
            w_dq = producers[n.input[1]]
            assert w_dq.op_type == "DequantizeLinear"
            w = inits[w_dq.input[0]]
            assert w.data_type == TensorProto.INT8
            assert len(numpy_helper.to_array(inits[w_dq.input[1]])) == w.dims[0 if n.op_type == "Conv" else 0]
            if len(n.input) > 2:
                bias_from = producers.get(n.input[2])
                if profile == "ort":
                    assert bias_from.op_type == "DequantizeLinear" and inits[bias_from.input[0]].data_type == TensorProto.INT32
                else:
                    assert bias_from is None and inits[n.input[2]].data_type == TensorProto.FLOAT
        if n.op_type == "Add":
            assert any(getattr(producers.get(i), "op_type", None) == "DequantizeLinear" for i in n.input)
    assert not any(i.data_type == TensorProto.FLOAT and len(i.dims) == 4 for i in q.graph.initializer)


def test_qdq_numerics_follow_fp32_and_profiles_agree(fp32, test_set):
    model, _, table, pre = fp32
    x = test_set.batch(np.arange(256), pre)
    ref = _run(model, x)
    trt = _run(emit_qdq(model, table.scales, PROFILES["trt"]), x)
    ortq = _run(emit_qdq(model, table.scales, PROFILES["ort"]), x)
    assert (trt.argmax(1) == ref.argmax(1)).mean() > 0.97
    # uint8 with zero point 128 is the int8 grid: only int32 bias rounding separates them.
    assert (trt.argmax(1) == ortq.argmax(1)).mean() > 0.99
    assert np.abs(trt - ortq).max() < 0.05 * np.abs(ref).max()


def test_keep_float_leaves_named_layers_in_float(fp32):
    model, sites, table, _ = fp32
    first = sites.weights[0].node
    q = emit_qdq(model, table.scales, PROFILES["trt"], keep_float=frozenset({first}))
    node = next(n for n in q.graph.node if n.name == first)
    assert node.input[1] == sites.weights[0].weight  # the float weight, no DequantizeLinear
    assert sum(n.op_type == "Conv" for n in q.graph.node) == 21
