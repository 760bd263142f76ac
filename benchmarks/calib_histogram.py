"""Calibration's histogram update, compiled against numpy, on an export folder peers.py left.

    python benchmarks/calib_histogram.py EXPORT_DIR [--rounds 3]

EXPORT_DIR holds `model.fp32.onnx` and `calib_images.npy` (peers.py writes both). Prints, in
markdown: the observed tensors and values per image; the update of one image's activations
(median of 5 repeats) with the compiled loops and with numpy alone (`EDGERESNET_NATIVE_HISTOGRAM=0`);
then the whole calibration (`calibrate.collect.calibrate`, all images, this machine's lanes) both
ways, alternating for --rounds rounds, and whether the two tables are equal to the last bit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from edgeresnet.calibrate import collect, native
from edgeresnet.calibrate.observers import HistogramObserver


class _Images:
    """The already-preprocessed images as calibrate() takes a data set."""

    source = "benchmark images"

    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def batch(self, idx, pre):
        return self.images[idx]


class _Pre:
    def to_dict(self) -> dict:
        return {}


def _ways(compiled: bool) -> None:
    os.environ[native.ENV] = "1" if compiled else "0"


def update_ms(values: list[np.ndarray], tensors: list[str], compiled: bool, repeats: int = 5) -> float:
    _ways(compiled)
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up (and builds the library if needed)
        observers = {t: HistogramObserver() for t in tensors}
        start = time.perf_counter()
        for t, v in zip(tensors, values):
            observers[t].update(v)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]) * 1e3


def main() -> None:
    import onnx

    from edgeresnet.onnxfile.reference import session_with_outputs
    from edgeresnet.quantize.plan import plan

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    model = onnx.load(str(args.folder / "model.fp32.onnx"))
    tensors = plan(model).all_tensors
    images = np.load(args.folder / "calib_images.npy")
    sess = session_with_outputs(model, tensors, 1, "none")
    values = sess.run(tensors, {sess.get_inputs()[0].name: images[:1]})
    print(f"### {args.folder.name}: {len(tensors)} observed tensors, {sum(v.size for v in values) / 1e6:.1f} M values "
          f"an image, {len(images)} images\n")
    print(f"One image's update: compiled {update_ms(values, tensors, True):.1f} ms, "
          f"numpy {update_ms(values, tensors, False):.1f} ms (median of 5, one thread)\n")
    seconds, tables = {True: [], False: []}, {}
    for i in range(args.rounds):
        for compiled in ((True, False) if i % 2 == 0 else (False, True)):
            _ways(compiled)
            table = collect.calibrate(model, tensors, _Images(images), _Pre(), np.arange(len(images)))
            seconds[compiled].append(table.seconds)
            tables[compiled] = table.amax_by_method
    print(f"Whole calibration, {args.rounds} alternating rounds (median, min-max): compiled "
          f"{statistics.median(seconds[True]):.2f} s ({min(seconds[True]):.2f}-{max(seconds[True]):.2f}), numpy "
          f"{statistics.median(seconds[False]):.2f} s ({min(seconds[False]):.2f}-{max(seconds[False]):.2f}); "
          f"tables {'identical' if tables[True] == tables[False] else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
