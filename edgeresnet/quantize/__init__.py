"""Quantization: the encoding per runtime (profile), where Q/DQ goes (plan) and the QDQ graph
(qdq). Import the submodules; this package imports none of them, so the engine registry can
read a Profile without loading numpy."""
