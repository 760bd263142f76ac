"""Calibration: activation statistics (observers) -> a calibration table. The scale math
they feed lives in quantize.scheme."""

from .observers import DEFAULT_BINS, METHODS, MIN_AMAX, HistogramObserver

__all__ = ["DEFAULT_BINS", "METHODS", "MIN_AMAX", "HistogramObserver"]
