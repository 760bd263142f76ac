"""Function-preserving weight surgery.

``rescale_channel`` multiplies one channel of a block's first BN output by ``factor`` and
divides the next conv's weights for that channel by it. ReLU is positively homogeneous, so
the FP32 function is unchanged (up to rounding) while the activation between them gets an
outlier channel: the inverse of cross-layer equalization, used to make a model hard to
quantize per tensor on purpose (tests, benchmarks).
"""

from __future__ import annotations


def rescale_channel(block, channel: int, factor: float) -> None:
    """In place, on a BasicBlock (bn1 -> ReLU -> conv2); ``factor`` must be > 0."""
    import torch

    if factor <= 0:
        raise ValueError("factor must be > 0 (a ReLU commutes only with positive scaling)")
    with torch.no_grad():
        block.bn1.weight[channel] *= factor
        block.bn1.bias[channel] *= factor
        block.conv2.weight[:, channel] /= factor
