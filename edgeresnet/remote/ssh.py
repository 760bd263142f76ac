"""The system OpenSSH client, as ``--host`` drives a device: one ``ssh`` process per step.

Never a Python SSH library: the user's own ``ssh`` reads their ``~/.ssh/config`` (a ``Host``
alias, a jump host, an agent, ControlMaster) exactly as it does in their terminal, and
``--ssh-config FILE`` is ``ssh -F FILE``. BatchMode makes a missing key a refusal instead of a
password prompt that would hang; ConnectTimeout and the keep-alives turn a host that went away
into an error within about a minute instead of a hang.

Every step runs one POSIX ``sh`` script on the device (whatever the login shell is), and a
failure becomes one typed error naming the host and the step it stopped at: the host cannot be
reached, the login is refused, the command is missing, the run was killed or the connection
dropped, the disk filled up.
"""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import (AuthRefused,
    HostUnreachable,
    RemoteError,
    RemoteMissing,
    RemoteOutOfSpace,
    RemoteStopped,
    UsageError)

OPTIONS = ("BatchMode=yes", "ConnectTimeout=10", "ServerAliveInterval=15", "ServerAliveCountMax=4")
MAX_STDOUT = 64 << 20  # a bench of every engine, batch and mode is well under 2 MB
STDERR_TAIL = 16 << 10
# What `ssh HOST` accepts as a host: an alias, a name, user@name; never an option (a leading -).
ALIAS = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@%+:\[\]-]{0,254}\Z")
UNREACHABLE = re.compile(r"Could not resolve hostname|Name or service not known|nodename nor servname|"
                         r"Connection refused|Connection timed out|Operation timed out|timed out during banner|"
                         r"No route to host|Network is unreachable|Temporary failure in name resolution")
REFUSED = re.compile(r"Permission denied|Too many authentication failures|no mutual signature|"
                     r"Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED")
CONFIG = re.compile(r"Bad configuration option|no argument after keyword|garbage at end of line|"
                    r"Unsupported option|Bad owner or permissions on|Can't open user config file|"
                    r"terminating, \d+ bad configuration options")
NO_SPACE = "No space left on device"
NOTHING = "nothing was merged"


@dataclass(frozen=True)
class Host:
    """A device reached with ``ssh [-F config] alias``, running ``python`` there."""

    alias: str
    config: Path | None = None
    python: str = "python3"

    def __post_init__(self) -> None:
        if not ALIAS.match(self.alias):
            raise UsageError(f"--host {self.alias!r:.80} is not a host name or ssh alias",
                             hint="pass the name you give `ssh`, e.g. --host jetson or --host ubuntu@10.0.0.7")
        if self.config is not None and not Path(self.config).is_file():
            raise UsageError(f"--ssh-config {self.config} is not a file", hint="pass an ssh_config file (ssh -F FILE)")
        if not self.python.strip():
            raise UsageError("--remote-python is empty", hint="pass the device's python, e.g. --remote-python python3")

    @property
    def via(self) -> str:
        return f"ssh {self.alias}"

    def python_words(self) -> str:
        """``--remote-python`` as shell words for the device: split like a command line (a path
        and flags, e.g. ``~/venv/bin/python -I``), each quoted, a leading ``~/`` left to $HOME."""
        try:
            words = shlex.split(self.python)
        except ValueError as exc:
            raise UsageError(f"--remote-python {self.python!r:.80}: {exc}", hint="e.g. --remote-python /usr/bin/python3") from None
        return " ".join(home_path(w) for w in words)


def home_path(word: str) -> str:
    """A word quoted for sh, with ``~/x`` written as ``"$HOME"/x`` so the device's shell expands it."""
    if word == "~":
        return '"$HOME"'
    if word.startswith("~/"):
        return '"$HOME"/' + shlex.quote(word[2:])
    return shlex.quote(word)


def argv(host: Host, script: str) -> list[str]:
    """The ssh command line running ``script`` with ``sh`` on the host (whatever its login shell)."""
    args = ["ssh"]
    if host.config is not None:
        args += ["-F", str(host.config)]
    for option in OPTIONS:
        args += ["-o", option]
    return [*args, "-T", "--", host.alias, "sh -c " + shlex.quote(script)]


@dataclass(frozen=True)
class Result:
    """What one step left: the remote exit status (255: ssh's own failure), stdout, stderr's tail."""

    code: int
    stdout: bytes
    stderr: str

    def last_line(self) -> str:
        lines = [ln.strip() for ln in self.stderr.splitlines() if ln.strip()]
        return lines[-1] if lines else ""


def run(host: Host, script: str, stage: str, feed: Callable[[IO[bytes]], None] | None = None) -> Result:
    """Run ``script`` on the host; ``feed`` writes the step's stdin (the bundle's tar stream).

    stdout is read whole (bounded), stderr's tail is kept; both are drained while ``feed``
    writes, so a chatty remote never blocks the stream. Ctrl-C stops ssh (the device's shell
    sees its input close) and is re-raised."""
    try:
        proc = subprocess.Popen(argv(host, script), stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise RemoteMissing("no `ssh` client on this machine", hint="install OpenSSH's client (apt install "
                            "openssh-client); --host drives devices with the system ssh") from None
    chunks: dict[str, bytes] = {}
    readers = [threading.Thread(target=_drain, args=(proc.stdout, chunks, "out", MAX_STDOUT), daemon=True),
               threading.Thread(target=_drain, args=(proc.stderr, chunks, "err", STDERR_TAIL), daemon=True)]
    for t in readers:
        t.start()
    try:
        if feed is not None:
            try:
                feed(proc.stdin)
                proc.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the remote side stopped reading: its exit status and stderr say why
        code = proc.wait()
        for t in readers:
            t.join()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if chunks.get("out_over"):
        raise RemoteError(f"{stage} on {host.alias} printed over {MAX_STDOUT:,} bytes", hint=f"{NOTHING}; rerun")
    return Result(code, chunks.get("out", b""), chunks.get("err", b"").decode("utf-8", "replace"))


def _drain(stream: IO[bytes], into: dict, key: str, most: int) -> None:
    """Read a pipe to its end: keep the first ``most`` bytes of stdout, the last of stderr."""
    data = bytearray()
    for block in iter(lambda: stream.read(1 << 16), b""):
        data += block
        if len(data) > most:
            if key == "out":
                into["out_over"] = b"1"
                del data[most:]
            else:
                del data[:-most]
    into[key] = bytes(data)


def failure(host: Host, stage: str, res: Result, action: str) -> RemoteError:
    """The one error a failed step is: what ssh or the device's shell said, as a typed error."""
    text, last = res.stderr, res.last_line()
    where = f"{action} on {host.alias} stopped at {stage}"
    if res.code == 255 and CONFIG.search(text):
        return RemoteError(f"ssh refused its configuration: {last}",
                           hint="fix the file ssh names (--ssh-config, ~/.ssh/config); `ssh -G HOST` prints what it reads")
    if res.code == 255 and UNREACHABLE.search(text):
        return HostUnreachable(f"cannot reach {host.alias}: {_ssh_line(text, UNREACHABLE)} ({where})",
                               hint=f"check the device is on and `ssh {host.alias} true` works here; {NOTHING}")
    if res.code == 255 and REFUSED.search(text):
        return AuthRefused(f"{host.alias} refused the login: {_ssh_line(text, REFUSED)} ({where})",
                           hint=f"`ssh {host.alias} true` must work without a password prompt (a key in ssh-agent or "
                                f"IdentityFile; accept a new host key once interactively); {NOTHING}")
    if NO_SPACE in text:
        return RemoteOutOfSpace(f"no space left on {host.alias}: {_ssh_line(text, re.compile(NO_SPACE))} ({where})",
                                hint=f"free space on the device (`ssh {host.alias} df -h ~/.cache`) and rerun; {NOTHING}")
    if res.code == 255:
        said = f": {last}" if last else ""
        return RemoteStopped(f"the connection to {host.alias} dropped{said} ({where})",
                             hint=f"rerun when the device is reachable; the bundle copy there is checked again; {NOTHING}")
    if res.code in (126, 127):
        return RemoteMissing(f"{host.python} cannot run on {host.alias}: {last or 'not found'} ({where})",
                             hint="install python3 (>= 3.8) there, or pass --remote-python PATH of one it has "
                                  f"(`ssh {host.alias} which python3`); {NOTHING}")
    if res.code < 0:  # ssh itself was stopped here (by a signal from outside this run)
        return RemoteStopped(f"ssh was stopped by {_signal_name(-res.code)} ({where})", hint=f"rerun; {NOTHING}")
    if res.code > 128:
        return RemoteStopped(f"the remote run was killed by {_signal_name(res.code - 128)} ({where})",
                             hint=f"the device may be out of memory (`ssh {host.alias} dmesg | tail`); rerun; {NOTHING}")
    return RemoteError(f"{where}: exit {res.code}" + (f": {last}" if last else ""), hint=f"{NOTHING}; rerun with --debug")


def _ssh_line(text: str, pattern: re.Pattern) -> str:
    """The stderr line that matched, without ssh's "ssh: " prefix."""
    line = next((ln for ln in text.splitlines() if pattern.search(ln)), "").strip()
    return line[5:] if line.startswith("ssh: ") else line


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
