"""The accuracy-budget flags as one checked value: cheap to import, so `export` without
--max-drop never loads the tuner."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError

FIX_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class TuneOptions:
    max_drop: float | None = None  # pp of top-1 on the validation slice
    val_size: int = 2000
    bias_correction: str = "auto"
    layer_methods: str = "auto"
    sensitivity: bool = False  # compute the table even without a budget

    def __post_init__(self):
        for name in ("bias_correction", "layer_methods"):
            if getattr(self, name) not in FIX_MODES:
                flag = name.replace("_", "-")
                raise UsageError(f"--{flag} must be one of {', '.join(FIX_MODES)}, got {getattr(self, name)!r}")
        if self.max_drop is not None and not 0 <= self.max_drop <= 100:  # NaN fails both
            raise UsageError(f"--max-drop must be from 0 to 100 (percentage points of top-1), got {self.max_drop}")
        if not 1 <= self.val_size <= 1_000_000:
            raise UsageError(f"--val-size must be from 1 to 1,000,000, got {self.val_size}")

    @property
    def active(self) -> bool:
        return self.max_drop is not None or self.sensitivity or "on" in (self.bias_correction, self.layer_methods)
