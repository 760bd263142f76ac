"""How much error each quantized layer brings on its own.

For every quantized Conv/Gemm, only that layer (with the nodes of its unit) is quantized
and the rest runs in FP32:

* ``sqnr_db``: SQNR of the layer's own output against FP32, on calibration images;
* ``output_sqnr_db``: SQNR of the network's logits against FP32, on the validation slice;
* ``top1_delta_pp``: FP32 top-1 minus this candidate's top-1 on the validation slice.

Layers are ranked by ``output_sqnr_db``, lowest first: quantization noise from separate
layers adds up at the output, so the layer that puts the most noise there is the first to
go back to float. Top-1 deltas of a single layer are mostly 0 or 1 image, too coarse to rank.
"""

from __future__ import annotations

import numpy as np

from ..core.progress import progress
from ..quantize.recipe import Candidate
from .emulate import Images, Runner, sqnr_db
from .search import Scorer, expand


def layer_sensitivity(runner: Runner, cand: Candidate, units: dict[str, frozenset[str]], calib: Images,
                      score: Scorer) -> list[dict]:
    outputs = {n.name: (n.op_type, n.output[0]) for n in runner.fp32.graph.node}
    everything = expand(list(units), units)
    rows = []
    with progress() as bar:
        task = bar.add_task("sensitivity", total=len(units))
        for layer, unit in units.items():
            op, tensor = outputs[layer]
            only = cand.but(keep_float=cand.keep_float | (everything - unit))
            ref = np.concatenate(runner.reference(calib, [tensor])[tensor])
            got = np.concatenate(runner.candidate(only, calib, [tensor])[tensor])
            outcome = score(only)
            rows.append({"layer": layer, "op": op, "sqnr_db": round(sqnr_db(ref, got), 2),
                         "output_sqnr_db": round(outcome.sqnr_db, 2), "top1_delta_pp": round(outcome.drop_pp, 4),
                         "agreement": round(outcome.agreement, 6), "fallback": False})
            bar.update(task, advance=1)
    rows.sort(key=lambda r: r["output_sqnr_db"])
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows
