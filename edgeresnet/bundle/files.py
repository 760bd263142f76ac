"""The one reader of files inside an export bundle.

A hashed file (listed in edgeresnet.json: its 'files' and every artifact's 'files') is used
only after ``manifest.check_file``: inside the bundle, present, a regular file, its SHA-256 as
exported. A path that one bundle file names (build.json's ONNX files) goes through the same
check, so an edited name cannot lead a command to /etc/passwd. Files rewritten after export
(report.json, bench.json, timing.cache) carry no hash: they are opened only inside the bundle,
as regular files, and their readers check every field's type (``report``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import InputError
from .manifest import NAME, check_file, inside, read_manifest, verify_entry
from ..core.outdir import atomic_write

EDITED = "re-export; a bundle's files must not be edited by hand"


def export_root(path: Path) -> Path:
    """The export folder for ``path``: itself, or its parent when ``path`` is the export's
    engine bundle folder (``trt/``), which users pass as often as the export."""
    from ..backends.registry import bundle_dirs

    path = Path(path)
    named = path if path.name not in ("", ".", "..") else path.resolve()
    if not (named / NAME).is_file() and named.name in bundle_dirs() and (named.parent / NAME).is_file():
        return named.parent
    return path


class Bundle:
    """An export folder and its manifest (read and shape-checked once). Every file a command
    opens in it is asked for here; a hashed file is hashed the first time it is asked for."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        self.hashes: dict[str, str] = dict(self.manifest.get("files", {}))
        for entry in self.manifest["artifacts"]:
            self.hashes.update(entry["files"])
        self._checked: set[str] = set()

    def rel(self, name: str, base: str = "", named_by: str = NAME) -> str:
        """``name`` (relative to the folder ``base`` of the bundle) relative to the root; refused
        when it leads outside the bundle."""
        return inside(self.root, name, named_by, base)

    def lists(self, name: str, base: str = "") -> bool:
        return self.rel(name, base) in self.hashes

    def path(self, name: str, base: str = "", named_by: str = NAME) -> Path:
        """The path of a hashed file, after its check (once per Bundle)."""
        rel = self._listed(name, base, named_by)
        if rel not in self._checked:
            check_file(self.root, rel, self.hashes[rel], named_by=named_by)
            self._checked.add(rel)
        return self.root / rel

    def artifact(self, entry: dict) -> Path:
        """The file one artifact entry loads, after its check (``manifest.verify_entry``: its
        files and per-CPU variants covered by its hashes and unchanged, ONNX files valid)."""
        verify_entry(self.root, entry)
        self._checked.update(self.rel(rel) for rel in entry["files"])
        return self.root / entry["path"]

    def read_bytes(self, name: str, base: str = "", named_by: str = NAME) -> bytes:
        """A hashed file's bytes; the bytes read are hashed too (no window between check and use)."""
        rel = self._listed(name, base, named_by)
        path = self.root / rel
        data = path.read_bytes() if path.is_file() else None  # a FIFO is never opened: check_file names it
        check_file(self.root, rel, self.hashes[rel], data=data, named_by=named_by)  # hashed once, as read
        self._checked.add(rel)
        return data

    def read_json(self, name: str, base: str = "", named_by: str = NAME):
        rel = self._listed(name, base, named_by)
        try:
            return json.loads(self.read_bytes(rel, named_by=named_by))
        except RecursionError:
            raise InputError(f"cannot read {self.root / rel}: its JSON is nested too deeply", hint=EDITED) from None
        except ValueError as exc:
            raise InputError(f"cannot read {self.root / rel}: {exc}", hint=EDITED) from None

    def scratch(self, name: str, base: str = "") -> Path:
        """A file that is rewritten after export and has no hash (a timing cache, a report): inside
        the bundle, and a regular file, not a link, when it exists (a write through a link would
        land outside)."""
        rel = self.rel(name, base)
        path = self.root / rel
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise InputError(f"{rel} in {self.root} is not a regular file", hint="delete it and rerun")
        return path

    def folder(self, base: str) -> Path:
        """A folder a command writes new files into (``build``: engines, layer lists, the timing
        cache): inside the bundle and holding no links, so no write can land outside it."""
        path = self.root / self.rel(base)
        links = sorted(p.name for p in path.iterdir() if p.is_symlink()) if path.is_dir() else []
        if links:
            raise InputError(f"{base}/{links[0]} in {self.root} is a symbolic link; an export holds none",
                             hint="replace it with the file itself, or re-export")
        return path

    def rewrite(self, name: str, text: str, base: str = "") -> None:
        """Replace a hashed file that a command legitimately changes (build retargets the
        calibration cache's header) and record its new hash in the manifest at once, so a run
        that fails later leaves a bundle that still verifies."""
        rel = self._listed(name, base, NAME)
        atomic_write(self.root / rel, lambda p: p.write_text(text))
        digest = hashlib.sha256(text.encode()).hexdigest()
        raw = json.loads((self.root / NAME).read_text())
        for files in [raw.get("files", {})] + [a["files"] for a in raw["artifacts"]]:
            if rel in files:
                files[rel] = digest
        atomic_write(self.root / NAME, lambda p: p.write_text(json.dumps(raw, indent=1)))
        self.hashes[rel] = digest

    def _listed(self, name: str, base: str, named_by: str) -> str:
        rel = self.rel(name, base, named_by)
        if rel not in self.hashes:
            who = f"{named_by} names {rel}," if named_by != NAME else f"{rel} is"
            raise InputError(f"{who} a file {self.root}'s {NAME} does not list (no hash to check it by)", hint=EDITED)
        return rel


def bundle_path(root: Path, name: str) -> Path:
    """The path of one hashed file of the bundle at ``root``, after its check."""
    return Bundle(root).path(name)


def read_bundle_file(root: Path, name: str) -> bytes:
    """The bytes of one hashed file of the bundle at ``root``, checked as read."""
    return Bundle(root).read_bytes(name)
