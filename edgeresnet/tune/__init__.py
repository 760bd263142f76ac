"""Accuracy-aware INT8 (``--max-drop``): candidates measured on a validation slice of the
calibration split, cheap fixes first, per-layer sensitivity, the fallback search, and the
latency price of each layer left in float. See ``run.tune``."""
