"""tune/fixes.py on a tiny real Conv -> Relu -> pool -> Gemm graph run by ONNX Runtime: the
per-tensor method choice keeps a threshold only when it lowers the output error (here, a
table whose chosen method clips hard gets the minmax thresholds back), and bias correction
reports every Conv/Gemm it measured and changes only their bias initializers."""

from __future__ import annotations

import numpy as np
import pytest

from edgeresnet.calibrate.table import CalibrationTable
from edgeresnet.data import Preprocess
from edgeresnet.data.sources import ArraySet
from edgeresnet.quantize.plan import layer_units, plan
from edgeresnet.quantize.recipe import Candidate
from edgeresnet.quantize.scheme import QMAX
from edgeresnet.tune.emulate import Images, Runner, sqnr_db
from edgeresnet.tune.fixes import choose_methods, correct_biases


def conv_net():
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.RandomState(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "fc_b")]
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 6, 6])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def setup():
    fp32 = conv_net()
    images = np.random.RandomState(1).randint(0, 256, (64, 6, 6, 1)).astype(np.uint8)
    data = ArraySet(images, np.zeros(64, np.int64), ["a", "b", "c"], "tiny [train]")
    imgs = Images(data, Preprocess(1, 6, None, (0.5,), (0.5,)), np.arange(64), None, batch_size=32)
    runner = Runner(fp32, threads=1)
    tensors = plan(fp32).all_tensors
    ref = runner.reference(imgs, tensors)
    minmax = {t: float(max(np.abs(v).max() for v in ref[t])) for t in tensors}
    clipped = {t: a / 20 for t, a in minmax.items()}  # a method that clips hard: a bad choice everywhere
    table = CalibrationTable("clipped", 64, "tiny", "0" * 64, {}, clipped, {"clipped": clipped, "minmax": minmax})
    return fp32, imgs, runner, table, np.concatenate(ref[runner.output])


def test_a_method_is_kept_for_a_tensor_only_when_it_lowers_the_output_error(setup):
    fp32, imgs, runner, table, ref = setup
    base = Candidate(dict(table.scales))
    scales, choice = choose_methods(runner, base, table, imgs)
    assert set(choice.values()) <= {"clipped", "minmax"} and "minmax" in choice.values()
    for tensor, method in choice.items():
        assert scales[tensor] == pytest.approx(table.amax_by_method[method][tensor] / QMAX)
    before, after = sqnr_db(ref, runner.logits(base, imgs)), sqnr_db(ref, runner.logits(base.but(scales=scales), imgs))
    assert after > before + 1  # each kept threshold lowered the error of the output


def test_bias_correction_measures_every_layer_and_changes_only_biases(setup):
    fp32, imgs, runner, table, _ = setup
    units = layer_units(fp32)
    cand = Candidate({t: a / QMAX for t, a in table.amax_by_method["minmax"].items()})
    biases, details = correct_biases(runner, cand, imgs, units)
    assert set(details["layers"]) == {"conv", "fc"} and details["images"] == 64
    assert set(biases) <= {"b", "fc_b"}
    assert details["channels_corrected"] == sum(v["corrected"] for v in details["layers"].values())
    assert details["layers"]["conv"]["channels"] == 4 and details["layers"]["fc"]["channels"] == 3
    for name, values in biases.items():
        assert values.dtype == np.float32 and values.shape == ((4,) if name == "b" else (3,))
