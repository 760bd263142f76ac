"""The one writer of an export's reports: report.json, report.md, report.html, and bench.json
after a benchmark. `export`, `build` and `bench` all publish through here, so the three
report files always describe the same rows."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError
from .manifest import inside
from ..core.outdir import atomic_write, read_json
from ..report.html import render_html
from ..report.render import markdown
from ..report.schema import Report, ResultRow, row_problem

BENCH_JSON = "bench.json"


def read_bench(export_dir: Path) -> tuple[list[ResultRow], dict | None]:
    """The rows and machine of an earlier `bench` of this export (none when there was none)."""
    hint = "delete it and rerun `edgeresnet bench`"
    path = Path(export_dir) / inside(Path(export_dir), BENCH_JSON)  # not a link out of the export
    if not path.exists():
        return [], None
    data = read_json(path, hint=hint)
    # Rewritten by every bench, so no hash: each field is type-checked instead.
    if not isinstance(data, dict) or not isinstance(data.get("results", []), list) or \
            not isinstance(data.get("machine") or {}, dict):
        raise InputError(f"{path} is malformed (not an object with a list of results)", hint=hint)
    problem = next(filter(None, map(row_problem, data.get("results", []))), None)
    if problem:
        raise InputError(f"{path} is malformed ({problem})", hint=hint)
    fields = set(ResultRow.__dataclass_fields__)
    return [ResultRow(**{k: v for k, v in r.items() if k in fields}) for r in data.get("results", [])], data.get("machine")


def publish(export_dir: Path, report: Report, bench: list[ResultRow] | None = None, machine: dict | None = None,
            rewrite_report: bool = True) -> list[Path]:
    """Write the reports, each atomically. With ``bench`` rows, bench.json too; without, an
    existing bench.json stays and its table stays in report.md/html. ``rewrite_report``
    False (bench) leaves report.json as the export wrote it."""
    export_dir = Path(export_dir)
    texts: dict[str, str] = {}
    if bench is not None:
        texts[BENCH_JSON] = json.dumps({"machine": machine, "results": [r.to_dict() for r in bench]}, indent=1)
    else:
        bench, machine = read_bench(export_dir)
    if rewrite_report:
        texts["report.json"] = json.dumps(report.to_dict(), indent=1)
    texts["report.md"] = markdown(report, bench)
    texts["report.html"] = render_html(report, bench, machine)
    for name, text in texts.items():
        atomic_write(export_dir / name, lambda p, text=text: p.write_text(text))
    return [export_dir / n for n in texts]


def publish_bundle(export_dir: Path, report: Report, bench: list[ResultRow] | None = None,
                   machine: dict | None = None) -> list[Path]:
    """The publish step of `export`, `build` and `report`: the reports, then the manifest
    (edgeresnet.json) that hashes every file the bundle ships, so the two never disagree.
    Returns the files written, the manifest last."""
    from .manifest import NAME, write_manifest
    from ..backends.installed import libraries

    written = publish(export_dir, report, bench, machine)
    write_manifest(Path(export_dir), report.to_dict(), libraries())
    return written + [Path(export_dir) / NAME]
