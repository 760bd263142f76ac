"""tune/price.py: the latency price of each layer left in float. A stand-in engine whose latency
is a known sum of what each variant keeps in float shows which variants are built (all-INT8,
the shipped one, one per fallback layer with only that layer's unit in float), how the prices
are taken (median of rounds minus the all-INT8 one) and that the variants' files are removed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from edgeresnet.backends.base import Artifact, BuildInputs
from edgeresnet.quantize.recipe import Candidate
from edgeresnet.tune import price

COST_MS = {"A": 0.5, "B": 0.25, "addB": 0.125, "C": 0.0}  # what keeping each node in float costs
UNITS = {"A": frozenset({"A"}), "B": frozenset({"B", "addB"}), "C": frozenset({"C"})}


class Standin:
    """Builds nothing: the 'artifact' is the variant's file, whose doc_string lists its float nodes."""

    name, qdq_profile = "standin", SimpleNamespace(name="standin")

    def build(self, inputs, precision, out_dir):
        assert precision == "int8" and out_dir.is_dir()
        return Artifact(self.name, precision, inputs.qdq(self.qdq_profile))

    def load(self, artifact, threads=None):
        import onnx

        floats = [n for n in onnx.load(str(artifact.path)).doc_string.split(",") if n]
        return SimpleNamespace(ms=1.0 + sum(COST_MS[n] for n in floats), floats=frozenset(floats))


@pytest.fixture
def priced(monkeypatch, tmp_path):
    import onnx

    built = []

    def variant_model(fp32, cand, profile):
        built.append(cand.keep_float)
        return onnx.helper.make_model(onnx.helper.make_graph([], "v", [], []), doc_string=",".join(sorted(cand.keep_float)))

    monkeypatch.setattr(price, "quantized_model", variant_model)
    monkeypatch.setattr(price, "time_runner", lambda run, probe, **plan: SimpleNamespace(p50=run.ms))
    shipped = Candidate(scales={}, keep_float=frozenset({"A", "B", "addB"}))
    inputs = BuildInputs(tmp_path / "unused.onnx", (1, 4, 4), tmp_path, write_qdq=None, candidate=shipped,
                         fp32_proto=object())
    result = price.price_fallbacks(Standin(), inputs, ["A", "B"], UNITS, probe=None, threads=1)
    return result, built, tmp_path


def test_each_fallback_layer_is_priced_alone_against_all_int8(priced):
    result, _, _ = priced
    assert result == {"target": "standin", "rounds": 3, "all_int8_ms": 1.0, "shipped_ms": 1.875, "total_ms": 0.875,
                      "per_layer_ms": {"A": 0.5, "B": 0.375}, "spread": 0.0}


def test_the_variants_are_all_int8_shipped_and_one_unit_each(priced):
    _, built, work = priced
    assert built == [frozenset(), frozenset({"A", "B", "addB"}), frozenset({"A"}), frozenset({"B", "addB"})]
    assert not list(work.iterdir())  # the variants' folders are gone
