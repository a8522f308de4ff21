"""The CIFAR ResNet family of He et al. (2016) with "option A" shortcuts (resnet20/32/44/56/110).

Layer names match the public checkpoints in ../shared/models (after stripping `module.`)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.core.errors import ModelError
from pipeline.models.specs import Preprocessing

DEPTHS = (20, 32, 44, 56, 110)


class OptionAShortcut(nn.Module):
    """Subsample by 2 and zero-pad the channel axis; no parameters. The pad width is a constant of
    the forward pass, which dependency tracing cannot see (the surgery detects this)."""

    def __init__(self, pad: int):
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        needs_projection = stride != 1 or in_planes != planes
        self.shortcut = OptionAShortcut(planes // 4) if needs_projection else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, blocks_per_stage: int, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        widths, in_planes = (16, 32, 64), 16
        for stage, width in enumerate(widths, start=1):
            blocks = []
            for index in range(blocks_per_stage):
                stride = 2 if stage > 1 and index == 0 else 1
                blocks.append(BasicBlock(in_planes, width, stride))
                in_planes = width
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.linear = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.linear(x)


def cifar_resnet(depth: int, num_classes: int = 10) -> CifarResNet:
    if depth not in DEPTHS:
        raise ValueError(depth)
    return CifarResNet((depth - 2) // 6, num_classes)


class CifarFamily:
    def check(self, name: str) -> None:
        depth = name.removeprefix("resnet")
        if not depth.isdigit() or int(depth) not in DEPTHS:
            valid = "|".join(f"resnet{d}" for d in DEPTHS)
            raise ModelError(f"unknown CIFAR model '{name}'; valid: cifar:{valid}")

    def build(self, name: str, num_classes: int | None, args: dict) -> nn.Module:
        self.check(name)
        return cifar_resnet(
            int(name.removeprefix("resnet")), **args, **({} if num_classes is None else {"num_classes": num_classes})
        )

    def preprocessing(self, name: str, args: dict) -> Preprocessing:
        # the checkpoints in ../shared were trained on 32x32 images with ImageNet statistics
        return Preprocessing((3, 32, 32), crop_pct=1.0)
