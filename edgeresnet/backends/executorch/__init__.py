"""ExecuTorch with the XNNPACK delegate: PyTorch's own edge runtime (Android, iOS, ARM Linux).

Unlike the ONNX engines it is built from the torch model, not from an ONNX graph, and its INT8
takes the calibration table's scales as fixed quantization parameters (``qparams``): the same
grid as ONNX Runtime's and OpenVINO's QDQ graphs, no second calibration. FP32 and INT8 are
``.pte`` programs lowered whole to XNNPACK (``lower``); they run through
``executorch.runtime`` (``runner``), batch 1, image by image for larger batches.

It declares what it takes (the torch model, the FP32 ONNX whose tensor names key the table, the
table) and the engine stage hands them over in ``BuildInputs``; an ONNX source, which has no
torch model, gets a skipped row. Helpers: ``tensors`` (ONNX tensor names <-> torch.export
nodes), ``qparams`` (the fixed-scale quantizer), ``lower`` (torch -> .pte), ``runner`` (.pte ->
logits, the thread pool).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import BackendUnavailable
from ..base import Artifact, Backend, BuildInputs, Capabilities, Input, Runner
from ..registry import register

if TYPE_CHECKING:  # the registry imports this package at CLI start: numpy and torch stay unloaded
    from ...quantize.recipe import Candidate

# Constant methods every program carries, so a .pte says what it is without its file name.
PRECISION_METHOD, FORMAT_METHOD, FORMAT = "edgeresnet_int8", "edgeresnet_format", 1

# CPU class (machine.cpu_class) -> the XNNPACK QS8 GEMM family its runtime dispatch picks, and
# what it means. XNNPACK's x86 kernels without VNNI sign-extend int8 to int16 and sum with
# VPMADDWD: exact int32 sums, so no 7-bit weights are needed (unlike ONNX Runtime's U8S8).
KERNELS = {
    "x86-amx": ("xnnpack-qs8-avx512vnni", "VNNI dot products, exact int32 sums"),
    "x86-vnni": ("xnnpack-qs8-avx512vnni", "VPDPBUSD, exact int32 sums: full INT8 accuracy and speed"),
    "x86-avx512": ("xnnpack-qs8-avx512skx", "no VNNI: int8 widened to int16 and VPMADDWD, exact but about half VNNI's rate"),
    "x86-avx2": ("xnnpack-qs8-avx2", "no VNNI: int8 widened to int16 and VPMADDWD, exact but about half VNNI's rate"),
    "x86": ("xnnpack-qs8-sse", "no AVX2: SSE kernels, INT8 gains small"),
    "arm-i8mm": ("xnnpack-qs8-neoni8mm", "SMMLA matrix instructions, exact int32 sums"),
    "arm-dot": ("xnnpack-qs8-neondot", "SDOT, exact int32 sums: full INT8 accuracy and speed"),
    "arm": ("xnnpack-qs8-neon", "no dot-product: widening NEON multiplies, exact but INT8 gains small"),
}


def int8_kernel(cls: str | None = None) -> tuple[str, str]:
    from ...host.machine import cpu_class

    return KERNELS.get(cls or cpu_class(), ("xnnpack-qs8-scalar", "no tuned XNNPACK INT8 kernels known for this CPU"))


def build_artifact(model, fp32_proto, recipe: Candidate | None, chw: tuple[int, int, int], precision: str,
                   out_dir: Path) -> Artifact:
    """The engine's build as the typed contract will call it: the folded torch model, the FP32
    ONNX whose tensor names key the recipe, the recipe (None for FP32), the input shape."""
    from .lower import lower_fp32, lower_int8

    out = Path(out_dir) / f"model.{precision}.executorch.pte"
    if precision == "fp32":
        lowered = lower_fp32(model, chw, out)
    elif precision == "int8":
        if recipe is None:
            raise BackendUnavailable("ExecuTorch INT8 needs the calibration table")
        lowered = lower_int8(model, fp32_proto, recipe.scales, chw, out, keep_float=recipe.keep_float,
                             biases=recipe.biases)
    else:
        raise ValueError(f"ExecuTorch builds fp32 and int8, not {precision}")
    return Artifact(ExecuTorchBackend.name, precision, out, lowered.details())


@register
class ExecuTorchBackend(Backend):
    name = "executorch"
    aliases = ("et", "xnnpack")
    preference = 3
    suffixes = (".pte",)
    extra = "executorch"
    libraries = ("executorch",)
    takes = frozenset({Input.TORCH_MODEL, Input.FP32_ONNX, Input.TABLE})
    option_specs = ()
    # One program's methods share memory arenas: the runtime locks around a runner.
    capabilities = Capabilities(thread_safe=False)
    qdq_profile = None  # built from the torch model with the table's scales, not from a QDQ ONNX

    def unavailable_reason(self) -> str | None:
        try:
            from .runner import runtime

            registry = runtime().backend_registry
        except BackendUnavailable as exc:
            return str(exc)
        if not registry.is_available("XnnpackBackend"):
            return "this ExecuTorch build has no XNNPACK delegate (reinstall executorch from PyPI)"
        return None

    def precisions(self, int8: bool) -> list[str]:
        return ["fp32", "int8"] if int8 else ["fp32"]

    def build(self, inputs: BuildInputs, precision: str, out_dir: Path) -> Artifact:
        recipe = inputs.recipe if precision == "int8" else None
        return build_artifact(inputs.torch_model, inputs.proto(), recipe, inputs.chw, precision, out_dir)

    def load(self, artifact: Artifact, threads: int | None = None, mode: str = "latency") -> Runner:
        from .runner import batch_runner, pool_threads, size_pool

        note = size_pool(threads)
        run = batch_runner(artifact.path)
        artifact.details["threads"] = pool_threads()
        if note:
            artifact.details["threads_note"] = note
        if artifact.precision == "int8":
            artifact.details["kernel"] = int8_kernel()[0]
        return run

    def int8_kernel(self) -> tuple[str, str]:
        return int8_kernel()

    @classmethod
    def runtime_facts(cls) -> dict:
        """For `doctor`: the delegates this ExecuTorch has and its thread pool."""
        from .runner import pool_threads, runtime

        return {"executorch_backends": runtime().backend_registry.registered_backend_names,
                "executorch_threads": pool_threads()}

    def precision_of(self, path: Path) -> str | None:
        """fp32 / int8 as the program declares it (a constant method), None for a .pte made elsewhere."""
        from .runner import program_facts

        return program_facts(path)[0]

    def input_chw(self, path: Path) -> tuple[int, int, int]:
        from .runner import program_facts

        return program_facts(path)[1][1:]
