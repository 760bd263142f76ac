"""Wires the stages for `export`: load -> fold -> FP32 ONNX -> calibrate once -> QDQ per
backend profile -> engines -> evaluate -> quick latency -> report."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._version import __version__
from .backends import expand_targets, get_backend
from .backends.tensorrt import INSTALL_HINT as TRT_HINT
from .backends.tensorrt import TrtOptions
from .backends.tensorrt import unavailable_reason as trt_unavailable
from .backends.tensorrt_bundle import BUNDLE, write_bundle
from .calibrate.collect import calibrate, pick_calibration_images
from .calibrate.observers import METHODS
from .calibrate.table import CalibrationTable, weights_sha256
from .checkpoint import IMAGENET_PREPROCESS, ModelMeta, load_checkpoint
from .data import FASHION_MNIST_CLASSES, Preprocess, load_split
from .data.sources import ImageSet, user_path
from .engines import EngineContext, Measurer, engine_rows
from .errors import BackendUnavailable, InputError, UsageError, require
from .evaluate import torch_predictor
from .export import INPUT, OPSET, compare_with_torch, export_onnx
from .fold import fold_bn, verify_fold
from .machine import libraries
from .manifest import write_manifest
from .models.registry import get_arch, list_models
from .outdir import atomic_write, staged_dir
from .progress import stderr
from .quantize.plan import plan
from .report import Report, ResultRow, markdown
from .report.html import render_html
from .validate import check_calibration_set, warn_skipped

FP32_ONNX = "model.fp32.onnx"
TABLE = "calibration.json"


@dataclass(frozen=True)
class ExportConfig:
    model: str
    out: Path
    targets: tuple[str, ...] = ("ort",)
    int8: bool = True
    calib: str | None = None
    calib_size: int = 512
    calib_method: str = "percentile"
    percentile: float = 99.99
    calib_table: Path | None = None
    calib_seed: int = 0
    eval: str | None = None
    no_eval: bool = False
    eval_limit: int | None = None
    input_size: int | None = None
    arch: str | None = None
    threads: int | None = None
    force: bool = False
    allow_eval_calib: bool = False
    device: str = "CPU"  # OpenVINO device
    batch_range: tuple[int, int, int] = (1, 8, 32)  # TensorRT optimization profile: min, opt, max
    dla_core: int | None = None
    prepare_only: bool = False
    strict: bool = False  # unreadable images are fatal instead of skipped with a count
    command: str = ""


@dataclass
class Loaded:
    model: object
    meta: ModelMeta
    source: str
    random_weights: bool


def load_model(cfg: ExportConfig) -> Loaded:
    """A checkpoint, ``default``, or a zoo name (random weights, for latency work)."""
    path = user_path(cfg.model)
    if cfg.model != "default" and not path.exists() and cfg.model in list_models():
        if not cfg.input_size:
            raise UsageError(f"a zoo name ({cfg.model}) needs --input-size", hint="e.g. --input-size 224")
        from .models.registry import build_model

        small = cfg.input_size <= 64 and get_arch(cfg.model).family == "imagenet"
        model = build_model(cfg.model, num_classes=1000, in_channels=3, small_input=small).eval()
        pre = Preprocess(3, cfg.input_size, cfg.input_size, IMAGENET_PREPROCESS.mean, IMAGENET_PREPROCESS.std)
        meta = ModelMeta(cfg.model, 1000, 3, pre, [f"class_{i}" for i in range(1000)], small_input=small,
                         train={"source": "random weights (zoo name)"})
        return Loaded(model, meta, f"{cfg.model} (random weights)", True)
    ckpt = load_checkpoint(cfg.model, arch=cfg.arch)
    return Loaded(ckpt.model, ckpt.meta, str(ckpt.path) if cfg.model != "default" else "default", False)


def _calib_spec(cfg: ExportConfig, loaded: Loaded) -> str:
    if cfg.calib:
        return cfg.calib
    trained_on = loaded.meta.train.get("recipe", {}).get("data")
    if trained_on:
        try:
            load_split(trained_on, "train")
            return trained_on
        except InputError:
            pass
    if loaded.random_weights or loaded.meta.classes == FASHION_MNIST_CLASSES:
        return "default"
    raise UsageError("no calibration data given", hint="pass --calib SPEC (its train split is used)")


def _check_classes(meta: ModelMeta, data: ImageSet, what: str, spec: str) -> None:
    if len(data.classes) != meta.num_classes:
        raise InputError(f"the model has {meta.num_classes} classes but {what} data {spec} has {len(data.classes)}",
                         hint=f"pass --{what} data the model was trained for")


def run_export(cfg: ExportConfig) -> Report:
    """Run every stage; the export directory appears only when all of them succeeded."""
    torch = require("torch", "torch")
    onnx = require("onnx", "torch")
    if not cfg.int8 and cfg.calib_table:
        raise UsageError("--calib-table needs --int8")
    if cfg.calib_method not in METHODS:
        raise UsageError(f"unknown --calib-method {cfg.calib_method!r}", hint=f"use one of {', '.join(METHODS)}")
    if not 0 < cfg.percentile <= 100:
        raise UsageError(f"--percentile must be in (0, 100], got {cfg.percentile}")
    if cfg.calib_size < 1:
        raise UsageError("--calib-size must be >= 1")
    if cfg.calib_table and not cfg.calib_table.is_file():
        raise InputError(f"--calib-table {cfg.calib_table} does not exist",
                         hint="pass the calibration.json of an earlier export of the same weights")
    targets = expand_targets(cfg.targets)
    backends = [get_backend(t, device=cfg.device, trt_options=TrtOptions(cfg.batch_range, cfg.dla_core))
                for t in targets]
    if cfg.prepare_only and "trt" not in targets:
        raise UsageError("--prepare-only applies to --target trt")
    if "trt" in cfg.targets and not cfg.prepare_only:
        reason = trt_unavailable()
        if reason:
            raise BackendUnavailable(f"--target trt: {reason}", hint=TRT_HINT)
    loaded = load_model(cfg)
    meta, pre = loaded.meta, loaded.meta.preprocess
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    calib_spec = _calib_spec(cfg, loaded)
    calib_set = load_split(calib_spec, "train", cfg.strict)
    warn_skipped(calib_set, "calibration")
    no_eval = cfg.no_eval or loaded.random_weights
    eval_set = None
    if not no_eval:
        eval_spec = cfg.eval or calib_spec
        eval_set = load_split(eval_spec, "test", cfg.strict)
        warn_skipped(eval_set, "evaluation")
        _check_classes(meta, eval_set, "eval", eval_spec)
        if eval_set.origin == calib_set.origin and not cfg.allow_eval_calib:
            raise InputError(f"calibration and evaluation would use the same images ({calib_set.source})",
                             hint="give a data spec with separate train and test splits, or --allow-eval-calib")
    if not loaded.random_weights:
        _check_classes(meta, calib_set, "calib", calib_spec)

    with staged_dir(cfg.out, cfg.force) as work:
        calib_idx = pick_calibration_images(calib_set, cfg.calib_size, cfg.calib_seed)
        if cfg.int8 and not cfg.calib_table:
            check_calibration_set(calib_set.labels, calib_idx, None if loaded.random_weights else meta.num_classes)
        probe = calib_set.batch(calib_idx[:64], pre)
        folded, fold_report = fold_bn(loaded.model)
        verify_fold(loaded.model, folded, probe, fold_report)
        stderr.print(f"folded {fold_report.folded} BNs into convs, kept {fold_report.kept} as scale+shift "
                     f"(max relative error {fold_report.max_rel_error:.1e})")
        fp32_path = work / FP32_ONNX
        export_onnx(folded, meta, fp32_path)
        onnx_error = compare_with_torch(folded, fp32_path, probe)
        fp32_proto = onnx.load(str(fp32_path))

        table = None
        if cfg.int8:
            sites = plan(fp32_proto)
            if cfg.calib_table:
                table = CalibrationTable.load(cfg.calib_table)
                table.check_weights(weights_sha256(fp32_proto), cfg.calib_table)
                if cfg.calib_method != table.method:
                    table = table.with_method(cfg.calib_method)
            else:
                table = calibrate(fp32_proto, sites.all_tensors, calib_set, pre, calib_idx, cfg.calib_method,
                                  cfg.percentile, threads=cfg.threads)
            table.save(work / TABLE)
            stderr.print(f"calibrated {len(table.amax)} tensors ({table.method}, {table.images} images, "
                         f"{table.seconds:.1f} s)")

        results: list[ResultRow] = []
        threads = cfg.threads or os.cpu_count()
        eval_idx = None if eval_set is None else np.arange(
            len(eval_set) if cfg.eval_limit is None else min(cfg.eval_limit, len(eval_set)))
        measure = Measurer(eval_set, pre, eval_idx, calib_set.batch(calib_idx[:1], pre), threads)

        torch_row = ResultRow("torch", "fp32", details={"note": "PyTorch eager, BN folded"})
        torch_acc = measure(torch_row, torch_predictor(folded))
        results.append(torch_row)

        ctx = EngineContext(work, fp32_path, fp32_proto, table, cfg.threads, measure, torch_acc)
        for backend in backends:
            reason = backend.unavailable_reason()
            if backend.name == "trt" and cfg.int8:
                bundle = write_bundle(
                    work, input_name=INPUT, chw=pre.input_shape, batch_range=cfg.batch_range, dla_core=cfg.dla_core,
                    scales=table.scales, eval_spec=None if eval_set is None else (cfg.eval or calib_spec),
                    qdq_name=ctx.qdq("trt").name)
                ctx.qdq_paths["trt"] = bundle / "model.int8.trt.qdq.onnx"
                if reason or cfg.prepare_only:
                    why = "--prepare-only" if cfg.prepare_only and not reason else reason
                    results.append(ResultRow("trt", "int8", status="skipped", reason=why,
                                             details={"bundle": BUNDLE, "next": f"edgeresnet build {cfg.out}"}))
                    continue
            if reason:
                results.append(ResultRow(backend.name, "int8" if cfg.int8 else "fp32", status="skipped", reason=reason))
                continue
            results.extend(engine_rows(backend, ctx, cfg.int8))
        if torch_acc is not None:
            torch_row.top1_drop_pp, torch_row.agreement = 0.0, 1.0
        report = Report(
            model={"arch": meta.arch, "params": int(sum(p.numel() for p in loaded.model.parameters())),
                   "input_shape": [1, *pre.input_shape], "source": loaded.source, "classes": meta.classes,
                   "preprocess": pre.to_dict(),
                   "random_weights": loaded.random_weights},
            calibration=None if table is None else {
                "method": table.method, "images": table.images, "source": table.source, "seconds": round(table.seconds, 3),
                "table": TABLE, "percentile": table.percentile if table.method == "percentile" else None,
                "reused_from": str(cfg.calib_table) if cfg.calib_table else None, "split": "train"},
            evaluation=None if eval_set is None else {"source": eval_set.source, "images": int(len(eval_idx)), "split": "test",
                                                      "spec": cfg.eval or calib_spec},
            results=results, fold=fold_report.to_dict(),
            onnx={"opset": OPSET, "file": FP32_ONNX, "max_rel_error_vs_torch": onnx_error},
            command=cfg.command, version=__version__)
        atomic_write(work / "report.json", lambda p: p.write_text(json.dumps(report.to_dict(), indent=1)))
        atomic_write(work / "report.md", lambda p: p.write_text(markdown(report)))
        atomic_write(work / "report.html", lambda p: p.write_text(render_html(report, [], None)))
        write_manifest(work, report.to_dict(), libraries())
    return report
