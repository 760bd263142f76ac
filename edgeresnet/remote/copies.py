"""A bundle on a device over SSH: copied there once, checked by its own hashes, run, answered.

The copy lives in ``~/.cache/edgeresnet/bundles/<sha256 of edgeresnet.json, 16 hex>/`` on the
device and holds only what the manifest lists, the manifest itself and the device file
(``device.py``, listed too). Before copying, the device file already there checks it
(``device.py check``: every file's SHA-256 as the manifest says); a copy that passes is reused,
one that does not (a file edited, half gone) is replaced. A copy is a tar stream over ssh into a
temp folder beside the final one, renamed into place only when tar finished, then checked again:
what arrived is what the manifest hashes. Only then does the action run (``device.py ACTION
--json``), and its stdout comes back as one JSON object, which the caller type-checks before
merging anything.

Each step is one ssh call and one ``sh`` script on the device; a failure stops the run with one
typed error that names the step: ``push`` (the copy), ``check``, ``run`` (the action) or
``fetch`` (a file the run left, read back).
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..bundle import Bundle
from ..errors import InputError, RemoteError, RemoteMissing, RemoteOutOfSpace
from ..bundle.manifest import NAME
from . import ssh
from .ssh import NOTHING, Host

CACHE = ".cache/edgeresnet/bundles"  # on the device, under its $HOME
KEY_HEX = 16  # the copy's folder: this many hex digits of edgeresnet.json's SHA-256
DEVICE_FILE = "device.py"
MAX_FILE = 64 << 20  # a rows file fetched back (trt/device.build.json is a few KB)
# Kinds of the device file's one-line errors (ondevice/device.py KINDS) that mean "install something".
MISSING = {"no-numpy", "no-runtime", "old-python"}
STALE = {"bad-manifest", "missing-file", "hash-mismatch", "bad-file"}  # the copy there is not the bundle: replace it
# The device's shell: $d is the bundle's copy; every script starts with these.
PREAMBLE = 'b="$HOME/{cache}"; d="$b/{key}"\n'
PROBE = ("{python} -c 'import sys; sys.exit(0 if sys.version_info >= (3, 8) else 9)' </dev/null || {{ s=$?\n"
         "  [ $s = 9 ] && echo \"edgeresnet-remote: old-python: device.py needs Python >= 3.8, this is $({python} -V 2>&1) "
         "(install Python 3.8 or newer)\" >&2\n"
         "  exit $s; }}\n")
CHECK = PROBE + ('[ -f "$d/{device}" ] || {{ echo absent; exit 0; }}\n'
                 '{python} "$d/{device}" check --bundle "$d" --json </dev/null; exit $?\n')
PUSH = ("mkdir -p \"$b\" && t=$(mktemp -d \"$b/.push.XXXXXX\") || exit 1\n"
        "find \"$b\" -maxdepth 1 -name '.push.*' -mmin +120 -exec rm -rf {{}} + 2>/dev/null\n"
        "if tar -x -o -f - -C \"$t\"; then\n"
        "  rm -rf \"$d\"; if [ -e \"$d\" ]; then rm -rf \"$t\"; else mv \"$t\" \"$d\"; fi\n"
        "else s=$?; rm -rf \"$t\"; exit $s; fi\n")
RUN = 'cd "$d" || exit 1\n{python} {command} </dev/null; exit $?\n'  # not exec: a killed python is 128+N
FETCH = 'cd "$d" && cat -- {file}\n'


@dataclass(frozen=True)
class Copy:
    """The bundle's copy on a device: its folder key, and whether an earlier copy was reused."""

    host: Host
    key: str
    reused: bool


def bundle_key(root: Path) -> str:
    """The copy's folder name: the first 16 hex of the manifest's SHA-256 (the device file's
    ``bundle_sha256``), so a re-export never reuses a stale copy."""
    return hashlib.sha256((Path(root) / NAME).read_bytes()).hexdigest()[:KEY_HEX]


def script(body: str, host: Host, key: str, **words: str) -> str:
    return PREAMBLE.format(cache=CACHE, key=key) + body.format(python=host.python_words(), device=DEVICE_FILE, **words)


def ensure_copy(root: Path, host: Host, action: str, say: Callable[[str], None]) -> Copy:
    """The bundle on the device, checked by its hashes there: the earlier copy when it passes,
    else a fresh one (pushed, then checked)."""
    root = Path(root)
    bundle = Bundle(root)
    names = payload(bundle)
    sha = hashlib.sha256((root / NAME).read_bytes()).hexdigest()
    key = sha[:KEY_HEX]
    where = f"~/{CACHE}/{key}"
    found = _check(host, key, sha, action, first=True)
    if found == "ok":
        say(f"{host.alias}: reusing the bundle's copy in {where} (every file's SHA-256 matches)")
        return Copy(host, key, reused=True)
    size = sum((root / n).stat().st_size for n in names) / 1e6
    say(f"{host.alias}: " + ("copying" if found == "absent" else f"the copy there is stale ({found}): copying again")
        + f" {len(names)} files ({size:.1f} MB) to {where}")
    res = ssh.run(host, script(PUSH, host, key), "push", feed=lambda pipe: _tar(bundle, names, pipe))
    if res.code != 0:
        raise ssh.failure(host, "push", res, action)
    if _check(host, key, sha, action, first=False) != "ok":
        raise RemoteError(f"the copy on {host.alias} does not match the manifest's hashes after the transfer",
                          hint=f"rerun; {NOTHING}")
    say(f"{host.alias}: copied and checked ({len(names)} files)")
    return Copy(host, key, reused=False)


def payload(bundle: Bundle) -> list[str]:
    """What goes to the device: the manifest and every file it lists (the device file among
    them), each checked here first so a damaged bundle is named here, not there."""
    if DEVICE_FILE not in bundle.hashes:
        raise InputError(f"{bundle.root} has no {DEVICE_FILE} in its manifest (it was exported before --host existed)",
                         hint="export it again: every export carries device.py, which --host runs on the device")
    names = sorted(bundle.hashes)
    for name in names:
        bundle.path(name)
    return [NAME, *names]


def _tar(bundle: Bundle, names: list[str], pipe: IO[bytes]) -> None:
    """The files as one tar stream, owner and mode neutral (the device's user owns them)."""
    with tarfile.open(fileobj=pipe, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            path = bundle.root / name
            info = tar.gettarinfo(str(path), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o644
            with path.open("rb") as f:
                tar.addfile(info, f)


def _check(host: Host, key: str, sha: str, action: str, first: bool) -> str:
    """"ok", "absent", or why the copy fails its check; a failure of ssh, of the device's Python
    or (after a push) of the check itself is raised."""
    res = ssh.run(host, script(CHECK, host, key), "check")
    if res.code == 0 and res.stdout.strip() == b"absent":
        return "absent"
    if res.code == 0:
        data = _json(res.stdout)
        if isinstance(data, dict) and data.get("ok") is True and data.get("bundle_sha256") == sha:
            return "ok"
        why = "its manifest is another bundle's"
    else:
        device = device_error(res)
        stale = device[0] in STALE if device else res.code == 1  # 1 without the one-line error: device.py itself broke
        if not (first and stale):
            raise _device_failure(host, "check", res, action, device)
        why = split_hint(device[1])[0] if device else f"device.py failed: {res.last_line()}"
    if not first:
        raise RemoteError(f"the copy on {host.alias} failed its check after the transfer: {why}", hint=f"rerun; {NOTHING}")
    return why


def run_action(copy: Copy, action: str, args: list[str], ok_codes: tuple[int, ...] = (0,)) -> tuple[int, dict]:
    """``device.py ACTION --bundle <copy> --json ARGS`` on the device: (exit status, its JSON
    object). An exit status outside ``ok_codes`` or an answer that is not one JSON object is raised."""
    host = copy.host
    command = " ".join([DEVICE_FILE, action, "--bundle", '"$d"', "--json", *map(shlex.quote, args)])
    res = ssh.run(host, script(RUN, host, copy.key, command=command), "run")
    if res.code not in ok_codes:
        raise _device_failure(host, "run", res, action, device_error(res))
    data = _json(res.stdout)
    if not isinstance(data, dict):
        raise RemoteError(f"{action} on {host.alias} stopped at fetch: its answer is not one JSON object "
                          f"({len(res.stdout):,} bytes)", hint=f"{NOTHING}; rerun with --debug")
    return res.code, data


def run_file(copy: Copy, action: str, command: list[str], ok_codes: tuple[int, ...] = (0,)) -> ssh.Result:
    """Another file of the copy run with the device's Python (``trt/trt_device.py build``)."""
    host = copy.host
    res = ssh.run(host, script(RUN, host, copy.key, command=" ".join(map(shlex.quote, command))), "run")
    if res.code not in ok_codes:
        raise _device_failure(host, "run", res, action, device_error(res))
    return res


def fetch(copy: Copy, rel: str, action: str) -> bytes:
    """A file the run left in the copy (``trt/device.build.json``), read back whole (bounded)."""
    res = ssh.run(copy.host, script(FETCH, copy.host, copy.key, file=shlex.quote(rel)), "fetch")
    if res.code != 0:
        raise ssh.failure(copy.host, "fetch", res, action)
    if len(res.stdout) > MAX_FILE:
        raise RemoteError(f"{rel} on {copy.host.alias} is over {MAX_FILE:,} bytes", hint=NOTHING)
    return res.stdout


def _json(data: bytes):
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def device_error(res: ssh.Result) -> tuple[str, str] | None:
    """(kind, message) of the device file's one-line error (``edgeresnet-device: KIND: ...``),
    the probe's (``edgeresnet-remote: ...``) or trt_device.py's, when the step ended with one."""
    if res.code in (0, 255) or res.code > 128:
        return None
    found = re.match(r"edgeresnet-(?:device|remote): ([a-z0-9-]{1,40}): (.+)", res.last_line())
    if found:
        return found.group(1), found.group(2)
    # trt/trt_device.py's two lines: "error: MESSAGE" then "  hint: HINT", exit 2, 3 or 4 (trt_device.EXIT_*)
    lines = [ln.strip() for ln in res.stderr.splitlines() if ln.strip()]
    if len(lines) >= 2 and lines[-2].startswith("error: ") and lines[-1].startswith("hint: "):
        kind = {2: "usage", 4: "no-runtime"}.get(res.code, "bad-file")
        return kind, f"{lines[-2][7:]} ({lines[-1][6:]})"
    return None


def split_hint(text: str) -> tuple[str, str | None]:
    """``"<message> (<hint>)"`` -> (message, hint): the hint is the last parenthesised group,
    parentheses inside it balanced (``install it: ... (JetPack: ...)``)."""
    if not text.endswith(")"):
        return text, None
    depth = 0
    for i in range(len(text) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(text[i], 0)
        if depth == 0:
            return (text[:i].rstrip(), text[i + 1:-1]) if i > 0 else (text, None)
    return text, None


def _device_failure(host: Host, stage: str, res: ssh.Result, action: str, device: tuple[str, str] | None) -> RemoteError:
    """The device file's own error as ours (what to install, the disk), else ssh's reading of it."""
    where = f"{action} on {host.alias} stopped at {stage}"
    if device is None:
        return ssh.failure(host, stage, res, action)
    kind, line = device
    message, fix = split_hint(line)
    fix = f"on {host.alias}: {fix}" if fix else "see the message"
    if kind in MISSING:
        return RemoteMissing(f"{host.alias}: {message} ({where})",
                             hint=f"{fix}; or pass --remote-python PATH of a Python that has it; {NOTHING}")
    if kind == "no-space":
        return RemoteOutOfSpace(f"no space left on {host.alias}: {message} ({where})",
                                hint=f"free space on the device and rerun; {NOTHING}")
    return RemoteError(f"{host.alias}: device.py {kind}: {message} ({where})", hint=f"{fix}; {NOTHING}")
