"""Engines behind one small interface (see base.Backend); looked up by name."""

from __future__ import annotations

import difflib

from ..errors import UsageError
from .base import Artifact, Backend, Runner

TARGETS = ("ort", "openvino", "trt")
ALIASES = {"onnxruntime": "ort", "ov": "openvino", "tensorrt": "trt"}


def expand_targets(names: tuple[str, ...]) -> tuple[str, ...]:
    """``all`` -> every engine; aliases resolved; duplicates dropped; unknown names refused."""
    out: list[str] = []
    for raw in names:
        name = ALIASES.get(raw.lower(), raw.lower())
        if name == "all":
            out += [t for t in TARGETS if t not in out]
            continue
        if name not in TARGETS:
            close = difflib.get_close_matches(name, [*TARGETS, "all"], n=1)
            raise UsageError(f"unknown target {raw!r}" + (f"; did you mean {close[0]}?" if close else ""),
                             hint=f"targets: {', '.join(TARGETS)}, or all (comma-separated lists work)")
        if name not in out:
            out.append(name)
    if not out:
        raise UsageError("no --target given", hint=f"targets: {', '.join(TARGETS)}, or all")
    return tuple(out)


def get_backend(name: str, device: str = "CPU", trt_options=None) -> Backend:
    name = expand_targets((name,))[0]
    if name == "ort":
        from .onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend()
    if name == "openvino":
        from .openvino import OpenVinoBackend

        return OpenVinoBackend(device)
    from .tensorrt import TensorRTBackend

    return TensorRTBackend(trt_options)


__all__ = ["Artifact", "Backend", "Runner", "TARGETS", "expand_targets", "get_backend"]
