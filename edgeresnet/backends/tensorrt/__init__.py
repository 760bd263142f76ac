"""TensorRT: the backend, its per-line recipes, the device bundle, FP16 copies, JetPack facts
and `edgeresnet build`."""

from .backend import TensorRTBackend

__all__ = ["TensorRTBackend"]
