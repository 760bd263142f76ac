"""The one small interface every engine implements: available? build an artifact, load and run it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

Runner = Callable[[np.ndarray], np.ndarray]


def artifact_files(path: Path) -> list[Path]:
    """The files an artifact consists of: an OpenVINO IR is its .xml plus its .bin."""
    binary = path.with_suffix(".bin")
    return [path, binary] if path.suffix == ".xml" and binary.exists() else [path]


def artifact_size(path: Path) -> int:
    return sum(p.stat().st_size for p in artifact_files(path))


@dataclass
class Artifact:
    target: str  # ort | openvino | trt | torch
    precision: str  # fp32 | fp16 | int8
    path: Path
    details: dict = field(default_factory=dict)  # e.g. the QDQ profile, the precision that ran


class Backend(Protocol):
    name: str
    qdq_profile: str  # which QDQ encoding its INT8 artifact is built from (see quantize.qdq.PROFILES)

    def unavailable_reason(self) -> str | None:
        """None when the engine can run here, else one line naming what is missing and the fix."""

    def precisions(self, int8: bool) -> list[str]:
        """What it builds here, fp32 first: fp32, then fp16/bf16 where supported, then int8."""

    def build(self, source: Path, precision: str, out_dir: Path) -> Artifact:
        """Turn an ONNX file (FP32, or QDQ for int8) into this engine's deployable artifact."""

    def load(self, artifact: Artifact, threads: int | None = None, mode: str = "latency") -> Runner:
        """A callable: float32 NCHW batch -> logits, safe to call from several threads.
        ``mode`` "throughput" tunes for several requests in flight (OpenVINO's THROUGHPUT
        hint). May record what really runs (the precision a runtime chose) in ``artifact.details``."""

    def input_chw(self, path: Path) -> tuple[int, int, int]:
        """(channels, height, width) of the artifact's input."""
