"""Calibration: activation statistics (observers) -> a calibration table (table), measured on
the FP32 graph (collect). Import the submodules; this package imports none of them, so a stage
that only reads a table (engines) does not load the observers. The scale math they feed lives
in quantize.scheme."""
