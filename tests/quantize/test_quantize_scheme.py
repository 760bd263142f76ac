"""The quantization layer on tiny arrays and a one-conv graph: the scheme's math and the
recipe an INT8 graph is emitted from (fast tier)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeresnet.backends.onnxruntime import PROFILE as ORT
from edgeresnet.backends.tensorrt.backend import PROFILE as TRT
from edgeresnet.errors import InputError, UsageError
from edgeresnet.quantize.recipe import Candidate, quantized_model
from edgeresnet.quantize.scheme import (QMAX, ZERO_CHANNEL_SCALE, dequantize, qmax, quantize_bias, quantize_symmetric,
                                        weight_scales)


def test_grid_sizes():
    assert (qmax(8), qmax(7), qmax(4), QMAX) == (127, 63, 7, 127)
    for bad in (1, 17, 8.0, True):
        with pytest.raises(UsageError):
            qmax(bad)


def test_weight_scales_per_output_channel():
    w = np.zeros((3, 2, 1, 1), np.float32)
    w[0] = [[[2.54]], [[-1.0]]]
    w[1] = [[[0.5]], [[-12.7]]]  # channel 2 stays all zero
    scales = weight_scales(w, axis=0)
    np.testing.assert_allclose(scales, [2.54 / 127, 12.7 / 127, ZERO_CHANNEL_SCALE], rtol=1e-6)
    np.testing.assert_allclose(weight_scales(w, axis=0, num_bits=7)[:2], [2.54 / 63, 12.7 / 63], rtol=1e-6)
    with pytest.raises(InputError, match="NaN or Inf"):
        weight_scales(np.array([[np.nan]], np.float32))


def test_quantize_round_trip_within_half_a_step():
    rng = np.random.default_rng(0)
    x = rng.normal(size=1000).astype(np.float32)
    scale = float(np.abs(x).max()) / 127
    q = quantize_symmetric(x, scale)
    assert q.dtype == np.int8 and q.min() >= -127 and np.abs(q.astype(int)).max() == 127
    assert np.abs(dequantize(q, scale) - x).max() <= scale / 2 + 1e-7


def test_each_weight_channel_uses_its_full_range():
    rng = np.random.default_rng(10)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * np.arange(1, 9, dtype=np.float32)[:, None, None, None]
    w[2] = 0.0
    scales = weight_scales(w)
    assert scales.shape == (8,) and scales.dtype == np.float32
    expected = np.abs(w).reshape(8, -1).max(axis=1) / 127
    nonzero = np.arange(8) != 2
    np.testing.assert_allclose(scales[nonzero], expected[nonzero], rtol=1e-6)
    assert scales[2] == ZERO_CHANNEL_SCALE > 0
    np.testing.assert_array_equal(weight_scales(np.moveaxis(w, 0, -1), axis=-1), scales)

    s = scales.reshape(-1, 1, 1, 1)
    q = quantize_symmetric(w, s)
    assert q.dtype == np.int8 and q.shape == w.shape
    assert q.min() >= -127 and q.max() <= 127
    assert np.all(np.abs(q[nonzero]).reshape(7, -1).max(axis=1) == 127)  # each channel uses its full range
    assert np.all(q[2] == 0)
    err = np.abs(dequantize(q, s) - w)
    assert np.all(err <= s / 2 * (1 + 1e-6))


def test_quantize_clips_symmetrically_and_rounds_half_to_even():
    x = np.array([-1000.0, -128.0, -2.5, -0.5, 0.5, 1.5, 2.5, 126.5, 1000.0, np.nan], np.float32)
    np.testing.assert_array_equal(quantize_symmetric(x, 1.0), [-127, -127, -2, 0, 0, 2, 2, 126, 127, 0])
    with pytest.raises(InputError, match="positive and finite"):
        quantize_symmetric(x, 0.0)


def test_bias_on_the_accumulator_grid():
    q, scales = quantize_bias(np.array([0.5, -0.3, 1e9], np.float32), 0.1, np.array([0.01, 0.02, 1e-3], np.float32))
    assert q.dtype == np.int32 and scales.dtype == np.float32
    np.testing.assert_allclose(scales, [1e-3, 2e-3, 1e-4], rtol=1e-6)
    assert q.tolist() == [500, -150, 2**31 - 1]  # 1e9 / 1e-4 saturates int32
    np.testing.assert_allclose(q[:2] * scales[:2], [0.5, -0.3], rtol=1e-6)


def _conv_relu() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.normal(size=(4, 1, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 5])], [w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _ops(model) -> list[str]:
    return [n.op_type for n in model.graph.node]


def test_recipe_emits_qdq_and_keeps_float_layers_clean():
    fp32 = _conv_relu()
    scales = {"x": 3.0 / 127, "c": 6.0 / 127, "y": 6.0 / 127}
    trt = quantized_model(fp32, Candidate(scales), TRT)
    assert _ops(trt).count("QuantizeLinear") == 1 and "Conv" in _ops(trt)  # TensorRT: the conv input only
    assert _ops(trt).count("DequantizeLinear") == 2  # input and weights (bias stays float)
    ort = quantized_model(fp32, Candidate(scales), ORT)
    assert _ops(ort).count("DequantizeLinear") == 4  # input, output, weights, int32 bias
    floated = quantized_model(fp32, Candidate(scales, keep_float=frozenset({"conv"})), ORT)
    assert "QuantizeLinear" not in _ops(floated) and "DequantizeLinear" not in _ops(floated)


def test_recipe_bias_correction_applies_to_quantized_layers_only():
    fp32 = _conv_relu()
    new_bias = {"b": np.full(4, 0.25, np.float32)}
    scales = {"x": 3.0 / 127, "c": 6.0 / 127, "y": 6.0 / 127}
    corrected = quantized_model(fp32, Candidate(scales, biases=new_bias), TRT)
    b = {i.name: numpy_helper.to_array(i) for i in corrected.graph.initializer}["b"]
    np.testing.assert_array_equal(b, 0.25)
    floated = quantized_model(fp32, Candidate(scales, frozenset({"conv"}), new_bias), TRT)
    original = numpy_helper.to_array(fp32.graph.initializer[1])
    np.testing.assert_array_equal({i.name: numpy_helper.to_array(i) for i in floated.graph.initializer}["b"], original)


def test_float_layers_are_named_by_node_module_path_or_glob():
    from edgeresnet.quantize.recipe import match_layers, module_path

    assert module_path("/layer2/layer2.0/downsample/downsample.0/Conv") == "layer2.0.downsample.0"
    assert module_path("/layer1/layer1.0/conv1/Conv") == "layer1.0.conv1" and module_path("/fc/Gemm") == "fc"
    units = {n: frozenset({n}) for n in ("/conv1/Conv", "/layer1/layer1.0/conv1/Conv",
                                         "/layer2/layer2.0/downsample/downsample.0/Conv", "/fc/Gemm")}
    assert match_layers(["fc", "conv1"], units) == ["/conv1/Conv", "/fc/Gemm"]  # graph order, module paths
    assert match_layers(["*downsample*", "/layer1/layer1.0/conv1/Conv"], units) == [
        "/layer1/layer1.0/conv1/Conv", "/layer2/layer2.0/downsample/downsample.0/Conv"]
    with pytest.raises(UsageError, match="names no quantized layer"):
        match_layers(["layer9.*"], units)
