"""The project's errors. Library code raises these; only the CLI turns them into exit codes."""

from __future__ import annotations

import contextlib


class EdgeResNetError(Exception):
    """Base error: a message naming the problem and an optional hint naming the fix."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(EdgeResNetError):
    """The command line itself is wrong: a flag combination, a malformed value."""

    exit_code = 2


class InputError(EdgeResNetError):
    """A file, data spec, image or checkpoint the user gave is missing, malformed or unsafe."""

    exit_code = 3


class BackendUnavailable(EdgeResNetError):
    """An optional runtime (torch, onnxruntime, openvino, tensorrt) or device is missing."""

    exit_code = 4


def require(module: str, extra: str):
    """Import an optional dependency or raise BackendUnavailable naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise BackendUnavailable(
            f"{module} is not installed", hint=f"pip install 'edgeresnet[{extra}]'"
        ) from None


class PeerLost(EdgeResNetError):
    """Under torchrun, another process of the run died: this one stops too, its checkpoint intact."""

    exit_code = 5


class OutOfSpace(EdgeResNetError):
    """The disk filled up while writing: nothing is published, the user frees space and reruns."""

    exit_code = 3


class RemoteError(EdgeResNetError):
    """A device driven over SSH (``--host``) stopped the step: the message names the host and
    where it stopped (push, check, run, fetch); nothing was merged into the bundle here."""

    exit_code = 6


class HostUnreachable(RemoteError):
    """ssh could not reach the host: its name did not resolve, the connection was refused or timed out."""

    exit_code = 4


class AuthRefused(RemoteError):
    """The host answered but refused the login (key, user) or its host key is unknown or changed."""

    exit_code = 4


class RemoteMissing(RemoteError):
    """The host has no Python (``--remote-python``), numpy, or runtime for the bundle's engines."""

    exit_code = 4


class RemoteOutOfSpace(RemoteError):
    """The host's disk filled up while the bundle was copied there or while it ran."""

    exit_code = 3


class RemoteStopped(RemoteError):
    """The remote run was killed (a signal, the OOM killer) or the connection dropped mid-run."""

    exit_code = 6


SIGNALLED = {"signum": 0}  # set by the CLI's SIGINT/SIGTERM handlers (cli/common.py)


@contextlib.contextmanager
def native_call():
    """Hold Ctrl-C and SIGTERM while a runtime's native code runs, then act on them.

    A KeyboardInterrupt raised inside a pybind11 callback either becomes the runtime's own
    RuntimeError (OpenVINO's converter) or aborts the process with std::terminate (exit 134,
    seen once at about 2 s into an export). Held, the signal is acted on as soon as the call
    returns: a delay of the call's length, then the usual clean unwinding."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum, frame):
        held.append(signum)
        SIGNALLED["signum"] = signum

    previous = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if held:
            if held[0] == signal.SIGTERM:
                raise SystemExit(128 + signal.SIGTERM)
            raise KeyboardInterrupt


def stop_requested() -> bool:
    """Whether Ctrl-C or SIGTERM arrived. Runtimes that call back into Python (OpenVINO's
    converter) turn the KeyboardInterrupt into their own RuntimeError; this tells them apart."""
    return SIGNALLED["signum"] != 0


def fatal(exc: BaseException) -> BaseException | None:
    """What a per-engine ``except Exception`` must not swallow: an interrupt (as
    KeyboardInterrupt) or a full disk (as OutOfSpace); None for an ordinary engine failure."""
    import errno

    if stop_requested():
        return KeyboardInterrupt()
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return OutOfSpace(f"no space left on the device ({seen.filename or 'while writing'})",
                              hint="free some space and rerun; nothing was published")
        seen = seen.__cause__ or seen.__context__
    if "No space left on device" in str(exc):
        return OutOfSpace("no space left on the device", hint="free some space and rerun; nothing was published")
    return None



def reraise_fatal(exc: BaseException) -> None:
    """The first line of every per-engine ``except Exception``: raise what ``fatal`` finds (an
    interrupt, a full disk) in place of ``exc``, and return for an ordinary failure."""
    stop = fatal(exc)
    if stop is not None:
        raise stop from None

class PortabilityWarning(UserWarning):
    """A bundle runs on a CPU class (or INT8 kernel path) other than the one its report measured."""
