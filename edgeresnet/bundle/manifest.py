"""``edgeresnet.json``: what an export bundle holds, checked on every load.

Every artifact per target and precision with the SHA-256 of each of its files (per-CPU
variants included) and the INT8 kernel path it was measured with, the
preprocessing spec, class names, input shape, calibration provenance and the versions of the
libraries that made it. A changed or missing file is reported, never silently used.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from pathlib import Path

from .._version import __version__
from ..backends.base import artifact_files
from ..backends.registry import bundle_dirs
from ..errors import InputError
from ..core.outdir import atomic_write, read_json

NAME = "edgeresnet.json"
FORMAT = "edgeresnet-bundle/1"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(root: Path, report: dict, libraries: dict) -> dict:
    """Describe the bundle at ``root`` from its report (rows with an artifact)."""
    artifacts = []
    for row in report["results"]:
        if row.get("status") != "ok" or not row.get("artifact"):
            continue
        details = row.get("details") or {}
        files = [str(p.relative_to(root)) for p in artifact_files(root / row["artifact"], details)]
        artifacts.append({"target": row["target"], "precision": row["precision"], "path": row["artifact"],
                          "files": {f: sha256(root / f) for f in files},
                          "inference_precision": details.get("inference_precision"),
                          "kernel": row.get("kernel"), "variants": details.get("variants")})
    # the device file (ondevice/device.py) and the golden set (bundle/golden.py) when the export wrote them
    extra = [p for p in ("model.fp32.onnx", "calibration.json", "device.py", "golden.npz") if (root / p).exists()]
    for folder in bundle_dirs():  # what engines built on the device need there (prepare hooks)
        if (root / folder).is_dir():
            extra += [str(p.relative_to(root)) for p in sorted((root / folder).iterdir()) if p.is_file()]
    model = report["model"]
    manifest = {"format": FORMAT, "edgeresnet_version": __version__, "arch": model.get("arch"),
                "input_shape": model.get("input_shape"), "preprocess": model.get("preprocess"),
                "classes": model.get("classes"), "calibration": report.get("calibration"),
                "libraries": libraries, "artifacts": artifacts,
                # The CPU the report's numbers were measured on: INT8 numerics depend on its class.
                "measured_on": (report.get("machine") or {}).get("cpu"),
                "files": {p: sha256(root / p) for p in extra}}
    if report.get("golden"):  # the golden set's description and each artifact's figures on it
        manifest["golden"] = report["golden"]
    atomic_write(root / NAME, lambda p: p.write_text(json.dumps(manifest, indent=1)))
    return manifest


def read_manifest(root: Path) -> dict:
    path = root / NAME
    if not root.is_dir():
        raise InputError(f"{root} is not a directory", hint="pass an export directory (made by `edgeresnet export`)")
    if not path.exists():
        raise InputError(f"{root} has no {NAME}", hint="pass an export directory made by `edgeresnet export`")
    manifest = read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(f"{path} is not an edgeresnet bundle manifest")
    _check_shape(manifest, path)
    return manifest


def _check_shape(manifest: dict, path: Path) -> None:
    """Every field a command reads has its type, and the sizes are bounded, before any use:
    a hand-edited manifest is one InputError, never a KeyError or a 100,000-pixel input."""
    from ..data.preprocess import Preprocess, Source
    from ..core.limits import MAX_CLASSES

    def bad(what: str) -> InputError:
        return InputError(f"{path}: {what}", hint="re-export; a bundle's manifest must not be edited by hand")

    def str_map(value) -> bool:
        return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())

    arts = manifest.get("artifacts")
    if not isinstance(arts, list) or not all(isinstance(a, dict) for a in arts):
        raise bad("'artifacts' is not a list of entries")
    for a in arts:
        if not all(isinstance(a.get(k), str) for k in ("target", "precision", "path")) or not str_map(a.get("files")):
            raise bad("an artifact entry lacks a target, precision, path or its file hashes")
        if a.get("variants") is not None and not str_map(a["variants"]):
            raise bad("an artifact's 'variants' is not a map of file names")
    if not str_map(manifest.get("files", {})):
        raise bad("'files' is not a map of file hashes")
    if manifest.get("golden") is not None and not isinstance(manifest["golden"], dict):
        raise bad("'golden' is not an object")
    classes = manifest.get("classes")
    if not isinstance(classes, list) or not 1 <= len(classes) <= MAX_CLASSES or \
            not all(isinstance(c, str) for c in classes):
        raise bad(f"'classes' is not a list of 1 to {MAX_CLASSES:,} names")
    if not isinstance(manifest.get("preprocess"), dict):
        raise bad("'preprocess' is missing")
    Preprocess.from_dict(manifest["preprocess"], Source("metadata", str(path)))  # bounded sizes, positive stds


def inside(root: Path, name: str, named_by: str = NAME, base: str = "") -> str:
    """``name`` (relative to the folder ``base`` of the bundle) as a normal path relative to
    ``root``; refused when it leads outside, by its name (absolute, ``..``) or through a
    symbolic link. ``named_by`` is the file that names it."""
    ok = isinstance(name, str) and name and "\x00" not in name and not posixpath.isabs(name)
    norm = posixpath.normpath(posixpath.join(base, name)) if ok else ""
    if not norm or norm in (".", "..") or norm.startswith("../"):
        raise InputError(f"{named_by} names a file outside the bundle {root}: {name}",
                         hint="re-export; a bundle's files must not name files outside it")
    if root.resolve() not in (root / norm).resolve().parents:
        raise InputError(f"{norm} in {root} is a link to a file outside the bundle",
                         hint="replace the link with the file itself, or re-export")
    return norm


def check_file(root: Path, rel: str, digest: str, data: bytes | None = None, named_by: str = NAME) -> Path:
    """The one check of a hashed bundle file before use: inside the bundle, present, a regular
    file, and its SHA-256 (of ``data`` when the caller already read the bytes) as exported."""
    path = root / inside(root, rel, named_by)
    if not path.exists():
        raise InputError(f"{rel} is missing from the bundle {root}", hint="copy the whole export directory")
    if not path.is_file():  # a FIFO would block the hash for good
        raise InputError(f"{rel} in {root} is not a regular file", hint="re-export, or restore the original file")
    if (sha256(path) if data is None else hashlib.sha256(data).hexdigest()) != digest:
        raise InputError(f"{rel} in {root} changed since export (SHA-256 differs)",
                         hint="re-export, or restore the original file")
    return path


def verify_files(root: Path, files: dict[str, str]) -> None:
    """Raise naming the first missing or changed file."""
    for rel, digest in files.items():
        check_file(root, rel, digest)


def verify_entry(root: Path, entry: dict) -> None:
    """One artifact entry, as every command checks it before use: the file it loads must be
    covered by its hashes, every file must match, and ONNX files must pass onnx.checker."""
    from ..onnxfile import check_onnx_file

    if entry.get("path") not in entry.get("files", {}):
        raise InputError(f"{root}'s manifest loads {entry.get('path')}, a file its hashes do not cover",
                         hint="re-export; a bundle's manifest must not be edited by hand")
    folder = posixpath.dirname(entry["path"])
    for name in (entry.get("variants") or {}).values():  # the per-CPU twin a backend may load instead
        if posixpath.join(folder, posixpath.basename(name)) not in entry["files"]:
            raise InputError(f"{root}'s manifest names the variant {name}, a file its hashes do not cover",
                             hint="re-export; a bundle's manifest must not be edited by hand")
    verify_files(root, entry["files"])
    for rel in entry["files"]:
        if rel.endswith(".onnx"):
            check_onnx_file(root / rel)
