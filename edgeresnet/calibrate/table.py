"""The calibration table: the contract between calibration and quantization.

Calibration writes it once; every backend's QDQ graph, the TensorRT calibration cache and a
later ``--calib-table`` run read it. It records how it was made (method, images and where
they came from, preprocessing) and the SHA-256 of the weights it was measured on, so a table
is never applied to a model it does not belong to.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .._version import __version__
from ..errors import InputError
from ..quantize.scheme import QMAX

FORMAT = "edgeresnet-calibration/1"


@dataclass
class CalibrationTable:
    method: str
    images: int
    source: str
    weights_sha256: str
    preprocess: dict
    amax: dict[str, float]  # tensor -> clipping threshold of the chosen method
    amax_by_method: dict[str, dict[str, float]] = field(default_factory=dict)
    percentile: float | None = None
    image_indices: list[int] = field(default_factory=list)
    seconds: float = 0.0
    version: str = __version__
    # How the run went (not part of the thresholds): this process's peak memory while it ran,
    # its speed, the images per ORT run, the memory budget that sized them, and the update's path.
    peak_mb: float | None = None
    images_per_s: float | None = None
    chunk_images: int | None = None
    memory_mb: int | None = None
    histogram: str | None = None  # "compiled" or "numpy": which update ran (the same counts either way)

    @property
    def scales(self) -> dict[str, float]:
        return {t: a / QMAX for t, a in self.amax.items()}

    def with_method(self, method: str) -> "CalibrationTable":
        """The same statistics read with another method (all four are kept per tensor)."""
        if method not in self.amax_by_method:
            raise InputError(f"the calibration table has no {method!r} thresholds")
        return CalibrationTable(**{**asdict(self), "method": method, "amax": dict(self.amax_by_method[method])})

    def to_json(self) -> dict:
        d = asdict(self)
        d["scales"] = self.scales
        return {"format": FORMAT, **d}

    def save(self, path: Path) -> None:
        from ..core.outdir import atomic_write

        atomic_write(path, lambda p: p.write_text(json.dumps(self.to_json(), indent=1)))

    @classmethod
    def load(cls, path: Path) -> "CalibrationTable":
        from ..core.outdir import read_json

        d = read_json(path, hint="pass the calibration.json of an earlier export")
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise InputError(f"{path} is not an edgeresnet calibration table")
        d.pop("format")
        d.pop("scales", None)
        try:
            return cls(**d)
        except TypeError as exc:
            raise InputError(f"{path}: malformed calibration table ({exc})") from None

    def check_weights(self, sha256: str, path: Path | str = "the table") -> None:
        if sha256 != self.weights_sha256:
            raise InputError(f"{path} was calibrated on other weights (SHA-256 differs)",
                             hint="recalibrate (drop --calib-table): weights changed since the table was made")


def weights_sha256(model) -> str:
    """SHA-256 over an ONNX graph's initializers (names and bytes), in name order."""
    h = hashlib.sha256()
    for init in sorted(model.graph.initializer, key=lambda i: i.name):
        h.update(init.name.encode())
        h.update(init.raw_data if init.raw_data else init.SerializeToString())
    return h.hexdigest()
