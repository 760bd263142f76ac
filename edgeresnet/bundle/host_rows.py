"""Rows a device answered over SSH: ``device.py bench|eval --json`` run by ``--host``.

The answer is untrusted JSON from another machine: ``{"format": "edgeresnet-device/1",
"device": <info>, "rows": [...]}``. The device's facts (``device.py info``: host name, Python,
numpy, runtimes, CPU class and ISA, GPU, L4T) and every row are type-checked as
``device_rows`` checks a rows file, then the rows become one :class:`device_rows.RowsFile`
tagged with the host, so they merge into report.json and bench.json through the same path as
``edgeresnet report`` (one row per device, engine, precision, batch and mode; a rerun replaces).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from ..errors import RemoteError
from ..report.schema import ResultRow
from .device_rows import FORMAT, MAX_ROWS, RowsFile, _row_problem, _text

NOTHING = "nothing was merged; rerun, and report it if it persists"


def info_problem(info) -> str | None:
    """What is wrong with ``device.py info``'s facts, or None."""
    if not isinstance(info, dict):
        return "'device' is not an object"
    for key in ("hostname", "python", "device_key"):
        if not _text(info.get(key)):
            return f"the device's '{key}' is not a short string"
    if info.get("numpy") is not None and not _text(info["numpy"], 64):
        return "the device's 'numpy' is not a version string"
    runtimes = info.get("runtimes")
    if not isinstance(runtimes, dict) or not all(_text(k, 64) and (v is None or _text(v, 64)) for k, v in runtimes.items()):
        return "the device's 'runtimes' is not a map of names to versions"
    cpu = info.get("cpu")
    if not isinstance(cpu, dict) or not _text(cpu.get("class"), 64) or \
            not (cpu.get("model") is None or isinstance(cpu["model"], str)) or \
            not (isinstance(cpu.get("isa", []), list) and all(_text(v, 64) for v in cpu.get("isa", []))):
        return "the device's 'cpu' is not a model, a class and a list of ISA names"
    gpu = info.get("gpu")
    if gpu is not None and not (isinstance(gpu, dict) and _text(gpu.get("name"))):
        return "the device's 'gpu' is not an object with a name"
    if info.get("l4t") is not None and not isinstance(info["l4t"], str):
        return "the device's 'l4t' is not a string"
    return None


def host_tag(alias: str, info: dict, command: str) -> dict:
    """``details.ran_on`` of a row a device answered over SSH: the alias as the device's name,
    how it was reached, and its facts (what `edgeresnet report` records of a Jetson, and more)."""
    runtimes, cpu, gpu = info["runtimes"], info["cpu"], info.get("gpu") or {}
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return {"device": alias, "via": f"ssh {alias}", "hostname": info["hostname"], "device_key": info["device_key"],
            "tensorrt": runtimes.get("tensorrt"), "runtimes": dict(runtimes), "python": info["python"],
            "numpy": info.get("numpy"), "cpu": cpu.get("model"), "cpu_class": cpu["class"], "isa": list(cpu.get("isa", [])),
            "gpu": gpu.get("name"), "l4t": info.get("l4t"), "format": FORMAT,
            "files": {command: {"file": f"ssh {alias}", "created": created}}}


def answer_rows(data: dict, command: str, alias: str, targets: tuple[str, ...]) -> RowsFile:
    """The rows of one ``device.py bench|eval --json`` answer, every field checked, tagged with
    the host; one RemoteError naming what is wrong, and nothing merged, otherwise."""
    problem = _answer_problem(data, targets)
    if problem:
        raise RemoteError(f"{command} on {alias} stopped at fetch: its answer is not what device.py writes ({problem})",
                          hint=NOTHING)
    tag = host_tag(alias, data["device"], command)
    fields = set(ResultRow.__dataclass_fields__)
    rows = [ResultRow(**{k: v for k, v in r.items() if k in fields}) for r in data["rows"]]
    return RowsFile(Path(f"ssh {alias}"), command, tag, rows)


def _answer_problem(data, targets: tuple[str, ...]) -> str | None:
    """What is wrong with an answer, or None; eval's verify-style rows are made report rows
    (:func:`report_row`) in place once they pass device.py's own check of them."""
    from ..ondevice.device import row_problem as verify_row_problem

    if not isinstance(data, dict):
        return "not a JSON object"
    if data.get("format") != FORMAT:
        return f"format {str(data.get('format'))!r:.60}, not {FORMAT}"
    problem = info_problem(data.get("device"))
    if problem:
        return problem
    rows = data.get("rows")
    if not isinstance(rows, list):
        return "'rows' is not a list of rows"
    if len(rows) > MAX_ROWS:
        return f"{len(rows):,} rows: the limit is {MAX_ROWS:,}"
    if any(isinstance(r, dict) and r.get("status") in VERDICTS for r in rows):
        problem = next(filter(None, map(verify_row_problem, rows)), None)
        if problem:
            return problem
        rows[:] = [report_row(r) for r in rows]
    return next(filter(None, (_row_problem(r, targets) for r in rows)), None)


VERDICTS = {"passed": "ok", "failed": "failed", "skipped": "skipped"}
VERDICT_DETAILS = ("max_abs_logit_diff", "disagreements", "errors", "predictions_sha256", "file")


def report_row(row: dict) -> dict:
    """An eval row as device.py writes it (a verify row: passed / failed / skipped, with the
    verdict's figures) as a report row: passed is ok, an engine that ran but failed its
    verification is failed with the verdict as its reason; the verdict's figures go to details."""
    tolerance = row.get("tolerance") or {}
    details = {k: row[k] for k in VERDICT_DETAILS if row.get(k) is not None}
    details.update(verdict=row["status"], kernel_path=row.get("path"), tolerance=tolerance.get("rule"))
    keep = ("target", "precision", "artifact", "reason", "top1", "agreement", "kernel")
    return {**{k: row.get(k) for k in keep}, "status": VERDICTS[row["status"]],
            "details": {k: v for k, v in details.items() if v is not None}}
