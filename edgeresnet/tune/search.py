"""Score candidates on the validation slice and find the fewest layers to leave in float."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..quantize.recipe import Candidate
from .emulate import Images, Runner, sqnr_db


@dataclass(frozen=True)
class Outcome:
    top1: float
    drop_pp: float  # (fp32 top-1 - candidate top-1) * 100 on the validation slice
    agreement: float  # top-1 agreement with FP32
    sqnr_db: float  # of the logits against FP32's

    def to_dict(self) -> dict:
        return {"top1": round(self.top1, 6), "drop_pp": round(self.drop_pp, 4), "agreement": round(self.agreement, 6),
                "output_sqnr_db": round(self.sqnr_db, 2)}

    def meets(self, max_drop: float) -> bool:
        return self.drop_pp <= max_drop + 1e-9

    def better_than(self, other: "Outcome", resolution_pp: float) -> bool:
        """A lower drop wins. Cleaner logits win too while the drop is at most one image
        worse: on a slice of N images the drop moves in steps of 100/N pp, and one image
        either way is noise that the continuous SQNR sees through."""
        return self.drop_pp < other.drop_pp or (
            self.drop_pp <= other.drop_pp + resolution_pp + 1e-9 and self.sqnr_db > other.sqnr_db)


class Scorer:
    """Top-1 drop and logit SQNR of candidates against FP32 on one fixed image set."""

    def __init__(self, runner: Runner, images: Images, fp32_logits: np.ndarray | None = None):
        self.runner, self.images = runner, images
        self.fp32_logits = np.concatenate(runner.reference(images)[runner.output]) if fp32_logits is None \
            else fp32_logits
        self.fp32_pred = self.fp32_logits.argmax(1)
        # No labels (a model with random weights): FP32's own predictions stand in.
        self.labels = self.fp32_pred if images.labels is None else images.labels
        self.fp32_correct = int((self.fp32_pred == self.labels).sum())
        self.fp32_top1 = self.fp32_correct / len(self.labels)

    def logits_outcome(self, logits: np.ndarray) -> Outcome:
        pred = logits.argmax(1)
        correct, n = int((pred == self.labels).sum()), len(self.labels)
        # Counted in images, so a one-image drop on 1000 images is exactly 0.1 pp.
        return Outcome(correct / n, (self.fp32_correct - correct) * 100 / n, float((pred == self.fp32_pred).mean()),
                       sqnr_db(self.fp32_logits, logits))

    def head(self, n: int) -> "Scorer":
        """The same scoring on the first ``n`` images, without running FP32 again."""
        if n >= len(self.images):
            return self
        return Scorer(self.runner, self.images.head(n), self.fp32_logits[:n])

    def __call__(self, cand: Candidate) -> Outcome:
        return self.logits_outcome(self.runner.logits(cand, self.images))


def expand(layers, units: dict[str, frozenset[str]]) -> frozenset[str]:
    """Node names that stay in float when ``layers`` do."""
    return frozenset().union(*(units[layer] for layer in layers)) if layers else frozenset()


def fallback_search(score: Scorer, cand: Candidate, ranked: list[str], units: dict[str, frozenset[str]],
                    max_drop: float, start: Outcome) -> tuple[list[str], Outcome, list[dict]]:
    """The shortest prefix of ``ranked`` (most harmful first) whose return to float meets
    ``max_drop`` on the validation slice, by bisection over the prefix length. All layers
    in float is FP32 again, so a prefix always exists; the search assumes that floating
    more layers does not hurt, and every probe it made is returned as the trace."""
    trace = [{"float_layers": 0, **start.to_dict()}]
    if start.meets(max_drop):
        return [], start, trace
    lo, hi = 0, len(ranked)  # lo fails, hi holds
    best: Outcome | None = None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        got = score(cand.but(keep_float=cand.keep_float | expand(ranked[:mid], units)))
        trace.append({"float_layers": mid, **got.to_dict()})
        if got.meets(max_drop):
            hi, best = mid, got
        else:
            lo = mid
    if best is None:  # only the whole network in float holds: measure it for the record
        best = score(cand.but(keep_float=cand.keep_float | expand(ranked[:hi], units)))
        trace.append({"float_layers": hi, **best.to_dict()})
    return ranked[:hi], best, sorted(trace, key=lambda t: t["float_layers"])
