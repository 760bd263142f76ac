"""Builders registered by name. ``build_model("resnet20", num_classes=10, in_channels=1)``."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InputError


@dataclass(frozen=True)
class ArchSpec:
    """What a name means: block type, stage depths and widths, stem, pre-activation."""

    name: str
    family: str  # "imagenet" or "cifar"
    block: str  # "basic" or "bottleneck"
    layers: tuple[int, ...]
    preact: bool = False

    @property
    def widths(self) -> tuple[int, ...]:
        return (64, 128, 256, 512) if self.family == "imagenet" else (16, 32, 64)

    @property
    def depth(self) -> int:
        per_block = 2 if self.block == "basic" else 3
        return per_block * sum(self.layers) + 2


_REGISTRY: dict[str, ArchSpec] = {}


def register(spec: ArchSpec) -> ArchSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"architecture {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


_IMAGENET = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
             101: ("bottleneck", (3, 4, 23, 3)), 152: ("bottleneck", (3, 8, 36, 3))}
for _depth, (_block, _layers) in _IMAGENET.items():
    register(ArchSpec(f"resnet{_depth}", "imagenet", _block, _layers))
    register(ArchSpec(f"preact_resnet{_depth}", "imagenet", _block, _layers, preact=True))
for _depth in (20, 32, 44, 56, 110):
    _n = (_depth - 2) // 6
    register(ArchSpec(f"resnet{_depth}", "cifar", "basic", (_n, _n, _n)))
    register(ArchSpec(f"preact_resnet{_depth}", "cifar", "basic", (_n, _n, _n), preact=True))


def list_models() -> list[str]:
    """Every registered architecture name, sorted by family then depth."""
    return sorted(_REGISTRY, key=lambda n: (_REGISTRY[n].preact, _REGISTRY[n].family, _REGISTRY[n].depth))


def get_arch(name: str) -> ArchSpec:
    """The spec for ``name``; a typo gets the close matches in the error."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise InputError(
            f"unknown architecture {name!r}.{hint}", hint="`edgeresnet models` lists them all"
        ) from None


SMALL_INPUT_MAX = 64  # px: at or below, ImageNet-style nets default to the 3x3/1 stem


def default_small_input(name: str, size: int) -> bool:
    """Whether ``name`` at ``size`` px takes the small stem by default: the 7x7/2 stem and max-pool
    would shrink a 28 px image to 7 px before the first block. CIFAR nets always have it."""
    return get_arch(name).family == "imagenet" and size <= SMALL_INPUT_MAX


def build_model(
    name: str,
    num_classes: int = 1000,
    in_channels: int = 3,
    small_input: bool | None = None,
    zero_init_residual: bool = False,
    shortcut: str = "B",
):
    """Build a registered ResNet with Kaiming-initialised weights.

    ``small_input`` swaps the ImageNet 7x7/2 stem and max-pool for a 3x3/1 stem, for 28-64 px
    images; CIFAR-style nets always have it. ``shortcut`` "A" is the CIFAR paper's
    parameter-free zero-padding shortcut, "B" (default) a 1x1 projection, which every
    inference engine fuses well.
    """
    from .resnet import (
        BasicBlock,
        Bottleneck,
        PreActBasicBlock,
        PreActBottleneck,
        ResNet,
    )

    spec = get_arch(name)
    if num_classes < 1 or in_channels < 1:
        raise InputError(f"num_classes and in_channels must be >= 1 (got {num_classes}, {in_channels})")
    if shortcut not in ("A", "B"):
        raise InputError(f"unknown shortcut {shortcut!r}", hint="use 'A' (zero-pad) or 'B' (projection)")
    blocks: dict[tuple[str, bool], Callable] = {
        ("basic", False): BasicBlock, ("bottleneck", False): Bottleneck,
        ("basic", True): PreActBasicBlock, ("bottleneck", True): PreActBottleneck,
    }
    stem = "small" if spec.family == "cifar" or small_input else "imagenet"
    return ResNet(
        blocks[(spec.block, spec.preact)], spec.layers, spec.widths, num_classes=num_classes,
        in_channels=in_channels, stem=stem, preact=spec.preact, shortcut=shortcut,
        zero_init_residual=zero_init_residual,
    )
