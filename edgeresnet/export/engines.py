"""The engine stage: for each backend, emit its QDQ graph from the one calibration table,
build every precision it offers and measure its accuracy; then time every artifact together
(:func:`time_rows`, bench's method).

One engine failing becomes a status row; the others still finish.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..backends.base import Artifact, Backend, BuildInputs, Input, artifact_size
from ..bench.timing import time_runner
from ..bench.run import row_columns
from ..bench.worker import block_spec
from ..calibrate.table import CalibrationTable
from ..data import Preprocess
from ..data.sources import ImageSet
from ..errors import EdgeResNetError, reraise_fatal, require
from ..bench.accuracy import Accuracy, evaluate
from ..bench.latency import PLAN, Plan, merge, run_rounds
from ..core.outdir import atomic_write
from ..core.progress import stderr
from ..quantize.profile import Profile
from ..quantize.recipe import Candidate, quantized_model
from ..report import ResultRow

Measure = Callable[[ResultRow, Callable], "Accuracy | None"]


IN_PROCESS = "batch 1, in this process, before any engine was built (PyTorch eager has no artifact to hand a worker)"


@dataclass
class Measurer:
    """Accuracy on the evaluation images (when there are any); latency only for the PyTorch
    eager row, which has no artifact and is timed here, labelled so.

    Engine artifacts are timed afterwards by :func:`time_rows`, all together and as `bench`
    times them: timed one by one right after each build, with builds and the parent's thread
    pools around them, ORT's INT8 read 0.91x FP32 where the bench a minute later read 1.72x."""

    eval_set: ImageSet | None
    pre: Preprocess
    eval_idx: np.ndarray | None
    probe: np.ndarray  # one preprocessed image, batch 1

    def __call__(self, row: ResultRow, run: Callable, artifact: Artifact | None = None) -> Accuracy | None:
        acc = None
        if self.eval_set is not None:
            acc = evaluate(run, self.eval_set, self.pre, self.eval_idx, label=f"{row.target} {row.precision}")
            row.top1, row.top5 = acc.top1, acc.top5
        if artifact is None:
            timing = time_runner(run, self.probe, warmup=PLAN.warmup, min_runs=PLAN.min_runs,
                                 min_seconds=PLAN.min_seconds)
            row.latency_ms, row.throughput_ips = timing.latency_ms(), timing.throughput_ips
            row.details["latency_method"] = IN_PROCESS
        return acc


@dataclass
class EngineContext:
    work: Path
    fp32_path: Path
    fp32_proto: object
    table: CalibrationTable | None
    threads: int | None
    measure: Measure
    torch_acc: Accuracy | None = None
    artifacts_dir: Path | None = None  # where engines go (default: work)
    qdq_paths: dict[str, Path] = field(default_factory=dict)  # profile name -> written QDQ ONNX
    candidate: Candidate | None = None  # tuned scales, biases and float layers (default: the table's scales)
    fallback_layers: list[str] = field(default_factory=list)  # layers the INT8 engines keep in float
    # For backends' prepare hooks (files built on the device): the model's input, the
    # evaluation data spec to measure there, and the export's final folder.
    input_name: str = "input"
    chw: tuple[int, int, int] | None = None
    eval_spec: str | None = None
    out: Path | None = None
    torch_model: object = None  # the folded torch model, for engines that take it (None: an ONNX source)
    calibration_batch: np.ndarray | None = None  # a few preprocessed calibration images

    def evaluation_images(self) -> tuple[ImageSet, Preprocess, np.ndarray] | None:
        """(images, preprocessing, indices) this export evaluates on, for engines whose device
        bundle evaluates there too; None without an evaluation set."""
        m = self.measure
        if isinstance(m, Measurer) and m.eval_set is not None and m.eval_idx is not None and len(m.eval_idx):
            return m.eval_set, m.pre, m.eval_idx
        return None

    def build_inputs(self) -> BuildInputs:
        """What every engine's ``build`` may read (backends.base.BuildInputs)."""
        chw = self.chw or (tuple(self.calibration_batch.shape[1:]) if self.calibration_batch is not None else None)
        return BuildInputs(self.fp32_path, chw, self.work, self.qdq, table=self.table, candidate=self.candidate,
                           torch_model=self.torch_model, calibration_batch=self.calibration_batch,
                           fp32_proto=self.fp32_proto)

    @property
    def quant(self) -> Candidate:
        """What the INT8 graphs are emitted from: the tuned candidate, else the table's scales."""
        return self.candidate or Candidate(self.table.scales)

    def qdq(self, profile: Profile) -> Path:
        """The QDQ ONNX of a profile, written once and shared by the backends that use it."""
        if profile.name not in self.qdq_paths:
            onnx = require("onnx", "torch")
            path = self.work / f"model.int8.{profile.name}.qdq.onnx"
            proto = quantized_model(self.fp32_proto, self.quant, profile)
            atomic_write(path, lambda p: onnx.save(proto, str(p)))
            self.qdq_paths[profile.name] = path
        return self.qdq_paths[profile.name]


def _failed(target: str, precision: str, exc: BaseException) -> ResultRow:
    reason = exc.message if isinstance(exc, EdgeResNetError) else f"{type(exc).__name__}: {exc}"
    return ResultRow(target, precision, status="failed", reason=reason.splitlines()[0] if reason else "failed",
                     details={"traceback": traceback.format_exc(limit=3)})


def missing_input(backend: Backend, ctx: EngineContext) -> str | None:
    """Why ``backend`` cannot be built from what this export has (what its ``takes`` names), or None."""
    if Input.TORCH_MODEL in backend.takes and ctx.torch_model is None:
        return f"{backend.name} is built from the torch model; an ONNX source has none (export from a checkpoint)"
    return None


def _build(backend: Backend, ctx: EngineContext, precision: str) -> Artifact:
    """One artifact; an INT8 one records the QDQ encoding it came from (engines that take one)."""
    art = backend.build(ctx.build_inputs(), precision, ctx.artifacts_dir or ctx.work)
    if precision == "int8" and Input.QDQ_ONNX in backend.takes:
        art.details["qdq_profile"] = backend.qdq_profile.to_dict()
    return art


def engine_rows(backend: Backend, ctx: EngineContext, int8: bool) -> list[ResultRow]:
    """Rows for every precision ``backend`` offers, fp32 first (the baseline of the drop)."""
    rows: list[ResultRow] = []
    base: Accuracy | None = None
    try:
        precisions = backend.precisions(int8)
    except Exception as exc:  # a broken runtime install must not sink the other engines
        reraise_fatal(exc)
        return [_failed(backend.name, "fp32", exc)]
    for precision in precisions:
        try:
            art = _build(backend, ctx, precision)
            run = backend.load(art, ctx.threads)
            row = ResultRow(art.target, art.precision, artifact=str(art.path.relative_to(ctx.work)),
                            size_bytes=artifact_size(art.path), details=dict(art.details), threads=ctx.threads,
                            fallback_layers=list(ctx.fallback_layers) if precision == "int8" else None,
                            kernel=art.details.get("kernel"))
            acc = ctx.measure(row, run, art)
        except Exception as exc:
            reraise_fatal(exc)  # Ctrl-C inside a runtime, or a full disk: end the run, publish nothing
            rows.append(_failed(backend.name, precision, exc))
            continue
        if precision == "fp32":
            base = acc
            if acc is not None and ctx.torch_acc is not None:
                row.details["agreement_with_torch"] = acc.agreement(ctx.torch_acc)
        if acc is not None and base is not None:
            row.agreement = acc.agreement(base)
            if base.top1 is not None and acc.top1 is not None:
                row.top1_drop_pp = round((base.top1 - acc.top1) * 100, 4)
                row.per_class_drop_pp = {c: round((base.per_class[c] - acc.per_class.get(c, 0.0)) * 100, 3)
                                         for c in base.per_class}
        rows.append(row)
    return rows


def time_rows(rows: list[ResultRow], ctx: EngineContext, chw: tuple[int, ...], options=None,
              plan: Plan = PLAN) -> None:
    """Every built artifact's latency, by bench's method (latency.py: interleaved rounds, each
    block in its own process), once all engines are built so no build runs beside a timing.
    Timed with ``ctx.threads``, the value the engines were loaded with for accuracy, and
    recorded as given (None: each runtime's default). ``options``: the engines' option values
    (registry.EngineOptions), as they were built with. A block that fails leaves its row's
    accuracy standing and says why in its warnings."""
    work, threads = ctx.work, ctx.threads
    todo = [r for r in rows if r.status == "ok" and r.artifact]
    if not todo:
        return
    specs = [block_spec(Artifact(r.target, r.precision, work / r.artifact, dict(r.details)), chw=chw,
                        threads=threads, options=(options or {}).get(r.target), **plan.block()) for r in todo]
    stderr.print(f"timing {len(todo)} artifacts: {plan.rounds_text()}, interleaved, each block in its own process")
    for row, timed in zip(todo, run_rounds(specs, plan)):
        row.threads = threads
        if timed.error is not None or not timed.rounds:
            row.details["warnings"] = row.details.get("warnings", []) + [f"timing failed: {timed.error}"]
            continue
        merged = merge(timed.rounds, "latency")
        row.latency_ms, row.throughput_ips = merged["latency_ms"], merged["throughput_ips"]
        row.peak_memory_mb = merged.get("peak_rss_mb")
        for name, value in row_columns(merged).items():  # an engine timed as trtexec: GPU compute, H2D, ...
            setattr(row, name, value)
        warnings = merged.get("details", {}).get("timing_warnings", [])
        if warnings:  # trtexec's warnings (unstable GPU time, bound by copies or enqueue), printed by `build`
            row.details["warnings"] = row.details.get("warnings", []) + [f"timing: {w}" for w in warnings]
        row.details.update(latency_method=f"batch 1, after every engine was built: {plan.describe()}",
                           rounds=merged["rounds"], load_1min=merged["load_1min"], cpus=merged["cpus"])
