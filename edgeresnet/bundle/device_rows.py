"""The device's rows back on the workstation: ``trt/device.{build,eval,bench}.json``, written on
the Jetson (or GPU host) by ``python3 trt/trt_device.py build|eval|bench``, merged into the
export's report.json, bench.json and edgeresnet.json by ``edgeresnet report``.

A rows file is untrusted JSON (it crossed machines by hand): it is read through the bounded
reader, its header must be the device file's format, and every row field is type-checked
(``report.schema.row_problem``, plus the shapes of the device's timing and telemetry columns)
before anything is merged; one bad file and nothing is written.

Each merged row is tagged with the device it ran on (``details["ran_on"]``: the name given with
``--device`` or the host the file records, its TensorRT, Python and numpy, and when each file was
written), so a report holds several devices' rows; a row of the same device (name and TensorRT
version), engine, batch and mode replaces the earlier one. Device rows are records of what ran on
the device, not artifacts this machine loads: their ``artifact`` is null (``details["engine"]``
names the engine file in the bundle), so `bench` and `predict` here never try to load a Jetson's
engine, and the manifest's artifact list stays what this machine can verify.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..ondevice.trt_device import audit, summary
from ..backends.registry import bundle_dirs
from ..errors import InputError, UsageError
from ..core.outdir import read_json
from ..report.schema import Report, ResultRow, row_problem
from .files import Bundle, export_root

FORMAT = "edgeresnet-device/1"  # trt_device.FORMAT: the header of every rows file the device writes
COMMANDS = ("build", "eval", "bench")
NA = "n/a"  # trt_device.NA: a telemetry value that could not be read (the row says why)
MAX_BYTES = 64 << 20  # a bench of 4 engines x 8 batches x 2 modes is well under 2 MB
MAX_ROWS = 10_000
ENGINE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}\Z")  # plan engine names: fp32, int8-dla, ...; a file name part
HINT = "copy the file again from the device (`python3 trt/trt_device.py build|eval|bench` writes it), or leave it out"
NONE_HINT = ("run `python3 trt/trt_device.py build`, `eval` and `bench` on the device, copy trt/ back "
             "(rsync -a jetson:~/exports/NAME/trt/ DIR/trt/), or pass the rows files")
# Facts about the device a rows file's header may carry beside format/command/tensorrt/python/numpy/created
# (the device file writes none of these yet; each is copied into the tag when present).
def _folder() -> str:
    """The device bundle's folder in an export (TensorRT's ``trt/``): the engine built on the
    device declares it (``Backend.bundle``); its rows files and engines live there."""
    return bundle_dirs()[0]


HEADER_FACTS = ("host", "board", "l4t", "jetpack", "cuda", "gpu")
EVAL_FIELDS = ("top1", "top5", "top1_drop_pp", "agreement", "per_class_drop_pp")


def default_inputs(bundle: Bundle) -> list[Path]:
    """``trt/device.<command>.json`` of an export, those present, in build, eval, bench order."""
    found = [bundle.scratch(f"device.{c}.json", _folder()) for c in COMMANDS]  # inside trt/, never a link
    found = [p for p in found if p.exists()]
    if not found:
        raise InputError(f"no device rows in {bundle.root / _folder()} (device.build.json, device.eval.json, "
                         "device.bench.json)", hint=NONE_HINT)
    return found


# ----------------------------------------------------------------------------- reading one file

@dataclass(frozen=True)
class RowsFile:
    """One rows file, checked: its command, the device tag its rows get, and its rows."""
    path: Path
    command: str
    tag: dict
    rows: list[ResultRow] = field(default_factory=list)


def read_rows_file(path: Path, device: str | None = None) -> RowsFile:
    """A rows file, every field checked, or one InputError naming the file and what is wrong."""
    path = Path(path)
    if path.is_file() and path.stat().st_size > MAX_BYTES:
        raise InputError(f"{path} is {path.stat().st_size:,} bytes: the limit for a rows file is {MAX_BYTES:,}",
                         hint=HINT)
    data = read_json(path, hint=HINT)
    problem = _header_problem(data) or next(filter(None, map(_row_problem, data["rows"])), None)
    if problem:
        raise InputError(f"{path} is not a device rows file the package reads ({problem})", hint=HINT)
    tag = {"device": device or data.get("host"), "tensorrt": data["tensorrt"], "python": data["python"],
           "numpy": data.get("numpy"), **{k: data[k] for k in HEADER_FACTS if data.get(k) is not None},
           "format": data["format"], "files": {data["command"]: {"file": path.name, "created": data["created"]}}}
    fields = set(ResultRow.__dataclass_fields__)
    rows = [ResultRow(**{k: v for k, v in r.items() if k in fields}) for r in data["rows"]]
    return RowsFile(path, data["command"], tag, rows)


def _text(value, most: int = 256) -> bool:
    return isinstance(value, str) and 0 < len(value) <= most


def _header_problem(data) -> str | None:
    if not isinstance(data, dict):
        return "not a JSON object"
    if "format" not in data:
        return f"no 'format': a rows file's header says {FORMAT}"
    if data["format"] != FORMAT:
        return f"format {str(data['format'])!r:.60}, not {FORMAT}"
    if data.get("command") not in COMMANDS:
        return f"command {str(data.get('command'))!r:.40} is not one of {', '.join(COMMANDS)}"
    for key in ("tensorrt", "python", "created"):
        if not _text(data.get(key), 64):
            return f"'{key}' is not a version or date string"
    if data.get("numpy") is not None and not _text(data["numpy"], 64):
        return "'numpy' is not a version string"
    for key in HEADER_FACTS:
        if data.get(key) is not None and not _text(data[key]):
            return f"'{key}' is not a short string"
    rows = data.get("rows")
    if not isinstance(rows, list):
        return "'rows' is not a list of rows"
    if len(rows) > MAX_ROWS:
        return f"{len(rows):,} rows: the limit is {MAX_ROWS:,}"
    return None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# The device's own columns (trt_device.bench_engine, Telemetry.row_columns): the shape each may take.
_SHAPES = {
    "avg_w": lambda v: _number(v) or v == NA, "mj_per_image": lambda v: _number(v) or v == NA,
    "images_per_joule": lambda v: _number(v) or v == NA,
    "clocks_locked": lambda v: isinstance(v, bool) or v == NA, "throttled": lambda v: isinstance(v, bool) or v == NA,
    "power_mode": lambda v: v == NA or (isinstance(v, dict) and isinstance(v.get("name"), str)
                                       and (v.get("id") is None or _number(v.get("id")))),
    "clocks": lambda v: v == NA or (isinstance(v, dict) and all(
        isinstance(d, dict) and all(x is None or _number(x) for x in d.values()) for d in v.values())),
    **{k: lambda v: isinstance(v, dict) and all(_number(x) for x in v.values())
       for k in ("gpu_compute_ms", "h2d_ms", "d2h_ms", "enqueue_ms")},
    **{k: lambda v: isinstance(v, str)
       for k in ("energy_source", "energy_na_reason", "clocks_warning", "throttled_why")},
}
_DETAILS = {  # the details the report renders: text, or a count
    **{k: lambda v: isinstance(v, str) for k in ("device", "trt_line", "ran", "eval_source")},
    **{k: lambda v: isinstance(v, int) and not isinstance(v, bool) for k in ("eval_images", "dla_core")},
    "timing_warnings": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
}


def _row_problem(row, targets: tuple[str, ...] = ("trt",)) -> str | None:
    """What is wrong with one device row, or None: the report's field types, then the device's.
    ``targets``: the engines such a file holds (trt_device.py: trt; device.py: every engine)."""
    problem = row_problem(row)
    if problem:
        return problem
    who = f"the {row['target']!r:.20} {row['precision']!r:.40} row"
    if row["target"] not in targets:
        return f"{who} is not a row of {', '.join(targets)}"
    if not ENGINE.match(row["precision"]):
        return f"{who}: its engine name is not a plan's (letters, digits, - and _)"
    if row.get("status", "ok") not in ("ok", "failed", "skipped") or \
            row.get("mode", "latency") not in ("latency", "throughput"):
        return f"{who}'s status or mode is not one the device writes"
    if not 1 <= row.get("batch", 1) <= 65536:
        return f"{who}'s batch is {row['batch']}: 1 to 65,536"
    for key, ok in _SHAPES.items():
        if row.get(key) is not None and not ok(row[key]):
            return f"{who}'s '{key}' is {row[key]!r:.40}, not what the device writes"
    details = row.get("details") or {}
    for key, ok in _DETAILS.items():
        if details.get(key) is not None and not ok(details[key]):
            return f"{who}'s details '{key}' is {details[key]!r:.40}"
    return None


# ----------------------------------------------------------------------------- merging

def device_key(row: ResultRow) -> tuple | None:
    """(device name, TensorRT) of a merged device row; None for a row of this machine."""
    tag = row.details.get("ran_on") if isinstance(row.details, dict) else None
    return (tag.get("device"), tag.get("tensorrt")) if isinstance(tag, dict) else None


def _engine(row: ResultRow) -> tuple:
    """One engine of one device: (device key, engine, precision). A device answering over SSH
    (device.py) runs several engines, so int8 alone does not name one."""
    return device_key(row), row.target, row.precision


def _tagged(row: ResultRow, tag: dict, keep: ResultRow | None = None) -> ResultRow:
    """``row`` with the device tag (the earlier row's file stamps kept) and its engine file named."""
    files = {**((keep.details.get("ran_on") or {}).get("files", {}) if keep else {}), **tag["files"]}
    engine = row.artifact or (keep.details.get("engine") if keep else None)
    return replace(row, artifact=None, details={**row.details, "ran_on": {**tag, "files": files}, "engine": engine})


def merge_results(results: list[ResultRow], files: list[RowsFile]) -> list[ResultRow]:
    """report.json's rows with the build and eval rows merged: one row per device and engine
    (build gives status, size and details; eval the accuracy), replacing that device's earlier
    row and the export's placeholder trt rows (--prepare-only)."""
    merged: dict[tuple, ResultRow] = {}
    earlier = {_engine(r): r for r in results if device_key(r)}
    for f in (f for f in files if f.command in ("build", "eval")):
        for row in f.rows:
            at = ((f.tag["device"], f.tag["tensorrt"]), row.target, row.precision)
            base = merged.get(at) or earlier.get(at)
            merged[at] = _build_into(base, row, f.tag) if f.command == "build" else _eval_into(base, row, f.tag)
    if not merged:
        return results
    trt = any(at[1] == "trt" for at in merged)  # the export's --prepare-only rows stand for the device's engines
    placeholder = {id(r) for r in results if trt and r.target == "trt" and not device_key(r) and r.status == "skipped"}
    kept = [r for r in results if id(r) not in placeholder and _engine(r) not in merged]
    _fill_drops(kept + list(merged.values()), list(merged.values()))
    return kept + list(merged.values())


def _build_into(base: ResultRow | None, row: ResultRow, tag: dict) -> ResultRow:
    """The build row, keeping the accuracy of an earlier eval of the same device and engine."""
    accuracy = {k: getattr(base, k) for k in EVAL_FIELDS} if base else {}
    evaluated = {k: v for k, v in (base.details if base else {}).items() if k.startswith("eval_")}
    return _tagged(replace(row, **accuracy, details={**row.details, **evaluated}), tag, base)


def _eval_into(base: ResultRow | None, row: ResultRow, tag: dict) -> ResultRow:
    """The eval row's accuracy on the earlier build row of the same device and engine (or the
    eval row itself when there is none)."""
    evaluated = {f"eval_{k}" if not k.startswith("eval_") else k: v for k, v in row.details.items()
                 if k in ("eval_images", "eval_source")}
    if row.status != "ok":
        evaluated["eval_failed"] = row.reason
    if base is None:
        return _tagged(replace(row, details={**row.details, **evaluated}), tag)
    accuracy = {k: getattr(row, k) for k in EVAL_FIELDS} if row.status == "ok" else {}
    stale = ("eval_failed",) if row.status == "ok" else ()
    details = {k: v for k, v in base.details.items() if k not in stale}
    return _tagged(replace(base, **accuracy, details={**details, **evaluated}), tag, base)


def _fill_drops(rows: list[ResultRow], new: list[ResultRow]) -> None:
    """The top-1 drop of each ``new`` row against the same device's fp32 engine among ``rows``
    where the device's eval did not give it (an eval of only some engines): on the same
    images, else left empty."""
    base = {(device_key(r), r.target): r for r in rows if device_key(r) and r.precision == "fp32" and r.top1 is not None}
    for r in new:
        fp32 = base.get((device_key(r), r.target))
        same = fp32 is not None and all(r.details.get(k) == fp32.details.get(k) for k in ("eval_images", "eval_source"))
        if r.top1 is not None and r.top1_drop_pp is None and r.precision != "fp32" and same:
            r.top1_drop_pp = round((fp32.top1 - r.top1) * 100, 4)
            r.details["drop_vs"] = "the device's fp32 engine, from an earlier eval on the same images"


def merge_bench(bench: list[ResultRow], results: list[ResultRow], files: list[RowsFile]) -> list[ResultRow] | None:
    """bench.json's rows with the device's bench rows: a row of the same device, engine, batch
    and mode replaces the earlier one. Each carries its engine's accuracy from the report (as
    `bench` does). None when no bench file was given (bench.json stays as it is)."""
    new = [_tagged(r, f.tag) for f in files if f.command == "bench" for r in f.rows]
    if not new:
        return None
    accuracy = {_engine(r): r for r in results if device_key(r)}
    latest: dict[tuple, ResultRow] = {}
    for r in new:
        source = accuracy.get(_engine(r))
        if source is not None:
            r = replace(r, **{k: getattr(source, k) for k in ("top1", "top5", "top1_drop_pp", "agreement")})
        latest[(*_engine(r), r.batch, r.mode)] = r
    kept = [r for r in bench if (*_engine(r), r.batch, r.mode) not in latest]
    return kept + list(latest.values())


# ----------------------------------------------------------------------------- the layer audit

def audit_rows(bundle: Bundle, rows: list[ResultRow], files: list[RowsFile]) -> None:
    """The engine inspector's layer list of each engine just built (``trt/model.<engine>.layers.json``,
    copied back with trt/) audited as `edgeresnet build` audits it: warnings and the DLA/GPU layer
    counts in the row's details; "n/a" with the reason when the list is not here or belongs to
    another build (its engine's size is not the one the row records)."""
    built = {((f.tag["device"], f.tag["tensorrt"]), r.target, r.precision) for f in files if f.command == "build"
             for r in f.rows}
    if not built:
        return
    build = _build_json(bundle)
    for row in rows:
        if _engine(row) not in built or row.status != "ok":
            continue
        engine = bundle.scratch(f"model.{row.precision}.engine", _folder())
        layers = bundle.scratch(f"model.{row.precision}.layers.json", _folder())
        why = None if layers.is_file() else f"{_folder()}/{layers.name} was not copied back from the device"
        if why is None and (not engine.is_file() or engine.stat().st_size != row.size_bytes):
            why = f"{_folder()}/{engine.name} here is not the engine this row describes (another build or device)"
        if why is None and layers.stat().st_size > MAX_BYTES:
            why = f"{_folder()}/{layers.name} is over {MAX_BYTES:,} bytes"
        if why:
            row.details.update(audit=NA, audit_na_reason=why)
            continue
        info = read_json(layers, hint=f"copy trt/ again from the device, or delete {layers}")
        found = audit(info, row.precision.split("-")[0], _expected_float(build, row),
                      dla=row.details.get("dla_core") is not None)
        row.details.update(audit=summary(found), warnings=found["warnings"], layers_on=dict(found["devices"]),
                           gpu_fallbacks=found["gpu_fallbacks"])


def _build_json(bundle: Bundle) -> dict:
    where = f"{_folder()}/build.json"
    if not bundle.lists(where):
        raise InputError(f"{bundle.root} has no TensorRT bundle ({where})",
                         hint="pass an export made with --target trt")
    data = bundle.read_json(where)  # hashed at export: as written there
    return data if isinstance(data, dict) else {}


def _names(value) -> tuple[str, ...] | None:
    return tuple(value) if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def _expected_float(build: dict, row: ResultRow) -> tuple[str, ...]:
    """The layers the engine keeps in float on purpose, as the plan the device built from names
    them (``plans[line].engines[engine].expected_float_layers``); else build.json's float_nodes."""
    plan = (build.get("plans") or {}).get(row.details.get("trt_line")) if isinstance(build.get("plans"), dict) else None
    engines = plan.get("engines") if isinstance(plan, dict) else None
    engine = engines.get(row.precision) if isinstance(engines, dict) else None
    named = _names(engine.get("expected_float_layers")) if isinstance(engine, dict) else None
    return named if named is not None else _names(build.get("float_nodes")) or ()


# ----------------------------------------------------------------------------- the whole merge

@dataclass
class Merged:
    """What `edgeresnet report` writes: the report, bench.json's rows (None: unchanged) and machine."""
    root: Path
    report: Report
    bench: list[ResultRow] | None
    machine: dict | None
    files: list[RowsFile]


def check_device_name(name: str | None) -> str | None:
    if name is not None and not (0 < len(name) <= 64 and name.isprintable() and name.strip() == name):
        raise UsageError(f"--device {name!r:.80} is not a name", hint="pass a short name such as orin-nano-1")
    return name


def merge_device_rows(export_dir: Path, paths: list[Path] | None = None, device: str | None = None) -> Merged:
    """Every rows file read and checked, then merged into the export's report and bench rows; nothing
    is written here (``publish_merged`` does), so a bad file leaves the export untouched."""
    check_device_name(device)
    root = export_root(export_dir)
    return merge_files(root, [read_rows_file(p, device) for p in (paths or default_inputs(Bundle(root)))])


def merge_files(export_dir: Path, files: list[RowsFile]) -> Merged:
    """Rows files already read and checked (from trt/, or answered by a device over SSH) merged
    into the export's report and bench rows; nothing is written here."""
    from .publish import read_bench
    from .report import read_report

    root = export_root(export_dir)
    bundle = Bundle(root)
    report = Report.from_dict(read_report(bundle))
    bench, machine = read_bench(root)
    report.results = merge_results(report.results, files)
    audit_rows(bundle, report.results, files)
    return Merged(root, report, merge_bench(bench, report.results, files), machine, files)


def publish_merged(merged: Merged, manifest: bool = True) -> list[Path]:
    """report.json/md/html (and bench.json with device bench rows) through the one writer, then
    the manifest, each file replaced atomically; trt/ is checked for links first, since the
    manifest hashes every file in it. ``manifest`` False (rows a device answered over SSH: no
    file came back into trt/) leaves edgeresnet.json as it is, so its SHA-256, which names the
    bundle's copy on the device and its verify.json entries, does not change."""
    from .publish import publish, publish_bundle

    if not manifest:
        return publish(merged.root, merged.report, merged.bench, merged.machine)
    Bundle(merged.root).folder(_folder())
    return publish_bundle(merged.root, merged.report, merged.bench, merged.machine)
