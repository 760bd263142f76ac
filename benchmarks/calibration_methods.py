"""Calibration methods x calibration-set sizes on the default model, against ONNX Runtime's
own `quantize_static` (its defaults, and its best setting for x86) on the same model and images.

    python benchmarks/calibration_methods.py [--sizes 128,512,2048] [--out benchmarks/RESULTS-calibration.md]

Calibration images come from the Fashion-MNIST *train* split (Debian's dataset-fashion-mnist);
every row is evaluated on all 10,000 test images with ONNX Runtime on CPU. Each engine is timed
in its own block (never interleaved), batch 1.
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnxruntime import quantization as ortq

from edgeresnet.backends.base import Artifact
from edgeresnet.backends.onnxruntime import OnnxRuntimeBackend, int8_kernel
from edgeresnet.bench.timing import time_runner
from edgeresnet.calibrate.collect import calibrate, pick_calibration_images
from edgeresnet.calibrate.observers import METHODS
from edgeresnet.models.checkpoint import load_checkpoint
from edgeresnet.data import load_split
from edgeresnet.bench.accuracy import evaluate
from edgeresnet.export.torch_onnx import export_onnx
from edgeresnet.models.fold import fold_bn
from edgeresnet.backends.installed import describe
from edgeresnet.quantize.plan import plan
from edgeresnet.backends.onnxruntime import PROFILE, PROFILE_W7
from edgeresnet.quantize.qdq import emit_qdq


class _Reader(ortq.CalibrationDataReader):
    def __init__(self, data, pre, indices, batch=64):
        self.batches = iter([data.batch(indices[i:i + batch], pre) for i in range(0, len(indices), batch)])

    def get_next(self):
        x = next(self.batches, None)
        return None if x is None else {"input": x}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="128,512,2048")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "RESULTS-calibration.md")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    ckpt = load_checkpoint("default")
    pre = ckpt.meta.preprocess
    train, test = load_split(args.data, "train"), load_split(args.data, "test")
    work = Path(tempfile.mkdtemp(prefix="edgeresnet-bench-"))
    folded, _ = fold_bn(ckpt.model)
    fp32_path = work / "fp32.onnx"
    export_onnx(folded, ckpt.meta, fp32_path)
    fp32 = onnx.load(str(fp32_path))
    sites = plan(fp32)
    backend = OnnxRuntimeBackend()
    one = test.batch(np.arange(1), pre)

    def score(path: Path):
        run = backend.load(Artifact("ort", "int8", path), args.threads)
        acc = evaluate(run, test, pre)
        return acc, time_runner(run, one, min_runs=200, min_seconds=2.0)

    base_acc, base_t = score(fp32_path)
    rows = [("FP32 (ONNX Runtime)", "-", "-", base_acc.top1, 0.0, 1.0, base_t.p50)]
    for n in sizes:
        idx = pick_calibration_images(train, n)
        table = calibrate(fp32, sites.all_tensors, train, pre, idx, threads=args.threads)
        collect_s = table.seconds
        for method in METHODS:
            t0 = time.perf_counter()
            view = table.with_method(method)
            scales = view.scales
            q_path = work / f"ours-{method}-{n}.onnx"
            # The file this CPU's ORT engine loads: the 7-bit twin on x86 without VNNI (see quantize.qdq).
            profile = PROFILE_W7 if int8_kernel()[0] == "u8s8-7bit" else PROFILE
            onnx.save(emit_qdq(fp32, scales, profile), str(q_path))
            art = backend.build(q_path, "int8", work)
            emit_s = time.perf_counter() - t0
            acc, t = score(art.path)
            rows.append((f"edgeresnet {method}", n, f"{collect_s + emit_s:.1f}", acc.top1,
                         (base_acc.top1 - acc.top1) * 100, acc.agreement(base_acc), t.p50))
        for label, kwargs in (("quantize_static defaults (QDQ, S8S8, per-tensor, minmax)", {}),
                              ("quantize_static best (QDQ, U8S8, per-channel, minmax)",
                               {"activation_type": ortq.QuantType.QUInt8, "per_channel": True})):
            out = work / f"ort-{n}-{len(rows)}.onnx"
            t0 = time.perf_counter()
            ortq.quantize_static(str(fp32_path), str(out), _Reader(train, pre, idx), **kwargs)
            secs = time.perf_counter() - t0
            acc, t = score(out)
            rows.append((label, n, f"{secs:.1f}", acc.top1, (base_acc.top1 - acc.top1) * 100,
                         acc.agreement(base_acc), t.p50))

    m = describe()
    lines = [
        "# Calibration methods vs ONNX Runtime's quantize_static (default model)", "",
        f"Recorded {datetime.date.today().isoformat()} on {m['cpu']['model']} ({m['cpu']['cores']} cores; "
        f"{', '.join(m['cpu']['isa'])}), onnxruntime {m['libraries']['onnxruntime']}, {args.threads} threads.", "",
        f"Command: `python benchmarks/calibration_methods.py --sizes {args.sizes} --data {args.data}`", "",
        "Model: the shipped ResNet-20 (Fashion-MNIST), BN folded, FP32 ONNX. Calibration images: class-balanced "
        f"draws from the `{args.data}` *train* split. Evaluation: all {len(test)} test images. "
        "Seconds: calibration (statistics + thresholds + QDQ emission + ORT optimization for ours; the whole "
        "quantize_static call for ONNX Runtime's). Latency: batch 1, p50, each engine in its own block.", "",
        "| method | images | seconds | top-1 | drop pp | agreement | p50 ms |", "|---|---|---|---|---|---|---|"]
    for label, n, secs, top1, drop, agree, p50 in rows:
        lines.append(f"| {label} | {n} | {secs} | {top1 * 100:.2f}% | {drop:+.2f} | {agree * 100:.2f}% | {p50:.3f} |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
