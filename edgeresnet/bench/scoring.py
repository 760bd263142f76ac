"""`eval`'s library side: a model (an export bundle or a checkpoint) scored on a data split,
and, for a bundle, its drop against the FP32 row its export recorded. The CLI parses and
renders; everything it prints comes from the dict ``score_model`` returns."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.preprocess import Overrides
from ..data.sources import ImageSet
from ..errors import InputError
from .accuracy import Predict, evaluate


@dataclass(frozen=True)
class Scorer:
    """What scores: the logits function, its preprocessing and classes, and names for the result."""
    run: Predict
    pre: Any
    classes: list[str]
    name: str
    arch: str | None
    bundle: Any = None  # runtime.Bundle when scoring an export directory


def refuse_overrides(model: str, overrides: Overrides | None) -> None:
    """An export bundle's preprocessing is fixed at export: preprocessing flags are refused."""
    if overrides:
        raise InputError(f"{model} is an export bundle: its preprocessing is fixed at export",
                         hint="pass the preprocessing flags to `export`, or evaluate the checkpoint")


def bundle_scorer(model: str, bundle: Any) -> Scorer:
    """An export bundle loaded by ``runtime.load`` (numpy + Pillow + one runtime, no torch). The
    caller loads it: bench sits below the runtime API in the package's layers."""
    return Scorer(bundle.logits, bundle.preprocess, bundle.classes,
                  f"{model} ({bundle.target} {bundle.precision})", bundle.manifest.get("arch"), bundle)


def checkpoint_scorer(model: str, arch: str | None, threads: int | None, overrides: Overrides | None) -> Scorer:
    """A checkpoint run by torch, its preprocessing with the command line's overrides."""
    from ..errors import require
    from ..models.checkpoint import load_checkpoint
    from .accuracy import torch_predictor

    torch = require("torch", "torch")
    torch.set_num_threads(threads or os.cpu_count() or 1)
    ckpt = load_checkpoint(model, arch=arch)
    pre = ckpt.meta.preprocess.with_overrides(overrides, channels=ckpt.meta.in_channels)
    return Scorer(torch_predictor(ckpt.model), pre, ckpt.meta.classes, str(ckpt.path), ckpt.meta.arch)


def report_fp32(bundle: Path, target: str) -> dict | None:
    """The export's FP32 row for ``target`` (its top-1 and the images it was scored on), read
    through the bundle's typed report reader; None when the report has none."""
    from ..bundle import Bundle
    from ..bundle.report import read_report
    from ..report import Report

    try:
        report = Report.from_dict(read_report(Bundle(bundle)))  # never a FIFO read that blocks for good
        row = next(r for r in report.results if r.target == target and r.precision == "fp32" and r.top1 is not None)
        ev = report.evaluation
        return {"target": target, "top1": float(row.top1), "images": int(ev["images"]), "source": str(ev["source"])}
    except (InputError, OSError, ValueError, KeyError, TypeError, StopIteration):
        return None


def score_model(model: str, scorer: Scorer, dataset: ImageSet, data: str, split: str, limit: int | None,
                batch_size: int) -> dict:
    """``eval``'s result: accuracy on the split, and for a bundle its kernel, this CPU and the
    drop against the export's FP32 row (JSON keys are a contract)."""
    if len(dataset.classes) != len(scorer.classes):
        raise InputError(f"{model} has {len(scorer.classes)} classes but {data} has {len(dataset.classes)}",
                         hint="evaluate on the data the model was trained for")
    indices = np.arange(len(dataset) if limit is None else min(limit, len(dataset)))
    acc = evaluate(scorer.run, dataset, scorer.pre, indices, batch_size)
    result = {"model": scorer.name, "arch": scorer.arch, "data": dataset.source, "split": split, **acc.to_dict()}
    if scorer.bundle is not None:
        result.update(_against_report(Path(model), scorer.bundle, dataset, acc))
    return result


def _against_report(root: Path, bundle, dataset: ImageSet, acc) -> dict:
    from ..host.machine import cpu

    extra: dict = {"kernel": bundle.kernel, "cpu": cpu()}
    reference = report_fp32(root, bundle.target)
    if reference is not None and bundle.precision != "fp32":
        same = reference["source"] == dataset.source and reference["images"] == acc.images
        extra.update(reference_fp32=reference, same_images_as_report=same,
                     drop_vs_report_fp32_pp=round((reference["top1"] - acc.top1) * 100, 4))
    return extra
