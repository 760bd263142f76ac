"""ONNX Runtime sessions: on in-memory graphs with chosen intermediate tensors exposed as
outputs (how calibration observes activations and how the tuner measures candidates), and on
a file the user gave (``user_session``, the one place a runtime's refusal of it is their input's
fault, not ours)."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import InputError, fatal, native_call, require

LEVELS = {"none": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "all": "ORT_ENABLE_ALL"}


def session_with_outputs(model, tensors: list[str], threads: int | None = None, level: str = "all", count: int = 1):
    """A CPU session on ``model`` (a ModelProto) that also returns ``tensors`` (``count`` > 1: a
    list of that many independent sessions, the model serialized once).

    ``level``: ``basic`` keeps every observed tensor (fusions would swallow some), ``none`` runs
    the graph exactly as written (QDQ unfused: the int8 grid's exact arithmetic)."""
    onnx = require("onnx", "torch")
    ort = require("onnxruntime", "ort")
    have = {o.name for o in model.graph.output}
    missing = [t for t in dict.fromkeys(tensors) if t not in have]
    if missing:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in missing)
        model = probe
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
    blob = model.SerializeToString()
    sessions = [ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"]) for _ in range(count)]
    return sessions[0] if count == 1 else sessions


def runtime_present() -> bool:
    """Whether ONNX Runtime is installed (the checks that need it are skipped without it)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _options(ort, level: str | None, optimized_path: Path | None = None):
    """SessionOptions at ``level`` (None: ONNX Runtime's defaults), optionally saving the
    optimized graph to ``optimized_path``."""
    if level is None and optimized_path is None:
        return None
    opts = ort.SessionOptions()
    if level is not None:
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
    if optimized_path is not None:
        opts.optimized_model_filepath = str(optimized_path)
    return opts


def file_session(path: Path, level: str | None = None):
    """A CPU session on an ONNX file this package wrote (its failure is ours, not the user's)."""
    ort = require("onnxruntime", "ort")
    return ort.InferenceSession(str(path), _options(ort, level), providers=["CPUExecutionProvider"])


def user_session(path: Path, level: str | None = None, optimized_path: Path | None = None):
    """A CPU session on the user's ONNX file (checked first by ``onnxfile.check_onnx_file``);
    ``level`` as in ``session_with_outputs`` (None: the runtime's default), ``optimized_path``:
    where ONNX Runtime saves the graph it optimized.

    What the checks cannot name (an op this ONNX Runtime lacks at the file's opset, a graph it
    cannot type) fails here; that is the file's defect, so it becomes one InputError naming the
    file. An interrupt or a full disk is re-raised as such."""
    ort = require("onnxruntime", "ort")
    opts = _options(ort, level, optimized_path)
    try:
        with native_call():
            return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT's errors (Fail, InvalidGraph, NotImplemented, ...) derive from Exception only
        raise _refused(exc, f"ONNX Runtime cannot load {path}") from None


def user_run(sess, path: Path, feeds: dict):
    """``sess.run`` on the user's file: a graph that loads but cannot run our batch (a Reshape to
    a hard-coded batch of 1) is the file's defect too."""
    try:
        with native_call():
            return sess.run(None, feeds)
    except Exception as exc:  # as in user_session
        batch = next(iter(feeds.values())).shape
        raise _refused(exc, f"{path} fails on a batch of shape {list(batch)}") from None


def _refused(exc: Exception, what: str) -> BaseException:
    """An interrupt or a full disk as such; else one InputError, ORT's reason on one line without
    its "[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED :" prefix and C++ source locations."""
    stop = fatal(exc)
    if stop is not None:
        return stop
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    reason = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    reason = re.sub(r"/onnxruntime_src/\S+:\d+ .*?\) ", "", reason)[:300]
    return InputError(f"{what}: {reason}", hint="re-export the model with torch.onnx.export(..., opset_version=17, "
                      "dynamic_axes={'input': {0: 'batch'}}) and standard ONNX ops")
