"""Accuracy-aware INT8: cheap fixes first, then the fewest layers back to float.

Stages, each measured on the validation slice (carved from the calibration split, disjoint
from the calibration images, never the evaluation split):

1. plain INT8 from the calibration table;
2. per-layer calibration method, then bias correction (each ``auto``: tried only while the
   budget is not met, and kept only when it helps; ``on``: always kept; ``off``);
3. per-layer sensitivity (always, when tuning runs);
4. the fallback search, while the budget is still not met.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..calibrate.table import CalibrationTable
from ..core.progress import stderr
from ..quantize.plan import layer_units
from ..quantize.recipe import Candidate
from .emulate import Images, Runner
from .fixes import choose_methods, correct_biases
from .options import TuneOptions
from .search import Scorer, expand, fallback_search
from .sensitivity import layer_sensitivity

SENSITIVITY_IMAGES = 1000  # validation images per single-layer candidate
BIAS_IMAGES = 128  # calibration images for the per-channel mean shifts
ERROR_IMAGES = 32  # calibration images for output errors: method choice and layer SQNRs


@dataclass
class TuneResult:
    candidate: Candidate
    fallback_layers: list[str]
    units: dict[str, frozenset[str]]
    sensitivity: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


def tune(fp32, table: CalibrationTable, calib: Images, val: Images, opts: TuneOptions,
         threads: int | None = None) -> TuneResult:
    start_time = time.perf_counter()
    runner = Runner(fp32, threads)
    units = layer_units(fp32)
    score = Scorer(runner, val)
    few = calib.head(ERROR_IMAGES)
    budget = opts.max_drop
    cand = Candidate(dict(table.scales))
    current = score(cand)
    stages = [{"stage": "int8", "kept": True, **current.to_dict()}]

    fixes = {"layer_methods": lambda c: _methods(runner, c, table, few),
             "bias_correction": lambda c: _biases(runner, c, calib.head(BIAS_IMAGES), units)}
    for name, apply in fixes.items():
        mode = getattr(opts, name)
        met = budget is not None and current.meets(budget)
        if mode == "off" or (mode == "auto" and (budget is None or met)):
            why = "off" if mode == "off" else ("budget already met" if met else "no --max-drop")
            stages.append({"stage": name, "kept": False, "skipped": why})
            continue
        trial, details = apply(cand)
        got = score(trial)
        keep = mode == "on" or got.better_than(current, 100 / len(val))
        stages.append({"stage": name, "kept": keep, **got.to_dict(), "details": details})
        if keep:
            cand, current = trial, got
        stderr.print(f"{name.replace('_', ' ')}: validation drop {got.drop_pp:+.2f} pp "
                     f"({'kept' if keep else 'not kept'})")

    sens_score = score.head(SENSITIVITY_IMAGES)
    sensitivity = layer_sensitivity(runner, cand, units, few, sens_score)
    fallback: list[str] = []
    trace: list[dict] = []
    if budget is not None and not current.meets(budget):
        ranked = [row["layer"] for row in sensitivity]
        fallback, current, trace = fallback_search(score, cand, ranked, units, budget, current)
        cand = cand.but(keep_float=cand.keep_float | expand(fallback, units))
        stages.append({"stage": "fallback", "kept": True, **current.to_dict()})
    for row in sensitivity:
        row["fallback"] = row["layer"] in fallback
    summary = {
        "max_drop_pp": budget, "met": None if budget is None else current.meets(budget),
        "validation": {"images": len(val), "split": "train", "source": val.data.source,
                       "disjoint_from_calibration": True, "labels": val.labels_note,
                       "fp32_top1": round(score.fp32_top1, 6), "resolution_pp": round(100 / len(val), 4)},
        "stages": stages, "final": current.to_dict(), "fallback_layers": fallback,
        "quantized_layers": len(units), "search": trace, "candidates_run": runner.runs,
        "sensitivity_images": {"calibration": len(few), "validation": len(sens_score.images)},
        "seconds": round(time.perf_counter() - start_time, 2)}
    return TuneResult(cand, fallback, units, sensitivity, summary)


def _methods(runner: Runner, cand: Candidate, table: CalibrationTable, calib: Images) -> tuple[Candidate, dict]:
    scales, choice = choose_methods(runner, cand, table, calib)
    changed = {t: m for t, m in choice.items() if m != table.method}
    return cand.but(scales=scales), {"base": table.method, "changed": changed, "tensors": len(choice),
                                     "images": len(calib)}


def _biases(runner: Runner, cand: Candidate, calib: Images, units: dict[str, frozenset[str]]
            ) -> tuple[Candidate, dict]:
    biases, details = correct_biases(runner, cand, calib, units)
    return cand.but(biases=biases), details
