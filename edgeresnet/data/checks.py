"""Checks on what calibration and evaluation data look like (ONNX files are checked in
``onnxfile``)."""

from __future__ import annotations

import numpy as np

from ..core.progress import stderr

CALIB_BATCH = 64


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
