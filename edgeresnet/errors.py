"""The project's errors. Library code raises these; only the CLI turns them into exit codes."""

from __future__ import annotations


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


class PortabilityWarning(UserWarning):
    """A bundle runs on a CPU class (or INT8 kernel path) other than the one its report measured."""
