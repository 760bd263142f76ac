"""OpenVINO on CPU (or GPU / NPU where OpenVINO sees them).

FP32 runs in real f32: on CPUs with bf16 (AVX-512 BF16, AMX) OpenVINO otherwise runs an "FP32"
model in bf16. bf16 and fp16 rows are offered where the device supports them, labelled as
such, from the same FP32 IR. INT8 comes from the ``openvino`` QDQ profile (the shared scales;
zero point 0; uint8 after ReLUs so convolutions and pooling run u8; OpenVINO turns Q/DQ into
FakeQuantize). The precision that actually ran is read back from the compiled model.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import BackendUnavailable, native_call, require
from ..quantize.profile import Profile
from .base import Artifact, Backend, BuildInputs, Capabilities, Input, OptionSpec, Runner, file_precision_from_name
from .registry import register

HINT = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
PROFILE = Profile("openvino", "int8", 0, "uint8", 0, quantize_bias=False, placement="units")


@register
class OpenVinoBackend(Backend):
    name = "openvino"
    aliases = ("ov",)
    preference = 1
    suffixes = (".xml",)
    extra = "openvino"
    libraries = ("openvino",)
    takes = frozenset({Input.FP32_ONNX, Input.QDQ_ONNX})
    option_specs = (OptionSpec("--device", str, "CPU", "OpenVINO device: CPU, GPU, NPU (as OpenVINO names them)."),)
    # one infer request per calling thread; the THROUGHPUT hint splits the cores itself
    capabilities = Capabilities(thread_safe=True, optimal_requests=True)
    qdq_profile = PROFILE

    def __init__(self, options=None) -> None:
        super().__init__(options)
        self.device = self.options["device"]

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

    def build(self, inputs: BuildInputs, precision: str, out_dir: Path) -> Artifact:
        ov = require("openvino", "openvino")
        source = inputs.qdq(PROFILE) if precision == "int8" else inputs.fp32_onnx
        stem = "int8" if precision == "int8" else "fp32"
        xml = out_dir / f"model.{stem}.openvino.xml"
        if not xml.exists():
            # Keep weights as they are: int8 for the QDQ model, f32 for the float one.
            with native_call():
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
        with native_call():
            compiled = core.compile_model(str(artifact.path), self.device, config)
        artifact.details["inference_precision"] = str(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())
        precisions, kernel = conv_runtime(compiled)
        artifact.details["conv_runtime_precisions"] = precisions
        if artifact.precision == "int8":
            artifact.details["kernel"] = kernel or int8_kernel()[0]
        artifact.details["optimal_requests"] = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        local = threading.local()  # one infer request per calling thread (throughput mode runs several)

        def run(x):
            if not hasattr(local, "request"):
                local.request = compiled.create_infer_request()
            return local.request.infer({0: x})[0]

        return run

    def int8_kernel(self) -> tuple[str, str]:
        return int8_kernel()

    @classmethod
    def runtime_facts(cls) -> dict:
        """For `doctor`: the devices OpenVINO sees."""
        return {"openvino_devices": require("openvino", "openvino").Core().available_devices}

    @classmethod
    def runtime_labels(cls) -> dict[str, str]:
        return {"openvino_devices": "openvino devices"}

    def precision_of(self, path: Path) -> str | None:
        """The file name's precision, else int8 when the IR holds FakeQuantize or i8 constants."""
        named = file_precision_from_name(path)
        if named is not None:
            return named
        head = path.read_bytes()[:4_000_000]
        return "int8" if any(m in head for m in (b"FakeQuantize", b'element_type="i8"')) else "fp32"

    def input_chw(self, path: Path) -> tuple[int, int, int]:
        model = self._core().read_model(str(path))
        return tuple(int(d.get_length()) for d in model.input(0).get_partial_shape()[1:])


# CPU class -> the oneDNN convolution OpenVINO's CPU plugin picks for INT8, and what it means.
KERNELS = {
    "x86-amx": ("brgconv_avx512_amx", "AMX tiles: INT8 about 8x f32 on ResNet-18"),
    "x86-vnni": ("avx512_core_vnni", "VNNI: exact int32 sums, INT8 about 3-4x f32"),
    "x86-avx512": ("avx512_core", "no VNNI: INT8 about 2x f32"),
    "x86-avx2": ("jit_avx2_I8", "no VNNI: INT8 about 2x f32; kept full accuracy on an AVX2-only EPYC (no saturation seen)"),
    "arm-i8mm": ("acl/kleidiai int8", "ARM: exact int32 sums"),
    "arm-dot": ("acl int8", "ARM dot-product: exact int32 sums"),
}


def int8_kernel(cls: str | None = None) -> tuple[str, str]:
    """(kernel family, what it means) expected for a CPU class; the row records what really ran."""
    from ..host.machine import cpu_class

    return KERNELS.get(cls or cpu_class(), ("reference", "no optimized INT8 kernels known for this CPU"))


def conv_runtime(compiled) -> tuple[dict[str, int], str | None]:
    """How many Convolution layers run in each precision (u8/i8 means INT8 kernels), and the
    primitive most of them ran with (e.g. jit_avx2_I8, brgconv_avx512_amx_I8): one pass."""
    precisions: dict[str, int] = {}
    kinds: dict[str, int] = {}
    try:
        for op in compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if info["layerType"].astype(str) == "Convolution":
                p, kind = info["runtimePrecision"].astype(str), info["primitiveType"].astype(str)
                precisions[p] = precisions.get(p, 0) + 1
                kinds[kind] = kinds.get(kind, 0) + 1
    except (RuntimeError, KeyError):  # devices other than CPU may not expose runtime info
        pass
    return precisions, max(kinds, key=kinds.get) if kinds else None
