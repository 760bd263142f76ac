"""One benchmark block in its own process: load one artifact, warm up, time it, report JSON.

A process per block keeps the engines' thread pools from fighting (measured here: OpenVINO
f32 went from 10.6 ms alone to 39 ms interleaved with ONNX Runtime) and makes peak memory
per engine meaningful. Usage: python -m edgeresnet.bench.worker '<json spec>'; the parent
side is :func:`spawn`, used by `bench` and by `export`'s quick timing alike.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..backends import backend_class, get_backend
from ..backends.base import Artifact
from .timing import peak_rss_mb, time_runner, time_throughput


def run_block(spec: dict) -> dict:
    backend = get_backend(spec["target"], {backend_class(spec["target"]).name: spec.get("options") or {}})
    art = Artifact(spec["target"], spec["precision"], Path(spec["path"]), dict(spec.get("details", {})))
    mode, threads = spec.get("mode", "latency"), spec.get("threads")
    requests = int(spec.get("requests") or (2 if mode == "throughput" else 1))
    caps = backend.capabilities
    if caps.self_timed:  # an engine that loads and times itself (CUDA events, a context per thread)
        out = backend.bench_block(art, spec)
        out["details"] = {**art.details, **out.get("details", {})}
        out["peak_rss_mb"] = peak_rss_mb()
        return out
    t0 = time.perf_counter()
    # ONNX Runtime: several requests share the cores; OpenVINO's THROUGHPUT hint splits them itself.
    split = mode == "throughput" and threads and caps.splits_threads_per_request
    load_threads = max(1, threads // requests) if split else threads
    run = backend.load(art, load_threads, mode)
    load_s = time.perf_counter() - t0
    if mode == "throughput" and not spec.get("requests") and caps.optimal_requests and "optimal_requests" in art.details:
        requests = art.details["optimal_requests"]
    chw = spec.get("chw") or backend.input_chw(art.path)
    x = np.random.default_rng(0).standard_normal((spec["batch"], *chw)).astype(np.float32)
    out: dict = {"load_seconds": load_s, "details": art.details}
    if mode == "throughput":
        out["throughput_ips"] = time_throughput(run, x, requests, spec.get("min_seconds", 2.0))
        out["requests"] = requests
    else:
        t = time_runner(run, x, warmup=spec.get("warmup", 10), min_runs=spec.get("min_runs", 100),
                        min_seconds=spec.get("min_seconds", 2.0), max_seconds=spec.get("max_seconds", 60.0))
        out["latency_ms"] = t.latency_ms()
        out["throughput_ips"] = t.throughput_ips
        out["samples_ms"] = [round(v, 4) for v in t.samples_ms[:: max(1, len(t.samples_ms) // 2000)]]
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def block_spec(art: Artifact, *, batch: int = 1, chw=None, threads: int | None = None, mode: str = "latency",
               warmup: int = 10, min_runs: int = 100, min_seconds: float = 2.0, requests: int | None = None,
               options: dict | None = None) -> dict:
    """What :func:`run_block` needs to time one artifact (JSON-ready); ``options``: the engine's
    option values (its OptionSpecs') it is loaded with."""
    return {"target": art.target, "precision": art.precision, "path": str(art.path), "batch": batch,
            "chw": list(chw) if chw else None, "threads": threads, "mode": mode, "warmup": warmup,
            "min_runs": min_runs, "min_seconds": min_seconds, "requests": requests, "options": dict(options or {}),
            "details": art.details}


def spawn(spec: dict, timeout: float = 600) -> dict:
    """Run one block in a fresh interpreter and return its result; one line on failure."""
    res = subprocess.run([sys.executable, "-m", "edgeresnet.bench.worker", json.dumps(spec)],
                         capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        raise RuntimeError(lines[-1] if lines else f"worker exited {res.returncode}")
    return json.loads(res.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(run_block(json.loads(sys.argv[1]))))
