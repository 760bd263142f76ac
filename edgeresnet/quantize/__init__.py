"""Quantization: the grid math (scheme), the encoding per runtime (profile), where Q/DQ goes
(plan), the QDQ graph (qdq) and the recipe it is emitted from (recipe). Import the submodules;
this package imports none of them, so the engine registry can read a Profile without loading
numpy."""
