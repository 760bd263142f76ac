"""Checks on files users hand us that are not checkpoints: ONNX models (onnx.checker, external
data confined to the model's folder) and what calibration and evaluation data look like."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError
from .progress import stderr

CALIB_BATCH = 64


def check_onnx_file(path: Path) -> None:
    """Refuse a truncated or malformed ONNX file, or one whose external data points outside its
    folder (a model must not read arbitrary files on the machine that loads it)."""
    try:
        import onnx
    except ImportError:  # runtime-only install: the runtime's own parser is the check
        return _check_with_runtime(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise InputError(f"{path} is not a valid ONNX file (truncated or corrupt?): {type(exc).__name__}") from None
    folder = path.parent.resolve()
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            target = (folder / location).resolve()
            if folder not in target.parents:
                raise InputError(f"{path}: tensor {tensor.name!r} reads external data outside the model's folder "
                                 f"({location})", hint="refusing to load it; external data must sit beside the model")
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise InputError(f"{path} fails onnx.checker: {str(exc).splitlines()[0]}") from None


def _check_with_runtime(path: Path) -> None:
    try:
        import onnxruntime as ort
    except ImportError:
        return
    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise InputError(f"{path} is not a loadable ONNX file: {str(exc).splitlines()[0]}") from None


def warn_skipped(data, role: str) -> None:
    skipped = getattr(data, "skipped", None)
    if skipped:
        stderr.print(f"warning: skipped {len(skipped)} unreadable image(s) in the {role} data "
                     f"(first: {skipped[0][1]}); --strict makes this fatal", markup=False)


def check_calibration_set(labels: np.ndarray | None, indices: np.ndarray, num_classes: int | None) -> None:
    """Warn when calibration is thin: fewer images than one batch, or classes missing."""
    if len(indices) < CALIB_BATCH:
        stderr.print(f"warning: only {len(indices)} calibration images (fewer than one batch of {CALIB_BATCH}); "
                     "scales may be noisy: 300-1000 is the norm", markup=False)
    if labels is not None and num_classes:
        seen = len(np.unique(labels[indices]))
        if seen < num_classes:
            stderr.print(f"warning: the calibration images cover {seen} of {num_classes} classes; "
                         "activations of the missing classes are not measured", markup=False)
