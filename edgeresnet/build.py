"""`edgeresnet build DIR`: on the Jetson or GPU host, turn an export's TensorRT bundle into
engines (int8 from the QDQ ONNX, fp16 and fp32 from the FP32 ONNX), check their layers, and
add the accuracy and latency rows to the export's report. Needs TensorRT and cuda-python, not
torch. ``build --dry-run`` prints the plan (engines, flags, profile, DLA, float layers) for the
TensorRT line given or found, and needs no TensorRT."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .backends.tensorrt import (
    INSTALL_HINT,
    PROFILE,
    TensorRTBackend,
    TrtOptions,
    unavailable_reason,
)
from .backends.tensorrt_bundle import BUNDLE, calibration_cache, parse_calibration_cache
from .backends.tensorrt_recipes import plan as recipe_plan
from .backends.tensorrt_recipes import recipe_for
from .data import Preprocess, load_split
from .engines import EngineContext, Measurer, engine_rows
from .errors import BackendUnavailable
from .machine import libraries
from .manifest import write_manifest
from .outdir import atomic_write, read_json
from .report import Report
from .report.publish import publish


def build_on_device(export_dir: Path, eval_spec: str | None = None, eval_limit: int | None = None,
                    batch_range: tuple[int, int, int] | None = None, dla_core: int | None = None,
                    threads: int | None = None) -> Report:
    bundle = export_dir / BUNDLE
    hint = "pass an export directory made with --target trt"
    plan = read_json(bundle / "build.json", hint)
    report_json = read_json(export_dir / "report.json", hint)
    reason = unavailable_reason()
    if reason:
        raise BackendUnavailable(reason, hint=INSTALL_HINT.split(", or pass")[0])
    retarget_cache(bundle, recipe_for(installed_trt_version())[1])
    options = TrtOptions(tuple(batch_range or plan["batch_range"]), plan.get("dla_core") if dla_core is None else dla_core,
                         timing_cache=bundle / "timing.cache", float_layers=tuple(plan.get("float_nodes", [])))
    pre = Preprocess.from_dict(report_json["model"]["preprocess"])
    spec = eval_spec or plan.get("eval_spec")
    eval_set = load_split(spec, "test") if spec else None
    if eval_set is not None:
        eval_set.require_labels("evaluation")
    eval_idx = None if eval_set is None else np.arange(len(eval_set) if eval_limit is None else min(eval_limit, len(eval_set)))
    probe = np.zeros((1, *pre.input_shape), np.float32) if eval_set is None else eval_set.batch(np.arange(1), pre)
    ctx = EngineContext(work=export_dir, fp32_path=(bundle / plan["fp32_onnx"]).resolve(), fp32_proto=None, table=None,
                        threads=threads, measure=Measurer(eval_set, pre, eval_idx, probe, threads),
                        artifacts_dir=bundle, qdq_paths={PROFILE.name: bundle / plan["int8_onnx"]},
                        fallback_layers=list(plan.get("fallback_layers", [])))
    backend = TensorRTBackend(trt_options=options)
    rows = engine_rows(backend, ctx, int8=True)
    report = Report.from_dict(report_json)
    report.results = [r for r in report.results if r.target != backend.name] + rows
    if eval_set is not None:
        report.evaluation = {**(report.evaluation or {}), "trt_source": eval_set.source, "trt_images": int(len(eval_idx))}
    publish(export_dir, report)
    write_manifest(export_dir, report.to_dict(), libraries())
    return report


def installed_trt_version() -> str | None:
    try:
        import tensorrt
    except ImportError:
        return None
    return str(tensorrt.__version__)


def dry_run(export_dir: Path, trt_version: str | None = None, batch_range: tuple[int, int, int] | None = None,
            dla_core: int | None = None) -> dict:
    """What `build` would do, per engine, for ``trt_version`` (else the installed TensorRT, else the
    line the bundle was written for). Needs no TensorRT."""
    bundle = export_dir / BUNDLE
    saved = read_json(bundle / "build.json", "pass an export directory made with --target trt")
    installed = installed_trt_version()
    recipe, version = recipe_for(trt_version or installed or saved.get("trt_version"))
    result = recipe_plan(recipe, version, input_name=saved["input_name"], chw=tuple(saved["input_chw"]),
                         batch_range=tuple(batch_range or saved["batch_range"]),
                         dla_core=saved.get("dla_core") if dla_core is None else dla_core,
                         float_layers=tuple(saved.get("float_nodes", [])))
    result["bundle_written_for"] = saved.get("trt_version")
    result["version_source"] = ("--trt-version" if trt_version else "installed TensorRT" if installed
                                else "the bundle (no TensorRT here)")
    return result


def retarget_cache(bundle: Path, version: str) -> bool:
    """Rewrite calibration.cache's header for the TensorRT that will read it (TensorRT skips a cache
    whose header names another version). True when it changed."""
    path = bundle / "calibration.cache"
    if not path.exists():
        return False
    header, scales = parse_calibration_cache(path.read_text())
    text = calibration_cache(scales, version)
    if text.splitlines()[0] == header:
        return False
    atomic_write(path, lambda tmp: tmp.write_text(text))  # the user's cache is replaced whole or not at all
    return True
