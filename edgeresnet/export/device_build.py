"""`edgeresnet build DIR` on the Jetson or GPU host, for every engine that builds on the device
(``capabilities.device_build``): the engine checks its part of the bundle and says what to build
(``Backend.device_job``); here the engines are built, evaluated and timed by the export's own
engine stage, and their rows published into the export's report, as the export does."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..backends.base import DeviceJob
from ..backends.registry import device_engine
from ..bundle import Bundle, export_root
from ..bundle.publish import publish_bundle, read_bench
from ..bundle.report import read_report
from ..data import Preprocess, load_split
from ..errors import InputError
from ..report import Report
from ..report.table import ran_on
from .engines import EngineContext, Measurer, engine_rows, time_rows


def build_on_device(export_dir: Path, eval_spec: str | None = None, eval_limit: int | None = None,
                    options: Mapping[str, Any] | None = None, threads: int | None = None) -> Report:
    """Build the engines the export's device bundle names, evaluate and time them, and publish
    their rows (rows merged from other devices by `edgeresnet report` stay); returns the report."""
    engine = device_engine(Path(export_dir))
    root = export_root(export_dir)
    bundle = open_device_bundle(engine, root)
    report = Report.from_dict(read_report(bundle))
    read_bench(root)  # publish keeps an earlier bench's table: a malformed bench.json is said now, not after the builds
    job = engine.device_job(bundle, options or {})
    pre = Preprocess.from_dict(bundle.manifest["preprocess"])
    ctx, eval_set, eval_idx = _context(job, root, pre, eval_spec or job.eval_spec, eval_limit, threads)
    rows = engine_rows(job.backend, ctx, int8=True)
    time_rows(rows, ctx, tuple(pre.input_shape))
    report.results = [r for r in report.results if r.target != engine.name or ran_on(r)] + rows
    if eval_set is not None:
        report.evaluation = {**(report.evaluation or {}), f"{engine.name}_source": eval_set.source,
                             f"{engine.name}_images": int(len(eval_idx))}
    publish_bundle(root, report)
    return report


def _context(job: DeviceJob, root: Path, pre: Preprocess, eval_spec: str | None, eval_limit: int | None,
             threads: int | None) -> tuple[EngineContext, object, np.ndarray | None]:
    """The engine stage's context over the bundle's files, with the evaluation images (none
    without an evaluation set: the rows then carry latency only)."""
    eval_set = load_split(eval_spec, "test") if eval_spec else None
    if eval_set is not None:
        eval_set.require_labels("evaluation")
    eval_idx = None if eval_set is None else np.arange(len(eval_set) if eval_limit is None else min(eval_limit, len(eval_set)))
    probe = np.zeros((1, *pre.input_shape), np.float32) if eval_set is None else eval_set.batch(np.arange(1), pre)
    ctx = EngineContext(work=root, fp32_path=job.fp32_onnx, fp32_proto=None, table=None, threads=threads,
                        measure=Measurer(eval_set, pre, eval_idx, probe), artifacts_dir=job.artifacts_dir,
                        qdq_paths=dict(job.qdq_paths), fallback_layers=list(job.fallback_layers))
    return ctx, eval_set, eval_idx


def plan_on_device(export_dir: Path, options: Mapping[str, Any]) -> dict:
    """`build --dry-run`: what the engine would build here (or for the version ``options`` name)."""
    engine = device_engine(Path(export_dir))
    return engine.device_plan(open_device_bundle(engine, export_root(export_dir)), options)


def open_device_bundle(engine, root: Path) -> Bundle:
    """The export's bundle, once the engine's own files are there (``Backend.device_files``): a
    folder that is no such export is told which file it lacks, before its manifest is read."""
    for name in engine.device_files:
        path = root / engine.bundle / name
        if not path.exists():
            raise InputError(f"{path} does not exist", hint=f"pass an export directory made with --target {engine.name}")
    return Bundle(root)
