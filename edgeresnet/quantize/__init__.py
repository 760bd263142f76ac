"""Quantization: where Q/DQ goes (plan) and the QDQ graph per backend profile (qdq)."""

from .plan import QuantPlan, plan
from .qdq import Profile, emit_qdq

__all__ = ["Profile", "QuantPlan", "emit_qdq", "plan"]
