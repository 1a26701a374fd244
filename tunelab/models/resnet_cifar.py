"""ResNet for 32x32 CIFAR images (He et al. 2016, section 4.2), as akamaster/pytorch_resnet_cifar10
builds it, so that its trained weights (the shared resnet20-cifar10 folder) load key for key.

Three stages of n BasicBlocks at 16/32/64 channels (n = 3: ResNet-20), global average pooling,
a linear classifier. A strided block's shortcut is "option A": the identity, subsampled and
zero-padded in channels (no parameters), which is what those weights were trained with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CIFAR10_LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class PadShortcut(nn.Module):
    """Option A: x[:, :, ::2, ::2], with planes // 4 zero channels on each side."""

    def __init__(self, planes: int):
        super().__init__()
        self.pad = planes // 4

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = PadShortcut(planes) if stride != 1 or in_planes != planes else nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    def __init__(self, blocks_per_stage: int = 3, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, blocks_per_stage, 1)
        self.layer2 = self._stage(16, 32, blocks_per_stage, 2)
        self.layer3 = self._stage(32, 64, blocks_per_stage, 2)
        self.linear = nn.Linear(64, num_classes)

    @staticmethod
    def _stage(in_planes: int, planes: int, n: int, stride: int) -> nn.Sequential:
        return nn.Sequential(*(BasicBlock(in_planes if i == 0 else planes, planes, stride if i == 0 else 1)
                               for i in range(n)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))


def resnet20(num_classes: int = 10) -> ResNetCifar:
    return ResNetCifar(3, num_classes)


def strip_module_prefix(state: dict) -> dict:
    """The published checkpoint was saved from nn.DataParallel: every key starts with 'module.'."""
    return {k.removeprefix("module."): v for k, v in state.items()}
