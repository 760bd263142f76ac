"""ResNet architectures and their registry."""

from .registry import ArchSpec, build_model, get_arch, list_models

__all__ = ["ArchSpec", "build_model", "get_arch", "list_models"]
