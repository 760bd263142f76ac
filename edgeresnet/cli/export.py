"""`edgeresnet export`."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Annotated

import typer
from rich.markup import escape

from .common import (
    InterpOpt,
    MeanOpt,
    PreFileOpt,
    ResizeOpt,
    SizeOpt,
    StdOpt,
    command,
    command_line,
    engines_help,
    out,
    preprocess_overrides,
    threads_option,
)
from .engine_flags import engine_flags


@command
@engine_flags
def export(
    model: Annotated[str, typer.Argument(help="Checkpoint (.pt/.pth/.safetensors), an FP32 .onnx classifier, `default`, or a zoo name such as resnet18 (random weights; needs --input-size).")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Export directory (default: exports/<model name>). A non-empty one is refused without --force.")] = None,
    int8: Annotated[bool, typer.Option("--int8/--no-int8", help="Calibrate and build INT8 engines (default) or FP32 only.")] = True,
    target: Annotated[str, typer.Option(help=engines_help("Engines, comma-separated, or all (runs what is available here and lists the rest as skipped)"))] = "ort",
    calib: Annotated[str | None, typer.Option(help="Calibration data spec; its *train* split is used. Default: the data the model was trained on when its checkpoint records it and it is here, else the shipped images for the default model, Fashion-MNIST models and zoo names; a plain state_dict needs --calib.")] = None,
    calib_size: Annotated[int, typer.Option(help="Calibration images, drawn class-balanced with --calib-seed.")] = 512,
    calib_method: Annotated[str, typer.Option(help="minmax | percentile | entropy (KL, as TensorRT's calibrator) | mse.")] = "percentile",
    percentile: Annotated[float, typer.Option(help="Percentile of |x| for --calib-method percentile.")] = 99.99,
    calib_table: Annotated[Path | None, typer.Option(help="Reuse a calibration.json from an earlier export of the same weights.")] = None,
    calib_seed: Annotated[int, typer.Option(help="Seed for picking calibration images.")] = 0,
    calib_memory: Annotated[int, typer.Option(help="Calibration memory budget in MB: images go through ONNX Runtime in chunks whose observed activations fit it (the table does not depend on it). Shared by the sessions that run side by side (two on two or more cores: ResNet-18 at 224 takes 7 images a chunk each at the default).")] = 512,
    eval_spec: Annotated[str | None, typer.Option("--eval", help="Evaluation data spec; its *test* split is used (default: the calibration data's).")] = None,
    no_eval: Annotated[bool, typer.Option("--no-eval", help="Skip accuracy (latency only).")] = False,
    eval_limit: Annotated[int | None, typer.Option(help="Evaluate on the first N test images only.")] = None,
    input_size: Annotated[int | None, typer.Option(help="Input side for zoo names (e.g. 224).")] = None,
    arch: Annotated[str | None, typer.Option(help="Architecture of a plain state_dict.")] = None,
    threads: Annotated[int | None, threads_option("CPU threads for every engine, in accuracy and timing alike (default: each runtime's own choice).")] = None,
    force: Annotated[bool, typer.Option(help="Replace a non-empty --out (only once the new export is complete).")] = False,
    strict: Annotated[bool, typer.Option(help="Stop at the first unreadable image instead of skipping it with a count.")] = False,
    bench: Annotated[bool, typer.Option("--bench", help="Run `edgeresnet bench` on the export right after (batch 1, latency).")] = False,
    rounds: Annotated[int | None, typer.Option(help="Timing rounds of the latency table, as `bench --rounds` (default: 5, more while a speed-up's interval is wide). 1 is quickest, with no spread.", show_default=False)] = None,
    allow_eval_calib: Annotated[bool, typer.Option(help="Permit calibrating on the evaluation images (not recommended).")] = False,
    max_drop: Annotated[float | None, typer.Option(help="Accuracy budget: most top-1 drop allowed, in percentage points, measured on a validation slice of the calibration split. Cheap fixes are tried first, then the most sensitive layers go back to float (FP16 on TensorRT) until the budget holds.", rich_help_panel="Accuracy budget")] = None,
    val_size: Annotated[int, typer.Option(help="Images in the validation slice: calibration-split images that calibration did not use (never the evaluation split). One image is 100/N pp.", rich_help_panel="Accuracy budget")] = 2000,
    bias_correction: Annotated[str, typer.Option(help="Remove the mean shift quantization puts into each conv output: auto (tried while --max-drop is not met, kept if it helps) | on | off.", rich_help_panel="Accuracy budget")] = "auto",
    layer_methods: Annotated[str, typer.Option(help="Choose the calibration method per tensor by the network's output error: auto | on | off (as --bias-correction).", rich_help_panel="Accuracy budget")] = "auto",
    sensitivity: Annotated[bool, typer.Option("--sensitivity", help="Measure per-layer sensitivity (SQNR, top-1 change) even without --max-drop.", rich_help_panel="Accuracy budget")] = False,
    float_layers_opt: Annotated[str | None, typer.Option("--float-layers", help="Keep these layers in float on every engine (FP16 on TensorRT), comma-separated: ONNX node names, PyTorch module paths (layer1.0.conv1) or globs ('layer4.*'). Combines with --max-drop.", rich_help_panel="Accuracy budget")] = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    size: SizeOpt = None,
    resize: ResizeOpt = None,
    interpolation: InterpOpt = None,
    preprocess_file: PreFileOpt = None,
    price: Annotated[bool, typer.Option("--price/--no-price", help="Time each INT8 engine all-INT8, as shipped, and with each float layer alone in float: the latency price of every fallback layer on that engine.", rich_help_panel="Accuracy budget")] = True,
    engine_options: dict | None = None,  # the engines' own flags (--device, --trt-version, ...): engine_flags
) -> None:
    """Fold BN, export FP32 ONNX, calibrate INT8 once on real images, build each engine, and
    report the FP32-vs-INT8 accuracy drop and latency.

    Example: edgeresnet export default --int8 --target ort --out exports/default

    With an accuracy budget: edgeresnet export default --calib-method minmax --calib-size 32 --max-drop 0.1
    """
    _run(SimpleNamespace(**locals()))


def _run(a: SimpleNamespace) -> None:
    """The command behind the options above (typer's parser; ``a`` holds them by name):
    build the config, run the pipeline, render, then `bench` when asked."""
    from ..export.pipeline import run_export

    cfg = _config(a)
    _show(run_export(cfg), cfg)
    if a.bench:
        from .bench import bench as bench_cmd

        bench_cmd(cfg.out, threads=a.threads, rounds=a.rounds)


def _config(a: SimpleNamespace):
    """ExportConfig from the parsed options."""
    from ..export.pipeline import ExportConfig
    from ..tune.options import TuneOptions

    tuning = TuneOptions(max_drop=a.max_drop, val_size=a.val_size, bias_correction=a.bias_correction,
                         layer_methods=a.layer_methods, sensitivity=a.sensitivity)
    targets = tuple(t.strip() for t in a.target.split(",") if t.strip())
    name = Path(a.model).stem if a.model != "default" else "default"
    return ExportConfig(model=a.model, out=a.out_dir or Path("exports") / name, targets=targets, int8=a.int8, calib=a.calib,
                        calib_size=a.calib_size, calib_method=a.calib_method, percentile=a.percentile,
                        calib_table=a.calib_table, calib_seed=a.calib_seed, calib_memory=a.calib_memory, eval=a.eval_spec,
                        no_eval=a.no_eval, eval_limit=a.eval_limit, input_size=a.input_size, arch=a.arch, threads=a.threads,
                        force=a.force, allow_eval_calib=a.allow_eval_calib, engine_options=a.engine_options or {},
                        strict=a.strict, tuning=tuning, price=a.price,
                        float_layers=tuple(v.strip() for v in (a.float_layers_opt or "").split(",") if v.strip()),
                        preprocess=preprocess_overrides(a.mean, a.std, a.size, a.resize, a.interpolation, a.preprocess_file),
                        rounds=a.rounds, command=command_line())


def _show(report, cfg) -> None:
    """The table, rows that did not run, the facts, the accuracy budget, warnings, device bundles."""
    from ..report import terminal_table, tuning_summary
    from ..report.render import TERMINAL_FACTS, facts

    out.print(terminal_table(report))
    for row in report.results:
        if row.status != "ok":
            out.print(escape(f"{row.target} {row.precision} {row.status}: {row.reason}"), style="yellow")
    lines = facts(report)
    for key in TERMINAL_FACTS:
        if key in lines:
            out.print(escape(lines[key]), style="dim" if key == "kernel" else None)
    if report.tuning:
        out.print(tuning_summary(report))
    for row in report.results:
        for warning in row.details.get("warnings", []):
            out.print(escape(f"warning: {row.target} {row.precision}: {warning}"), style="yellow")
    for row in report.results:
        if row.details.get("bundle"):  # an engine built on the device (prepare hook): where to go next
            out.print(escape(f"{row.target} bundle: {cfg.out}/{row.details['bundle']}/ (copy the export to the device, "
                             f"then `{row.details['next']}`)"))
    out.print(f"wrote {cfg.out}/ (report.json, report.md, report.html)")
