"""The classic ResNet family, written so state_dict keys match torchvision's.

Three shapes share the building blocks below:

* ImageNet-style (``resnet18`` ... ``resnet152``): 7x7/2 stem and max-pool, four stages,
  BasicBlock or Bottleneck with the stride on the 3x3 ("v1.5"), 1x1 projection shortcuts.
* CIFAR-style (``resnet20`` ... ``resnet110``, depth 6n+2): 3x3 stem, three stages of
  widths 16/32/64.
* Pre-activation ("Identity Mappings", v2) variants of both: BN -> ReLU -> conv inside
  every unit, identity paths left clean, one final BN + ReLU before pooling.

Attribute names (``conv1``, ``bn1``, ``layerN``, ``downsample``, ``fc``) are torchvision's
on purpose: users load their own torchvision checkpoints unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class PadShortcut(nn.Module):
    """Parameter-free "option A" shortcut of the CIFAR paper: subsample, zero-pad channels."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        # Known at build time, so the module traces (torch.fx, ONNX) without reading shapes.
        extra = planes - in_planes
        self.padding = (0, 0, 0, 0, extra // 2, extra - extra // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.pad(x[:, :, :: self.stride, :: self.stride], self.padding)


def _shortcut(in_planes: int, planes: int, stride: int, kind: str, bn: bool) -> nn.Module | None:
    if stride == 1 and in_planes == planes:
        return None
    if kind == "A":
        return PadShortcut(in_planes, planes, stride)
    if bn:
        return nn.Sequential(conv1x1(in_planes, planes, stride), nn.BatchNorm2d(planes))
    return nn.Sequential(conv1x1(in_planes, planes, stride))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B") -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _shortcut(in_planes, planes, stride, shortcut, bn=True)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B") -> None:
        super().__init__()
        width = planes
        self.conv1 = conv1x1(in_planes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_planes, planes * self.expansion, stride, shortcut, bn=True)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class PreActBasicBlock(nn.Module):
    """Full pre-activation unit: BN -> ReLU -> conv, twice; the identity path stays clean."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B") -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU(inplace=False)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.downsample = _shortcut(in_planes, planes, stride, shortcut, bn=False)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        # A projection sees the pre-activated input, as in the paper's full pre-activation unit.
        identity = x if self.downsample is None else self.downsample(pre)
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + identity


class PreActBottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B") -> None:
        super().__init__()
        width = planes
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU(inplace=False)
        self.conv1 = conv1x1(in_planes, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.downsample = _shortcut(in_planes, planes * self.expansion, stride, shortcut, bn=False)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        identity = x if self.downsample is None else self.downsample(pre)
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + identity


Block = type[BasicBlock] | type[Bottleneck] | type[PreActBasicBlock] | type[PreActBottleneck]


class ResNet(nn.Module):
    """One class for every member; the builders in ``registry`` pick the shape.

    ``widths`` gives each stage's planes, ``stem`` is ``"imagenet"`` (7x7/2 + max-pool) or
    ``"small"`` (3x3/1, no pool: CIFAR-style nets and ImageNet-style nets on 28-64 px).
    """

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        widths: Sequence[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        stem: str = "imagenet",
        preact: bool = False,
        shortcut: str = "B",
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if len(layers) != len(widths):
            raise ValueError("layers and widths must have the same length")
        self.preact = preact
        self.in_planes = widths[0]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        elif stem == "small":
            self.conv1 = conv3x3(in_channels, widths[0])
            self.maxpool = nn.Identity()
        else:
            raise ValueError(f"unknown stem {stem!r}: use 'imagenet' or 'small'")
        # v2 nets have no BN after the stem: the first unit's own BN pre-activates it.
        self.bn1: nn.Module = nn.Identity() if preact else nn.BatchNorm2d(widths[0])
        self.relu = nn.Identity() if preact else nn.ReLU(inplace=True)
        for i, (planes, blocks) in enumerate(zip(widths, layers)):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", self._make_layer(block, planes, blocks, stride, shortcut))
        self.num_stages = len(layers)
        # v2 nets end with BN + ReLU ("post-activation") before pooling.
        self.final_bn: nn.Module = nn.BatchNorm2d(self.in_planes) if preact else nn.Identity()
        self.final_relu: nn.Module = nn.ReLU(inplace=True) if preact else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.in_planes, num_classes)
        self._init_weights(zero_init_residual)

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int, shortcut: str) -> nn.Sequential:
        units = [block(self.in_planes, planes, stride, shortcut)]
        self.in_planes = planes * block.expansion
        units += [block(self.in_planes, planes, 1, shortcut) for _ in range(1, blocks)]
        return nn.Sequential(*units)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if hasattr(m, "last_bn"):
                    nn.init.zeros_(m.last_bn().weight)

    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in self.stages():
            x = stage(x)
        x = self.final_relu(self.final_bn(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))
