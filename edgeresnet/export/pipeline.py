"""Wires the stages for `export`, each a function below, in this order:

validate (every refusal before any work) -> load_and_fold (BN folded, FP32 ONNX checked
against torch) -> calibrate_once -> tune_int8 (only with --max-drop/--sensitivity) ->
build_engines (per backend: prepare hook, QDQ from its profile, each precision built and
evaluated) -> publish (report.json/md/html and the manifest). No engine is named here:
engines come from backends.registry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._version import __version__
from ..backends import Backend, engine_options, expand_targets, get_backend, install_hint
from ..backends import backends as registered
from ..backends.registry import option_owners, option_specs
from ..calibrate.collect import DEFAULT_MEMORY_MB, calibrate, pick_calibration_images, pick_validation_images
from ..calibrate.observers import METHODS
from ..calibrate.table import CalibrationTable, weights_sha256
from ..models.checkpoint import IMAGENET_PREPROCESS, ModelMeta, load_checkpoint
from ..data import FASHION_MNIST_CLASSES, Preprocess, load_split
from ..data.preprocess import Overrides
from ..data.sources import ImageSet, user_path
from .engines import EngineContext, Measurer, engine_rows, missing_input, time_rows
from ..errors import BackendUnavailable, InputError, UsageError, reraise_fatal, require
from ..bench.latency import PLAN
from ..core.limits import MAX_SIDE, check_flag
from ..bench.accuracy import torch_predictor
from .torch_onnx import INPUT, OPSET, compare_with_torch, export_onnx
from ..models.fold import fold_bn, verify_fold
from ..host.machine import cpu
from ..models.registry import default_small_input, list_models
from ..core.outdir import atomic_write, staged_dir
from ..core.progress import stderr
from ..quantize.plan import layer_units, plan
from ..quantize.recipe import Candidate, match_layers, module_path
from ..tune.options import TuneOptions
from ..report import Report, ResultRow
from ..bundle.publish import publish_bundle
from ..data.checks import check_calibration_set, warn_skipped

if TYPE_CHECKING:  # the tuner is imported only when --max-drop or --sensitivity asks for it
    from ..tune.run import TuneResult

CALIBRATION_BATCH = 8  # calibration images handed to engines that build from images (BuildInputs)
FP32_ONNX = "model.fp32.onnx"
TABLE = "calibration.json"


@dataclass(frozen=True)
class ExportConfig:
    model: str
    out: Path
    targets: tuple[str, ...] = ()  # names or aliases; none: the registry's most preferred engine
    int8: bool = True
    calib: str | None = None
    calib_size: int = 512
    calib_method: str = "percentile"
    percentile: float = 99.99
    calib_table: Path | None = None
    calib_seed: int = 0
    calib_memory: int = DEFAULT_MEMORY_MB  # MB for one chunk of calibration images' observed activations
    eval: str | None = None
    no_eval: bool = False
    eval_limit: int | None = None
    input_size: int | None = None
    arch: str | None = None
    threads: int | None = None
    force: bool = False
    allow_eval_calib: bool = False
    # The engines' own options, keyed as their OptionSpecs (``{"trt_version": "8.6", "device": "GPU"}``);
    # what is not given takes the engine's default. No engine field here: the engines declare them.
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    strict: bool = False  # unreadable images are fatal instead of skipped with a count
    tuning: TuneOptions = TuneOptions()  # --max-drop, sensitivity and the fixes
    price: bool = True  # measure the latency price of each layer kept in float
    rounds: int | None = None  # --rounds: timing rounds of the latency table (None: latency.PLAN's, as bench)
    float_layers: tuple[str, ...] = ()  # --float-layers: node names, module paths or globs kept in float
    preprocess: Overrides | None = None  # --mean/--std/--size/--resize/--interpolation/--preprocess overrides
    command: str = ""


@dataclass
class Loaded:
    model: object  # the torch model; None for an ONNX source
    meta: ModelMeta
    source: str
    random_weights: bool
    onnx: object = None  # onnx_source.OnnxSource when the model is an FP32 ONNX file

def load_model(cfg: ExportConfig) -> Loaded:
    """A checkpoint, ``default``, or a zoo name (random weights, for latency work)."""
    path = user_path(cfg.model)
    if path.suffix.lower() == ".onnx" and path.is_file():
        from .onnx_source import load_onnx_source

        src = load_onnx_source(path, cfg.preprocess)
        return Loaded(None, src.meta, str(path), False, src)
    if cfg.model != "default" and not path.exists() and cfg.model in list_models():
        if not cfg.input_size:
            raise UsageError(f"a zoo name ({cfg.model}) needs --input-size", hint="e.g. --input-size 224")
        from ..models.registry import build_model

        small = default_small_input(cfg.model, cfg.input_size)
        model = build_model(cfg.model, num_classes=1000, in_channels=3, small_input=small).eval()
        pre = Preprocess(3, cfg.input_size, cfg.input_size, IMAGENET_PREPROCESS.mean,
                         IMAGENET_PREPROCESS.std).with_overrides(cfg.preprocess, channels=3)
        meta = ModelMeta(cfg.model, 1000, 3, pre, [f"class_{i}" for i in range(1000)], small_input=small,
                         train={"source": "random weights (zoo name)"})
        return Loaded(model, meta, f"{cfg.model} (random weights)", True)
    ckpt = load_checkpoint(cfg.model, arch=cfg.arch)
    if cfg.preprocess:
        ckpt.meta.preprocess = ckpt.meta.preprocess.with_overrides(cfg.preprocess, channels=ckpt.meta.in_channels)
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


def tune_int8(cfg: ExportConfig, loaded: Loaded, fp32_proto, table: CalibrationTable, calib_set: ImageSet,
          calib_idx: np.ndarray) -> TuneResult:
    """Accuracy-aware INT8. Carve the validation slice out of the calibration split (never the evaluation split,
    never a calibration image) and run the accuracy-aware stages on it."""
    from ..tune.emulate import Images
    from ..tune.run import tune

    pre = loaded.meta.preprocess
    used = np.asarray(table.image_indices if cfg.calib_table and table.source == calib_set.source else calib_idx)
    val_idx = pick_validation_images(calib_set, cfg.tuning.val_size, used, cfg.calib_seed)
    if len(val_idx) == 0:
        raise InputError(f"no images left for the validation slice: the calibration split ({calib_set.source}) has "
                         f"{len(calib_set)} images and calibration uses {len(used)}",
                         hint="lower --calib-size, or pass a --calib spec with a larger train split")
    if len(val_idx) < 500:
        stderr.print(f"warning: the validation slice has only {len(val_idx)} images (one image is "
                     f"{100 / len(val_idx):.2f} pp of top-1); lower --calib-size or give more train images",
                     style="yellow")
    budget = cfg.tuning.max_drop
    if budget is not None and 0 < budget < 100 / len(val_idx):
        stderr.print(f"note: --max-drop {budget:g} is under one validation image ({100 / len(val_idx):.3f} pp): "
                     "it means no net loss on the slice; raise --val-size for a finer budget", style="yellow")
    labels = None if loaded.random_weights or not calib_set.labelled else calib_set.labels[val_idx]
    note = "FP32 predictions (random weights)" if labels is None else "dataset labels"
    calib = Images(calib_set, pre, calib_idx, calib_set.labels[calib_idx])
    val = Images(calib_set, pre, val_idx, labels, note)
    stderr.print(f"accuracy-aware INT8: {'budget ' + format(budget, 'g') + ' pp' if budget is not None else 'no budget'}"
                 f", validation slice of {len(val_idx)} calibration-split images")
    result = tune(fp32_proto, table, calib, val, cfg.tuning, cfg.threads)
    final = result.summary["final"]
    n, total = len(result.fallback_layers), result.summary["quantized_layers"]
    stderr.print(f"validation drop {final['drop_pp']:+.2f} pp with {n} of {total} layers in float "
                 f"({result.summary['seconds']:.1f} s)")
    return result


def _price(backend, ctx: EngineContext, tuned: TuneResult, rows: list[ResultRow], probe: np.ndarray) -> None:
    """Latency price of each float layer on this engine, into its INT8 row."""
    from ..tune.price import price_fallbacks

    row = next((r for r in rows if r.precision == "int8" and r.status == "ok"), None)
    if row is None:
        return
    stderr.print(f"pricing {len(tuned.fallback_layers)} float layers on {backend.name}")
    try:
        prices = price_fallbacks(backend, ctx.build_inputs(), tuned.fallback_layers, tuned.units, probe, ctx.threads)
    except Exception as exc:  # a price is a nice-to-have; the engine row stands
        reraise_fatal(exc)
        row.details["fallback_price"] = {"error": f"{type(exc).__name__}: {exc}"}
        return
    row.details["fallback_price"] = prices
    for entry in tuned.sensitivity:
        if entry["layer"] in prices["per_layer_ms"]:
            entry.setdefault("price_ms", {})[backend.name] = prices["per_layer_ms"][entry["layer"]]


@dataclass
class Inputs:
    """What validate() found: the engines, the model and the data, all checked."""

    backends: list[Backend]
    loaded: Loaded
    calib_spec: str
    calib_set: ImageSet
    eval_set: ImageSet | None
    eval_spec: str | None


@dataclass
class Folded:
    """The model as every later stage sees it: BN folded, exported to ONNX, checked."""

    model: object
    fold_report: object
    fp32_path: Path
    fp32_proto: object
    onnx_error: float
    calib_idx: np.ndarray
    probe: np.ndarray  # up to 64 preprocessed calibration images


def _check_flags(cfg: ExportConfig) -> None:
    if not cfg.int8 and cfg.calib_table:
        raise UsageError("--calib-table needs --int8")
    if cfg.calib_method not in METHODS:
        raise UsageError(f"unknown --calib-method {cfg.calib_method!r}", hint=f"use one of {', '.join(METHODS)}")
    if not 0 < cfg.percentile <= 100:
        raise UsageError(f"--percentile must be in (0, 100], got {cfg.percentile}")
    check_flag("--calib-size", cfg.calib_size, least=1, most=1_000_000, integer=True)
    check_flag("--calib-memory", cfg.calib_memory, least=64, most=1_048_576, integer=True)
    check_flag("--input-size", cfg.input_size, least=8, most=MAX_SIDE, integer=True)
    check_flag("--eval-limit", cfg.eval_limit, least=1, integer=True)
    check_flag("--rounds", cfg.rounds, least=1, most=1000, integer=True)
    if cfg.calib_table and not cfg.calib_table.is_file():
        raise InputError(f"--calib-table {cfg.calib_table} does not exist",
                         hint="pass the calibration.json of an earlier export of the same weights")
    if (cfg.tuning.active or cfg.float_layers) and not cfg.int8:
        raise UsageError("--max-drop, --sensitivity, --float-layers and the INT8 fixes need --int8")


def _engines(cfg: ExportConfig) -> list[Backend]:
    """The requested engines, aliases resolved first so every spelling gets the same checks.
    One named explicitly that cannot run here is refused (with --prepare-only, engines with a
    device bundle write it instead); ``all`` lists the missing ones as skipped rows."""
    options = engine_options(cfg.engine_options)
    backends = [get_backend(name, options) for name in expand_targets(cfg.targets or (registered()[0].name,))]
    chosen = {b.name for b in backends}
    for spec in option_specs():  # a flag of an engine not asked for is a mistake, said before any work
        value = cfg.engine_options.get(spec.key)
        owners = option_owners(spec.key)
        if value is not None and spec.value(value) != spec.value(None) and not chosen.intersection(owners):
            raise UsageError(f"{spec.flag} applies to {', '.join(owners)}", hint=f"add --target {','.join(owners)}")
    explicit = set() if any(t.strip().lower() == "all" for t in cfg.targets) else {b.name for b in backends}
    for backend in backends:
        if backend.name not in explicit or backend.prepares_only():
            continue
        reason = backend.unavailable_reason()
        if reason:
            raise BackendUnavailable(f"--target {backend.name}: {reason}", hint=install_hint(backend.name))
    return backends


def validate(cfg: ExportConfig) -> Inputs:
    """Flags, engines, model and data: everything that can be refused, before any work."""
    _check_flags(cfg)
    backends = _engines(cfg)
    loaded = load_model(cfg)
    calib_spec = _calib_spec(cfg, loaded)
    calib_set = load_split(calib_spec, "train", cfg.strict)
    warn_skipped(calib_set, "calibration")
    eval_set, eval_spec = None, None
    other_classes = (calib_set.labelled and cfg.eval is None and not (cfg.no_eval or loaded.random_weights)
                     and len(calib_set.classes) != loaded.meta.num_classes)
    if other_classes:
        # e.g. a 1000-class ImageNet checkpoint calibrated on a folder of 3 classes: its labels
        # cannot score the model, but its images still measure agreement with FP32.
        stderr.print(f"note: {calib_spec} has {len(calib_set.classes)} classes and the model {loaded.meta.num_classes}: "
                     "its labels cannot score the model, so each engine is scored by its agreement with FP32 on "
                     "held-out images of it; pass --eval SPEC with the model's classes for top-1", style="yellow")
        calib_set = replace(calib_set, labelled=False)
    no_labels = not calib_set.labelled and cfg.eval is None
    if no_labels and not (cfg.no_eval or loaded.random_weights):
        if not other_classes:
            stderr.print(f"note: {calib_spec} has no labels: each engine is scored by its agreement with FP32 on "
                         "held-out images of it, not by top-1; pass --eval SPEC with labelled data for the drop",
                         style="yellow")
        eval_set, eval_spec = calib_set, calib_spec  # agreement only, on images calibration does not use
    if not (cfg.no_eval or loaded.random_weights or no_labels):
        eval_spec = cfg.eval or calib_spec
        eval_set = load_split(eval_spec, "test", cfg.strict)
        warn_skipped(eval_set, "evaluation")
        if not eval_set.labelled:
            stderr.print(f"note: {eval_spec} has no labels: each engine is scored by its agreement with FP32, "
                         "not by top-1", style="yellow")
        if eval_set.labelled:
            _check_classes(loaded.meta, eval_set, "eval", eval_spec)
        if eval_set.origin == calib_set.origin and not cfg.allow_eval_calib:
            raise InputError(f"calibration and evaluation would use the same images ({calib_set.source})",
                             hint="give a data spec with separate train and test splits, or --allow-eval-calib")
        if eval_set.origin == calib_set.origin and cfg.tuning.active:
            raise InputError("the --max-drop validation slice would come from the evaluation images",
                             hint="give --calib data with separate train and test splits")
    if calib_set.labelled and not loaded.random_weights and len(calib_set.classes) != loaded.meta.num_classes:
        stderr.print(f"note: the calibration data has {len(calib_set.classes)} classes and the model "
                     f"{loaded.meta.num_classes}: calibration reads activations only, so this is fine if the "
                     "images look like the model's inputs", style="yellow")
    return Inputs(backends, loaded, calib_spec, calib_set, eval_set, eval_spec)


def load_and_fold(cfg: ExportConfig, inputs: Inputs, work: Path) -> Folded:
    """Fold BN into the convs (checked on real images), export FP32 ONNX, compare with torch."""
    onnx = require("onnx", "torch")
    loaded, calib_set, pre = inputs.loaded, inputs.calib_set, inputs.loaded.meta.preprocess
    calib_idx = pick_calibration_images(calib_set, cfg.calib_size, cfg.calib_seed)
    if len(calib_idx) < cfg.calib_size and not cfg.calib_table:
        stderr.print(f"note: --calib-size {cfg.calib_size} is more than the {len(calib_idx)} images of the "
                     f"calibration split: calibrating on all {len(calib_idx)}", style="yellow")
    if cfg.int8 and not cfg.calib_table:
        labelled = calib_set.labelled and not loaded.random_weights
        check_calibration_set(calib_set.labels if labelled else None, calib_idx,
                              loaded.meta.num_classes if labelled else None)
    probe = calib_set.batch(calib_idx[:64], pre)
    if loaded.onnx is not None:
        return _onnx_folded(loaded, work, calib_idx, probe)
    folded, fold_report = fold_bn(loaded.model)
    verify_fold(loaded.model, folded, probe, fold_report)
    stderr.print(f"folded {fold_report.folded} BNs into convs, kept {fold_report.kept} as scale+shift "
                 f"(max relative error {fold_report.max_rel_error:.1e})")
    fp32_path = work / FP32_ONNX
    export_onnx(folded, loaded.meta, fp32_path)
    onnx_error = compare_with_torch(folded, fp32_path, probe)
    return Folded(folded, fold_report, fp32_path, onnx.load(str(fp32_path)), onnx_error, calib_idx, probe)


def _onnx_folded(loaded: Loaded, work: Path, calib_idx: np.ndarray, probe: np.ndarray) -> Folded:
    """An ONNX source: ONNX Runtime folded its BNs; check the folded graph against the file on real images."""
    from ..models.fold import FoldReport
    from .onnx_source import compare_graphs

    onnx = require("onnx", "torch")
    src, fp32_path = loaded.onnx, work / FP32_ONNX
    atomic_write(fp32_path, lambda p: onnx.save(src.proto, str(p)))
    error = compare_graphs(Path(loaded.source), fp32_path, probe)
    stderr.print(f"ONNX model: folded {src.bn_before - src.bn_after} BNs into convs, {src.bn_after} left "
                 f"(max relative error {error:.1e})")
    report = FoldReport(src.bn_before - src.bn_after, src.bn_after, error, len(probe))
    return Folded(None, report, fp32_path, onnx.load(str(fp32_path)), error, calib_idx, probe)


def calibrate_once(cfg: ExportConfig, inputs: Inputs, folded: Folded, work: Path) -> CalibrationTable | None:
    """One calibration table for every engine (or the one --calib-table gives), saved beside them."""
    if not cfg.int8:
        return None
    if cfg.calib_table:
        table = CalibrationTable.load(cfg.calib_table)
        table.check_weights(weights_sha256(folded.fp32_proto), cfg.calib_table)
        if cfg.calib_method != table.method:
            table = table.with_method(cfg.calib_method)
    else:
        table = calibrate(folded.fp32_proto, plan(folded.fp32_proto).all_tensors, inputs.calib_set,
                          inputs.loaded.meta.preprocess, folded.calib_idx, cfg.calib_method, cfg.percentile,
                          threads=cfg.threads, memory_mb=cfg.calib_memory)
    table.save(work / TABLE)
    stderr.print(f"calibrated {len(table.amax)} tensors ({table.method}, {table.images} images, {table.seconds:.1f} s)")
    return table


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def float_layers(cfg: ExportConfig, folded: Folded) -> list[str]:
    """The layers --float-layers names (checked against the graph before calibration runs)."""
    if not cfg.float_layers:
        return []
    units = layer_units(folded.fp32_proto)
    chosen = match_layers(list(cfg.float_layers), units)
    if len(chosen) == len(units):
        raise UsageError(f"--float-layers {' '.join(cfg.float_layers)} keeps all {len(units)} quantized layers in float: "
                         "nothing would run in INT8", hint="name fewer layers (e.g. --float-layers 'layer4.*'), "
                         "or pass --no-int8 for FP32 engines only")
    stderr.print(f"keeping {len(chosen)} of {len(units)} layers in float (--float-layers), {len(units) - len(chosen)} "
                 f"stay INT8: {', '.join(module_path(n) for n in chosen)}")
    return chosen


def recipe(table: CalibrationTable | None, tuned: TuneResult | None, forced: list[str],
           fp32_proto) -> tuple[Candidate | None, list[str]]:
    """What the INT8 graphs are emitted from: the tuned recipe (or the table's scales) with
    the --float-layers on top, and every layer kept in float."""
    candidate = tuned.candidate if tuned else None
    layers = list(tuned.fallback_layers) if tuned else []
    if forced and table is not None:
        units = layer_units(fp32_proto)
        base = candidate or Candidate(table.scales)
        candidate = base.but(keep_float=base.keep_float.union(*(units[layer] for layer in forced)))
        layers += [layer for layer in forced if layer not in layers]
    return candidate, layers


def evaluation_indices(cfg: ExportConfig, inputs: Inputs, folded: Folded) -> np.ndarray | None:
    """The evaluation images: the first --eval-limit of the test split; for unlabelled
    calibration data, up to 1,000 of its images that calibration did not use."""
    ev = inputs.eval_set
    if ev is None:
        return None
    if ev is inputs.calib_set:
        held_out = np.setdiff1d(np.arange(len(ev)), folded.calib_idx)
        if not len(held_out):
            stderr.print(f"note: calibration used all {len(ev)} images of {inputs.calib_spec}, so none is left to "
                         "check agreement with FP32 on; pass --eval SPEC or a smaller --calib-size", style="yellow")
            return None
        return held_out[:cfg.eval_limit or 1000]
    return np.arange(len(ev) if cfg.eval_limit is None else min(cfg.eval_limit, len(ev)))


def build_engines(cfg: ExportConfig, inputs: Inputs, folded: Folded, table: CalibrationTable | None,
                  tuned: TuneResult | None, work: Path, eval_idx: np.ndarray | None,
                  forced: list[str] = ()) -> list[ResultRow]:
    """The torch row, then per engine: its prepare hook, every precision built and evaluated
    on the evaluation images, and the price of float layers; then every artifact timed
    together, as `bench` times them. ``cfg.threads`` is the one thread count of all of it."""
    pre = inputs.loaded.meta.preprocess
    eval_set = inputs.eval_set if eval_idx is not None else None
    measure = Measurer(eval_set, pre, eval_idx, inputs.calib_set.batch(folded.calib_idx[:1], pre))
    rows, torch_acc = [], None
    if folded.model is not None:  # an ONNX source has no torch model: each engine's FP32 row is its baseline
        torch_row = ResultRow("torch", "fp32", threads=cfg.threads, details={"note": "PyTorch eager, BN folded"})
        torch_acc = measure(torch_row, torch_predictor(folded.model))
        if torch_acc is not None:
            torch_row.top1_drop_pp, torch_row.agreement = (0.0 if torch_acc.top1 is not None else None), 1.0
        rows.append(torch_row)
    candidate, kept_float = recipe(table, tuned, list(forced), folded.fp32_proto)
    ctx = EngineContext(work, folded.fp32_path, folded.fp32_proto, table, cfg.threads, measure, torch_acc,
                        candidate=candidate, fallback_layers=kept_float,
                        input_name=INPUT, chw=pre.input_shape, eval_spec=inputs.eval_spec, out=cfg.out,
                        torch_model=folded.model, calibration_batch=folded.probe[:CALIBRATION_BATCH])
    for backend in inputs.backends:
        skip = backend.prepare(ctx) if cfg.int8 else None
        reason = None if skip else missing_input(backend, ctx) or backend.unavailable_reason()
        if skip or reason:
            rows.append(ResultRow(backend.name, "int8" if cfg.int8 else "fp32", status="skipped",
                                  reason=skip.reason if skip else reason, details=skip.details if skip else {}))
            continue
        engine = engine_rows(backend, ctx, cfg.int8)
        rows.extend(engine)
        if tuned and tuned.fallback_layers and cfg.price:
            _price(backend, ctx, tuned, engine, measure.probe)
    time_rows(rows, ctx, measure.probe.shape[1:], engine_options(cfg.engine_options), replace(PLAN, rounds=cfg.rounds))
    return rows


def make_report(cfg: ExportConfig, inputs: Inputs, folded: Folded, table: CalibrationTable | None,
                tuned: TuneResult | None, rows: list[ResultRow], eval_idx: np.ndarray | None) -> Report:
    meta, pre, ev = inputs.loaded.meta, inputs.loaded.meta.preprocess, inputs.eval_set
    return Report(
        model={"arch": meta.arch, "params": inputs.loaded.onnx.params if inputs.loaded.onnx is not None else
               int(sum(p.numel() for p in inputs.loaded.model.parameters())),
               "input_shape": [1, *pre.input_shape], "source": inputs.loaded.source, "classes": meta.classes,
               "preprocess": pre.to_dict(), "random_weights": inputs.loaded.random_weights},
        calibration=None if table is None else {
            "method": table.method, "images": table.images, "source": table.source, "seconds": round(table.seconds, 3),
            "table": TABLE, "percentile": table.percentile if table.method == "percentile" else None,
            "reused_from": str(cfg.calib_table) if cfg.calib_table else None, "split": "train",
            **({} if cfg.calib_table else {"peak_mb": table.peak_mb, "images_per_s": _round(table.images_per_s, 1),
                                           "chunk_images": table.chunk_images, "memory_budget_mb": table.memory_mb,
                                           "histogram": table.histogram})},
        evaluation=None if ev is None or eval_idx is None else {
            "source": ev.source, "images": int(len(eval_idx)),
            "split": "test" if ev.labelled else "calibration images not used for calibration (unlabelled: agreement only)"
            if ev is inputs.calib_set else "test (unlabelled: agreement only)",
            "spec": inputs.eval_spec, "labelled": ev.labelled},
        results=rows, fold=folded.fold_report.to_dict(),
        onnx={"opset": OPSET, "file": FP32_ONNX, "max_rel_error_vs_torch": folded.onnx_error},
        command=cfg.command, version=__version__, machine={"cpu": cpu()},
        sensitivity=tuned.sensitivity if tuned else None, tuning=tuned.summary if tuned else None)


def golden_set(cfg: ExportConfig, inputs: Inputs, folded: Folded, eval_idx: np.ndarray | None, rows: list[ResultRow],
               work: Path, evaluation: dict | None) -> dict | None:
    """golden.npz (a small class-balanced sample of the evaluation images with the FP32 logits)
    and what every built artifact scored on it, for `verify` on any device; None without an
    evaluation set."""
    from ..bench.accuracy import fp32_reference
    from ..bundle.golden import write_golden

    if inputs.eval_set is None or eval_idx is None or not len(eval_idx) or evaluation is None:
        return None
    options = engine_options(cfg.engine_options)
    return write_golden(work, inputs.eval_set, eval_idx, inputs.loaded.meta.preprocess,
                        fp32_reference(folded.model, folded.fp32_path), rows, options, evaluation)


def publish_export(work: Path, report: Report) -> None:
    """report.json, report.md, report.html, the device file, then the manifest that hashes
    every artifact."""
    from ..bundle.verify import install_device_file

    install_device_file(work)
    publish_bundle(work, report)


def run_export(cfg: ExportConfig) -> Report:
    """Run every stage; the export directory appears only when all of them succeeded."""
    require("torch", "torch")
    inputs = validate(cfg)
    if cfg.threads:
        require("torch", "torch").set_num_threads(cfg.threads)
    with staged_dir(cfg.out, cfg.force) as work:
        folded = load_and_fold(cfg, inputs, work)
        forced = float_layers(cfg, folded)
        table = calibrate_once(cfg, inputs, folded, work)
        tuned = None
        if cfg.int8 and cfg.tuning.active:
            tuned = tune_int8(cfg, inputs.loaded, folded.fp32_proto, table, inputs.calib_set, folded.calib_idx)
        eval_idx = evaluation_indices(cfg, inputs, folded)
        rows = build_engines(cfg, inputs, folded, table, tuned, work, eval_idx, forced)
        report = make_report(cfg, inputs, folded, table, tuned, rows, eval_idx)
        report.golden = golden_set(cfg, inputs, folded, eval_idx, rows, work, report.evaluation)
        if forced:
            report.float_layers = {"requested": list(cfg.float_layers), "layers": forced,
                                   "modules": [module_path(n) for n in forced]}
        publish_export(work, report)
    return report
