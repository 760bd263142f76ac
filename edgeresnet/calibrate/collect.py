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
from ..host.memory import StagePeak
from ..progress import progress
from .observers import METHODS, HistogramObserver
from .table import CalibrationTable, weights_sha256


DEFAULT_MEMORY_MB = 512  # the observed tensors of one chunk of images, at most (ResNet-18 @224: 14 images)
_OVERHEAD = 2.5  # per observed byte: ORT's output buffer, its reused intermediates, the observer's |x| copy


def calibrate(model, tensors: list[str], data: ImageSet, pre: Preprocess, indices: np.ndarray,
              method: str = "percentile", percentile: float = 99.99, batch_size: int = 64,
              threads: int | None = None, memory_mb: int = DEFAULT_MEMORY_MB) -> CalibrationTable:
    """Measure ``tensors`` of the FP32 ONNX ``model`` on ``data[indices]``; all four methods'
    thresholds are kept, ``method`` chooses the one applied.

    Images go through in chunks sized so that their observed tensors fit ``memory_mb`` (the
    first image alone measures what one costs); the histograms do not depend on the chunking,
    so the table is the same for any budget."""
    if method not in METHODS:
        raise UsageError(f"unknown calibration method {method!r}", hint=f"use one of {', '.join(METHODS)}")
    if len(indices) == 0:
        raise InputError("no calibration images", hint="check --calib and --calib-size")
    # The graph exactly as written: every observed tensor exists, and ORT's unoptimized run was
    # both faster than its basic level here and bit-identical to it.
    observers = {t: HistogramObserver() for t in tensors}
    start = time.perf_counter()
    with StagePeak() as peak:
        sess = session_with_outputs(model, tensors, threads, "none")
        chunk = _observe(sess, tensors, observers, data, pre, indices, batch_size, memory_mb)
        del sess
    seconds = time.perf_counter() - start
    bad = [t for t, o in observers.items() if o.nonfinite]
    if bad:
        raise InputError(f"NaN or Inf in activation {bad[0]} during calibration ({len(bad)} tensors affected)",
                         hint="the model or the calibration images are broken: check the weights and the data")
    by_method = {m: {t: float(o.amax(m, percentile=percentile)) for t, o in observers.items()} for m in METHODS}
    return CalibrationTable(method=method, images=int(len(indices)), source=data.source,
                            weights_sha256=weights_sha256(model), preprocess=pre.to_dict(),
                            amax=by_method[method], amax_by_method=by_method,
                            percentile=percentile, image_indices=[int(i) for i in indices],
                            seconds=seconds, peak_mb=peak.mb, images_per_s=len(indices) / max(seconds, 1e-9),
                            chunk_images=chunk, memory_mb=memory_mb)


def _observe(sess, tensors: list[str], observers: dict, data: ImageSet, pre: Preprocess, indices: np.ndarray,
             batch_size: int, memory_mb: int) -> int:
    """Stream every image through ``sess`` into the observers; the chunk size it settled on."""
    input_name = sess.get_inputs()[0].name
    chunk, i = 1, 0
    with progress() as bar:
        task = bar.add_task("calibrate", total=len(indices))
        while i < len(indices):
            idx = indices[i:i + chunk]
            values = sess.run(tensors, {input_name: data.batch(idx, pre)})
            if i == 0:  # the first image tells what one costs
                chunk = chunk_images(sum(v.nbytes for v in values) / len(idx), memory_mb, batch_size)
            for t, v in zip(tensors, values):
                observers[t].update(v)
            del values
            i += len(idx)
            bar.update(task, advance=len(idx))
    return chunk


def chunk_images(bytes_per_image: float, memory_mb: int, most: int) -> int:
    """Images per ORT run whose observed tensors (and what comes with them) fit ``memory_mb``."""
    fit = int(memory_mb * 2**20 // max(bytes_per_image * _OVERHEAD, 1.0))
    return max(1, min(most, fit))


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
