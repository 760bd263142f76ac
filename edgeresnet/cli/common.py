"""What every command shares: turning project errors into one line and an exit code."""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import EdgeResNetError, PortabilityWarning
from ..host.machine import MAX_THREADS

if TYPE_CHECKING:
    from ..data.preprocess import Overrides

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)
DEBUG = {"on": False}


def fail(exc: EdgeResNetError) -> typer.Exit:
    """One ``error:`` line and always one ``hint:`` line (the README promises it): the error's
    own hint, else the fix its kind always has."""
    err.print(f"[bold red]error:[/] {escape(exc.message)}", soft_wrap=True)
    err.print(f"[dim]hint:[/] {escape(hint_for(exc))}", soft_wrap=True)
    return typer.Exit(exc.exit_code)


def hint_for(exc: EdgeResNetError) -> str:
    """The hint an error carries, or its kind's general fix when the raiser named none."""
    from ..errors import BackendUnavailable, InputError, UsageError

    if exc.hint:
        return exc.hint
    if isinstance(exc, UsageError):
        return "fix the flag named above; the command's --help says what each flag takes"
    if isinstance(exc, InputError):
        return "fix or replace the file or data named above, then rerun; nothing was changed"
    if isinstance(exc, BackendUnavailable):
        return "`edgeresnet doctor` lists the engines and devices installed here and what each needs"
    return "rerun with --debug for the traceback and report it"


def command(fn: Callable) -> Callable:
    """Wrap a command: project errors -> one line + hint + exit code; Ctrl-C -> 130;
    anything else -> one line and exit 1 (a traceback only with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _exit_on_sigterm()
        try:
            _check_threads(kwargs.get("threads"))
            with warnings.catch_warnings():
                warnings.simplefilter("once", PortabilityWarning)
                warnings.showwarning = _show_warning
                return fn(*args, **kwargs)
        except EdgeResNetError as exc:
            if DEBUG["on"]:
                raise
            raise fail(exc) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]: nothing half-written was left in place")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except BrokenPipeError:  # `edgeresnet predict ... | head`: the reader left; say nothing
            _silence_stdout()
            raise typer.Exit(141) from None
        except Exception as exc:
            if DEBUG["on"]:
                raise
            known = _known_os_error(exc)
            if known is not None:
                raise fail(known) from None
            err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))}", soft_wrap=True)
            err.print("[dim]hint:[/] rerun with --debug for the traceback and report it")
            raise typer.Exit(1) from None

    return wrapper


_default_show = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """The project's own warnings as one yellow line; others as Python prints them."""
    if issubclass(category, PortabilityWarning):
        err.print(f"[yellow]warning:[/] {escape(str(message))}", soft_wrap=True)
    else:
        _default_show(message, category, filename, lineno, file, line)


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _known_os_error(exc: Exception) -> EdgeResNetError | None:
    """A full disk, a read-only or forbidden output path: the user's to fix, one line each."""
    import errno

    from ..errors import InputError, fatal

    stop = fatal(exc)
    if isinstance(stop, EdgeResNetError):
        return stop
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        where = exc.filename or "the output"
        return InputError(f"cannot write {where}: {exc.strerror}", hint="pass a writable --out (or --json path)")
    return None


def _exit_on_sigterm() -> None:
    """A `kill` unwinds like Ctrl-C, so half-built export folders are removed on the way out."""
    import signal
    import threading

    from ..errors import SIGNALLED

    if threading.current_thread() is threading.main_thread():
        def on_term(signum, frame):
            SIGNALLED["signum"] = signum
            raise SystemExit(128 + signum)

        def on_int(signum, frame):
            SIGNALLED["signum"] = signum
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_int)




def json_text(obj) -> str:
    """Strict JSON: NaN and Inf become null (json.dumps would print NaN, which no parser
    accepts); names with bytes that are not UTF-8 keep them as \\udcXX escapes."""
    import json
    import math

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(obj), allow_nan=False)


def printable(text: str) -> str:
    """A file or class name for a terminal table: control characters (a newline in a file
    name breaks the rows) and undecodable bytes shown as escapes."""
    def show(c: str) -> str:
        if 0xDC80 <= ord(c) <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            return f"\\x{ord(c) - 0xDC00:02x}"
        return c if c.isprintable() else c.encode("unicode_escape").decode("ascii")

    return "".join(show(c) for c in text)


PREPROCESS_PANEL = "Preprocessing (default: what the checkpoint records)"
# One declaration of each preprocessing flag, shared by export, eval and train.
MeanOpt = Annotated[str | None, typer.Option(help="Per-channel mean, comma-separated (e.g. 0.485,0.456,0.406).", rich_help_panel=PREPROCESS_PANEL)]
StdOpt = Annotated[str | None, typer.Option(help="Per-channel std, comma-separated.", rich_help_panel=PREPROCESS_PANEL)]
SizeOpt = Annotated[int | None, typer.Option(help="Input side after the center crop.", rich_help_panel=PREPROCESS_PANEL)]
ResizeOpt = Annotated[int | None, typer.Option(help="Shorter side before the crop (e.g. 256 for a 224 crop).", rich_help_panel=PREPROCESS_PANEL)]
InterpOpt = Annotated[str | None, typer.Option(help="bilinear | bicubic | nearest.", rich_help_panel=PREPROCESS_PANEL)]
PreFileOpt = Annotated[Path | None, typer.Option("--preprocess", help="A JSON file with any of channels, size, resize, mean, std, interpolation (the flags above override it).", rich_help_panel=PREPROCESS_PANEL)]


HOST_PANEL = "On a device over SSH (--host)"
HostOpt = Annotated[str | None, typer.Option("--host", help="Run on this device over SSH instead (an ssh alias from ~/.ssh/config, or user@name): the bundle is copied to ~/.cache/edgeresnet/bundles there (reused while its hashes match), run with its device.py, and the results merged here tagged with the host. The device needs Python >= 3.8, numpy and a runtime; not edgeresnet.", rich_help_panel=HOST_PANEL, show_default=False)]
SshConfigOpt = Annotated[Path | None, typer.Option("--ssh-config", help="ssh_config file for --host (ssh -F FILE; default: ssh's own, ~/.ssh/config).", rich_help_panel=HOST_PANEL, show_default=False)]
RemotePythonOpt = Annotated[str, typer.Option("--remote-python", help="The device's Python for --host, e.g. /usr/bin/python3 or ~/venv/bin/python.", rich_help_panel=HOST_PANEL)]


def remote_host(host: str | None, ssh_config: Path | None, remote_python: str):
    """``--host`` and its companions as a :class:`remote.ssh.Host`, or None without --host."""
    from ..errors import UsageError

    if host is None:
        if ssh_config is not None or remote_python != "python3":
            raise UsageError("--ssh-config and --remote-python go with --host", hint="add --host ALIAS")
        return None
    from ..remote.ssh import Host

    return Host(host, ssh_config, remote_python)


def say(text: str) -> None:
    """A progress line on stderr (stdout stays the command's result, e.g. --json)."""
    err.print(escape(text), style="dim", soft_wrap=True)


def local_only(host, **given) -> None:
    """With --host, refuse the flags that tune a run here: the device file has its own."""
    from ..errors import UsageError

    used = [name for name, (value, default) in given.items() if value != default]
    if host is not None and used:
        raise UsageError(f"{', '.join(used)} {'does' if len(used) == 1 else 'do'} not apply with --host",
                         hint="drop it; the device runs with device.py's own settings")


def preprocess_overrides(mean: str | None, std: str | None, size: int | None, resize: int | None,
                         interpolation: str | None, spec_file: Path | None = None) -> "Overrides":
    """The preprocessing flags as fields to replace, each checked against the spec's schema now,
    before any work: a --preprocess JSON file first (a wrong field in it is bad input, exit 3),
    the single flags over it (a wrong value is a usage error, exit 2)."""
    from ..data.preprocess import FLAGS, Overrides, Source, read_fields
    from ..core.outdir import read_json

    values, sources = {}, {}
    if spec_file is not None:
        source = Source("file", str(spec_file))
        values = read_fields(read_json(spec_file, hint="a JSON object with any of channels, size, resize, mean, "
                                                        "std, interpolation"), source)
        sources = dict.fromkeys(values, source)
    flags = {"size": size, "resize": resize, "interpolation": interpolation}
    for name, text in (("mean", mean), ("std", std)):
        if text is not None:
            flags[name] = _numbers(f"--{name}", text)
    given = read_fields({k: v for k, v in flags.items() if v is not None}, FLAGS)
    return Overrides({**values, **given}, {**sources, **dict.fromkeys(given, FLAGS)})


def _numbers(flag: str, text: str) -> list[float]:
    """'0.485,0.456,0.406' -> [0.485, 0.456, 0.406]; 'nan' and 'inf' parse, the schema refuses them."""
    from ..errors import UsageError

    values = [v for v in text.split(",") if v.strip()]
    try:
        if values:
            return [float(v) for v in values]
    except ValueError:
        pass
    raise UsageError(f"{flag} {text!r} is not a comma-separated list of numbers",
                     hint=f"e.g. {flag} 0.485,0.456,0.406 (one value per channel)")


def threads_option(help: str):
    """``--threads``: 1 to 4x this machine's cores, checked by :func:`command` before any work."""
    return typer.Option(help=f"{help} 1 to {MAX_THREADS} (4x the cores).")


def _check_threads(threads) -> None:
    from ..errors import UsageError

    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise UsageError(f"--threads {threads} is out of range: 1 to {MAX_THREADS} (4x this machine's "
                         f"{os.cpu_count()} cores)", hint="more threads only oversubscribe the cores; omit it for all cores")


def int_list(text: str, flag: str) -> tuple[int, ...]:
    """'1,8,32' -> (1, 8, 32); anything else is a usage error naming the flag."""
    from ..errors import UsageError

    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"{flag} {text!r} is not a comma-separated list of integers", hint=f"e.g. {flag} 1,8,32") from None
    if not values or min(values) < 1:
        raise UsageError(f"{flag} needs integers >= 1, got {text!r}")
    return values


def engines_help(lead: str) -> str:
    """A --target help text naming every registered engine and its aliases."""
    from ..backends import backends

    names = ", ".join(c.name + (f" ({'/'.join(c.aliases)})" if c.aliases else "") for c in backends())
    return f"{lead}: {names}."


def command_line() -> str:
    return "edgeresnet " + " ".join(sys.argv[1:])
