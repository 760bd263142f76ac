"""The fallback search on a scripted scorer (fast tier): the fewest most-harmful layers back
to float, by bisection, with every probe in the trace."""

from __future__ import annotations

from edgeresnet.quantize.recipe import Candidate
from edgeresnet.tune.search import Outcome, expand, fallback_search

UNITS = {f"l{i}": frozenset({f"conv{i}", f"relu{i}"}) for i in range(8)}
RANKED = [f"l{i}" for i in range(8)]


class ScriptedScorer:
    """Each layer in ``harm`` costs that many pp while quantized; records what it was asked."""

    def __init__(self, harm: dict[str, float]):
        self.harm, self.asked = harm, []

    def __call__(self, cand: Candidate) -> Outcome:
        floated = {layer for layer, nodes in UNITS.items() if nodes <= cand.keep_float}
        self.asked.append(len(floated))
        drop = sum(pp for layer, pp in self.harm.items() if layer not in floated)
        return Outcome(0.9 - drop / 100, drop, 1.0, 40.0 - drop)


def test_finds_the_shortest_prefix_that_meets_the_budget():
    score = ScriptedScorer({"l0": 0.5, "l1": 0.3, "l2": 0.1, "l5": 0.05})
    start = score(Candidate({}))
    layers, best, trace = fallback_search(score, Candidate({}), RANKED, UNITS, max_drop=0.1, start=start)
    assert layers == ["l0", "l1", "l2"] and abs(best.drop_pp - 0.05) < 1e-9  # two floated leave 0.15 pp
    assert [t["float_layers"] for t in trace] == sorted(t["float_layers"] for t in trace)
    assert len(score.asked) <= 1 + 3  # the start plus log2(8) bisection probes


def test_a_met_budget_floats_nothing_and_an_unmeetable_one_floats_all():
    score = ScriptedScorer({"l3": 0.05})
    start = score(Candidate({}))
    assert fallback_search(score, Candidate({}), RANKED, UNITS, 0.1, start)[0] == []
    hard = ScriptedScorer({layer: 1.0 for layer in RANKED})
    layers, best, _ = fallback_search(hard, Candidate({}), RANKED, UNITS, 0.0, hard(Candidate({})))
    assert layers == RANKED and best.drop_pp == 0.0


def test_expand_and_outcome_rules():
    assert expand(["l1", "l2"], UNITS) == {"conv1", "relu1", "conv2", "relu2"} and expand([], UNITS) == frozenset()
    a, b = Outcome(0.9, 0.2, 0.99, 30.0), Outcome(0.9, 0.1, 0.99, 20.0)
    assert b.better_than(a, resolution_pp=0.05)
    assert a.better_than(b, resolution_pp=0.1)  # one image worse, much cleaner logits
    assert b.meets(0.1) and not a.meets(0.1)
