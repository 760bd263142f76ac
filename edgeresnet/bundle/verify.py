"""`verify`: every engine of a bundle on its golden set, here, and the record of it (verify.json).

The work is done by the bundle's device file (``ondevice/device.py``), which this module imports:
the same code runs where edgeresnet is not installed, so a device and the workstation reach the
same verdicts. verify.json sits beside the bundle's files, is not in the manifest (no hashed
file is ever modified) and holds one entry per device for the bundle whose edgeresnet.json has
the SHA-256 it names; an entry of another bundle is ignored."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from ..errors import BackendUnavailable, EdgeResNetError, InputError, OutOfSpace, UsageError
from .manifest import NAME, sha256
from ..ondevice import device
from .files import Bundle

DEVICE_FILE = "device.py"
VERIFY = device.VERIFY
TIME_SECONDS = 0.3  # per engine and round; three rounds, interleaved
ROUNDS = 3
VERIFY_HINT = "rerun `edgeresnet verify DIR` (it rewrites verify.json); verify.json must not be edited by hand"


def install_device_file(root: Path) -> Path:
    """Copy the device file into an export folder (the manifest then lists and hashes it)."""
    target = Path(root) / DEVICE_FILE
    shutil.copyfile(Path(device.__file__), target)
    return target


def package_error(exc: device.DeviceError) -> EdgeResNetError:
    """The device file's error as the package's typed error (exit codes 2, 3, 4; 28 -> out of space)."""
    if exc.kind == "no-space":
        return OutOfSpace(exc.message, hint=exc.hint)
    kind = {device.EXIT_USAGE: UsageError, device.EXIT_MISSING: BackendUnavailable}.get(exc.code, InputError)
    return kind(exc.message, hint=exc.hint)


def verify_bundle(root: Path, *, targets: Sequence[str] | None = None, precisions: Sequence[str] | None = None,
                  time_seconds: float = TIME_SECONDS, rounds: int = ROUNDS, via: str = "local",
                  threads: int | None = None, write: bool = True) -> dict:
    """This device's verify entry (verify.json's schema): every engine whose runtime imports here
    on the golden set, its verdict, a short timing and the fastest engine that passed; merged
    into verify.json unless ``write`` is False."""
    bundle = Bundle(root)  # the package's own checks first: exit 3 with its messages
    require_golden(bundle)
    try:
        entry = device.verify(str(bundle.root), targets, precisions, time_seconds, rounds, via, threads)
    except device.DeviceError as exc:
        raise package_error(exc) from None
    if write:
        merge_entry(root, entry)
    return entry


def require_golden(bundle: Bundle, where: str = "") -> None:
    """Refuse a bundle without a golden set (exported with --no-eval, or by an older edgeresnet)."""
    if not isinstance(bundle.manifest.get("golden"), dict) or not bundle.lists(device.GOLDEN):
        raise InputError(f"{bundle.root} has no golden set ({device.GOLDEN}){where}: it was exported without an "
                         "evaluation set (--no-eval, unlabelled data with no held-out images, or random weights) "
                         "or by an older edgeresnet", hint=device.NO_GOLDEN_HINT)


def merge_entry(root: Path, entry: dict) -> None:
    """Put one device's entry (local, or brought back from a remote device) into verify.json,
    keeping other devices' entries for this same bundle; written atomically."""
    problem = device.entry_problem(entry)
    if problem:
        raise InputError(f"a verify entry for {root} is malformed: {problem}", hint=VERIFY_HINT)
    bundle = Bundle(root)
    bundle.scratch(VERIFY)  # inside the bundle, not a link
    try:
        device.merge_verify(str(bundle.root), sha256(bundle.root / NAME), entry)
    except device.DeviceError as exc:
        raise package_error(exc) from None


def read_verify(root: Path) -> dict | None:
    """verify.json with every field type-checked (it is not hashed: anyone may have written it);
    None when there is none or it records another bundle (the manifest changed since)."""
    root = Path(root)
    try:
        doc = device.read_verify(str(root))
    except ValueError as exc:
        raise InputError(str(exc), hint=VERIFY_HINT) from None
    if doc is None or doc["bundle_sha256"] != sha256(root / NAME):
        return None
    return doc


def device_entry(root: Path, device_key: str) -> dict | None:
    """This bundle's verify entry for one device; None when that device has not verified it."""
    return ((read_verify(root) or {}).get("devices") or {}).get(device_key)


def chosen_for(root: Path, device_key: str) -> tuple[str, str] | None:
    """(target, precision) that `verify` chose for this device: the fastest engine that passed
    there; None when this device has not verified this bundle (or nothing passed)."""
    entry = device_entry(root, device_key)
    if not entry or not entry.get("chosen"):
        return None
    return entry["chosen"]["target"], entry["chosen"]["precision"]


def local_device_key() -> str:
    """This machine's key in verify.json: "<hostname> <cpu class>" (+ " <gpu name>")."""
    return device.device_key()
