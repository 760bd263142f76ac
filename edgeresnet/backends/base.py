"""The one small interface every engine implements: available? build an artifact, load and run it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..quantize.profile import Profile

if TYPE_CHECKING:  # numpy stays unloaded until an engine runs (the CLI starts without it)
    import numpy as np

Runner = Callable[["np.ndarray"], "np.ndarray"]

DEFAULT_BATCH_RANGE = (1, 8, 32)  # min, opt, max batch of a TensorRT optimization profile


@dataclass(frozen=True)
class EngineOptions:
    """What the user may set for any engine; each backend reads the fields it uses."""

    device: str = "CPU"  # OpenVINO's device name (CPU, GPU, NPU)
    batch_range: tuple[int, int, int] = DEFAULT_BATCH_RANGE  # engines with fixed optimization profiles
    dla_core: int | None = None  # Jetson DLA core (TensorRT)
    prepare_only: bool = False  # engines built on the device: write their bundle, build nothing here
    trt_version: str | None = None  # the TensorRT the device has (its recipe: backends/tensorrt_recipes); None: 10.3


@dataclass
class Skip:
    """What ``prepare`` returns when the engine is not built here: why, and where to go next."""

    reason: str
    details: dict = field(default_factory=dict)


def variant_paths(path: Path, details: dict | None) -> dict[str, Path]:
    """Kernel path -> file that replaces ``path`` on CPUs taking that path (same folder).
    ONNX Runtime's INT8 ships a 7-bit-weight twin for x86 without VNNI (see quantize.qdq)."""
    variants = (details or {}).get("variants") or {}
    return {kernel: path.parent / Path(name).name for kernel, name in variants.items()}


def artifact_files(path: Path, details: dict | None = None) -> list[Path]:
    """The files an artifact consists of: an OpenVINO IR is its .xml plus its .bin; an ORT
    INT8 model its per-CPU variants."""
    binary = path.with_suffix(".bin")
    files = [path, binary] if path.suffix == ".xml" and binary.exists() else [path]
    return files + [p for p in variant_paths(path, details).values() if p not in files]


def artifact_size(path: Path) -> int:
    """Bytes one machine loads (the main file; a variant is the same size)."""
    return sum(p.stat().st_size for p in artifact_files(path))


@dataclass
class Artifact:
    target: str  # ort | openvino | trt | torch
    precision: str  # fp32 | fp16 | int8
    path: Path
    details: dict = field(default_factory=dict)  # e.g. the QDQ profile, the precision and kernel that ran


class Backend(Protocol):
    """One engine. Registered with ``@registry.register``; see backends/registry.py for the
    class attributes the rest of the package reads (name, aliases, suffixes, extra, ...).
    Constructed with an :class:`EngineOptions`. May define ``prepare(ctx) -> Skip | None``:
    called before its INT8 build, with the engine stage's context (TensorRT writes its
    device bundle there)."""

    name: str
    qdq_profile: Profile  # the QDQ encoding its INT8 artifact is built from
    # Kernel path -> QDQ profile of an extra INT8 file for CPUs whose kernels need another
    # encoding; ``load`` picks the file for the CPU it runs on. Most engines have none.
    qdq_variants: dict[str, Profile]

    def unavailable_reason(self) -> str | None:
        """None when the engine can run here, else one line naming what is missing and the fix."""

    def precisions(self, int8: bool) -> list[str]:
        """What it builds here, fp32 first: fp32, then fp16/bf16 where supported, then int8."""

    def build(self, source: Path, precision: str, out_dir: Path) -> Artifact:
        """Turn an ONNX file (FP32, or QDQ for int8) into this engine's deployable artifact."""

    def load(self, artifact: Artifact, threads: int | None = None, mode: str = "latency") -> Runner:
        """A callable: float32 NCHW batch -> logits, safe to call from several threads.
        ``mode`` "throughput" tunes for several requests in flight (OpenVINO's THROUGHPUT
        hint). Records what really runs in ``artifact.details``: the precision a runtime chose,
        and for INT8 the ``kernel`` path (e.g. ``u8s8-vnni``, ``u8s8-7bit``, ``jit_avx2_I8``)."""

    def int8_kernel(self) -> tuple[str, str]:
        """The INT8 kernel path this engine takes on this CPU and what it means for accuracy and
        speed, for `doctor`; ("", reason) where it cannot tell without a model."""

    def input_chw(self, path: Path) -> tuple[int, int, int]:
        """(channels, height, width) of the artifact's input."""
