"""Files on disk. Outputs (single files and whole export directories) are built beside their
target and renamed into place, so an interrupted or failed run never leaves a half-written
result and never touches what was there; JSON inputs fail with one line."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError


EXPORT_MARKERS = ("edgeresnet.json", "report.json")  # what makes a folder an edgeresnet export


def is_export(folder: Path) -> bool:
    return any((folder / m).is_file() for m in EXPORT_MARKERS)


def check_target(out: Path, force: bool) -> None:
    """Refuse an --out that is a file, not empty (without --force), not an export (even with
    --force: it would be deleted), the current folder or one above it, or a mount point."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file", hint="pass a directory path")
    if not out.is_dir():
        return
    here, target = Path.cwd().resolve(), out.resolve()
    if target == here or target in here.parents or os.path.ismount(target):
        raise InputError(f"--out {out} is {'a mount point' if os.path.ismount(target) else 'the current folder or one above it'}: "
                         "it cannot be replaced as a whole", hint="pass a new subfolder, e.g. --out exports/x")
    if any(out.iterdir()):
        if not force:
            raise InputError(f"--out {out} exists and is not empty", hint="pass --force to replace it, or another --out")
        if not is_export(out):
            raise InputError(f"--out {out} is not an edgeresnet export; --force replaces only those",
                             hint="pass another --out (nothing there was touched)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(out: Path) -> list[Path]:
    """Remove the temp folders a killed run left beside ``out`` (their owner process is gone)."""
    removed = []
    for kind in ("tmp", "old"):
        for left in out.parent.glob(f".{out.name}.{kind}-*"):
            pid = left.name.split("-")[1] if left.name.count("-") >= 2 else ""
            if left.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(left, ignore_errors=True)
                removed.append(left)
    return removed


@contextlib.contextmanager
def staged_dir(out: Path, force: bool) -> Iterator[Path]:
    """Yield a temp folder beside ``out``; on success it replaces ``out`` in one rename.

    The --out rules are checked at the start and again just before the rename, so a second
    run that filled ``out`` meanwhile is never silently replaced. Temp folders carry the
    owner's pid; the next run removes those whose owner died (SIGKILL, power loss)."""
    out = Path(out)
    check_target(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    try:
        yield tmp
        check_target(out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.chmod(tmp, 0o755)
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=out.parent))
        os.replace(out, old / "previous")
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old / "previous", out)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def check_writable(path: Path, flag: str = "--out") -> None:
    """Refuse an output whose folder cannot be written before any work starts (a read-only mount
    found after a whole epoch of training loses that epoch): a probe file in the nearest folder
    that exists, created and removed at once; nothing else is made."""
    folder = Path(path).absolute().parent
    while not folder.exists():
        folder = folder.parent
    try:
        fd, probe = tempfile.mkstemp(prefix=".edgeresnet-probe.", dir=folder)
    except OSError as exc:
        raise InputError(f"cannot write {flag} {path}: {exc.strerror} ({folder})",
                         hint=f"pass a {flag} on a writable disk") from None
    os.close(fd)
    os.unlink(probe)


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then rename it into place, so
    an interrupted save never leaves a half-written file where the user's file was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide the file from other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path, hint: str | None = None):
    """A JSON file the user pointed us at, or one line saying what is wrong with it."""
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():  # a FIFO would block the read for good
        raise InputError(f"{path} is not a regular file", hint=hint)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path} does not exist", hint=hint) from None
    except IsADirectoryError:
        raise InputError(f"{path} is a directory, not a JSON file", hint=hint) from None
    except RecursionError:
        raise InputError(f"cannot read {path}: its JSON is nested too deeply", hint=hint) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}", hint=hint) from None
