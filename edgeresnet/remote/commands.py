"""What ``bench``, ``eval``, ``build`` and ``verify`` do with ``--host``: the bundle's copy on the
device (``remote.ensure_copy``), one action there, its answer checked, then merged here.

Nothing is merged until the whole answer came back and passed its checks: an unreachable
host, a refused login, a missing Python, numpy or runtime, a full disk, a killed run or a
dropped connection each stop with one error and leave the bundle here byte for byte as it was.
Rows are merged through the same path as ``edgeresnet report`` (``bundle.device_rows``), each
tagged with the host and its machine facts; edgeresnet.json is never rewritten, so its hash
(the name of the copy on the device, the key of verify.json's entries) stays.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..bundle import export_root
from ..bundle.device_rows import Merged, merge_files, publish_merged, read_rows_file
from ..bundle.host_rows import answer_rows, host_tag, info_problem
from ..errors import InputError, RemoteError
from . import copies as remote
from .ssh import NOTHING, Host

Say = Callable[[str], None]


def rows_action(export_dir: Path, host: Host, action: str, args: list[str], say: Say) -> Merged:
    """``device.py bench|eval`` on the host, its rows merged into bench.json (bench) or
    report.json (eval); the merged report is returned, already published."""
    from ..backends.registry import names

    root = export_root(export_dir)
    copy = remote.ensure_copy(root, host, action, say)
    say(f"{host.alias}: running device.py {action}")
    _, data = remote.run_action(copy, action, args, ok_codes=(0, 1))  # 1: an engine failed, its row says why
    rows = answer_rows(data, action, host.alias, names())
    if not any(r.status == "ok" for r in rows.rows):
        first = next((r for r in rows.rows if r.status == "failed"), rows.rows[0] if rows.rows else None)
        why = f": {first.target} {first.precision}: {first.reason}" if first else ": it ran no engine"
        raise RemoteError(f"{action} on {host.alias} ran nothing{why}",
                          hint=f"`edgeresnet doctor` on the device, or its runtimes in device.py info; {NOTHING}")
    merged = merge_files(root, [rows])
    publish_merged(merged, manifest=False)
    return merged


def build_on_host(export_dir: Path, host: Host, args: list[str], say: Say) -> Merged:
    """``trt/trt_device.py build`` on the host (its TensorRT, its GPU or DLA), then the build
    rows it wrote (trt/device.build.json there) read back and merged into report.json, tagged
    with the host and its facts. The engines and their layer lists stay on the device."""
    root = export_root(export_dir)
    copy = remote.ensure_copy(root, host, "build", say)
    _, info = remote.run_action(copy, "info", [])
    problem = info_problem(info)
    if problem:
        raise RemoteError(f"build on {host.alias} stopped at run: device.py info answered wrong ({problem})", hint=NOTHING)
    say(f"{host.alias}: building the TensorRT engines (trt/trt_device.py build)")
    remote.run_file(copy, "build", ["trt/trt_device.py", "build", *args])
    data = remote.fetch(copy, "trt/device.build.json", "build")
    with tempfile.TemporaryDirectory(prefix="edgeresnet-host-") as tmp:
        path = Path(tmp) / "device.build.json"
        path.write_bytes(data)
        try:
            rows = read_rows_file(path, host.alias)
        except InputError as exc:
            raise RemoteError(f"build on {host.alias} stopped at fetch: {exc.message}", hint=NOTHING) from None
    tag = {**host_tag(host.alias, info, "build"), "tensorrt": rows.tag["tensorrt"],  # the TensorRT that built them
           "files": {"build": {"file": f"ssh {host.alias}:trt/device.build.json", "created": rows.tag["files"]["build"]["created"]}}}
    merged = merge_files(root, [replace(rows, tag=tag)])
    publish_merged(merged, manifest=False)
    return merged


def verify_on_host(export_dir: Path, host: Host, args: list[str], say: Say) -> dict:
    """``device.py verify`` on the host: its entry (every engine's verdict on the golden set, the
    choice there), type-checked, merged into verify.json here under the device's key with
    ``"via": "ssh ALIAS"``, and returned. An engine that failed verification is an answer (the
    device exits 1), not a failed run: its entry is merged like any other."""
    from ..bundle import Bundle, verify
    from ..ondevice import device

    root = export_root(export_dir)
    bundle = Bundle(root)
    verify.require_golden(bundle, f" to verify on {host.alias}")
    copy = remote.ensure_copy(root, host, "verify", say)
    say(f"{host.alias}: running device.py verify")
    _, entry = remote.run_action(copy, "verify", ["--no-write", "--via", host.via, *args], ok_codes=(0, 1))
    problem = device.entry_problem(entry)
    if problem or entry.get("via") != host.via:
        raise RemoteError(f"verify on {host.alias} stopped at fetch: its entry is not what device.py writes "
                          f"({problem or 'another via'})", hint=NOTHING)
    verify.merge_entry(root, entry)
    return entry
