"""Accuracy budget (--max-drop) against the measured drop against latency.

    python benchmarks/accuracy_budget.py [--models default,outlier,resnet18]
        [--resnet18 CHECKPOINT] [--out benchmarks/RESULTS-budget.md]

Every row is one `edgeresnet export ... --max-drop B --target ort,openvino --threads 2`, as a
user runs it; "-" is plain INT8 (no budget). The drop is measured on Fashion-MNIST *test*
images, which the search never sees (it decides on a validation slice of the train split).
Latencies are the export's own batch-1 p50 (each engine in its own block), and the price of
the float layers comes from the export's same-run blocks: all-INT8 against as shipped.

* ``default``: the shipped ResNet-20, minmax calibration on 32 images (the issue's setting);
* ``outlier``: the same weights with one ReLU channel scaled by 1000 and the next conv's
  weights for it divided by 1000: identical in FP32, hard to quantize per tensor;
* ``resnet18``: ResNet-18 at 224x224 (a Fashion-MNIST checkpoint given with --resnet18; without
  one, random weights, scored against FP32's own predictions on the validation slice only).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgeresnet.backends.installed import describe

MODELS = {
    "default": {"budgets": [None, 0.1, 0.0], "args": ["default", "--calib-method", "minmax", "--calib-size", "32"]},
    "outlier": {"budgets": [None, 1.0, 0.2, 0.0],
                "args": ["--calib-size", "64", "--eval-limit", "5000"]},
    "resnet18": {"budgets": [None, 0.4, 0.0],
                 "args": ["--calib-method", "minmax", "--calib-size", "32", "--val-size", "500",
                          "--eval-limit", "2000"]},
}


def outlier_checkpoint(path: Path) -> Path:
    from edgeresnet.models.checkpoint import load_checkpoint, save_checkpoint
    from edgeresnet.models.surgery import rescale_channel

    ckpt = load_checkpoint("default")
    rescale_channel(ckpt.model.layer3[0], 3, 1000.0)
    save_checkpoint(path, ckpt.model, ckpt.meta)
    return path


def export(args: list[str], out: Path) -> tuple[dict, float, str]:
    cmd = ["edgeresnet", "export", *args, "--target", "ort,openvino", "--threads", "2", "--out", str(out), "--force"]
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "edgeresnet", *cmd[1:]], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr}")
    return json.loads((out / "report.json").read_text()), time.perf_counter() - start, " ".join(cmd)


def _row(report: dict, target: str, precision: str) -> dict | None:
    return next((r for r in report["results"] if r["target"] == target and r["precision"] == precision
                 and r["status"] == "ok"), None)


def _fmt(v, spec: str = "+.2f") -> str:
    return "-" if v is None else format(v, spec)


def line(budget, report: dict, seconds: float) -> str:
    t = report.get("tuning") or {}
    cells = ["-" if budget is None else f"{budget:g}"]
    kept = [s["stage"].replace("_", " ") for s in t.get("stages", [])[1:] if s.get("kept") and s["stage"] != "fallback"]
    cells.append(", ".join(kept) or "-")
    floats = t.get("fallback_layers")
    cells.append("-" if floats is None else f"{len(floats)} / {t['quantized_layers']}")
    cells.append(_fmt(t.get("final", {}).get("drop_pp")) if t else "-")
    prices = []
    for target in ("ort", "openvino"):
        fp32, int8 = _row(report, target, "fp32"), _row(report, target, "int8")
        if int8 is None:
            cells += ["failed"] * 3
            continue
        cells.append(_fmt(int8.get("top1_drop_pp")))
        p50, base = int8["latency_ms"]["p50"], fp32["latency_ms"]["p50"] if fp32 else None
        cells.append(f"{p50:.3f} ({base / p50:.2f}x)" if base else f"{p50:.3f}")
        price = int8["details"].get("fallback_price") or {}
        prices.append(f"{target} {price['total_ms']:+.3f}" if "total_ms" in price else "")
    cells.append("; ".join(p for p in prices if p) or "-")
    cells.append(f"{seconds:.0f}")
    return "| " + " | ".join(cells) + " |"


HEAD = ("| budget pp | fixes kept | layers in float | validation drop pp | ORT test drop pp | ORT INT8 p50 ms "
        "(vs FP32) | OpenVINO test drop pp | OpenVINO INT8 p50 ms (vs FP32) | price of float layers, ms | "
        "export s |\n|---|---|---|---|---|---|---|---|---|---|")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="default,outlier,resnet18")
    ap.add_argument("--resnet18", type=Path, help="a 224x224 ResNet-18 checkpoint (Fashion-MNIST)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "RESULTS-budget.md")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgeresnet-budget-"))
    machine = describe()
    cpu = machine["cpu"]
    parts = ["# Accuracy budget against drop against latency", "",
             f"Recorded {datetime.date.today()} on {cpu['model']} ({cpu['cores']} cores; {', '.join(cpu['isa'])}); "
             f"command: `python benchmarks/accuracy_budget.py --models {args.models}"
             + (f" --resnet18 {args.resnet18}" if args.resnet18 else "") + "`.", "",
             "Each row is one export (see the script's docstring). The validation drop is what the search saw "
             "(a slice of the train split, disjoint from the calibration images); the test drops are on images "
             "it never saw. Latency ratios hold within a row; absolute times drift 10-20% between runs here.", ""]
    for name in args.models.split(","):
        spec = MODELS[name]
        model_args = list(spec["args"])
        title = name
        if name == "outlier":
            model_args.insert(0, str(outlier_checkpoint(work / "outlier.pt")))
            title = "default model with an outlier channel (layer3.0), percentile on 64 images, 5,000 test images"
        elif name == "resnet18":
            if args.resnet18:
                model_args.insert(0, str(args.resnet18))
                title = (f"ResNet-18 at 224x224, Fashion-MNIST checkpoint `{args.resnet18.name}`, minmax on 32 images, "
                         "500-image validation slice, first 2,000 test images")
            else:
                model_args[:0] = ["resnet18", "--input-size", "224"]
                title = "ResNet-18 at 224x224, random weights (drops against FP32's predictions)"
        elif name == "default":
            title = "default model (ResNet-20), minmax on 32 images, all 10,000 test images"
        parts += [f"## {title}", "", HEAD]
        command = ""
        for budget in spec["budgets"]:
            extra = [] if budget is None else ["--max-drop", str(budget)]
            report, seconds, command = export(model_args + extra, work / f"{name}-{budget}")
            parts.append(line(budget, report, seconds))
            print(parts[-1], flush=True)
        parts += ["", f"Last command: `{command}`", ""]
    args.out.write_text("\n".join(parts) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
