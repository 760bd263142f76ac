"""TensorRT's part of `edgeresnet build DIR` (``export.device_build`` runs the build for every
engine that builds on the device): on the Jetson or GPU host, check the export's TensorRT bundle
and say which engines to build (those of build.json's plan for the installed TensorRT). Needs
TensorRT (and libcudart), not torch or cuda-python: every GPU step goes through
ondevice/trt_device.py. ``build --dry-run`` prints the plan (engines, flags, profile, DLA, float
layers) for the TensorRT line given or found, and needs no TensorRT.

``bundle`` arguments are ``bundle.Bundle`` objects the caller opened (hash-checked reads of the
files the manifest lists); this module does not import the bundle package, which sits above the
engines."""

from __future__ import annotations

import struct

from ..base import DeviceJob
from .backend import DEVICE_HINT, PROFILE, TensorRTBackend, TrtOptions, plan_for, unavailable_reason
from .bundle import BUNDLE, FP16_SOURCES, BuildSpec, calibration_cache, parse_calibration_cache
from .recipes import plan as recipe_plan
from .recipes import dla_refusal, recipe_for
from ...errors import BackendUnavailable, InputError


HINT = "pass an export directory made with --target trt"


def build_spec(bundle) -> BuildSpec:
    """build.json, checked before anything is read from it: the manifest's hash of it, every
    field's type, and each file it names (inside the bundle, listed in the manifest, unchanged)."""
    where = f"{BUNDLE}/build.json"
    if not (bundle.root / where).exists():
        raise InputError(f"{bundle.root / where} does not exist", hint=HINT)
    spec = BuildSpec.from_json(bundle.read_json(where), where)
    for field in BuildSpec.FILES:
        bundle.path(getattr(spec, field), BUNDLE, named_by=f"{where}'s {field}")
    return spec


def device_job(bundle, batch_range: tuple[int, int, int] | None = None, dla_core: int | None = None) -> DeviceJob:
    """What to build here: the plan for the installed TensorRT (build.json's per-line plans, or
    this edgeresnet's recipe for older bundles), every file it names checked like the rest, and
    TensorRT 11's FP16 copies, which a bundle written for 8.x/10.x lacks, made from fixed names."""
    spec = build_spec(bundle)
    folder = bundle.folder(BUNDLE)
    reason = unavailable_reason()
    if reason:
        raise BackendUnavailable(reason, hint=DEVICE_HINT)
    recipe, version = recipe_for(installed_trt_version())
    line, plan = plan_for(bundle.read_json(f"{BUNDLE}/build.json"), installed_trt_version() or version,
                          batch_range, dla_core)
    named = [e[k] for e in plan["engines"].values() for k in ("onnx", "calibration_cache") if e.get(k)]
    for name in dict.fromkeys([*named, *(FP16_SOURCES if recipe.fp16_onnx else ())]):
        if bundle.lists(name, BUNDLE) or (folder / name).exists():
            bundle.path(name, BUNDLE, named_by=f"the {recipe.label} plan")
    retarget_cache(bundle, spec.calibration_cache, version)  # for trtexec --calib; trt_device retargets in memory
    options = TrtOptions(tuple(batch_range or spec.batch_range), spec.dla_core if dla_core is None else dla_core,
                         float_layers=spec.float_nodes, plan=(line, plan), bundle_dir=folder)
    bundle.scratch("timing.cache", BUNDLE)  # written by the build: inside trt/, never through a link
    return DeviceJob(backend=TensorRTBackend(trt_options=options), fp32_onnx=bundle.path(spec.fp32_onnx, BUNDLE),
                     artifacts_dir=folder, qdq_paths={PROFILE.name: bundle.path(spec.int8_onnx, BUNDLE)},
                     fallback_layers=tuple(spec.fallback_layers), eval_spec=spec.eval_spec)


def installed_trt_version() -> str | None:
    try:
        import tensorrt
    except ImportError:
        return None
    return str(tensorrt.__version__)


def dry_run(bundle, trt_version: str | None = None, batch_range: tuple[int, int, int] | None = None,
            dla_core: int | None = None) -> dict:
    """What `build` (or the device file) would do, per engine, for ``trt_version`` (else the installed
    TensorRT, else the line the bundle was written for): the same function writes build.json's ``plans``,
    so without overrides this is that line's entry. Needs no TensorRT. A DLA core the bundle asked for
    on a line without DLA gives the GPU plan and says why, as the device would; one given here is refused."""
    if trt_version is not None:
        recipe_for(trt_version)  # a malformed --trt-version is the command line's fault: said before the bundle is read
    spec = build_spec(bundle)
    installed = installed_trt_version()
    recipe, version = recipe_for(trt_version or installed or spec.trt_version)
    dla = spec.dla_core if dla_core is None else dla_core
    note = dla_refusal(recipe) if dla is not None and dla_core is None else None
    result = recipe_plan(recipe, version, input_name=spec.input_name, chw=spec.input_chw,
                         batch_range=tuple(batch_range or spec.batch_range), dla_core=None if note else dla,
                         float_layers=spec.float_nodes, dla_float_layers=spec.dla_float_layers)
    if note:
        result["dla_note"] = note
    result["bundle_written_for"] = spec.trt_version
    result["version_source"] = ("--trt-version" if trt_version else "installed TensorRT" if installed
                                else "the bundle (no TensorRT here)")
    return result


def retarget_cache(bundle, name: str, version: str) -> bool:
    """Rewrite the calibration cache's header for the TensorRT that will read it (TensorRT skips a
    cache whose header names another version), and its hash with it. True when it changed."""
    where = f"{BUNDLE}/build.json's calibration_cache"
    try:
        header, scales = parse_calibration_cache(bundle.read_bytes(name, BUNDLE, named_by=where).decode())
    except (ValueError, struct.error) as exc:
        raise InputError(f"{bundle.root / BUNDLE / name} is not a TensorRT calibration cache ({exc})",
                         hint="re-export with --target trt") from None
    text = calibration_cache(scales, version)
    if text.splitlines()[0] == header:
        return False
    bundle.rewrite(name, text, BUNDLE)  # replaced whole or not at all, and re-hashed at once
    return True
