"""What OpenVINO runs for our INT8 IR and for NNCF's on the same FP32 ONNX: the compiled
(runtime) graphs side by side, layer by layer, and each one's per-layer time.

    python benchmarks/ov_graphs.py EXPORT_DIR [EXPORT_DIR ...] [--rounds 20]   # dirs peers.py left

For each layer of the runtime model: its type, the precision it runs in, the kernel
(primitiveType) and how many original nodes it fused. Then each model's p50, timed in blocks
of 1.5 s after its own warm-up (LATENCY hint, 2 threads), --rounds rounds alternating the two
models in this one process (both are OpenVINO: one thread pool; the order flips every round),
with ours' speed-up over NNCF as bench reports one (edgeresnet.report.speedup.paired: the
median of the per-round ratios NNCF/ours and its order-statistic interval). Last,
OpenVINO's own per-layer times (PERF_COUNT) summed per kernel, 200 alternating inferences each,
so a difference can be put on a layer. Prints markdown.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgeresnet.report.speedup import paired

CONFIG = {"INFERENCE_NUM_THREADS": 2, "PERFORMANCE_HINT": "LATENCY"}


def runtime_layers(core, path: Path) -> tuple[list[tuple], object]:
    cm = core.compile_model(core.read_model(str(path)), "CPU", CONFIG)
    rows = []
    for op in cm.get_runtime_model().get_ops():
        rt = op.get_rt_info()
        get = lambda k: rt[k].astype(str) if k in rt else "?"  # noqa: E731
        if get("layerType") in ("Input", "Output", "Const"):
            continue
        rows.append((get("layerType"), get("runtimePrecision"), get("primitiveType"),
                     get("originalLayersNames").count(",") + 1))
    return sorted(rows), cm


def batch1(cm) -> np.ndarray:
    shape = [1 if d.is_dynamic else d.get_length() for d in cm.input(0).get_partial_shape()]
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def p50_ms(cm, seconds: float = 1.5) -> float:
    req, x = cm.create_infer_request(), batch1(cm)
    for _ in range(20):
        req.infer({0: x})
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        req.infer({0: x})
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


def paired_rounds(cm_ours, cm_nncf, rounds: int) -> str:
    """Alternating p50s, the order flipped every round; ours' speed-up over NNCF, round by round."""
    ours, nncf = [], []
    for i in range(rounds):
        pair = [(cm_ours, ours), (cm_nncf, nncf)]
        for cm, out in (pair if i % 2 == 0 else pair[::-1]):
            out.append(p50_ms(cm))
    speedup = paired(nncf, ours)
    return (f"p50 ms over {rounds} alternating rounds in one process (median of rounds): ours "
            f"{np.median(ours):.3f}, NNCF {np.median(nncf):.3f}; ours' speed-up over NNCF (NNCF/ours per round): "
            f"{speedup.value:.4f}x ({speedup.low:.4f}-{speedup.high:.4f}, {100 * speedup.coverage:.0f}% interval); "
            f"ours faster in {sum(o < n for o, n in zip(ours, nncf))} of {rounds}")


def per_kernel_us(req) -> dict[tuple, float]:
    """One inference's PERF_COUNT times summed per (layer type, kernel), in microseconds."""
    per: dict[tuple, float] = {}
    for info in req.profiling_info:
        key = (info.node_type, info.exec_type)
        per[key] = per.get(key, 0.0) + info.real_time.total_seconds() * 1e6
    return per


def kernel_times(core, paths: dict[str, Path], runs: int = 200, warmup: int = 20) -> str:
    """OpenVINO's per-layer times (PERF_COUNT), summed per (layer type, kernel), median over runs."""
    reqs = {k: core.compile_model(core.read_model(str(p)), "CPU", {**CONFIG, "PERF_COUNT": True}).create_infer_request()
            for k, p in paths.items()}
    inputs = {k: batch1(r.get_compiled_model()) for k, r in reqs.items()}
    sums: dict[str, dict] = {k: {} for k in paths}
    for i in range(runs):
        for k in (list(reqs) if i % 2 == 0 else list(reqs)[::-1]):
            reqs[k].infer({0: inputs[k]})
            if i < warmup:
                continue
            for key, us in per_kernel_us(reqs[k]).items():
                sums[k].setdefault(key, []).append(us)
    lines = ["| layer type | kernel | ours us | NNCF us | ours/NNCF |", "|---|---|---|---|---|"]
    for key in sorted(set(sums["ours"]) | set(sums["nncf"])):
        o, n = (float(np.median(sums[k].get(key, [0.0]))) for k in ("ours", "nncf"))
        if max(o, n) >= 5:
            lines.append(f"| {key[0]} | {key[1]} | {o:.1f} | {n:.1f} | {o / n if n else float('inf'):.3f} |")
    return "\n".join(lines)


def main() -> None:
    import argparse

    import openvino as ov

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    core = ov.Core()
    for folder in args.folders:
        paths = {"ours": folder / "model.int8.openvino.xml", "nncf": folder / "peer.nncf.xml"}
        ours, cm_ours = runtime_layers(core, paths["ours"])
        nncf, cm_nncf = runtime_layers(core, paths["nncf"])
        same = ours == nncf
        print(f"### {folder.name}\n")
        print(f"Runtime graphs: {len(ours)} layers (ours) vs {len(nncf)} (NNCF); "
              + ("identical layer by layer (type, runtime precision, kernel, fused nodes)." if same else "they differ:"))
        for a, b in zip(ours, nncf):
            if a != b:
                print(f"- ours {a} / NNCF {b}")
        print(f"\n{paired_rounds(cm_ours, cm_nncf, args.rounds)}\n")
        print(kernel_times(core, paths) + "\n")


if __name__ == "__main__":
    main()
