"""TensorRT, written against NVIDIA's documented Python API of each supported line (8.4-8.6,
10.x, 11.x; the per-line rules live in ``tensorrt_recipes``), explicit quantization on the GPU.

The INT8 engine is built from the TensorRT-profile QDQ ONNX (symmetric int8, zero point 0,
Q/DQ on conv inputs and weights and on the identity input of every residual Add), with FP16
allowed for whatever stays in float; FP32 and FP16 engines come from the FP32 ONNX for
comparison. One optimization profile covers the batch range; a timing cache is reused across
builds. DLA engines (``int8-dla``, ``fp16-dla``) are planned per line in build.json's ``plans``
(implicit INT8 from the calibration cache on 8.x/10.x) and built by the device file. After each
build the engine inspector's layer list is audited (``tensorrt_audit``).

Not runnable here (no TensorRT wheel, no GPU): everything that needs no GPU (the QDQ ONNX,
the calibration cache, the command lines, the build plans, the layer audit) lives in
``tensorrt_bundle``, ``tensorrt_recipes`` and ``tensorrt_audit`` and is tested on CPU.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import BackendUnavailable
from ..quantize.plan import plan
from ..quantize.profile import Profile
from .base import DEFAULT_BATCH_RANGE, Artifact, EngineOptions, Runner, Skip
from .registry import register
from .tensorrt_bundle import BUNDLE, implicit_float_layers, layer_warnings, write_bundle
from .tensorrt_jetpack import APT_TENSORRT
from .tensorrt_recipes import check_dla, recipe_for, shapes

# The classifier Gemm stays in float (FP16 in the engine), as NVIDIA's ModelOpt leaves it: a
# classifier GEMM is a GEMV at batch 1 and has N or K under 16 on small heads, where ModelOpt
# cites INT8 TensorRT kernels as slower than FP16 ones; it is under 0.1% of a ResNet's work, so
# INT8 there saves nothing and costs a requantization (tests/test_modelopt_reference.py).
PROFILE = Profile("trt", "int8", 0, "int8", 0, quantize_bias=False, placement="inputs", float_ops=("Gemm",))

# Per line (tensorrt_recipes.LINES[*].where): JetPack 5/6 take TensorRT from apt, never pip; PyPI's
# tensorrt (the [trt] extra) is for x86-64 and ARM SBSA / JetPack 7 on Ubuntu 24.04+ only.
DEVICE_HINT = ("on a Jetson run the bundle's own `python3 trt/trt_device.py build` with JetPack's TensorRT "
               f"(JetPack 5/6: `{APT_TENSORRT}`, never pip); on x86-64 and ARM SBSA / JetPack 7 "
               "(Ubuntu 24.04+) `pip install 'edgeresnet[trt]'` (PyPI's tensorrt supports ARM only there)")
INSTALL_HINT = DEVICE_HINT + "; or pass --prepare-only to write the bundle here"


def import_error_reason(exc: ImportError, module: str = "tensorrt", label: str = "TensorRT") -> str:
    """What an ImportError really says: the module that is missing, or the shared library that did not
    load (``libnvinfer.so.8``, ``libcudart.so.12``), never a guess."""
    missing = getattr(exc, "name", None)
    if missing and (missing == module or module.startswith(missing + ".") or missing.startswith(module)):
        return f"{label} is not installed (no module named {missing!r})"
    return f"{label} did not load: `import {module}` failed with {exc}"


@dataclass(frozen=True)
class TrtOptions:
    batch_range: tuple[int, int, int] = DEFAULT_BATCH_RANGE  # min, opt, max
    dla_core: int | None = None
    workspace_mb: int = 1024
    timing_cache: Path | None = None
    float_layers: tuple[str, ...] = ()  # ONNX node names kept in float by --max-drop (FP16 here)


def _cuda_gpu_present() -> bool:
    if shutil.which("nvidia-smi"):
        try:
            res = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
            if res.returncode == 0 and "GPU" in res.stdout:
                return True
        except (OSError, subprocess.SubprocessError):
            pass
    return Path("/dev/nvhost-ctrl-gpu").exists() or Path("/etc/nv_tegra_release").exists()  # Jetson


def unavailable_reason() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return import_error_reason(exc, "tensorrt")
    if not _cuda_gpu_present():
        return "no CUDA GPU found (TensorRT needs an NVIDIA GPU or a Jetson)"
    return None


@register
class TensorRTBackend:
    name = "trt"
    aliases = ("tensorrt",)
    preference = 2
    suffixes = (".engine",)
    extra = "trt"
    libraries = ("tensorrt",)
    install_hint = INSTALL_HINT
    thread_safe = False  # one CUDA context and stream per loaded engine
    bundle = BUNDLE  # what prepare() writes: everything `edgeresnet build` needs on the device
    qdq_profile = PROFILE
    qdq_variants: dict[str, Profile] = {}
    takes_trt_version = True  # --trt-version picks this bundle's recipe (tensorrt_recipes)

    def int8_kernel(self) -> tuple[str, str]:
        return "", "GPU tensor cores, chosen per layer when the engine is built on the device"

    def __init__(self, options: EngineOptions | None = None, trt_options: TrtOptions | None = None) -> None:
        self.engine_options = options or EngineOptions()
        self.options = trt_options or TrtOptions(self.engine_options.batch_range, self.engine_options.dla_core)
        # The recipe the bundle is written for; a build reads the installed TensorRT's instead.
        self.recipe, self.version = recipe_for(self.engine_options.trt_version)
        check_dla(self.recipe, self.options.dla_core)

    def unavailable_reason(self) -> str | None:
        return unavailable_reason()

    def prepare(self, ctx) -> Skip | None:
        """Write ``trt/`` (QDQ ONNX, calibration cache, trtexec lines, build.json) before the
        INT8 build; skip building here when TensorRT is missing or with --prepare-only."""
        scales = cache_scales(ctx.fp32_proto, ctx.quant)
        keep = PROFILE.float_nodes(ctx.fp32_proto.graph, ctx.quant.keep_float)
        bundle = write_bundle(
            ctx.work, input_name=ctx.input_name, chw=ctx.chw, batch_range=self.options.batch_range,
            dla_core=self.options.dla_core, scales=scales, eval_spec=ctx.eval_spec, qdq_name=ctx.qdq(PROFILE).name,
            fallback_layers=tuple(ctx.fallback_layers), float_nodes=tuple(sorted(keep)),  # --max-drop's and the classifier
            trt_version=self.version,
            dla_float_layers=tuple(implicit_float_layers(ctx.fp32_proto.graph, scales, keep)))
        ctx.qdq_paths[PROFILE.name] = bundle / "model.int8.trt.qdq.onnx"
        reason = self.unavailable_reason()
        if reason or self.engine_options.prepare_only:
            return Skip("--prepare-only" if self.engine_options.prepare_only and not reason else reason,
                        {"bundle": BUNDLE, "next": f"edgeresnet build {ctx.out}"})
        return None

    def precisions(self, int8: bool) -> list[str]:
        return ["fp32", "fp16"] + (["int8"] if int8 else [])

    def build(self, source: Path, precision: str, out_dir: Path) -> Artifact:
        """One engine, by the installed TensorRT's recipe. ``source`` is the FP32 ONNX or, for
        int8, the QDQ ONNX; on TensorRT 11 the FP16-typed copies in the bundle replace them."""
        trt = _trt()
        recipe, version = recipe_for(trt.__version__)
        check_dla(recipe, self.options.dla_core)
        if recipe.fp16_onnx and precision in ("int8", "fp16"):
            source = out_dir / recipe.sources()[precision]
            if not source.exists():
                from .tensorrt_bundle import write_fp16_sources

                write_fp16_sources(out_dir)  # a bundle written for 8.6/10, built on 11
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        flags = 0
        if not recipe.weak_typing:  # 11: "Strongly Typed Networks Are Now Required"
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        elif int(version.split(".")[0]) < 10:  # 8.x: explicit batch is a flag (the default from 10 on)
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(source.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT's ONNX parser rejected {source.name}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.options.workspace_mb << 20)
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        if recipe.weak_typing and precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if recipe.weak_typing and precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: scales come from the Q/DQ nodes
        if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)  # "fp32" means FP32, not Ampere/Orin's default TF32
        on_dla = precision.endswith("-dla")  # the DLA engines of build.json's plans (the device file builds them)
        if on_dla:  # DLA has no FP32: the fp32 engine stays on the GPU
            config.default_device_type = trt.DeviceType.DLA
            config.DLA_core = self.options.dla_core
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        inp = network.get_input(0)
        lo, opt, hi = shapes(precision, self.options.batch_range)
        rest = tuple(inp.shape)[1:]
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, (lo, *rest), (opt, *rest), (hi, *rest))
        config.add_optimization_profile(profile)
        cache_path = self.options.timing_cache or out_dir / "timing.cache"
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"TensorRT failed to build the {precision} engine (see the log above)")
        cache_path.write_bytes(memoryview(config.get_timing_cache().serialize()))
        engine_path = out_dir / f"model.{precision}.engine"
        engine_path.write_bytes(memoryview(serialized))
        engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
        info = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
        layers_path = out_dir / f"model.{precision}.layers.json"
        layers_path.write_text(json.dumps(info, indent=1))
        warnings = layer_warnings(info, precision, self.options.float_layers, recipe)
        return Artifact(self.name, precision, engine_path,
                        {"tensorrt": trt.__version__, "trt_line": recipe.line, "layers": layers_path.name,
                         "warnings": warnings, "batch_range": [lo, opt, hi], "tf32": precision != "fp32",
                         "dla_core": self.options.dla_core if on_dla else None, "source": source.name})

    def load(self, artifact: Artifact, threads: int | None = None, mode: str = "latency") -> Runner:
        """numpy in, numpy out, through cuda-python device buffers (no torch)."""
        from .tensorrt_runner import open_engine

        hi = artifact.details.get("batch_range", DEFAULT_BATCH_RANGE)[2]
        return open_engine(_trt(), artifact.path.read_bytes(), hi)

    def input_chw(self, path: Path) -> tuple[int, int, int]:
        return _engine_chw(path)


def cache_scales(fp32_proto, cand) -> dict[str, float]:
    """Scales for the calibration cache: every tensor the quantized layers touch, except
    those a float layer reads. A tensor with a scale may be stored in int8, so the implicit
    path would feed a float layer the very rounding it was kept in float to avoid."""
    keep = PROFILE.float_nodes(fp32_proto.graph, cand.keep_float)
    read_by_float = {i for n in fp32_proto.graph.node if n.name in keep for i in n.input}
    return {t: cand.scales[t] for t in plan(fp32_proto, keep).all_tensors if t not in read_by_float}


def _engine_chw(path: Path) -> tuple[int, int, int]:
    trt = _trt()
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
    name = next(engine.get_tensor_name(i) for i in range(engine.num_io_tensors)
                if engine.get_tensor_mode(engine.get_tensor_name(i)) == trt.TensorIOMode.INPUT)
    return tuple(int(d) for d in engine.get_tensor_shape(name))[1:]


def _trt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(import_error_reason(exc, "tensorrt"), hint=INSTALL_HINT) from None
    return trt


def installed_version() -> str | None:
    """The importable TensorRT's version, or None (any import failure: doctor reports it apart)."""
    try:
        import tensorrt
    except ImportError:
        return None
    return str(getattr(tensorrt, "__version__", "")) or None
