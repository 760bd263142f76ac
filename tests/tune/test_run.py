"""tune/run.py, the stages of --max-drop, on the tiny real graph of test_fixes: without a budget
the fixes are skipped and nothing changes; with a zero budget on a table that clips hard the
fixes run and the fallback search puts layers back in float until the budget is met."""

from __future__ import annotations

from edgeresnet.tune.options import TuneOptions
from edgeresnet.tune.run import tune
from edgeresnet.tune.search import expand

from .test_fixes import setup  # noqa: F401 - the tiny graph, its images, runner and table


def test_without_a_budget_the_fixes_are_skipped_and_nothing_changes(setup):
    fp32, imgs, _, table, _ = setup
    result = tune(fp32, table, imgs, imgs, TuneOptions(), threads=1)
    stages = {s["stage"]: s for s in result.summary["stages"]}
    assert list(stages) == ["int8", "layer_methods", "bias_correction"]
    assert stages["layer_methods"]["skipped"] == stages["bias_correction"]["skipped"] == "no --max-drop"
    assert result.candidate.scales == table.scales and not result.candidate.keep_float and not result.fallback_layers
    assert result.summary["met"] is None and {r["layer"] for r in result.sensitivity} == {"conv", "fc"}


def test_a_budget_runs_the_fixes_then_floats_layers_until_it_is_met(setup):
    fp32, imgs, _, table, _ = setup
    result = tune(fp32, table, imgs.head(32), imgs, TuneOptions(max_drop=0.0), threads=1)
    names = [s["stage"] for s in result.summary["stages"]]
    assert names[:3] == ["int8", "layer_methods", "bias_correction"] and "skipped" not in result.summary["stages"][1]
    assert result.summary["met"] is True and result.summary["final"]["drop_pp"] <= 0.0
    assert result.summary["stages"][0]["drop_pp"] > 0  # the clipped table alone misses the budget
    assert names[-1] == "fallback" and result.fallback_layers and set(result.fallback_layers) <= {"conv", "fc"}
    assert expand(result.fallback_layers, result.units) <= result.candidate.keep_float
    assert result.summary["candidates_run"] > 0
