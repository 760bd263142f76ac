"""export/onnx_source.py on tiny real graphs (not one of ours: no edgeresnet metadata): the BN is
folded exactly, input/output become input/logits with a dynamic batch, classes are numbered,
preprocessing comes from the input shape, and a file that is not an image classifier is one
InputError."""

from __future__ import annotations

import numpy as np
import pytest

from edgeresnet.errors import InputError
from edgeresnet.export.onnx_source import compare_graphs, load_onnx_source


def conv_bn(path, channels: int = 1, side: int = 8, classes: int = 5, outputs: int = 1, batch: int = 2):
    """x [batch, C, side, side] -> Conv -> BatchNormalization -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> y."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.RandomState(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, channels, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.uniform(0.5, 2, 4).astype(np.float32), "gamma"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "beta"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "mean"),
             numpy_helper.from_array(rng.uniform(0.5, 2, 4).astype(np.float32), "var"),
             numpy_helper.from_array(rng.standard_normal((classes, 4)).astype(np.float32), "fc"),
             numpy_helper.from_array(np.zeros(classes, np.float32), "fc_b")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["b"]),
             helper.make_node("Relu", ["b"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Gemm", ["f", "fc", "fc_b"], ["y"], transB=1)]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, classes])]
    if outputs == 2:
        outs.append(helper.make_tensor_value_info("f", TensorProto.FLOAT, [batch, 4]))
    graph = helper.make_graph(nodes, "conv_bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                [batch, channels, side, side])],
                              outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_an_outside_onnx_file_is_folded_renamed_and_numbered(tmp_path):
    import onnx

    path = conv_bn(tmp_path / "m.onnx")
    src = load_onnx_source(path)
    assert (src.bn_before, src.bn_after) == (1, 0)
    graph = src.proto.graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["logits"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert all(n.name for n in graph.node) and len({n.name for n in graph.node}) == len(graph.node)
    assert src.meta.classes == ["0", "1", "2", "3", "4"] and src.meta.num_classes == 5 and src.meta.in_channels == 1
    pre = src.meta.preprocess
    assert (pre.channels, pre.size, pre.mean, pre.std) == (1, 8, (0.5,), (0.5,))
    folded = tmp_path / "folded.onnx"
    onnx.save(src.proto, str(folded))
    batch = np.random.RandomState(1).standard_normal((2, 1, 8, 8)).astype(np.float32)
    assert compare_graphs(path, folded, batch) < 1e-5  # the fold is exact: the same logits


@pytest.mark.parametrize("kwargs,words", [({"outputs": 2}, "1 inputs and 2 outputs"),
                                          ({"channels": 2}, "not NCHW (1 or 3 channels)")])
def test_a_file_that_is_not_an_image_classifier_is_one_input_error(tmp_path, kwargs, words):
    path = conv_bn(tmp_path / "m.onnx", **kwargs)
    with pytest.raises(InputError, match=words.replace("(", r"\(").replace(")", r"\)")) as info:
        load_onnx_source(path)
    assert info.value.hint and "image classifier" in info.value.hint
