"""One latency method (latency.py, report/speedup.py): the statistics on hand-made rounds, the
interleaving and the round count on a stand-in worker, one thread count end to end (fast tier);
and `edgeresnet demo`'s two tables agreeing within the intervals they print (slow)."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
from rich.console import Console

from edgeresnet.bench import latency
from edgeresnet.backends.base import Artifact
from edgeresnet.bench.run import against_export
from edgeresnet.report import Report, ResultRow, bench_table, markdown, terminal_table
from edgeresnet.report.html import render_html
from edgeresnet.report.speedup import Speedup, median_interval, paired, spread_pct
from edgeresnet.report.table import SLOWER, speedup_of

from ..conftest import ToyEngine


def _rounds_row(target, precision, p50s, **kw) -> ResultRow:
    p50 = sorted(p50s)[len(p50s) // 2]
    return ResultRow(target, precision, latency_ms={"p50": p50, "p99": p50 * 2, "p50_rounds": list(p50s),
                                                    "p50_spread_pct": spread_pct(p50s)},
                     throughput_ips=1000 / p50, top1=0.9, size_bytes=1_000_000, **kw)


def _report(rows) -> Report:
    return Report(model={"arch": "resnet20", "params": 1000, "input_shape": [1, 1, 28, 28], "source": "x"},
                  calibration=None, evaluation=None, results=rows)


def test_the_interval_is_the_order_statistic_one_for_a_median():
    assert median_interval([5, 1, 3, 2, 4]) == (1, 5, 1 - 2 / 32)  # 5 rounds: the whole range, 93.75%
    low, high, coverage = median_interval(list(range(1, 10)))  # 9: second smallest to second largest, 96%
    assert (low, high) == (2, 8) and coverage == pytest.approx(1 - 2 * 10 / 512)
    assert median_interval([1, 2, 3]) == (1, 3, 0.75)  # too few for 90%: the range, with what it covers
    assert spread_pct([1.0, 1.1, 0.9]) == pytest.approx(20.0) and spread_pct([1.0]) is None


def test_rounds_are_paired_so_a_load_burst_that_hits_both_cancels():
    fp32 = [1.0, 2.0, 1.0, 1.0, 2.0]  # rounds 2 and 5 ran while something else had the cores
    int8 = [0.5, 1.0, 0.5, 0.5, 1.0]
    s = paired(fp32, int8)
    assert (s.value, s.low, s.high, s.rounds) == (2.0, 2.0, 2.0, 5) and not s.slower
    assert paired([1.0], [0.5]) == Speedup(2.0)  # one round: a figure, no interval
    thr = paired([100, 200, 100, 100, 100], [300, 600, 300, 300, 300], higher_is_faster=True)
    assert thr.value == 3.0 and thr.low == thr.high == 3.0


def test_a_speedup_below_one_beyond_its_interval_is_flagged_alike_everywhere():
    rows = [_rounds_row("ort", "fp32", [1.00, 1.02, 0.98, 1.01, 0.99]),
            _rounds_row("ort", "int8", [1.20, 1.25, 1.18, 1.22, 1.21]),
            _rounds_row("openvino", "fp32", [1.0, 1.0, 1.0, 1.0, 1.0]),
            _rounds_row("openvino", "int8", [0.9, 1.1, 0.95, 1.05, 1.0])]  # 0.91-1.11: not beyond
    ort, ov = speedup_of(rows, rows[1]), speedup_of(rows, rows[3])
    assert ort.slower and ort.high < 1 and not ov.slower and ov.low < 1 < ov.high
    report = _report(rows)
    md, page = markdown(report), render_html(report)
    console = Console(width=100, record=True)
    console.print(terminal_table(report))
    term = console.export_text()
    flagged = f"{ort.text()} {SLOWER}"
    assert flagged in md and flagged in page and ort.text() in term and SLOWER in term
    assert md.count(SLOWER) == 1 and ov.text() in md and ov.text() in term
    # the terminal and report.md carry the same numbers: every p50, spread and speed-up
    for r in rows:
        for text in (f"{r.latency_ms['p50']:.3f}", f"{r.latency_ms['p50_spread_pct']:.1f}"):
            assert text in term and text in md
    assert "interleaved rounds" in md and "interleaved rounds" in term  # what the columns mean, under both


def test_rows_without_rounds_keep_a_plain_figure_and_no_verdict():
    rows = [ResultRow("ort", "fp32", latency_ms={"p50": 1.0}), ResultRow("ort", "int8", latency_ms={"p50": 2.0})]
    s = speedup_of(rows, rows[1])
    assert s == Speedup(0.5) and not s.slower and s.agrees(Speedup(2.0, 1.9, 2.1, 5)) is None
    # rows timed apart (an old export's single p50 against rounds): the p50s, never round 1 against round 1
    rows[1] = _rounds_row("ort", "int8", [0.5, 0.4, 0.6, 0.5, 0.5])
    assert speedup_of(rows, rows[1]) == Speedup(2.0)


def test_merge_keeps_the_median_round_and_every_rounds_p50():
    rounds = [{"latency_ms": {"p50": v, "samples": 100}, "throughput_ips": 1 / v, "load_1min": 0.5} for v in (3, 1, 2)]
    merged = latency.merge(rounds, "latency")
    assert merged["latency_ms"]["p50"] == 2 and merged["latency_ms"]["p50_rounds"] == [3, 1, 2]
    assert merged["latency_ms"]["p50_spread_pct"] == pytest.approx(100.0) and merged["rounds"] == 3
    assert merged["load_1min"] == [0.5, 0.5, 0.5]


class _Worker:
    """bench_worker.spawn's stand-in: a p50 per (target, precision) and round, and the call order."""

    def __init__(self, p50s: dict, fail: str | None = None):
        self.p50s, self.calls, self.fail = p50s, [], fail

    def __call__(self, spec, timeout=600):
        key = f"{spec['target']} {spec['precision']}"
        self.calls.append(key)
        if key == self.fail:
            raise RuntimeError("worker died")
        values = self.p50s[key]
        p50 = values[sum(c == key for c in self.calls[:-1]) % len(values)]
        return {"latency_ms": {"p50": p50, "p99": p50}, "throughput_ips": 1000 / p50, "threads_seen": spec["threads"]}


def _specs(*keys):
    return [{"target": k.split()[0], "precision": k.split()[1], "batch": 1, "mode": "latency", "threads": None}
            for k in keys]


def test_rounds_go_round_robin_and_stop_when_every_interval_is_narrow(monkeypatch):
    worker = _Worker({"ort fp32": [1.0], "ort int8": [0.5]})
    monkeypatch.setattr("edgeresnet.bench.worker.spawn", worker)
    timed = latency.run_rounds(_specs("ort fp32", "ort int8"), latency.Plan())
    assert worker.calls == ["ort fp32", "ort int8"] * latency.PLAN.min_rounds  # interleaved, never back to back
    assert [len(t.rounds) for t in timed] == [latency.PLAN.min_rounds] * 2


def test_a_noisy_pair_gets_more_rounds_up_to_the_cap(monkeypatch):
    worker = _Worker({"ort fp32": [1.0, 2.0, 1.0, 3.0], "ort int8": [0.5, 0.5, 1.5, 0.5]})
    monkeypatch.setattr("edgeresnet.bench.worker.spawn", worker)
    plan = latency.Plan(min_rounds=3, max_rounds=7)
    timed = latency.run_rounds(_specs("ort fp32", "ort int8"), plan)
    assert [len(t.rounds) for t in timed] == [7, 7]
    fixed = latency.run_rounds(_specs("ort fp32", "ort int8"), latency.Plan(rounds=2))
    assert [len(t.rounds) for t in fixed] == [2, 2]


def test_a_failing_block_ends_its_artifact_only(monkeypatch):
    worker = _Worker({"ort fp32": [1.0], "ort int8": [0.5]}, fail="ort int8")
    monkeypatch.setattr("edgeresnet.bench.worker.spawn", worker)
    fp32, int8 = latency.run_rounds(_specs("ort fp32", "ort int8"), latency.Plan(rounds=3))
    assert len(fp32.rounds) == 3 and int8.error == "worker died" and worker.calls.count("ort int8") == 1


class _ThreadsEngine(ToyEngine):
    """An engine that records the thread count every load is given."""

    name = "threads-toy"

    def __init__(self):
        super().__init__()
        self.loads = []

    def build(self, inputs, precision, out_dir):
        path = out_dir / "toy.onnx"
        path.write_bytes(b"toy")
        return Artifact(self.name, precision, path)

    def load(self, artifact, threads=None, mode="latency"):
        self.loads.append(threads)
        return lambda x: np.zeros((len(x), 10), np.float32)


@pytest.mark.parametrize("threads", [None, 1])
def test_one_thread_count_for_accuracy_timing_and_the_row(threads, tmp_path, monkeypatch):
    """The export loaded engines for accuracy with --threads but timed them with os.cpu_count()
    when it was not given, and recorded the latter: one field now, recorded as given."""
    from edgeresnet.export.pipeline import ExportConfig, build_engines

    seen = []

    def spawn(spec, timeout=600):
        seen.append(spec["threads"])
        return {"latency_ms": {"p50": 1.0}, "throughput_ips": 1000.0}

    monkeypatch.setattr("edgeresnet.bench.worker.spawn", spawn)
    engine = _ThreadsEngine()
    pre = SimpleNamespace(input_shape=(1, 4, 4))
    inputs = SimpleNamespace(backends=[engine], loaded=SimpleNamespace(meta=SimpleNamespace(preprocess=pre)),
                             calib_set=SimpleNamespace(batch=lambda idx, p: np.zeros((len(idx), 1, 4, 4), np.float32)),
                             eval_set=None, eval_spec=None)
    folded = SimpleNamespace(model=None, calib_idx=np.arange(4), fp32_path=tmp_path / "m.onnx", fp32_proto=None,
                             probe=np.zeros((4, 1, 4, 4), np.float32))
    cfg = ExportConfig(model="x", out=tmp_path / "out", int8=False, threads=threads)
    [row] = build_engines(cfg, inputs, folded, None, None, tmp_path, None)
    assert engine.loads == [threads] and set(seen) == {threads} and len(seen) == latency.PLAN.min_rounds
    assert row.threads == threads and row.details["rounds"] == latency.PLAN.min_rounds


def _bench_and_export(export_int8, bench_int8, export_loads=(1.0,), bench_loads=(1.0,)):
    export = [_rounds_row("ort", "fp32", [1.0] * 5), _rounds_row("ort", "int8", export_int8)]
    bench = [_rounds_row("ort", "fp32", [1.0] * 5), _rounds_row("ort", "int8", bench_int8)]
    for r in export:
        r.details["load_1min"] = list(export_loads)
    for r in bench:
        r.details["load_1min"] = list(bench_loads)
    against_export(bench, export)
    return bench[1].details["vs_export"]


def test_bench_says_whether_it_agrees_with_the_export():
    same = _bench_and_export([0.5, 0.52, 0.48, 0.5, 0.51], [0.5, 0.49, 0.51, 0.5, 0.5])
    assert same["agrees"] and "agrees with the export's" in same["note"]
    noisy_export = _bench_and_export([1.1, 0.9, 1.3, 1.0, 1.2], [0.58, 0.6, 0.59, 0.6, 0.6], export_loads=(4.0,))
    assert noisy_export["agrees"] is False
    assert "the export's figure is the noisier" in noisy_export["note"] and "this bench's figure stands" in noisy_export["note"]
    assert "4.0 during the export" in noisy_export["note"]
    noisy_bench = _bench_and_export([0.58, 0.6, 0.59, 0.6, 0.6], [1.1, 0.9, 1.3, 1.0, 1.2])
    assert "this bench is the noisier" in noisy_bench["note"]


def test_bench_table_carries_the_interval(tmp_path):
    rows = [_rounds_row("ort", "fp32", [1.0, 1.1, 0.9, 1.0, 1.0]), _rounds_row("ort", "int8", [0.5, 0.55, 0.45, 0.5, 0.5])]
    console = Console(width=80, record=True)
    console.print(bench_table(rows, "bench"))
    assert speedup_of(rows, rows[1]).text() in console.export_text()  # fits 80 columns unwrapped


SPEED = re.compile(r"(\d+\.\d\d)x \((\d+\.\d\d)-(\d+\.\d\d)\)")


@pytest.mark.slow
def test_demo_export_and_bench_tables_agree_within_the_intervals_they_print(demo_run):
    """`edgeresnet demo` as a user runs it: every INT8 (and bf16) speed-up of the export table and of
    the bench table, each with its interval, overlap; the bench says so for each."""
    res, out = demo_run
    assert res.returncode == 0, res.stderr
    fields = set(ResultRow.__dataclass_fields__)
    export = [ResultRow(**{k: v for k, v in r.items() if k in fields})
              for r in json.loads((out / "report.json").read_text())["results"]]
    bench = [ResultRow(**{k: v for k, v in r.items() if k in fields})
             for r in json.loads((out / "bench.json").read_text())["results"]]
    export_table, bench_table_text = res.stdout.split("bench: ", 1)
    compared = 0
    for row in bench:
        mine = speedup_of(bench, row)
        if mine is None:
            continue
        then = speedup_of(export, next(r for r in export if (r.target, r.precision) == (row.target, row.precision)))
        assert then.rounds >= latency.PLAN.min_rounds and mine.rounds >= latency.PLAN.min_rounds
        assert then.text() in export_table and mine.text() in bench_table_text  # the figures printed
        assert mine.agrees(then), f"{row.target} {row.precision}: bench {mine.text()} vs export {then.text()}"
        assert row.details["vs_export"]["agrees"] and "agrees with the export's" in row.details["vs_export"]["note"]
        compared += 1
    assert compared >= 1 and len(SPEED.findall(res.stdout)) >= 2 * compared
    for r in export:
        if r.target != "torch" and r.status == "ok":
            assert r.threads is None and r.details["rounds"] >= latency.PLAN.min_rounds  # runtime default, recorded so
    torch_row = next(r for r in export if r.target == "torch")
    assert "in this process" in torch_row.details["latency_method"]
