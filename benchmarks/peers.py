"""edgeresnet against its peers, in one run on one machine.

    python benchmarks/peers.py [--models default,resnet18,resnet50] [--rounds 3] [--out benchmarks/RESULTS.md]

Per model, also each tool's calibration of the same images (edgeresnet's one pass for all four
methods, quantize_static minmax/entropy/percentile, nncf.quantize) in a fresh process: seconds
and peak memory (`--no-calibration` skips it; `--only calibration` times nothing else, and
`--calibrators ours,nncf` only those tools).

Per model: our export (`edgeresnet export --target ort,openvino`), ONNX Runtime's
`quantize_static` with its defaults (QDQ, int8 activations, per-tensor) and with its best x86
setting (uint8 activations, per-channel), NNCF's `nncf.quantize` with its defaults on the same
FP32 ONNX and the same calibration images, and PyTorch eager FP32. Every engine is timed
in its own process (batch 1, 2 threads), in rounds; the median round is reported with the
spread. Accuracy (all 10,000 Fashion-MNIST test images) for the default model; ResNet-18/50 at
224x224 have random weights (latency only) and calibrate on shipped Fashion-MNIST images
resized to 224 (gray -> RGB). NNCF is a benchmark-only dependency (`pip install nncf`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"default": ("default", None, 512), "resnet18": ("resnet18", 224, 128), "resnet50": ("resnet50", 224, 128)}


def sh(*args: str) -> None:
    subprocess.run(list(args), check=True)


def worker(spec: dict) -> dict:
    res = subprocess.run([sys.executable, "-m", "edgeresnet.bench.worker", json.dumps(spec)], capture_output=True,
                         text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def torch_block(model: str, size: int | None, threads: int) -> dict:
    code = f"""
import json, torch, numpy as np
from edgeresnet.bench.timing import time_runner
torch.set_num_threads({threads})
if {model!r} == 'default':
    from edgeresnet.models.checkpoint import load_checkpoint
    ckpt = load_checkpoint('default'); m, shape = ckpt.model, (1, *ckpt.meta.preprocess.input_shape)
else:
    from edgeresnet import build_model
    m, shape = build_model({model!r}).eval(), (1, 3, {size}, {size})
x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
def run(a):
    with torch.inference_mode():
        return m(torch.from_numpy(a)).numpy()
t = time_runner(run, x, min_runs=50, min_seconds=2.0)
print(json.dumps({{"latency_ms": t.latency_ms()}}))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def peers(out: Path, calib_images: np.ndarray) -> dict[str, Path]:
    """quantize_static (defaults, best) and NNCF (defaults) on our FP32 ONNX and images."""
    import nncf
    import openvino as ov
    from onnxruntime import quantization as ortq

    fp32 = out / "model.fp32.onnx"

    class Reader(ortq.CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib_images[i:i + 16] for i in range(0, len(calib_images), 16))

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"input": x}

    paths = {"qs_default": out / "peer.quantize_static.default.onnx", "qs_best": out / "peer.quantize_static.best.onnx"}
    ortq.quantize_static(str(fp32), str(paths["qs_default"]), Reader())
    ortq.quantize_static(str(fp32), str(paths["qs_best"]), Reader(), activation_type=ortq.QuantType.QUInt8,
                         per_channel=True)
    model = ov.Core().read_model(str(fp32))
    dataset = nncf.Dataset([calib_images[i:i + 1] for i in range(len(calib_images))])
    q = nncf.quantize(model, dataset, subset_size=len(calib_images))
    paths["nncf"] = out / "peer.nncf.xml"
    ov.save_model(q, str(paths["nncf"]), compress_to_fp16=False)
    return paths


CALIBRATORS = {
    "edgeresnet (one pass: minmax, percentile, entropy, mse)": "ours",
    "ORT quantize_static minmax": "MinMax",
    "ORT quantize_static entropy": "Entropy",
    "ORT quantize_static percentile": "Percentile",
    "NNCF nncf.quantize defaults (incl. fast bias correction)": "nncf",
}

_CALIBRATE = """
import json, sys, time
import numpy as np
work, tool, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
images = np.load(work + "/calib_images.npy")
fp32 = work + "/model.fp32.onnx"
if tool == "ours":
    import onnx
    from edgeresnet.calibrate.collect import calibrate
    from edgeresnet.quantize.plan import plan
    model = onnx.load(fp32)
    tensors = plan(model).all_tensors
    class Pre:  # the images are already the model's input
        def to_dict(self): return {}
    class Data:
        source = "benchmark images"
        def batch(self, idx, pre): return images[idx]
    t0 = time.perf_counter()
    calibrate(model, tensors, Data(), Pre(), np.arange(len(images)), threads=threads)
elif tool == "nncf":
    import nncf, openvino as ov
    model = ov.Core().read_model(fp32)
    dataset = nncf.Dataset([images[i:i + 1] for i in range(len(images))])
    t0 = time.perf_counter()
    nncf.quantize(model, dataset, subset_size=len(images))
else:
    from onnxruntime import quantization as ortq
    class Reader(ortq.CalibrationDataReader):
        def __init__(self):
            self.it = iter(images[i:i + 16] for i in range(0, len(images), 16))
        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"input": x}
    t0 = time.perf_counter()
    ortq.quantize_static(fp32, work + "/peer." + tool + ".onnx", Reader(), activation_type=ortq.QuantType.QUInt8,
                         per_channel=True, calibrate_method=getattr(ortq.CalibrationMethod, tool))
seconds = time.perf_counter() - t0
from edgeresnet.bench.timing import peak_rss_mb
print(json.dumps({"seconds": seconds, "peak_mb": peak_rss_mb()}))
"""


def calibration_block(work: Path, tool: str, threads: int) -> dict:
    """One tool's calibration of the same images in a fresh process: seconds (imports and model
    loading excluded) and the process's peak resident memory (imports included)."""
    res = subprocess.run([sys.executable, "-c", _CALIBRATE, str(work), tool, str(threads)], capture_output=True,
                         text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def calibration_section(work: Path, images: np.ndarray, rounds: int, threads: int, tools: list[str]) -> list[str]:
    """Each of ``tools`` (CALIBRATORS' values; ours first) calibrates in turn, ``rounds`` times: the
    tools interleave, so a load that comes and goes hits them alike."""
    np.save(work / "calib_images.npy", images)
    runs: dict[str, list[dict]] = {label: [] for label, tool in CALIBRATORS.items() if tool in tools}
    for _ in range(rounds):
        for label in runs:
            runs[label].append(calibration_block(work, CALIBRATORS[label], threads))
    ours = statistics.median(r["seconds"] for r in runs[next(iter(CALIBRATORS))])
    lines = [f"Calibration of the same {len(images)} images, each tool in a fresh process, {rounds} rounds "
             "(seconds: median round, spread; peak: the process's VmHWM, imports included):", "",
             "| calibrator | seconds | spread | images/s | vs edgeresnet | peak MB |", "|---|---|---|---|---|---|"]
    for label, rs in runs.items():
        sec = statistics.median(r["seconds"] for r in rs)
        spread = 100 * (max(r["seconds"] for r in rs) - min(r["seconds"] for r in rs)) / sec
        peak = max(r["peak_mb"] for r in rs)
        lines.append(f"| {label} | {sec:.2f} | {spread:.0f}% | {len(images) / sec:.1f} | {sec / ours:.2f}x | {peak:.0f} |")
    return lines + [""]


def accuracy(target: str, precision: str, path: Path, threads: int) -> float:
    from edgeresnet.backends import get_backend
    from edgeresnet.backends.base import Artifact
    from edgeresnet.models.checkpoint import load_checkpoint
    from edgeresnet.data import load_split
    from edgeresnet.bench.accuracy import evaluate

    pre = load_checkpoint("default").meta.preprocess
    run = get_backend(target).load(Artifact(target, precision, path), threads)
    return evaluate(run, load_split("default", "test"), pre).top1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="default,resnet18,resnet50")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calibration", action=argparse.BooleanOptionalAction, default=True,
                    help="also time each tool's calibration and its peak memory")
    ap.add_argument("--only", choices=("all", "calibration"), default="all",
                    help="calibration: time only the calibrations (no peer quantization, no latency blocks)")
    ap.add_argument("--calibrators", default=",".join(CALIBRATORS.values()),
                    help=f"which calibrations to time, ours always first (of {', '.join(CALIBRATORS.values())})")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "RESULTS.md")
    args = ap.parse_args()
    tools = ["ours"] + [t for t in args.calibrators.split(",") if t != "ours"]
    unknown = set(tools) - set(CALIBRATORS.values())
    if unknown:
        ap.error(f"unknown calibrators {sorted(unknown)}: use {', '.join(CALIBRATORS.values())}")
    if args.only == "calibration" and not args.calibration:
        ap.error("--only calibration needs the calibration (drop --no-calibration)")
    from edgeresnet.data import Preprocess, load_split
    from edgeresnet.backends.installed import describe
    from edgeresnet.host.machine import cpu_class
    from portability import peer_kernel  # benchmarks/ is on sys.path when run as a script

    work = Path(tempfile.mkdtemp(prefix="edgeresnet-peers-"))
    sections = []
    for key in args.models.split(","):
        model, size, n_calib = MODELS[key]
        out = work / key
        cmd = ["edgeresnet", "export", model, "--target", "ort,openvino", "--calib", "default",
               "--calib-size", str(n_calib), "--threads", str(args.threads), "--out", str(out)]
        if size:
            cmd += ["--input-size", str(size)]
        else:
            cmd += ["--eval", "default"]
        t0 = time.perf_counter()
        sh(sys.executable, "-m", "edgeresnet", *cmd[1:])
        export_s = time.perf_counter() - t0
        report = json.loads((out / "report.json").read_text())
        table = json.loads((out / "calibration.json").read_text())
        pre = Preprocess.from_dict(report["model"]["preprocess"])
        calib = load_split("default", "train")
        images = calib.batch(np.asarray(table["image_indices"]), pre)
        title = "default model (ResNet-20, Fashion-MNIST 28x28)" if not size else f"{model} at {size}x{size} (random weights)"
        if args.only == "calibration":
            sections.append("\n".join([f"### {title}", "", f"Export: `{' '.join(cmd)}` ({export_s:.0f} s). Export peak "
                                       f"memory (sampled during calibration): {report['calibration'].get('peak_mb')} MB.",
                                       "", *calibration_section(out, images, args.rounds, args.threads, tools)]))
            print(sections[-1], flush=True)
            continue
        t0 = time.perf_counter()
        paths = peers(out, images)
        peers_s = time.perf_counter() - t0
        calib_lines = calibration_section(out, images, args.rounds, args.threads, tools) if args.calibration else []
        ours = {(r["target"], r["precision"]): r.get("details", {}) for r in report["results"]}
        blocks = [("PyTorch eager", "torch", "fp32", None),
                  ("edgeresnet ORT FP32", "ort", "fp32", out / "model.fp32.onnx"),
                  ("edgeresnet ORT INT8", "ort", "int8", out / "model.int8.ort.onnx"),
                  ("quantize_static defaults", "ort", "int8", paths["qs_default"]),
                  ("quantize_static best (U8S8, per-channel)", "ort", "int8", paths["qs_best"]),
                  ("edgeresnet OpenVINO FP32 (f32)", "openvino", "fp32", out / "model.fp32.openvino.xml"),
                  ("edgeresnet OpenVINO INT8", "openvino", "int8", out / "model.int8.openvino.xml"),
                  ("NNCF nncf.quantize defaults", "openvino", "int8", paths["nncf"])]
        p50s: dict[str, list[float]] = {b[0]: [] for b in blocks}
        kernels: dict[str, str] = {"PyTorch eager": "-"}
        for _ in range(args.rounds):
            for label, target, precision, path in blocks:
                if target == "torch":
                    r = torch_block(model, size, args.threads)
                else:
                    # Our artifacts carry their report row's details: the ORT INT8 file this CPU takes.
                    details = ours.get((target, precision), {}) if label.startswith("edgeresnet") else {}
                    r = worker({"target": target, "precision": precision, "path": str(path), "batch": 1,
                                "threads": args.threads, "min_runs": 50, "min_seconds": 2.0, "details": details})
                    # Ours: the kernel its backend chose; peers: read from their graphs (activation type).
                    kernels[label] = (r.get("details", {}).get("kernel") or "-") if label.startswith("edgeresnet") \
                        else peer_kernel(path, cpu_class()) if target == "ort" else r.get("details", {}).get("kernel") or "-"
                p50s[label].append(r["latency_ms"]["p50"])
        acc = {}
        if not size:
            rows = {(r["target"], r["precision"]): r for r in report["results"]}
            acc = {"PyTorch eager": rows[("torch", "fp32")]["top1"], "edgeresnet ORT FP32": rows[("ort", "fp32")]["top1"],
                   "edgeresnet ORT INT8": rows[("ort", "int8")]["top1"],
                   "edgeresnet OpenVINO FP32 (f32)": rows[("openvino", "fp32")]["top1"],
                   "edgeresnet OpenVINO INT8": rows[("openvino", "int8")]["top1"],
                   "quantize_static defaults": accuracy("ort", "int8", paths["qs_default"], args.threads),
                   "quantize_static best (U8S8, per-channel)": accuracy("ort", "int8", paths["qs_best"], args.threads),
                   "NNCF nncf.quantize defaults": accuracy("openvino", "int8", paths["nncf"], args.threads)}
        med = {k: statistics.median(v) for k, v in p50s.items()}
        base = {"torch": med["PyTorch eager"], "ort": med["edgeresnet ORT FP32"],
                "openvino": med["edgeresnet OpenVINO FP32 (f32)"]}
        lines = [f"### {title}", "",
                 f"Export: `{' '.join(cmd)}` ({export_s:.0f} s); peers quantized on the same {len(images)} "
                 f"calibration images ({peers_s:.0f} s). Export peak memory (sampled during calibration): "
                 f"{report['calibration'].get('peak_mb')} MB.", "", *calib_lines,
                 "| engine | INT8 kernel | p50 ms (median of rounds) | spread | vs FP32 same engine | vs PyTorch eager |"
                 + (" top-1 | drop pp |" if acc else ""),
                 "|---|---|---|---|---|---|" + ("---|---|" if acc else "")]
        fp32_acc = acc.get("edgeresnet ORT FP32")
        for label, target, precision, _ in blocks:
            m = med[label]
            spread = 100 * (max(p50s[label]) - min(p50s[label])) / m
            line = (f"| {label} | {kernels[label] if precision == 'int8' else '-'} | {m:.3f} | {spread:.0f}% | {base[target] / m:.2f}x | {base['torch'] / m:.2f}x |")
            if acc:
                line += f" {acc[label] * 100:.2f}% | {(fp32_acc - acc[label]) * 100:+.2f} |"
            lines.append(line)
        sections.append("\n".join(lines))
        print(sections[-1], flush=True)
    m = describe()
    text = "\n".join([
        "# edgeresnet against its peers", "",
        f"Recorded {datetime.date.today().isoformat()} on {m['cpu']['model']} (class {m['cpu']['class']}, {m['cpu']['cores']} cores; "
        f"{', '.join(m['cpu']['isa'])}); " + ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v) + ".", "",
        f"Command: `python benchmarks/peers.py --models {args.models} --rounds {args.rounds} --threads {args.threads}"
        + (" --only calibration" if args.only == "calibration" else "")
        + ("" if args.calibration else " --no-calibration")
        + (f" --calibrators {args.calibrators}" if len(tools) < len(CALIBRATORS) else "") + "`", "",
        "Ratios within one run are what hold: absolute times drift 10-20% between runs on these shared machines."
        if args.only == "calibration" else
        "Batch 1, latency mode, each engine in its own process after its own warm-up (>= 50 runs and >= 2 s), "
        f"{args.rounds} rounds; p50 is the median round, spread is (max - min) / median of the rounds' p50. "
        "Ratios within one run are what hold: absolute times drift 10-20% between runs on these shared machines. "
        "OpenVINO FP32 runs with INFERENCE_PRECISION_HINT=f32 (the default would be bf16 on this CPU). "
        "Drops are against our ORT FP32 on the same 10,000 test images.", "", *sections, ""])
    args.out.write_text(text)


if __name__ == "__main__":
    main()
