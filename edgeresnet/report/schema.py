"""The report's rows and top-level blocks. ``report.json`` keys are a contract other tools
read: keys may be added, never renamed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ResultRow:
    target: str  # ort | openvino | trt | torch
    precision: str  # fp32 | fp16 | int8
    artifact: str | None = None  # relative to the export dir
    size_bytes: int | None = None
    top1: float | None = None
    top5: float | None = None
    top1_drop_pp: float | None = None  # (fp32 top1 - this top1) * 100, same target
    agreement: float | None = None  # top-1 agreement with fp32 on the same target
    latency_ms: dict[str, float] | None = None
    throughput_ips: float | None = None
    batch: int = 1
    threads: int | None = None
    status: str = "ok"  # ok | skipped | failed
    reason: str | None = None
    per_class_drop_pp: dict[str, float] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    mode: str = "latency"  # latency (one request at a time) | throughput (several in flight)
    peak_memory_mb: float | None = None  # peak RSS of the process that ran it (bench)
    samples_ms: list[float] | None = None  # latency samples (bench; downsampled to <= 2000)
    fallback_layers: list[str] | None = None  # INT8 rows: layers kept in float to meet --max-drop
    kernel: str | None = None  # INT8 rows: the kernel path that ran (u8s8-vnni, u8s8-7bit, jit_avx2_I8, ...)
    # Engines that time themselves as trtexec does (TensorRT, ondevice/trt_device.py): the same
    # statistics as latency_ms for each part of a call, from CUDA events (host clock for enqueue).
    gpu_compute_ms: dict[str, float] | None = None
    h2d_ms: dict[str, float] | None = None
    d2h_ms: dict[str, float] | None = None
    enqueue_ms: dict[str, float] | None = None
    engine_batch: int | None = None  # the batch the engine ran (a static DLA engine pads a smaller request)
    per_image_ms: float | None = None  # p50 latency / engine_batch
    cv_pct: float | None = None  # GPU compute time's coefficient of variation (trtexec warns above 1%)
    # Power and clocks during the run (ondevice/trt_device.py Telemetry.row_columns): "n/a" with the reason where unread
    power_mode: Any = None
    clocks_locked: Any = None
    clocks: Any = None
    avg_w: Any = None
    mj_per_image: Any = None
    images_per_joule: Any = None
    throttled: Any = None
    energy_source: Any = None
    energy_na_reason: Any = None
    clocks_warning: Any = None  # one line when clocks were not locked at their maximum (jetson_clocks)
    throttled_why: Any = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_KINDS = {"str": (str,), "int": (int,), "float": (int, float), "dict": (dict,), "list": (list,), "None": (type(None),),
          "Any": (object,)}


def row_problem(row) -> str | None:
    """What is wrong with one row read back from a file (report.json, bench.json), or None:
    a dict whose every ResultRow field has the type its annotation names (``float | None``
    takes an int or null, never a bool or a string), and latency values that are numbers."""
    if not isinstance(row, dict):
        return f"a row is a {type(row).__name__}, not an object"
    if not (isinstance(row.get("target"), str) and isinstance(row.get("precision"), str)):
        return "a row without a target or precision"
    for name, f in ResultRow.__dataclass_fields__.items():
        if name not in row:
            continue
        kinds = tuple(k for part in str(f.type).split("|") for k in _KINDS[part.strip().split("[")[0]])
        value = row[name]
        if (isinstance(value, bool) and object not in kinds) or not isinstance(value, kinds):
            return f"the {row['target']} {row['precision']} row's '{name}' is {value!r:.40}, not {f.type}"
    for key, value in (row.get("latency_ms") or {}).items():
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return f"the {row['target']} {row['precision']} row's latency '{key}' is not a number"
    return None


@dataclass
class Report:
    model: dict[str, Any]
    calibration: dict[str, Any] | None
    evaluation: dict[str, Any] | None
    results: list[ResultRow]
    fold: dict[str, Any] | None = None
    onnx: dict[str, Any] | None = None
    command: str = ""
    machine: dict[str, Any] | None = None
    version: str = ""
    sensitivity: list[dict[str, Any]] | None = None  # per quantized layer, most harmful first
    tuning: dict[str, Any] | None = None  # --max-drop: budget, validation slice, stages, search, prices
    float_layers: dict[str, Any] | None = None  # --float-layers: what was asked, the layers it named
    golden: dict[str, Any] | None = None  # golden.npz: its images and each artifact's figures on it (bundle/golden.py)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "calibration": self.calibration, "evaluation": self.evaluation,
                "results": [r.to_dict() for r in self.results], "fold": self.fold, "onnx": self.onnx,
                "command": self.command, "machine": self.machine, "edgeresnet_version": self.version,
                "sensitivity": self.sensitivity, "tuning": self.tuning, "float_layers": self.float_layers,
                "golden": self.golden}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Report":
        fields = set(ResultRow.__dataclass_fields__)
        return cls(model=d["model"], calibration=d.get("calibration"), evaluation=d.get("evaluation"),
                   results=[ResultRow(**{k: v for k, v in r.items() if k in fields}) for r in d.get("results", [])],
                   fold=d.get("fold"), onnx=d.get("onnx"), command=d.get("command", ""), machine=d.get("machine"),
                   version=d.get("edgeresnet_version", ""), sensitivity=d.get("sensitivity"), tuning=d.get("tuning"),
                   float_layers=d.get("float_layers"), golden=d.get("golden"))

    def row(self, target: str, precision: str) -> ResultRow | None:
        return next((r for r in self.results if r.target == target and r.precision == precision), None)
