"""Writing an export's reports after a benchmark: bench.json, report.md with the bench table,
and the self-contained report.html."""

from __future__ import annotations

import json
from pathlib import Path

from ..outdir import atomic_write
from .bench_table import bench_markdown
from .html import render_html
from .render import markdown
from .schema import Report, ResultRow


def publish(export_dir: Path, report_json: dict, bench: list[ResultRow], machine: dict) -> list[Path]:
    report = Report.from_dict(report_json)
    payload = {"machine": machine, "results": [r.to_dict() for r in bench]}
    md = markdown(report) + "\n## Benchmark\n\n" + bench_markdown(bench) + "\n"
    targets = {"bench.json": json.dumps(payload, indent=1), "report.md": md,
               "report.html": render_html(report, bench, machine)}
    for name, text in targets.items():
        atomic_write(export_dir / name, lambda p, text=text: p.write_text(text))
    return [export_dir / n for n in targets]
