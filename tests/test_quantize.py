"""QDQ graph checks: placement, residual Adds, zero points, dtypes, numerics vs FP32."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper

from edgeresnet.calibrate.collect import calibrate
from edgeresnet.models.checkpoint import load_checkpoint
from edgeresnet.export.torch_onnx import export_onnx
from edgeresnet.models.fold import fold_bn
from edgeresnet.quantize.plan import plan
from edgeresnet.backends import backends
from edgeresnet.quantize.qdq import emit_qdq

PROFILES = {p.name: p for c in backends() for p in (c.qdq_profile, *c.capabilities.qdq_variants.values()) if p}


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
    """Unfused (every Q/DQ and conv as written): the int8 grid's exact arithmetic on any CPU.
    Fused U8S8 kernels saturate on x86 without VNNI; tests/test_portability.py covers those."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def test_plan_covers_every_conv_gemm_and_residual_add(fp32):
    model, sites, _, _ = fp32
    ops = [n.op_type for n in model.graph.node]
    assert len(sites.weights) == ops.count("Conv") + ops.count("Gemm") == 22
    residual_adds = [n for n in model.graph.node if n.op_type == "Add"]
    assert len(sites.residual_adds) == len(residual_adds) == 9
    assert "BatchNormalization" not in ops


@pytest.mark.parametrize("profile", ["trt", "ort", "openvino"])
def test_qdq_graph_structure(fp32, profile):
    model, sites, table, _ = fp32
    q = emit_qdq(model, table.scales, PROFILES[profile])
    inits = {i.name: i for i in q.graph.initializer}
    producers = {o: n for n in q.graph.node for o in n.output}
    qs = [n for n in q.graph.node if n.op_type == "QuantizeLinear"]
    # TensorRT: Q/DQ on layer inputs only, the classifier Gemm's excepted (float there, as ModelOpt
    # leaves it); ORT and OpenVINO: also on every op's output (node units).
    float_gemm = [n for n in model.graph.node if n.op_type in PROFILES[profile].float_ops]
    assert [n.op_type for n in float_gemm] == (["Gemm"] if profile == "trt" else [])
    assert len(qs) == len(sites.activations) - len(float_gemm) + (len(sites.outputs) if profile != "trt" else 0)
    u8, i8 = TensorProto.UINT8, TensorProto.INT8
    for n in qs:
        zp = inits[n.input[2]]
        relu = n.input[0] in sites.nonnegative
        # trt: int8/0 everywhere. ort: uint8, 128 for signed tensors (the int8 grid), 0 after a ReLU.
        # openvino: int8/0 signed, uint8/0 after a ReLU.
        want = {"trt": (i8, 0), "ort": (u8, 0 if relu else 128), "openvino": (u8, 0) if relu else (i8, 0)}[profile]
        assert (zp.data_type, int(numpy_helper.to_array(zp))) == want
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
        if n.op_type == "Gemm" and profile == "trt":
            assert n.input[0] not in producers or producers[n.input[0]].op_type != "DequantizeLinear"
            assert n.input[1] in inits and inits[n.input[1]].data_type == TensorProto.FLOAT
            continue
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


def test_maxpool_keeps_its_input_scale(tmp_path, calib_set):
    """Max-pooling is exact on a quantized grid; a scale of its own kept ORT's max-pool in float."""
    from edgeresnet import build_model
    from edgeresnet.models.checkpoint import IMAGENET_PREPROCESS, ModelMeta
    from edgeresnet.data import Preprocess

    pre = Preprocess(3, 64, 64, IMAGENET_PREPROCESS.mean, IMAGENET_PREPROCESS.std)
    meta = ModelMeta("resnet18", 1000, 3, pre, [str(i) for i in range(1000)])
    folded, _ = fold_bn(build_model("resnet18").eval())
    export_onnx(folded, meta, tmp_path / "r18.onnx")
    model = onnx.load(str(tmp_path / "r18.onnx"))
    sites = plan(model)
    table = calibrate(model, sites.all_tensors, calib_set, pre, np.arange(16))
    pool = next(n for n in model.graph.node if n.op_type == "MaxPool")
    assert table.amax[pool.input[0]] != table.amax[pool.output[0]]  # measured apart...
    for profile in ("trt", "ort", "openvino"):
        q = emit_qdq(model, table.scales, PROFILES[profile])
        inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
        # ...but emitted with its input's scale (not its own), so the pool runs on the int8 grid
        assert inits[f"{pool.output[0]}_scale"] == np.float32(table.scales[pool.input[0]]), profile
        assert inits[f"{pool.output[0]}_scale"] != np.float32(table.scales[pool.output[0]]), profile
        if f"{pool.input[0]}_scale" in inits:  # TensorRT quantizes conv inputs only: no Q/DQ before the pool
            assert inits[f"{pool.input[0]}_scale"] == inits[f"{pool.output[0]}_scale"], profile
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(emit_qdq(model, table.scales, PROFILES["ort"]).SerializeToString(), opts,
                         providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert "MaxPool" not in ops and "NhwcMaxPool" in ops  # ORT runs it in uint8
