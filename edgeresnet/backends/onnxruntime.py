"""ONNX Runtime on CPU.

INT8 uses the ``ort`` QDQ profile (uint8 activations, zero point 128: the U8S8 kernels that
are fast on x86) and is saved after ONNX Runtime's graph optimizations at the EXTENDED level,
where Q/DQ pairs fuse into QLinearConv; EXTENDED is the portable level (ALL writes
machine-specific layouts).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import BackendUnavailable, require
from .base import Artifact, Runner


class OnnxRuntimeBackend:
    name = "ort"
    qdq_profile = "ort"

    def unavailable_reason(self) -> str | None:
        try:
            require("onnxruntime", "ort")
        except BackendUnavailable as exc:
            return str(exc)
        return None

    def precisions(self, int8: bool) -> list[str]:
        return ["fp32", "int8"] if int8 else ["fp32"]

    def build(self, source: Path, precision: str, out_dir: Path) -> Artifact:
        ort = require("onnxruntime", "ort")
        if precision == "fp32":
            return Artifact(self.name, precision, source, {"execution_provider": "CPUExecutionProvider"})
        target = out_dir / f"model.{precision}.ort.onnx"
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(target)
        ort.InferenceSession(str(source), opts, providers=["CPUExecutionProvider"])
        return Artifact(self.name, precision, target, {"execution_provider": "CPUExecutionProvider",
                                                       "optimization": "ORT_ENABLE_EXTENDED", "qdq": str(source.name)})

    def session(self, path: Path, threads: int | None = None):
        ort = require("onnxruntime", "ort")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def load(self, artifact: Artifact, threads: int | None = None, mode: str = "latency") -> Runner:
        sess = self.session(artifact.path, threads)
        name = sess.get_inputs()[0].name

        def run(x):
            return sess.run(None, {name: x})[0]

        return run

    def input_chw(self, path: Path) -> tuple[int, int, int]:
        shape = self.session(path, 1).get_inputs()[0].shape
        return tuple(int(d) for d in shape[1:])
