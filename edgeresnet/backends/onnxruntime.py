"""ONNX Runtime on CPU.

INT8 uses the ``ort`` QDQ profile (uint8 activations, zero point 128: the U8S8 kernels that
are fast on x86) and is saved after ONNX Runtime's graph optimizations at the EXTENDED level,
where Q/DQ pairs fuse into QLinearConv; EXTENDED is the portable level (ALL writes
machine-specific layouts).

Which file runs is chosen at load time, per CPU. x86 without VNNI gets a twin with 7-bit
weights (profile ``ort-w7``): its U8S8 kernels saturate int16 pair sums with 8-bit weights
(the default model lost 1.35 pp on an AVX2-only EPYC; the twin lost nothing at the same
speed). VNNI, AMX and ARM accumulate exactly in int32 and keep the 8-bit file unchanged.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import BackendUnavailable, native_call, require
from ..host.machine import cpu_class
from ..quantize.profile import REFERENCE, Profile
from .base import Artifact, Backend, BuildInputs, Capabilities, Input, Runner, file_precision_from_name, variant_paths
from .registry import register

PROFILE = REFERENCE  # the emulator's encoding too (tune/emulate), so tuning scores what ships here
PROFILE_W7 = Profile("ort-w7", "uint8", 128, "uint8", 0, quantize_bias=True, placement="units", weight_bits=7)

# CPU class (machine.cpu_class) -> the kernel path ONNX Runtime's MLAS takes for U8S8 QLinearConv,
# and what it means for accuracy and speed.
KERNELS = {
    "x86-amx": ("u8s8-amx", "AMX tiles, exact int32 sums: the fastest INT8 on CPU"),
    "x86-vnni": ("u8s8-vnni", "VPDPBUSD, exact int32 sums: full INT8 accuracy and speed"),
    "x86-avx512": ("u8s8-7bit", "no VNNI: 7-bit weights keep VPMADDUBSW's int16 sums exact; "
                                "INT8 speed-up about 2x, not 3-4x"),
    "x86-avx2": ("u8s8-7bit", "no VNNI: 7-bit weights keep VPMADDUBSW's int16 sums exact; "
                              "INT8 speed-up about 1.6-2x, not 3-4x"),
    "x86": ("u8s8-7bit", "no AVX2: slow SSE kernels; INT8 gains small"),
    "arm-i8mm": ("arm-i8mm", "SMMLA/UMMLA matrix instructions, exact int32 sums"),
    "arm-dot": ("arm-dot", "SDOT/UDOT, exact int32 sums: full INT8 accuracy and speed"),
    "arm": ("arm-neon", "no dot-product: widening NEON multiplies, exact but INT8 gains small"),
}
SATURATING = "u8s8-saturating"  # an 8-bit file on x86 without VNNI (bundles without the twin)


def int8_kernel(cls: str | None = None) -> tuple[str, str]:
    """(kernel path, what it means) for a CPU class; this CPU's by default."""
    return KERNELS.get(cls or cpu_class(), ("mlas-generic", "no tuned INT8 kernels known for this CPU"))


@register
class OnnxRuntimeBackend(Backend):
    name = "ort"
    aliases = ("onnxruntime",)
    preference = 0
    suffixes = (".onnx",)
    extra = "ort"
    libraries = ("onnxruntime",)
    takes = frozenset({Input.FP32_ONNX, Input.QDQ_ONNX})
    option_specs = ()
    # bench throughput: each request in flight gets threads / requests; x86 without VNNI gets the 7-bit twin
    capabilities = Capabilities(thread_safe=True, splits_threads_per_request=True, qdq_variants={"u8s8-7bit": PROFILE_W7})
    qdq_profile = PROFILE

    def unavailable_reason(self) -> str | None:
        try:
            require("onnxruntime", "ort")
        except BackendUnavailable as exc:
            return str(exc)
        return None

    def precisions(self, int8: bool) -> list[str]:
        return ["fp32", "int8"] if int8 else ["fp32"]

    def build(self, inputs: BuildInputs, precision: str, out_dir: Path) -> Artifact:
        """FP32: the ONNX as it is. INT8: the QDQ ONNX optimized, plus a file per CPU-specific
        variant (listed in ``details["variants"]``; ``load`` picks one per CPU)."""
        if precision == "fp32":
            return Artifact(self.name, precision, inputs.fp32_onnx, {"execution_provider": "CPUExecutionProvider"})
        art = self._optimized(inputs.qdq(self.qdq_profile), precision, out_dir)
        for kernel, profile in self.capabilities.qdq_variants.items():
            variant = self._optimized(inputs.qdq(profile), precision, out_dir)
            art.details.setdefault("variants", {})[kernel] = variant.path.name
            art.details.setdefault("variant_profiles", {})[kernel] = profile.to_dict()
        return art

    def _optimized(self, source: Path, precision: str, out_dir: Path) -> Artifact:
        ort = require("onnxruntime", "ort")
        # model.int8.ort.qdq.onnx -> model.int8.ort.onnx; model.int8.ort-w7.qdq.onnx -> model.int8.ort-w7.onnx
        name = source.name[:-len(".qdq.onnx")] + ".onnx" if source.name.endswith(".qdq.onnx") else f"model.{precision}.ort.onnx"
        target = out_dir / name
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(target)
        with native_call():
            ort.InferenceSession(str(source), opts, providers=["CPUExecutionProvider"])
        return Artifact(self.name, precision, target, {"execution_provider": "CPUExecutionProvider",
                                                       "optimization": "ORT_ENABLE_EXTENDED", "qdq": str(source.name)})

    def int8_kernel(self) -> tuple[str, str]:
        return int8_kernel()

    @classmethod
    def runtime_facts(cls) -> dict:
        """For `doctor`: the execution providers this ONNX Runtime has."""
        return {"onnxruntime_providers": require("onnxruntime", "ort").get_available_providers()}

    @classmethod
    def runtime_labels(cls) -> dict[str, str]:
        return {"onnxruntime_providers": "ort providers"}

    def precision_of(self, path: Path) -> str | None:
        """The file name's precision, else int8 when the graph names Q/DQ or QLinear ops (read
        from the bytes: an ORT-only install has no onnx package to parse it with)."""
        named = file_precision_from_name(path)
        if named is not None:
            return named
        head = path.read_bytes()[:4_000_000]
        return "int8" if any(op in head for op in (b"QuantizeLinear", b"QLinearConv")) else "fp32"

    def choose(self, artifact: Artifact) -> tuple[Path, str | None]:
        """The file this CPU should run, and its kernel path (None for float artifacts)."""
        if artifact.precision != "int8":
            return artifact.path, None
        kernel = int8_kernel()[0]
        variant = variant_paths(artifact.path, artifact.details).get(kernel)
        if variant is not None:
            return variant, kernel
        seven_bit = artifact.path.name.endswith(".ort-w7.onnx")
        return artifact.path, SATURATING if kernel == "u8s8-7bit" and not seven_bit else kernel

    def session(self, path: Path, threads: int | None = None):
        ort = require("onnxruntime", "ort")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        with native_call():
            return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def load(self, artifact: Artifact, threads: int | None = None, mode: str = "latency") -> Runner:
        path, kernel = self.choose(artifact)
        sess = self.session(path, threads)
        if kernel:
            artifact.details["kernel"] = kernel
            artifact.details["kernel_file"] = path.name
        name = sess.get_inputs()[0].name

        def run(x):
            return sess.run(None, {name: x})[0]

        return run

    def input_chw(self, path: Path) -> tuple[int, int, int]:
        shape = self.session(path, 1).get_inputs()[0].shape
        return tuple(int(d) for d in shape[1:])
