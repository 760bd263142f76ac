"""Calibration's loop: bounded memory, and a table that does not depend on how it ran."""

import numpy as np
import onnx
import pytest

from edgeresnet.calibrate.collect import calibrate, chunk_images
from edgeresnet.calibrate.observers import METHODS, HistogramObserver
from edgeresnet.models.checkpoint import load_checkpoint
from edgeresnet.export.torch_onnx import export_onnx
from edgeresnet.models.fold import fold_bn
from edgeresnet.onnxfile.reference import session_with_outputs
from edgeresnet.quantize.plan import plan


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    ckpt = load_checkpoint("default")
    folded, _ = fold_bn(ckpt.model)
    path = tmp_path_factory.mktemp("c") / "m.onnx"
    export_onnx(folded, ckpt.meta, path)
    model = onnx.load(str(path))
    return model, plan(model).all_tensors, ckpt.meta.preprocess


def _reference(model, tensors, data, pre, indices) -> dict:
    """Calibration as it ran before the memory budget: ONNX Runtime's basic level, batches of 64."""
    sess = session_with_outputs(model, tensors, None, "basic")
    observers = {t: HistogramObserver() for t in tensors}
    for i in range(0, len(indices), 64):
        for t, v in zip(tensors, sess.run(tensors, {"input": data.batch(indices[i:i + 64], pre)})):
            observers[t].update(v)
    return {m: {t: float(o.amax(m)) for t, o in observers.items()} for m in METHODS}


def test_the_table_is_bit_identical_for_any_memory_budget_and_to_the_batched_reference(fp32, calib_set):
    """A budget that forces one image per run, the default budget and the old batched loop give
    the same thresholds to the last bit, for all four methods."""
    model, tensors, pre = fp32
    idx = np.arange(150)
    tiny = calibrate(model, tensors, calib_set, pre, idx, memory_mb=0.05)
    default = calibrate(model, tensors, calib_set, pre, idx)
    assert tiny.chunk_images == 1 and default.chunk_images == 64  # per lane
    assert tiny.amax_by_method == default.amax_by_method == _reference(model, tensors, calib_set, pre, idx)
    assert tiny.peak_mb > 0 and default.images_per_s > 0 and default.memory_mb == 512


def test_chunks_fit_the_budget():
    per_image = 14.4 * 2**20  # ResNet-18 at 224: 3.6 M observed floats per image
    assert chunk_images(per_image, 512, 64) == 14  # 512 MB / (14.4 MB x 2.5)
    assert chunk_images(per_image, 64, 64) == 1  # never less than one image
    assert chunk_images(1000.0, 1024, 64) == 64  # never more than the batch asked for


def test_one_lane_two_lanes_and_a_single_image_give_the_reference_table(fp32, calib_set):
    """The lanes share one session and merge observers of their own: one lane (threads=1), two
    lanes, and fewer images than lanes all give the batched reference's thresholds."""
    model, tensors, pre = fp32
    idx = np.arange(200, 237)
    one = calibrate(model, tensors, calib_set, pre, idx, threads=1, memory_mb=1)
    two = calibrate(model, tensors, calib_set, pre, idx, threads=2, memory_mb=1)
    assert one.amax_by_method == two.amax_by_method == _reference(model, tensors, calib_set, pre, idx)
    single = calibrate(model, tensors, calib_set, pre, idx[:1], threads=2)
    assert single.amax_by_method == _reference(model, tensors, calib_set, pre, idx[:1])
    assert single.chunk_images == 64 and single.images == 1


def test_the_compiled_histogram_loops_give_the_numpy_table(fp32, calib_set, monkeypatch):
    """Calibration with the compiled update (where this machine built it) and with numpy alone:
    the same thresholds, every method and tensor, to the last bit."""
    from edgeresnet.calibrate import native

    if native.library() is None:
        pytest.skip("no C compiler here: only the numpy path exists")
    model, tensors, pre = fp32
    idx = np.arange(300, 400)
    compiled = calibrate(model, tensors, calib_set, pre, idx)
    monkeypatch.setenv(native.ENV, "0")
    numpy_only = calibrate(model, tensors, calib_set, pre, idx)
    assert compiled.amax_by_method == numpy_only.amax_by_method
    assert (compiled.histogram, numpy_only.histogram) == ("compiled", "numpy")  # the table says which ran
