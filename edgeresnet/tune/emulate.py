"""Run candidate INT8 configurations on ONNX Runtime here, to decide what every engine gets.

A candidate is the FP32 graph plus three choices: the activation scales, corrected conv
biases, and the layers left in float. It is emitted with the ``ort`` QDQ profile, whose
quantization points (inputs and outputs of every node unit) cover TensorRT's and OpenVINO's
on the same int8 grid, and the other engines get the same choices.

Candidates run unfused (``ORT_DISABLE_ALL``): every Q/DQ and conv as written, in float, which
is the int8 grid's exact arithmetic up to float rounding: what VNNI, AMX, ARM, OpenVINO and
TensorRT compute. The fused kernels of the export machine would score its quirks instead (on
x86 without VNNI, 8-bit weights saturate int16 sums: a float layer would be chosen to hide a
fault that other CPUs do not have, and that the ORT engine's 7-bit twin avoids there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data import Preprocess
from ..data.sources import ImageSet
from ..onnxfile.reference import session_with_outputs
from ..quantize.profile import REFERENCE
from ..quantize.recipe import Candidate, quantized_model

TUNE_PROFILE = REFERENCE  # covers TensorRT's and OpenVINO's quantization points on the same grid


@dataclass
class Images:
    """A fixed set of preprocessed images (kept in memory when small) and their labels."""

    data: ImageSet
    pre: Preprocess
    indices: np.ndarray
    labels: np.ndarray | None  # None: score against FP32's predictions
    labels_note: str = "dataset labels"
    batch_size: int = 128
    _cache: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def batches(self):
        if self._cache is not None:
            yield from self._cache
            return
        chunks = [self.data.batch(self.indices[i:i + self.batch_size], self.pre)
                  for i in range(0, len(self.indices), self.batch_size)]
        if sum(c.nbytes for c in chunks) <= 256 * 2**20:
            self._cache = chunks
        yield from chunks

    def head(self, n: int) -> "Images":
        return Images(self.data, self.pre, self.indices[:n], None if self.labels is None else self.labels[:n], self.labels_note, self.batch_size)


class Runner:
    """ONNX Runtime sessions for the FP32 graph and for candidates, with chosen tensors fetched."""

    def __init__(self, fp32, threads: int | None = None):
        self.fp32 = fp32
        self.threads = threads
        self.output = fp32.graph.output[0].name
        self.runs = 0  # candidate graphs built and run: the cost of tuning, reported

    def _run(self, model, images: Images, extra: list[str], reduce=None, exact: bool = False
             ) -> dict[str, list[np.ndarray]]:
        sess = session_with_outputs(model, extra, self.threads, "none" if exact else "all")
        name = sess.get_inputs()[0].name
        fetch = [self.output, *extra]
        out: dict[str, list[np.ndarray]] = {t: [] for t in fetch}
        for x in images.batches():
            for t, v in zip(fetch, sess.run(fetch, {name: x})):
                out[t].append(v if reduce is None or t == self.output else reduce(v))
        return out

    def reference(self, images: Images, extra: list[str] = (), reduce=None) -> dict[str, list[np.ndarray]]:
        """FP32 logits (key: the graph output) and ``extra`` tensors, batch by batch;
        ``reduce`` shrinks each batch of an ``extra`` tensor as it arrives (memory stays small)."""
        return self._run(self.fp32, images, list(extra), reduce)

    def candidate(self, cand: Candidate, images: Images, extra: list[str] = (), reduce=None
                  ) -> dict[str, list[np.ndarray]]:
        self.runs += 1
        return self._run(quantized_model(self.fp32, cand, TUNE_PROFILE), images, list(extra), reduce, exact=True)

    def logits(self, cand: Candidate, images: Images) -> np.ndarray:
        return np.concatenate(self.candidate(cand, images)[self.output])


def sqnr_db(reference: np.ndarray, noisy: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when identical)."""
    signal = float(np.sum(np.square(reference, dtype=np.float64)))
    noise = float(np.sum(np.square(noisy.astype(np.float64) - reference)))
    if noise == 0.0:
        return float("inf")
    return float(10.0 * np.log10(max(signal, 1e-30) / noise))
