"""The typed engine contract: what every engine declares and implements.

An engine is one class that subclasses :class:`Backend` and registers itself
(``@registry.register``). It declares, as class attributes, what it takes (:class:`Input`), the
options it accepts (:class:`OptionSpec`: the CLI's flags and the runtime's keywords are built from
them), what it can do (:class:`Capabilities`) and the QDQ encoding of its INT8 artifact; it
implements the abstract methods below (available? build, load, precision of a file, runtime facts,
INT8 kernel). A missing declaration is a ``TypeError`` at registration, naming what is missing: the
rest of the package reads every one of them directly, never through a ``getattr`` default.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import UsageError
from ..quantize.profile import Profile

if TYPE_CHECKING:  # numpy, onnx and torch stay unloaded until an engine runs (the CLI starts without them)
    import numpy as np

    from ..calibrate.table import CalibrationTable
    from ..quantize.recipe import Candidate

Runner = Callable[["np.ndarray"], "np.ndarray"]

DEFAULT_BATCH_RANGE = (1, 8, 32)  # min, opt, max batch of a TensorRT optimization profile


class Input(enum.Enum):
    """What an engine's ``build`` reads from :class:`BuildInputs`."""

    FP32_ONNX = "fp32_onnx"  # the folded FP32 ONNX
    QDQ_ONNX = "qdq_onnx"  # a Q/DQ ONNX in the engine's ``qdq_profile`` encoding
    TABLE = "table"  # the calibration table (and the tuned recipe on top of it)
    TORCH_MODEL = "torch_model"  # the folded torch model (absent for an ONNX source)


@dataclass(frozen=True)
class OptionSpec:
    """One option an engine accepts: a CLI flag (``export``, and ``build`` for engines built on the
    device) and a keyword of the runtime. ``type`` and ``default`` are the flag's (what the user
    types); ``parse`` turns that into the engine's value and ``choices`` limits it."""

    flag: str  # "--trt-version": the flag name is a contract, never renamed
    type: Any  # the flag's type as typer reads it: str, int, bool, int | None, ...
    default: Any
    help: str
    choices: tuple = ()
    parse: Callable[[Any], Any] | None = None  # flag value -> engine value, raising UsageError
    # `edgeresnet build` (engines with capabilities.device_build): the flag's help there, where it
    # overrides the bundle's value (its default there is always None: the bundle's); None: not a
    # build flag. ``plan_only``: on build, only with --dry-run (what to plan for, not what to build).
    device_help: str | None = None
    plan_only: bool = False

    @property
    def key(self) -> str:
        """The keyword of the options mapping and the CLI parameter: ``--trt-version`` -> ``trt_version``."""
        return self.flag.lstrip("-").replace("-", "_")

    def value(self, raw: Any) -> Any:
        """The engine's value of a flag value (the default when ``raw`` is None and the default is not)."""
        raw = self.default if raw is None else raw
        if self.choices and raw not in self.choices and raw is not None:
            raise UsageError(f"{self.flag} {raw!r} is not one of {', '.join(map(str, self.choices))}")
        return self.parse(raw) if self.parse is not None and raw is not None else raw

    def device_value(self, raw: Any) -> Any:
        """The engine's value of this flag on `edgeresnet build`: None (not given) stays None, the
        bundle's value."""
        return None if raw is None else self.value(raw)


@dataclass(frozen=True)
class Capabilities:
    """What the bench, the runtime and `edgeresnet build` may rely on an engine for."""

    thread_safe: bool  # one loaded runner may be called from several threads at once
    splits_threads_per_request: bool = False  # bench throughput: each request in flight gets threads / requests
    # Kernel path -> QDQ profile of an extra INT8 file for CPUs whose kernels need another encoding;
    # ``load`` picks the file for the CPU it runs on (ONNX Runtime's 7-bit twin). Most engines have none.
    qdq_variants: Mapping[str, Profile] = field(default_factory=dict)
    self_timed: bool = False  # implements ``bench_block``: loads and times itself (CUDA events, ...)
    device_build: bool = False  # export writes a bundle (``prepare``); `edgeresnet build` builds it on the device
    optimal_requests: bool = False  # ``load`` records details["optimal_requests"] for throughput blocks


@dataclass
class Skip:
    """What ``prepare`` returns when the engine is not built here: why, and where to go next."""

    reason: str
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceJob:
    """What an engine's ``device_job`` hands `edgeresnet build`: the backend configured for this
    device, the bundle's files it builds from, and where its engines go."""

    backend: Backend
    fp32_onnx: Path
    artifacts_dir: Path
    qdq_paths: dict[str, Path] = field(default_factory=dict)  # profile name -> the bundle's QDQ ONNX
    fallback_layers: tuple[str, ...] = ()  # layers the INT8 engines keep in float
    eval_spec: str | None = None  # the evaluation data the export named (a --eval given to build wins)


@dataclass(frozen=True)
class BuildInputs:
    """Everything an engine's ``build`` may read; each engine takes what its ``takes`` says.

    New engines need no change here: the FP32 ONNX, any QDQ encoding (written once, lazily), the
    calibration table and the tuned recipe, the folded torch model and a few calibration images."""

    fp32_onnx: Path
    chw: tuple[int, int, int]
    work: Path  # the export's folder (files the engine writes beside its artifact)
    write_qdq: Callable[[Profile], Path]
    table: CalibrationTable | None = None
    candidate: Candidate | None = None  # tuned scales, biases and float layers (None: the table's scales)
    torch_model: Any = None  # the folded torch model; None for an ONNX source
    calibration_batch: np.ndarray | None = None  # a few preprocessed calibration images, NCHW float32
    fp32_proto: Any = None  # the FP32 ONNX already loaded (None: read from ``fp32_onnx`` on demand)

    def qdq(self, profile: Profile) -> Path:
        """The QDQ ONNX of ``profile``, written on first use and shared by the engines that read it."""
        return self.write_qdq(profile)

    @property
    def recipe(self) -> Candidate | None:
        """What INT8 is built from: the tuned candidate, else the table's scales; None without a table."""
        if self.candidate is not None:
            return self.candidate
        if self.table is None:
            return None
        from ..quantize.recipe import Candidate

        return Candidate(self.table.scales)

    def proto(self):
        """The FP32 ONNX as an ``onnx.ModelProto``."""
        if self.fp32_proto is not None:
            return self.fp32_proto
        from ..errors import require

        return require("onnx", "torch").load(str(self.fp32_onnx))


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
    target: str  # a registered engine name, or torch
    precision: str  # fp32 | fp16 | int8
    path: Path
    details: dict = field(default_factory=dict)  # e.g. the QDQ profile, the precision and kernel that ran


def file_precision_from_name(path: Path) -> str | None:
    """The precision an edgeresnet file name says (``model.int8.ort.onnx``), else None."""
    name = path.name.lower()
    return next((p for p in ("int8", "fp16", "bf16", "fp32") if p in name), None)


class Backend(ABC):
    """One engine. Subclass it, fill in every declaration and method, ``@register`` it.

    Declarations (class attributes; ``registry.register`` refuses a class missing one):
    ``name`` (the ``target`` of report rows and manifests), ``suffixes`` (artifact files `bench FILE`
    recognises), ``extra`` and ``libraries`` (the pip extra that installs it, the distributions
    `doctor` and the manifest report), ``takes`` (frozenset of :class:`Input`), ``option_specs``
    (tuple of :class:`OptionSpec`), ``capabilities`` (:class:`Capabilities`) and ``qdq_profile``
    (the encoding of its INT8 QDQ ONNX; None for an engine that does not take ``QDQ_ONNX``).
    With defaults: ``aliases``, ``preference`` (lower is tried first), ``install_hint`` (None:
    install the extra), ``bundle`` (the folder ``prepare`` writes, for device-built engines).

    Constructed with the values of its options (keyed by :attr:`OptionSpec.key`); ``self.options``
    holds every one of them, defaults filled in and parsed."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("name", "suffixes", "extra", "libraries", "takes", "option_specs",
                                            "capabilities", "qdq_profile")

    name: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]]
    extra: ClassVar[str]
    libraries: ClassVar[tuple[str, ...]]
    takes: ClassVar[frozenset[Input]]
    option_specs: ClassVar[tuple[OptionSpec, ...]]
    capabilities: ClassVar[Capabilities]
    qdq_profile: ClassVar[Profile | None]
    aliases: ClassVar[tuple[str, ...]] = ()
    preference: ClassVar[int] = 50
    install_hint: ClassVar[str | None] = None
    bundle: ClassVar[str | None] = None
    # capabilities.device_build: the files of ``bundle`` a device build starts from, checked to exist
    # before anything else is read (a folder that is not such an export is told so first)
    device_files: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options: dict[str, Any] = option_values(self.option_specs, options or {})

    @abstractmethod
    def unavailable_reason(self) -> str | None:
        """None when the engine can run here, else one line naming what is missing and the fix."""

    @abstractmethod
    def precisions(self, int8: bool) -> list[str]:
        """What it builds here, fp32 first: fp32, then fp16/bf16 where supported, then int8."""

    @abstractmethod
    def build(self, inputs: BuildInputs, precision: str, out_dir: Path) -> Artifact:
        """This engine's deployable artifact of ``precision``, from what ``takes`` names in ``inputs``."""

    @abstractmethod
    def load(self, artifact: Artifact, threads: int | None = None, mode: str = "latency") -> Runner:
        """A callable: float32 NCHW batch -> logits (see ``capabilities.thread_safe``).
        ``mode`` "throughput" tunes for several requests in flight (OpenVINO's THROUGHPUT
        hint). Records what really runs in ``artifact.details``: the precision a runtime chose,
        and for INT8 the ``kernel`` path (e.g. ``u8s8-vnni``, ``u8s8-7bit``, ``jit_avx2_I8``)."""

    @abstractmethod
    def int8_kernel(self) -> tuple[str, str]:
        """The INT8 kernel path this engine takes on this CPU and what it means for accuracy and
        speed, for `doctor`; ("", reason) where it cannot tell without a model."""

    @abstractmethod
    def input_chw(self, path: Path) -> tuple[int, int, int]:
        """(channels, height, width) of the artifact's input."""

    @abstractmethod
    def precision_of(self, path: Path) -> str | None:
        """The precision of an artifact file of this engine (fp32, fp16, int8, ...), read the way
        the engine knows; None when it cannot tell. Nothing outside the engine sniffs its files."""

    @classmethod
    @abstractmethod
    def runtime_facts(cls) -> dict[str, Any]:
        """For `doctor` and the machine facts: what the installed runtime sees (execution
        providers, devices, delegates), keyed ``<something>`` -> a list or a string. Called only
        when its ``libraries`` are installed."""

    @classmethod
    def board_facts(cls, root: str = "/") -> dict[str, Any] | None:
        """For `doctor`: facts of the board this engine's runtime ships with (a Jetson's L4T,
        JetPack, the runtime line it carries and how it installs), read under ``root``; None when
        this machine is not such a board. Most engines have none."""
        return None

    @classmethod
    def runtime_labels(cls) -> dict[str, str]:
        """`doctor`'s row label of each ``runtime_facts`` key (default: the key with spaces)."""
        return {}

    def prepare(self, ctx) -> Skip | None:
        """Before the INT8 build: engines with ``capabilities.device_build`` write their device
        bundle into the engine stage's context; a :class:`Skip` when nothing is built here."""
        return None

    def prepares_only(self) -> bool:
        """True when this engine writes its device bundle and builds nothing here (--prepare-only):
        export does not refuse it for a runtime missing here."""
        return False

    def bench_block(self, artifact: Artifact, spec: dict) -> dict:
        """One bench block timed by the engine itself (``capabilities.self_timed``)."""
        raise TypeError(f"{self.name} does not time itself (capabilities.self_timed is False)")

    def device_job(self, bundle, options: Mapping[str, Any]) -> DeviceJob:
        """`edgeresnet build` on the device (``capabilities.device_build``): check what the engine's
        part of ``bundle`` (a ``bundle.Bundle``, opened and hash-checked by the caller) names, and
        say what to build; ``export.device_build`` builds, evaluates, times and publishes it the
        same way for every such engine."""
        raise TypeError(f"{self.name} is not built on the device (capabilities.device_build is False)")

    def device_plan(self, bundle, options: Mapping[str, Any]) -> dict:
        """`edgeresnet build --dry-run`: what ``device_job`` would build, as JSON (``capabilities.device_build``)."""
        raise TypeError(f"{self.name} is not built on the device (capabilities.device_build is False)")


def option_values(specs: tuple[OptionSpec, ...], given: Mapping[str, Any]) -> dict[str, Any]:
    """Every option of ``specs`` from the flat ``given`` mapping, defaults filled in and parsed."""
    return {s.key: s.value(given.get(s.key)) for s in specs}
