"""Run calibration images through the FP32 graph and measure every tensor the plan quantizes.

The FP32 ONNX itself is run (ONNX Runtime, CPU), with the planned tensors exposed as extra
outputs: the statistics belong to exactly the graph that gets quantized. Histograms stream,
so memory stays bounded for any number of images.
"""

from __future__ import annotations

import time

import numpy as np

from ..data import Preprocess
from ..data.sources import ImageSet
from ..errors import InputError, UsageError
from ..onnxrun import session_with_outputs
from ..progress import progress
from .observers import METHODS, HistogramObserver
from .table import CalibrationTable, weights_sha256


def calibrate(model, tensors: list[str], data: ImageSet, pre: Preprocess, indices: np.ndarray,
              method: str = "percentile", percentile: float = 99.99, batch_size: int = 64,
              threads: int | None = None) -> CalibrationTable:
    """Measure ``tensors`` of the FP32 ONNX ``model`` on ``data[indices]``; all four methods'
    thresholds are kept, ``method`` chooses the one applied."""
    if method not in METHODS:
        raise UsageError(f"unknown calibration method {method!r}", hint=f"use one of {', '.join(METHODS)}")
    if len(indices) == 0:
        raise InputError("no calibration images", hint="check --calib and --calib-size")
    sess = session_with_outputs(model, tensors, threads, "basic")  # fusions must not swallow observed tensors
    input_name = sess.get_inputs()[0].name
    observers = {t: HistogramObserver() for t in tensors}
    start = time.perf_counter()
    with progress() as bar:
        task = bar.add_task("calibrate", total=len(indices))
        for i in range(0, len(indices), batch_size):
            idx = indices[i:i + batch_size]
            values = sess.run(tensors, {input_name: data.batch(idx, pre)})
            for t, v in zip(tensors, values):
                observers[t].update(v)
            bar.update(task, advance=len(idx))
    bad = [t for t, o in observers.items() if o.nonfinite]
    if bad:
        raise InputError(f"NaN or Inf in activation {bad[0]} during calibration ({len(bad)} tensors affected)",
                         hint="the model or the calibration images are broken: check the weights and the data")
    by_method = {m: {t: float(o.amax(m, percentile=percentile)) for t, o in observers.items()} for m in METHODS}
    return CalibrationTable(method=method, images=int(len(indices)), source=data.source,
                            weights_sha256=weights_sha256(model), preprocess=pre.to_dict(),
                            amax=by_method[method], amax_by_method=by_method,
                            percentile=percentile, image_indices=[int(i) for i in indices],
                            seconds=time.perf_counter() - start)


def pick_calibration_images(data: ImageSet, size: int, seed: int = 0) -> np.ndarray:
    """``size`` image indices spread over the classes: a seeded shuffle, interleaved by
    label so any prefix is roughly balanced."""
    return _balanced(data, np.arange(len(data)), size, seed)


def pick_validation_images(data: ImageSet, size: int, exclude: np.ndarray, seed: int = 0) -> np.ndarray:
    """Up to ``size`` class-balanced indices of ``data`` not in ``exclude`` (the calibration
    images), in the order picked: any prefix is itself balanced."""
    pool = np.setdiff1d(np.arange(len(data)), exclude)
    return _balanced(data, pool, size, seed + 1, sort=False)


def _balanced(data: ImageSet, pool: np.ndarray, size: int, seed: int, sort: bool = True) -> np.ndarray:
    size = min(size, len(pool))
    order = pool[np.random.default_rng(seed).permutation(len(pool))]
    labels = data.labels[order]
    rank = np.zeros(len(order), dtype=np.int64)
    for c in np.unique(labels):
        mask = labels == c
        rank[mask] = np.arange(mask.sum())
    picked = order[np.lexsort((labels, rank))][:size]
    return np.sort(picked) if sort else picked
