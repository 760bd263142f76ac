"""Calibration: activation statistics (observers) -> a calibration table."""

from .observers import (
    DEFAULT_BINS,
    METHODS,
    MIN_AMAX,
    HistogramObserver,
    dequantize,
    quantize_symmetric,
    weight_scales,
)

__all__ = [
    "DEFAULT_BINS",
    "METHODS",
    "MIN_AMAX",
    "HistogramObserver",
    "dequantize",
    "quantize_symmetric",
    "weight_scales",
]
