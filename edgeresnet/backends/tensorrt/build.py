"""`edgeresnet build DIR`: on the Jetson or GPU host, turn an export's TensorRT bundle into
engines (those of build.json's plan for the installed TensorRT), check their layers, and add the
accuracy and latency rows to the export's report. Needs TensorRT (and libcudart), not torch or
cuda-python: every GPU step goes through bundle/trt_device.py. ``build --dry-run`` prints the
plan (engines, flags, profile, DLA, float layers) for the TensorRT line given or found, and
needs no TensorRT."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from .backend import DEVICE_HINT, PROFILE, TensorRTBackend, TrtOptions, plan_for, unavailable_reason
from .bundle import BUNDLE, FP16_SOURCES, BuildSpec, calibration_cache, parse_calibration_cache
from .recipes import plan as recipe_plan
from .recipes import dla_refusal, recipe_for
from ...bundle import Bundle, export_root
from ...bundle.report import read_report
from ...data import Preprocess, load_split
from ...export.engines import EngineContext, Measurer, engine_rows, time_rows
from ...errors import BackendUnavailable, InputError
from ...report import Report
from ...report.publish import publish_bundle, read_bench
from ...report.table import ran_on


HINT = "pass an export directory made with --target trt"


def open_build(export_dir: Path) -> tuple[Bundle, BuildSpec]:
    """The bundle and its build.json, both checked before anything is read from them: the
    manifest's hash of build.json, every field's type, and each file it names (inside the
    bundle, listed in the manifest, unchanged)."""
    root = export_root(export_dir)
    where = f"{BUNDLE}/build.json"
    if not (root / where).exists():
        raise InputError(f"{root / where} does not exist", hint=HINT)
    bundle = Bundle(root)
    spec = BuildSpec.from_json(bundle.read_json(where), where)
    for field in BuildSpec.FILES:
        bundle.path(getattr(spec, field), BUNDLE, named_by=f"{where}'s {field}")
    return bundle, spec


def build_on_device(export_dir: Path, eval_spec: str | None = None, eval_limit: int | None = None,
                    batch_range: tuple[int, int, int] | None = None, dla_core: int | None = None,
                    threads: int | None = None) -> Report:
    bundle, spec = open_build(export_dir)
    root, folder = bundle.root, bundle.folder(BUNDLE)
    report = Report.from_dict(read_report(bundle))
    read_bench(root)  # publish keeps an earlier bench's table: a malformed bench.json is said now, not after the builds
    reason = unavailable_reason()
    if reason:
        raise BackendUnavailable(reason, hint=DEVICE_HINT)
    recipe, version = recipe_for(installed_trt_version())
    # The plan for this TensorRT (build.json's per-line plans, or this edgeresnet's recipe for older
    # bundles); every file it names is checked like the rest, and TensorRT 11's FP16 copies, which
    # a bundle written for 8.x/10.x lacks, are made from fixed names.
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
    pre = Preprocess.from_dict(bundle.manifest["preprocess"])
    eval_spec = eval_spec or spec.eval_spec
    eval_set = load_split(eval_spec, "test") if eval_spec else None
    if eval_set is not None:
        eval_set.require_labels("evaluation")
    eval_idx = None if eval_set is None else np.arange(len(eval_set) if eval_limit is None else min(eval_limit, len(eval_set)))
    probe = np.zeros((1, *pre.input_shape), np.float32) if eval_set is None else eval_set.batch(np.arange(1), pre)
    ctx = EngineContext(work=root, fp32_path=bundle.path(spec.fp32_onnx, BUNDLE), fp32_proto=None, table=None,
                        threads=threads, measure=Measurer(eval_set, pre, eval_idx, probe),
                        artifacts_dir=folder, qdq_paths={PROFILE.name: bundle.path(spec.int8_onnx, BUNDLE)},
                        fallback_layers=list(spec.fallback_layers))
    backend = TensorRTBackend(trt_options=options)
    rows = engine_rows(backend, ctx, int8=True)
    time_rows(rows, ctx, probe.shape[1:])
    # Rows merged from devices by `edgeresnet report` stay: they describe other machines' engines.
    report.results = [r for r in report.results if r.target != backend.name or ran_on(r)] + rows
    if eval_set is not None:
        report.evaluation = {**(report.evaluation or {}), "trt_source": eval_set.source, "trt_images": int(len(eval_idx))}
    publish_bundle(root, report)
    return report


def installed_trt_version() -> str | None:
    try:
        import tensorrt
    except ImportError:
        return None
    return str(tensorrt.__version__)


def dry_run(export_dir: Path, trt_version: str | None = None, batch_range: tuple[int, int, int] | None = None,
            dla_core: int | None = None) -> dict:
    """What `build` (or the device file) would do, per engine, for ``trt_version`` (else the installed
    TensorRT, else the line the bundle was written for): the same function writes build.json's ``plans``,
    so without overrides this is that line's entry. Needs no TensorRT. A DLA core the bundle asked for
    on a line without DLA gives the GPU plan and says why, as the device would; one given here is refused."""
    if trt_version is not None:
        recipe_for(trt_version)  # a malformed --trt-version is the command line's fault: said before the bundle is read
    _, spec = open_build(export_dir)
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


def retarget_cache(bundle: Bundle, name: str, version: str) -> bool:
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
