"""edgeresnet: a ResNet from PyTorch to a fast, verified INT8 engine on edge hardware.

The public API; importing it loads no runtime (torch, onnxruntime, openvino) until used.
"""

from ._version import __version__
from .models.registry import list_models


def build_model(name: str, num_classes: int = 1000, in_channels: int = 3, **options):
    """Build a registered ResNet (torchvision-compatible keys). See ``edgeresnet.models``."""
    from .models.registry import build_model as _build

    return _build(name, num_classes=num_classes, in_channels=in_channels, **options)


def load(path: str, arch: str | None = None):
    """Load a checkpoint (``default``, an edgeresnet .pt/.safetensors, or a plain state_dict
    with ``arch``) without executing code from it. Returns (model, meta)."""
    from .models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path, arch=arch)
    return ckpt.model, ckpt.meta


__all__ = ["__version__", "build_model", "list_models", "load"]
