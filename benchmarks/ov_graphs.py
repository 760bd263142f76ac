"""What OpenVINO runs for our INT8 IR and for NNCF's on the same FP32 ONNX: the compiled
(runtime) graphs side by side, layer by layer, and each one's per-layer time.

    python benchmarks/ov_graphs.py EXPORT_DIR [EXPORT_DIR ...]   # dirs that peers.py left (peer.nncf.xml)

For each layer of the runtime model: its type, the precision it runs in, the kernel
(primitiveType) and how many original nodes it fused. Then each model's p50, timed in blocks
of 2 s after its own warm-up (LATENCY hint, 2 threads), 3 rounds alternating the two models in
this one process (both are OpenVINO: one thread pool). Prints markdown.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np


def runtime_layers(core, path: Path) -> tuple[list[tuple], object]:
    cm = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_NUM_THREADS": 2, "PERFORMANCE_HINT": "LATENCY"})
    rows = []
    for op in cm.get_runtime_model().get_ops():
        rt = op.get_rt_info()
        get = lambda k: rt[k].astype(str) if k in rt else "?"  # noqa: E731
        if get("layerType") in ("Input", "Output", "Const"):
            continue
        rows.append((get("layerType"), get("runtimePrecision"), get("primitiveType"),
                     get("originalLayersNames").count(",") + 1))
    return sorted(rows), cm


def p50_ms(cm, seconds: float = 2.0) -> float:
    req = cm.create_infer_request()
    shape = [1 if d.is_dynamic else d.get_length() for d in cm.input(0).get_partial_shape()]  # batch 1
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(20):
        req.infer({0: x})
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        req.infer({0: x})
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


def main() -> None:
    import openvino as ov

    core = ov.Core()
    for folder in map(Path, sys.argv[1:]):
        ours, cm_ours = runtime_layers(core, folder / "model.int8.openvino.xml")
        nncf, cm_nncf = runtime_layers(core, folder / "peer.nncf.xml")
        same = ours == nncf
        print(f"### {folder.name}\n")
        print(f"Runtime graphs: {len(ours)} layers (ours) vs {len(nncf)} (NNCF); "
              + ("identical layer by layer (type, runtime precision, kernel, fused nodes)." if same else "they differ:"))
        if not same:
            for a, b in zip(ours, nncf):
                if a != b:
                    print(f"- ours {a} / NNCF {b}")
        rounds = {"ours": [], "nncf": []}
        for _ in range(3):
            rounds["ours"].append(p50_ms(cm_ours))
            rounds["nncf"].append(p50_ms(cm_nncf))
        print(f"\np50 ms, 3 alternating rounds in one process: ours {', '.join(f'{v:.3f}' for v in rounds['ours'])}; "
              f"NNCF {', '.join(f'{v:.3f}' for v in rounds['nncf'])}\n")


if __name__ == "__main__":
    main()
