"""Run calibration images through the FP32 graph and measure every tensor the plan quantizes.

The FP32 ONNX itself is run (ONNX Runtime, CPU), with the planned tensors exposed as extra
outputs: the statistics belong to exactly the graph that gets quantized. Histograms stream,
so memory stays bounded for any number of images.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..data import Preprocess
from ..data.sources import ImageSet
from ..errors import InputError, UsageError
from ..onnxfile.reference import session_with_outputs
from ..host.memory import StagePeak
from ..core.progress import progress
from . import native
from .observers import METHODS, HistogramObserver, shared_tables
from .table import CalibrationTable, weights_sha256


DEFAULT_MEMORY_MB = 512  # the observed tensors of the chunks in flight, at most (ResNet-18 @224: 2 lanes x 7 images)
_OVERHEAD = 2.5  # per observed byte: ORT's output buffer, its reused intermediates, the observer's |x| copy


def calibrate(model, tensors: list[str], data: ImageSet, pre: Preprocess, indices: np.ndarray,
              method: str = "percentile", percentile: float = 99.99, batch_size: int = 64,
              threads: int | None = None, memory_mb: int = DEFAULT_MEMORY_MB) -> CalibrationTable:
    """Measure ``tensors`` of the FP32 ONNX ``model`` on ``data[indices]``; all four methods'
    thresholds are kept, ``method`` chooses the one applied.

    Images go through in chunks sized so that their observed tensors fit ``memory_mb`` (a
    first run of one image measures what one costs); the histograms do not depend on the chunking,
    so the table is the same for any budget."""
    if method not in METHODS:
        raise UsageError(f"unknown calibration method {method!r}", hint=f"use one of {', '.join(METHODS)}")
    if len(indices) == 0:
        raise InputError("no calibration images", hint="check --calib and --calib-size")
    observers = {t: HistogramObserver() for t in tensors}
    start = time.perf_counter()
    with StagePeak() as peak:
        chunk = _observe(model, tensors, observers, data, pre, indices, batch_size, memory_mb, threads)
        by_method = _thresholds(observers, percentile, threads)
    seconds = time.perf_counter() - start
    bad = [t for t, o in observers.items() if o.nonfinite]
    if bad:
        raise InputError(f"NaN or Inf in activation {bad[0]} during calibration ({len(bad)} tensors affected)",
                         hint="the model or the calibration images are broken: check the weights and the data")
    return CalibrationTable(method=method, images=int(len(indices)), source=data.source,
                            weights_sha256=weights_sha256(model), preprocess=pre.to_dict(),
                            amax=by_method[method], amax_by_method=by_method,
                            percentile=percentile, image_indices=[int(i) for i in indices],
                            seconds=seconds, peak_mb=peak.mb, images_per_s=len(indices) / max(seconds, 1e-9),
                            chunk_images=chunk, memory_mb=memory_mb,
                            histogram="compiled" if native.library() is not None else "numpy")


def _lanes(threads: int | None) -> tuple[int, int]:
    """(runs of the session side by side, threads each): two one-thread runs on two cores kept
    both busy (31 ms an image for ResNet-18 at 224) where one two-thread run left a core idle
    during its serial parts and during the histogram updates (34-40 ms)."""
    cores = threads or os.cpu_count() or 1
    lanes = 2 if cores >= 2 else 1
    return lanes, max(1, cores // lanes)


def _observe(model, tensors: list[str], observers: dict, data: ImageSet, pre: Preprocess, indices: np.ndarray,
             batch_size: int, memory_mb: int, threads: int | None) -> int:
    """Stream every image through ONNX Runtime into the observers; the chunk size it settled on.

    The graph runs exactly as written (ORT's unoptimized level: every observed tensor exists, and
    here it was both faster than the basic level and bit-identical to it). ``lanes`` threads run
    the one session side by side (ONNX Runtime runs concurrent calls of a session in parallel;
    the lanes share its weights and its build time), each taking the next images as it finishes
    (the first run measures what an image costs, see _Feed). Each lane streams into observers of
    its own, merged at the end (exact: histograms depend on neither order nor split), so the
    lanes' histogram updates run side by side, not behind a lock."""
    lanes, per_lane = _lanes(threads)
    sess = session_with_outputs(model, tensors, per_lane, "none")
    input_name = sess.get_inputs()[0].name
    feed = _Feed(len(indices), memory_mb / lanes, batch_size)
    shares = [{t: HistogramObserver(o.nbins) for t, o in observers.items()} for _ in range(lanes)]
    with progress() as bar:
        task = bar.add_task("calibrate", total=len(indices))

        def lane(share: dict) -> None:
            while (images := feed.take()) is not None:
                idx = indices[images]
                values = sess.run(tensors, {input_name: data.batch(idx, pre)})
                feed.measured(sum(v.nbytes for v in values) / len(idx))
                for t, v in zip(tensors, values):
                    share[t].update(v)
                del values  # before the next run allocates its own
                bar.update(task, advance=len(idx))

        with ThreadPoolExecutor(lanes) as pool:
            futures = [pool.submit(lane, share) for share in shares]
            try:
                for f in futures:
                    f.result()
            finally:  # Ctrl-C or an error in one lane: the others stop after their chunk
                feed.stop()
    for share in shares:
        for t, o in share.items():
            observers[t].merge(o)
    return feed.chunk


class _Feed:
    """The calibration images for the lanes, in order, under one lock: one at a time until a run
    has measured what an image's observed tensors take, then chunks that fit the memory budget."""

    def __init__(self, count: int, memory_mb: float, most: int) -> None:
        self._count, self._memory_mb, self._most = count, memory_mb, most
        self._next = 0
        self._stopped = False
        self._lock = threading.Lock()
        self.chunk: int | None = None  # images per run, once measured

    def take(self) -> slice | None:
        """The next images (positions in the calibration list); None when all are taken or stopped."""
        with self._lock:
            if self._stopped or self._next >= self._count:
                return None
            start = self._next
            self._next = min(start + (self.chunk or 1), self._count)
            return slice(start, self._next)

    def measured(self, bytes_per_image: float) -> None:
        with self._lock:
            if self.chunk is None:
                self.chunk = chunk_images(bytes_per_image, self._memory_mb, self._most)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True


def _thresholds(observers: dict, percentile: float, threads: int | None) -> dict[str, dict[str, float]]:
    """Every method's threshold for every tensor; tensors in parallel (numpy releases the GIL in the
    entropy and mse searches, which dominate), the mse searches sharing one table of errors."""
    def four(o):
        return [float(o.amax(m, percentile=percentile)) for m in METHODS]

    with shared_tables(), ThreadPoolExecutor(_lanes(threads)[0]) as pool:
        values = dict(zip(observers, pool.map(four, observers.values())))
    return {m: {t: v[k] for t, v in values.items()} for k, m in enumerate(METHODS)}


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
