"""OpenVINO on CPU (or GPU / NPU where OpenVINO sees them).

FP32 runs in real f32: on CPUs with bf16 (AVX-512 BF16, AMX) OpenVINO otherwise runs an "FP32"
model in bf16. bf16 and fp16 rows are offered where the device supports them, labelled as
such, from the same FP32 IR. INT8 comes from the ``openvino`` QDQ profile (the shared scales;
zero point 0; uint8 after ReLUs so convolutions and pooling run u8; OpenVINO turns Q/DQ into
FakeQuantize). The precision that actually ran is read back from the compiled model.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import BackendUnavailable, require
from .base import Artifact, Runner

HINT = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}


class OpenVinoBackend:
    name = "openvino"
    qdq_profile = "openvino"

    def __init__(self, device: str = "CPU") -> None:
        self.device = device

    def _core(self):
        ov = require("openvino", "openvino")
        return ov.Core()

    def unavailable_reason(self) -> str | None:
        try:
            core = self._core()
        except BackendUnavailable as exc:
            return str(exc)
        devices = core.available_devices
        if self.device.split(".")[0] not in {d.split(".")[0] for d in devices}:
            return f"OpenVINO device {self.device} not found (available: {', '.join(devices)})"
        return None

    def precisions(self, int8: bool) -> list[str]:
        caps = set(self._core().get_property(self.device, "OPTIMIZATION_CAPABILITIES"))
        extra = [p for p, cap in (("bf16", "BF16"), ("fp16", "FP16")) if cap in caps]
        return ["fp32", *extra] + (["int8"] if int8 else [])

    def build(self, source: Path, precision: str, out_dir: Path) -> Artifact:
        ov = require("openvino", "openvino")
        stem = "int8" if precision == "int8" else "fp32"
        xml = out_dir / f"model.{stem}.openvino.xml"
        if not xml.exists():
            # Keep weights as they are: int8 for the QDQ model, f32 for the float one.
            ov.save_model(ov.convert_model(str(source)), str(xml), compress_to_fp16=False)
        return Artifact(self.name, precision, xml, {"device": self.device, "inference_precision_hint": HINT[precision],
                                                    "ir_bin": xml.with_suffix(".bin").name, "source": source.name})

    def load(self, artifact: Artifact, threads: int | None = None, mode: str = "latency") -> Runner:
        import threading

        core = self._core()
        config = {"INFERENCE_PRECISION_HINT": HINT[artifact.precision],
                  "PERFORMANCE_HINT": "THROUGHPUT" if mode == "throughput" else "LATENCY"}
        if threads and self.device == "CPU":
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = core.compile_model(str(artifact.path), self.device, config)
        artifact.details["inference_precision"] = str(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())
        artifact.details["conv_runtime_precisions"] = runtime_precisions(compiled)
        artifact.details["optimal_requests"] = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        local = threading.local()  # one infer request per calling thread (throughput mode runs several)

        def run(x):
            if not hasattr(local, "request"):
                local.request = compiled.create_infer_request()
            return local.request.infer({0: x})[0]

        return run

    def input_chw(self, path: Path) -> tuple[int, int, int]:
        model = self._core().read_model(str(path))
        return tuple(int(d.get_length()) for d in model.input(0).get_partial_shape()[1:])


def runtime_precisions(compiled) -> dict[str, int]:
    """How many Convolution layers run in each precision (u8/i8 means INT8 kernels)."""
    counts: dict[str, int] = {}
    try:
        for op in compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if info["layerType"].astype(str) == "Convolution":
                p = info["runtimePrecision"].astype(str)
                counts[p] = counts.get(p, 0) + 1
    except (RuntimeError, KeyError):  # devices other than CPU may not expose runtime info
        pass
    return counts
