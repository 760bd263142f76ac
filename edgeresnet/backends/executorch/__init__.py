"""ExecuTorch with the XNNPACK delegate: PyTorch's own edge runtime (Android, iOS, ARM Linux).

Unlike the ONNX engines it is built from the torch model, not from an ONNX graph, and its INT8
takes the calibration table's scales as fixed quantization parameters (``qparams``): the same
grid as ONNX Runtime's and OpenVINO's QDQ graphs, no second calibration. FP32 and INT8 are
``.pte`` programs lowered whole to XNNPACK (``lower``); they run through
``executorch.runtime`` (``runner``), batch 1, image by image for larger batches.

Helpers: ``tensors`` (ONNX tensor names <-> torch.export nodes), ``qparams`` (the fixed-scale
quantizer), ``lower`` (torch -> .pte), ``runner`` (.pte -> logits, the thread pool),
``prototype`` (stand-ins for the typed contract's build inputs, until it lands).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import BackendUnavailable, require
from ...quantize.profile import Profile
from ..base import Artifact, EngineOptions, Runner
from ..registry import register

if TYPE_CHECKING:  # the registry imports this package at CLI start: numpy and torch stay unloaded
    from ...quantize.recipe import Candidate

# The QDQ encoding of what XNNPACK runs (qparams.py): int8, zero point -128 after a ReLU, int32
# biases. Run unfused by ONNX Runtime it agrees with the .pte on 99.99% of the default model's
# test images (float biases: 99.74%).
PROFILE = Profile("executorch", "int8", 0, "int8", -128, quantize_bias=True, placement="units")
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
class ExecuTorchBackend:
    name = "executorch"
    aliases = ("et", "xnnpack")
    preference = 3
    suffixes = (".pte",)
    extra = "executorch"
    libraries = ("executorch",)
    thread_safe = False  # one program's methods share memory arenas: the runtime locks around a runner
    qdq_profile = PROFILE  # only for today's engine stage, which hands INT8 builds a QDQ ONNX (prototype.py)
    qdq_variants: dict = {}

    def __init__(self, options: EngineOptions | None = None) -> None:
        self.options = options or EngineOptions()

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

    def build(self, source: Path, precision: str, out_dir: Path) -> Artifact:
        """Today's call (an ONNX path): the inputs are rebuilt by ``prototype``."""
        onnx = require("onnx", "torch")
        from .prototype import fp32_beside, recipe_from_qdq, table_scales_beside, torch_model

        fp32_path = source if precision == "fp32" else fp32_beside(source)
        fp32 = onnx.load(str(fp32_path))
        dims = fp32.graph.input[0].type.tensor_type.shape.dim[1:]
        chw = tuple(int(d.dim_value) for d in dims)
        recipe = recipe_from_qdq(onnx.load(str(source)), fp32, table_scales_beside(source)) if precision == "int8" else None
        return build_artifact(torch_model(fp32), fp32, recipe, chw, precision, out_dir)

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

    @staticmethod
    def runtime_facts() -> dict:
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
