"""TensorRT, written against NVIDIA's documented Python API of each supported line (the per-line
rules live in ``tensorrt_recipes``; build.json's per-line plans say what to build).

Every GPU-side step goes through ``edgeresnet/ondevice/trt_device.py``, the one file that is also
copied into each bundle for devices without this package (JetPack 5's Python 3.8): building an
engine from a plan (flags by name, TF32, profile, DLA, a cache-only calibrator for implicit INT8,
layer precisions, timing cache, the engine inspector's JSON), running it (CUDA through ctypes on
libcudart, padded static batches) and timing it as trtexec does (CUDA events, one execution
context per thread). This module adds what needs the package: the plan for the installed
TensorRT, the layer checks, the bundle's evaluation images and the errors' exit codes.

Not runnable here (no TensorRT, no GPU): everything but the GPU calls is tested on CPU, and
trt_device against a numpy test double of tensorrt and libcudart (tests/trt_standin).

DLA engines (``int8-dla``, ``fp16-dla``) are planned per line in build.json's ``plans``
(implicit INT8 from the calibration cache on 8.x/10.x, NVIDIA's DLA recipe); after each build
the engine inspector's layer list is audited (``trt_device.audit``: DLA vs GPU layers, fallbacks).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import BackendUnavailable, EdgeResNetError, InputError, UsageError
from ...quantize.plan import plan
from ...quantize.profile import Profile
from ..base import (DEFAULT_BATCH_RANGE, Artifact, Backend, BuildInputs, Capabilities, Input, OptionSpec, Runner,
                    Skip, file_precision_from_name)
from ..registry import register
from .bundle import BUNDLE, FP16_SOURCES, implicit_float_layers, layer_warnings, write_bundle, write_fp16_sources
from .jetpack import APT_TENSORRT
from .recipes import check_dla, recipe_for
from .recipes import plan as recipe_plan

# The classifier Gemm stays in float (FP16 in the engine), as NVIDIA's ModelOpt leaves it: a
# classifier GEMM is a GEMV at batch 1 and has N or K under 16 on small heads, where ModelOpt
# cites INT8 TensorRT kernels as slower than FP16 ones; it is under 0.1% of a ResNet's work, so
# INT8 there saves nothing and costs a requantization (tests/quantize/test_modelopt_reference.py).
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


def parse_batch_range(value) -> tuple[int, int, int]:
    """An optimization profile, 'min,opt,max' (or the three numbers), with min <= opt <= max."""
    text = value if isinstance(value, str) else ",".join(map(str, value))
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not 1 <= values[0] <= values[1] <= values[2]:
        default = ",".join(map(str, DEFAULT_BATCH_RANGE))
        raise UsageError(f"--batch-range {text!r} is not min,opt,max with min <= opt <= max", hint=f"e.g. {default}")
    return values


def check_trt_version(text: str) -> str:
    """--trt-version as typed, once it names a known TensorRT line: a malformed one is the command
    line's fault, said before any bundle or model is read."""
    recipe_for(text)
    return text


OPTIONS = (
    OptionSpec("--batch-range", str, ",".join(map(str, DEFAULT_BATCH_RANGE)),
               "Optimization profile of engines that have one (TensorRT): min,opt,max batch.", parse=parse_batch_range,
               device_help="Override the bundle's min,opt,max batch."),
    OptionSpec("--dla-core", int | None, None, "TensorRT: build the INT8 and FP16 engines for this Jetson DLA core "
               "(static batch at the opt size, GPU fallback on; fp32 stays on the GPU).",
               device_help="Also build INT8 and FP16 engines for this DLA core (Jetson), beside the GPU ones: static "
               "batch at the opt size, GPU fallback on; DLA INT8 is implicit (FP32 ONNX + calibration cache) on 8.x/10.x."),
    OptionSpec("--trt-version", str | None, None, "TensorRT: the version on the device, which picks the bundle's recipe "
               "(cache header, trtexec flags, FP16 files): 8.5 (JetPack 5), 8.6, 10.x (10.3: JetPack 6), 11.x (x86 GPUs). "
               "Default: 10.3.", parse=check_trt_version,
               device_help="With --dry-run: plan for this TensorRT (8.4, 8.5.2, 8.6, 10.3, 10.13, 11.4, ...) instead of "
               "the installed one.", plan_only=True),
    OptionSpec("--prepare-only", bool, False, "Engines built on the device (TensorRT): write their bundle (QDQ ONNX, "
               "calibration cache, trtexec lines) for `edgeresnet build` there; build nothing here."),
)


@dataclass(frozen=True)
class TrtOptions:
    batch_range: tuple[int, int, int] = DEFAULT_BATCH_RANGE  # min, opt, max
    dla_core: int | None = None
    workspace_mb: int = 1024
    float_layers: tuple[str, ...] = ()  # ONNX node names kept in float by --max-drop (FP16 here)
    # `edgeresnet build`: the (line, PLAN) it chose for the installed TensorRT, and the trt/ folder
    # the plan's file names are relative to
    plan: tuple[str, dict] | None = field(default=None, compare=False)
    bundle_dir: Path | None = None


def device():
    """``edgeresnet/ondevice/trt_device.py``: the device side, shared with the bundle's copy."""
    from ...ondevice import trt_device

    return trt_device


def package_error(exc: Exception) -> EdgeResNetError:
    """trt_device's error as the package's typed error (same exit codes: 2, 3, 4)."""
    kind = {2: UsageError, 3: InputError, 4: BackendUnavailable}.get(getattr(exc, "code", 3), InputError)
    return kind(exc.message, hint=exc.hint)


def unavailable_reason() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return import_error_reason(exc, "tensorrt")
    td = device()
    try:
        gpus = td.gpu_count()
    except td.DeviceError as exc:
        return f"{exc.message} ({exc.hint})"
    if not gpus:
        return "no CUDA GPU found (TensorRT needs an NVIDIA GPU or a Jetson)"
    return None


def plan_for(build: dict, version: str, batch_range: tuple[int, int, int] | None = None,
             dla_core: int | None = None) -> tuple[str, dict]:
    """(line, PLAN) build.json holds for the TensorRT ``version``: its per-line ``plans`` (picked by
    its ``lines`` table, as trt_device picks on the device), else, for bundles written before
    plans, the plan this edgeresnet's recipe makes from build.json's fields. ``batch_range``
    overrides the profile of every engine with a dynamic one; ``dla_core`` must match the plan's."""
    if "plans" in build:
        try:
            line, chosen = device().select_plan(build, version)
        except device().DeviceError as exc:
            raise package_error(exc) from None
        chosen = json.loads(json.dumps(chosen))  # a copy: overrides never touch the bundle's record
    else:
        recipe, full = recipe_for(version)
        core = build.get("dla_core") if dla_core is None else dla_core
        line, chosen = recipe.line, recipe_plan(
            recipe, full, input_name=build["input_name"], chw=tuple(build["input_chw"]),
            batch_range=tuple(batch_range or build["batch_range"]), dla_core=core,
            float_layers=tuple(build.get("float_nodes", ())))
    engines = chosen["engines"]
    if dla_core is not None and "plans" in build and not any(e.get("dla_core") == dla_core for e in engines.values()):
        raise UsageError(f"--dla-core {dla_core}: this bundle's plan builds no engine for that DLA core",
                         hint="re-export with --target trt --dla-core N for the core you want")
    if batch_range is not None:
        for engine in engines.values():
            if engine.get("dla_core") is None:
                engine["profile"] = dict(zip(("min", "opt", "max"), batch_range))
    return line, chosen


@register
class TensorRTBackend(Backend):
    name = "trt"
    aliases = ("tensorrt",)
    preference = 2
    suffixes = (".engine",)
    extra = "trt"
    libraries = ("tensorrt",)
    install_hint = INSTALL_HINT
    bundle = BUNDLE  # what prepare() writes: everything `edgeresnet build` needs on the device
    device_files = ("build.json",)  # the plans; build.py checks every file they name
    # the calibration cache of the bundle comes from the table's (or the tuned) scales
    takes = frozenset({Input.FP32_ONNX, Input.QDQ_ONNX, Input.TABLE})
    option_specs = OPTIONS  # --trt-version picks the bundle's recipe (recipes.py)
    # one execution context and stream per loaded engine; timed as trtexec times; built on the device
    capabilities = Capabilities(thread_safe=False, self_timed=True, device_build=True)
    qdq_profile = PROFILE

    def int8_kernel(self) -> tuple[str, str]:
        return "", "GPU tensor cores, chosen per layer when the engine is built on the device"

    def __init__(self, options=None, trt_options: TrtOptions | None = None) -> None:
        super().__init__(options)
        self.trt = trt_options or TrtOptions(self.options["batch_range"], self.options["dla_core"])
        # The recipe the bundle is written for; a build reads the installed TensorRT's plan instead.
        self.recipe, self.version = recipe_for(self.options["trt_version"])
        check_dla(self.recipe, self.trt.dla_core)
        self._bundle_dir = self.trt.bundle_dir
        self._build_json: dict | None = None  # export: the build.json prepare() wrote
        self._plan: tuple[str, dict] | None = self.trt.plan

    def unavailable_reason(self) -> str | None:
        return unavailable_reason()

    def prepare(self, ctx) -> Skip | None:
        """Write ``trt/`` (QDQ ONNX, calibration cache, trtexec lines, build.json with a plan per
        TensorRT line, the device file and the evaluation images) before the INT8 build; skip
        building here when TensorRT is missing or with --prepare-only."""
        scales = cache_scales(ctx.fp32_proto, ctx.quant)
        keep = PROFILE.float_nodes(ctx.fp32_proto.graph, ctx.quant.keep_float)
        bundle = write_bundle(
            ctx.work, input_name=ctx.input_name, chw=ctx.chw, batch_range=self.trt.batch_range,
            dla_core=self.trt.dla_core, scales=scales, eval_spec=ctx.eval_spec, qdq_name=ctx.qdq(PROFILE).name,
            fallback_layers=tuple(ctx.fallback_layers), float_nodes=tuple(sorted(keep)),  # --max-drop's and the classifier
            trt_version=self.version,
            dla_float_layers=tuple(implicit_float_layers(ctx.fp32_proto.graph, scales, keep)))
        write_device_files(bundle, ctx)
        ctx.qdq_paths[PROFILE.name] = bundle / "model.int8.trt.qdq.onnx"
        self._bundle_dir, self._build_json = bundle, json.loads((bundle / "build.json").read_text())
        reason = self.unavailable_reason()
        if reason or self.prepares_only():
            return Skip("--prepare-only" if self.prepares_only() and not reason else reason,
                        {"bundle": BUNDLE, "next": f"edgeresnet build {ctx.out}"})
        return None

    def prepares_only(self) -> bool:
        return bool(self.options["prepare_only"])

    def plan(self, version: str) -> tuple[str, dict]:
        """(line, PLAN) for the installed TensorRT, from the bundle's build.json."""
        if self._plan is None:
            if self._build_json is None:
                raise InputError("no TensorRT bundle to build from (build.json)",
                                 hint="export with --target trt, then run `edgeresnet build EXPORT_DIR`")
            self._plan = plan_for(self._build_json, version)
        return self._plan

    def precisions(self, int8: bool) -> list[str]:
        """The plan's engines, fp32 first (the baseline of every drop), then fp16; the recipe's three when
        there is no plan to read (TensorRT missing: each becomes a failed or skipped row)."""
        version = _installed_version()
        if self._plan is None and (version is None or self._build_json is None):
            return ["fp32", "fp16"] + (["int8"] if int8 else [])
        names = list(self.plan(version or "")[1]["engines"])
        names = sorted(names, key=lambda n: (n != "fp32", n != "fp16", names.index(n)))
        return [n for n in names if int8 or not n.startswith("int8")]

    def build(self, inputs: BuildInputs, precision: str, out_dir: Path) -> Artifact:
        """One engine of the plan, built by trt_device; the plan names each engine's own ONNX in
        the bundle ``prepare`` wrote (``inputs`` wrote them there)."""
        trt = _trt()
        td = device()
        line, chosen = self.plan(str(trt.__version__))
        engine = chosen["engines"][precision]
        folder = Path(self._bundle_dir or out_dir)
        if not (folder / engine["onnx"]).exists() and engine["onnx"] in FP16_SOURCES.values():
            write_fp16_sources(folder)  # TensorRT 11's FP16-typed copies, for a bundle written for 8.x/10.x
        try:
            details = td.build_engine(trt, td.DeviceBundle(str(folder), verify=False), precision, engine, line=line,
                                      workspace_mb=self.trt.workspace_mb, out_dir=str(out_dir))
        except td.DeviceError as exc:
            raise package_error(exc) from None
        layers = json.loads((out_dir / td.layers_file(precision)).read_text())
        base = precision.split("-")[0]
        details["warnings"] = layer_warnings(layers, base, self.trt.float_layers, recipe_for(trt.__version__)[0],
                                             dla=engine.get("dla_core") is not None)
        return Artifact(self.name, precision, out_dir / td.engine_file(precision), details)

    def load(self, artifact: Artifact, threads: int | None = None, mode: str = "latency") -> Runner:
        """numpy in, numpy out: trt_device's Runner (chunks by the engine's own profile, pads a
        static DLA batch); CUDA through libcudart, no torch, no cuda-python needed."""
        td = device()
        try:
            return td.open_runner(str(artifact.path), artifact.details.get("dla_core"), trt=_trt())
        except td.DeviceError as exc:
            raise package_error(exc) from None

    def bench_block(self, artifact: Artifact, spec: dict) -> dict:
        """One bench block timed as trtexec times it (trt_device.bench_engine): time-based warm-up,
        CUDA events for H2D, GPU compute and D2H, and in throughput mode one execution context,
        stream and buffer set per thread. ``spec`` is bench_worker's block spec."""
        td = device()
        throughput = spec.get("mode") == "throughput"
        try:
            started = time.perf_counter()
            info = td.load_engine(_trt(), artifact.path.read_bytes(), artifact.details.get("dla_core"))
            loaded = time.perf_counter() - started
            block = td.bench_engine(
                info, batch=int(spec.get("batch", 1)), mode=spec.get("mode", "latency"),
                requests=int(spec.get("requests") or 2) if throughput else 1,
                warmup_ms=float(spec.get("warmup_ms", td.WARMUP_MS)), duration_s=float(spec.get("min_seconds", 2.0)),
                iterations=int(spec.get("min_runs", td.ITERATIONS)), telemetry=td.Telemetry())
        except td.DeviceError as exc:
            raise package_error(exc) from None
        return {**block, "load_seconds": loaded}

    def precision_of(self, path: Path) -> str | None:
        """The engine's name in the plan, as `build` names its files: model.<int8|int8-dla|fp16|...>.engine."""
        parts = path.name.split(".")
        if len(parts) == 3 and parts[0] == "model" and parts[2] == "engine":
            return parts[1]
        return file_precision_from_name(path)

    @classmethod
    def runtime_facts(cls) -> dict:
        """Nothing beyond the machine's: `doctor` lists TensorRT's version with the libraries, the GPUs
        with the machine, and a Jetson's line apart."""
        return {}

    @classmethod
    def board_facts(cls, root: str = "/") -> dict | None:
        """A Jetson's L4T -> JetPack -> TensorRT line and install path (jetpack.py); None elsewhere."""
        from .jetpack import jetson_facts

        return jetson_facts(root, installed_version())

    def device_job(self, bundle, options):
        """`edgeresnet build`: the bundle's engines for the installed TensorRT (build.py)."""
        from .build import device_job

        return device_job(bundle, options.get("batch_range"), options.get("dla_core"))

    def device_plan(self, bundle, options) -> dict:
        """`build --dry-run`: the plan for ``options["trt_version"]`` (else the installed TensorRT)."""
        from .build import dry_run

        return dry_run(bundle, options.get("trt_version"), options.get("batch_range"), options.get("dla_core"))

    def input_chw(self, path: Path) -> tuple[int, int, int]:
        td = device()
        try:
            return td.load_engine(_trt(), path.read_bytes()).chw
        except td.DeviceError as exc:
            raise package_error(exc) from None


MAX_EVAL_IMAGES = 2000  # trt_device.MAX_EVAL_IMAGES: the device refuses more
MAX_EVAL_BYTES = 16 << 20  # of uint8 pixels: 2,000 Fashion-MNIST images, about 100 ImageNet ones


def write_device_files(bundle: Path, ctx) -> None:
    """trt/trt_device.py (the device side, so a device without this package can build, evaluate
    and benchmark) and trt/eval.npz (the export's evaluation images, uint8 NHWC as preprocessing
    leaves them before normalisation, with labels, mean and std): the manifest hashes both."""
    shutil.copyfile(Path(__file__).resolve().parents[2] / "ondevice" / "trt_device.py", bundle / "trt_device.py")
    evaluation = ctx.evaluation_images()
    if evaluation is None:
        return
    eval_set, pre, idx = evaluation
    import numpy as np

    per_image = pre.channels * pre.size * pre.size
    idx = np.asarray(idx)[:max(1, min(MAX_EVAL_IMAGES, MAX_EVAL_BYTES // per_image))]
    images = eval_set.uint8(idx, pre)
    if images.shape[-1] != pre.channels:  # gray images for an RGB model, as Preprocess.normalize repeats them
        images = np.repeat(images, pre.channels, axis=-1)
    np.savez_compressed(bundle / "eval.npz", images=np.ascontiguousarray(images, dtype=np.uint8),
                        labels=np.asarray(eval_set.labels)[idx].astype(np.int64),
                        labelled=np.asarray(bool(eval_set.labelled)),
                        mean=np.asarray(pre.mean, np.float32), std=np.asarray(pre.std, np.float32),
                        classes=np.asarray([str(c) for c in eval_set.classes] or [""]),
                        source=np.asarray(str(eval_set.source)))


def cache_scales(fp32_proto, cand) -> dict[str, float]:
    """Scales for the calibration cache: every tensor the quantized layers touch, except
    those a float layer reads. A tensor with a scale may be stored in int8, so the implicit
    path would feed a float layer the very rounding it was kept in float to avoid."""
    keep = PROFILE.float_nodes(fp32_proto.graph, cand.keep_float)
    read_by_float = {i for n in fp32_proto.graph.node if n.name in keep for i in n.input}
    return {t: cand.scales[t] for t in plan(fp32_proto, keep).all_tensors if t not in read_by_float}


def _installed_version() -> str | None:
    try:
        import tensorrt
    except ImportError:
        return None
    return str(tensorrt.__version__)


def _trt() -> Any:
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
