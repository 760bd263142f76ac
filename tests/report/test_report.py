"""The report on hand-made rows (fast tier): one renderer with named columns for terminal,
markdown and HTML; one speed-up; one writer that keeps the files consistent."""

from __future__ import annotations

import json
import re

from rich.console import Console

from edgeresnet.report import Report, ResultRow, bench_table, markdown, terminal_table
from edgeresnet.report.html import render_html
from edgeresnet.bundle.publish import publish, read_bench
from edgeresnet.report.table import BENCH, EXPORT, cells, speedup


def _row(target, precision, p50, batch=1, **kw) -> ResultRow:
    return ResultRow(target, precision, batch=batch, latency_ms={"p50": p50, "p99": p50 * 1.5}, throughput_ips=batch * 1000 / p50,
                     top1=0.9, size_bytes=1_000_000, **kw)


def _report(rows) -> Report:
    return Report(model={"arch": "resnet20", "params": 1000, "input_shape": [1, 1, 28, 28], "source": "x"},
                  calibration=None, evaluation=None, results=rows, machine={"cpu": {"model": "cpu", "class": "x86-avx2"}})


def _speedups(text: str) -> list[str]:
    return re.findall(r"(\d+\.\d\d)x", text)


def test_speedup_is_same_engine_batch_and_mode_fp32_over_this():
    rows = [_row("ort", "fp32", 2.0), _row("ort", "int8", 1.0), _row("openvino", "int8", 1.0),
            _row("ort", "fp32", 8.0, batch=8), _row("ort", "int8", 2.0, batch=8)]
    assert [speedup(rows, r) for r in rows] == [None, 2.0, None, None, 4.0]
    failed = ResultRow("ort", "int8", status="failed", reason="boom")
    assert speedup(rows + [failed], failed) is None


def test_every_rendering_has_the_same_named_columns_and_cells():
    rows = [_row("ort", "fp32", 2.0), _row("ort", "int8", 0.5), ResultRow("trt", "int8", status="skipped", reason="no GPU")]
    report = _report(rows)
    md = markdown(report)
    assert "| " + " | ".join(EXPORT) + " |" in md
    assert "| ort | int8 | 1.00 | 90.00% | - | - | 0.500 | - | 0.750 | 2000 | 4.00x |" in md  # one round: no spread
    assert "| trt | int8 | - | - | - | - | - | - | - | - | skipped: no GPU |" in md
    page = render_html(report)
    assert "".join(f"<th>{c}</th>" for c in EXPORT) in page and "<td>4.00x</td>" in page
    console = Console(width=200, record=True)
    console.print(terminal_table(report))
    text = console.export_text()
    assert "vs fp32" in text and "4.00x" in text and "skipped" in text and "no GPU" not in text  # reasons go below


def test_a_report_with_a_bench_shows_one_speedup_per_engine_and_batch():
    export_rows = [_row("ort", "fp32", 2.0), _row("ort", "int8", 1.6)]  # quick timing: 1.25x
    bench = [_row("ort", "fp32", 2.0, mode="latency"), _row("ort", "int8", 1.0, mode="latency")]  # 2.00x
    report = _report(export_rows)
    md, page = markdown(report, bench), render_html(report, bench)
    assert _speedups(md) == ["2.00"] and _speedups(page) == ["2.00"]
    assert "| " + " | ".join(BENCH) + " |" in md and "see the benchmark table" in md
    console = Console(width=250, record=True)
    console.print(bench_table(bench, "bench"))
    assert _speedups(console.export_text()) == ["2.00"]


def test_cells_of_a_failed_row_keep_identity_and_status():
    r = ResultRow("openvino", "int8", batch=8, mode="throughput", status="failed", reason="OSError")
    full = cells([r], r, BENCH)
    assert full[:4] == ["openvino", "int8", "8", "throughput"] and full[-1] == "failed: OSError"
    assert set(full[4:-1]) == {"-"}
    assert cells([r], r, BENCH, compact=True)[3] == "thr" and cells([r], r, BENCH, compact=True)[-1] == "failed"


def test_publish_writes_every_report_and_keeps_an_earlier_bench(tmp_path):
    report = _report([_row("ort", "fp32", 2.0), _row("ort", "int8", 1.0)])
    written = publish(tmp_path, report)
    assert sorted(p.name for p in written) == ["report.html", "report.json", "report.md"]
    assert json.loads((tmp_path / "report.json").read_text())["results"][1]["precision"] == "int8"
    bench = [_row("ort", "fp32", 3.0, peak_memory_mb=70.0), _row("ort", "int8", 1.0, peak_memory_mb=65.0)]
    before = (tmp_path / "report.json").read_text()
    publish(tmp_path, Report.from_dict(json.loads(before)), bench, {"cpu": {"model": "m"}}, rewrite_report=False)
    assert (tmp_path / "report.json").read_text() == before
    rows, machine = read_bench(tmp_path)
    assert [r.peak_memory_mb for r in rows] == [70.0, 65.0] and machine == {"cpu": {"model": "m"}}
    publish(tmp_path, report)  # a later rewrite (e.g. `build`) keeps the bench table
    assert "## Benchmark" in (tmp_path / "report.md").read_text() and "3.00x" in (tmp_path / "report.md").read_text()
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temp files
