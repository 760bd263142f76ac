"""Engines behind one small interface (see base.Backend); looked up by name."""

from __future__ import annotations

import difflib

from ..errors import UsageError
from .base import Artifact, Backend, Runner

TARGETS = ("ort",)


def get_backend(name: str) -> Backend:
    if name == "ort":
        from .onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend()
    close = difflib.get_close_matches(name, TARGETS, n=1)
    raise UsageError(f"unknown target {name!r}" + (f"; did you mean {close[0]}?" if close else ""),
                     hint=f"targets: {', '.join(TARGETS)}")


__all__ = ["Artifact", "Backend", "Runner", "TARGETS", "get_backend"]
