"""The latency price of each layer left in float, measured on the target engine.

Variants of one INT8 engine: every layer in INT8, the shipped one (the fallback layers in
float), and one per fallback layer with only that layer in float. Each variant is timed in
its own block after its own warm-up, and the blocks are repeated in rounds (engines are
never interleaved call by call); a price is the median-of-rounds p50 of its variant minus
that of the all-INT8 one, so it carries the machine's noise (reported as ``spread``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from dataclasses import replace

from ..backends.base import Backend, BuildInputs
from ..bench.timing import time_runner
from ..errors import require
from ..quantize.recipe import quantized_model
from .search import expand


def price_fallbacks(backend: Backend, inputs: BuildInputs, fallback: list[str], units: dict[str, frozenset[str]],
                    probe: np.ndarray, threads: int | None, rounds: int = 3) -> dict:
    """Each variant of the shipped recipe built by the engine itself (any engine: it reads the
    recipe through ``inputs``, whichever of the QDQ ONNX, the table or the torch model it takes)."""
    onnx = require("onnx", "torch")
    fp32, cand, work = inputs.proto(), inputs.recipe, inputs.work
    base = cand.but(keep_float=cand.keep_float - expand(fallback, units))
    variants = {"all_int8": base, "shipped": cand}
    variants.update({layer: base.but(keep_float=base.keep_float | units[layer]) for layer in fallback})
    tmp = Path(tempfile.mkdtemp(prefix="price-", dir=work))
    try:
        runners = {}
        for i, (name, variant) in enumerate(variants.items()):
            out = tmp / f"v{i}"
            out.mkdir()

            def write_qdq(profile, variant=variant, out=out):
                src = out / f"model.int8.{profile.name}.qdq.onnx"
                if not src.exists():
                    onnx.save(quantized_model(fp32, variant, profile), str(src))
                return src

            built = backend.build(replace(inputs, candidate=variant, write_qdq=write_qdq), "int8", out)
            runners[name] = backend.load(built, threads)
        p50: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(rounds):
            for name, run in runners.items():
                p50[name].append(time_runner(run, probe, warmup=20, min_runs=50, min_seconds=0.5).p50)
        runners.clear()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {name: float(np.median(v)) for name, v in p50.items()}
    spread = max((max(v) - min(v)) / med[name] for name, v in p50.items() if med[name] > 0)
    return {"target": backend.name, "rounds": rounds, "all_int8_ms": round(med["all_int8"], 4),
            "shipped_ms": round(med["shipped"], 4), "total_ms": round(med["shipped"] - med["all_int8"], 4),
            "per_layer_ms": {layer: round(med[layer] - med["all_int8"], 4) for layer in fallback},
            "spread": round(spread, 3)}
