"""Residual networks: ResNet (He et al. 2016), ResNeXt (Xie et al. 2017), CIFAR ResNets.

Three kinds of network live here, all built from the same two blocks:

* ImageNet ResNets ``resnet18`` ... ``resnet152`` and ResNeXts ``resnext50_32x4d``,
  ``resnext101_32x8d``.  Module names and layer order follow torchvision exactly, so
  torchvision's ``state_dict`` loads into ours (tested).  As torchvision (ResNet "v1.5")
  the bottleneck strides in its 3x3 conv, not in its first 1x1 conv as the paper did.
* CIFAR ResNets ``resnet20/32/44/56/110`` of He et al. section 4.2: 6n+2 layers,
  16/32/64 channels, parameter-free "option A" shortcuts.
* Their plain twins ``plain20`` ... ``plain110``: the same layers without shortcuts, for
  the degradation experiment (deeper plain nets train *worse*).  Option A shortcuts have
  no parameters, so a plain net and its residual twin have the same parameter count.

Options of every builder: ``in_channels`` (1 for grayscale), ``small_input`` (ImageNet
ResNets: 3x3 stride-1 stem and no max-pool, the usual CIFAR adaptation; the CIFAR nets are
small-input nets by design and ignore it) and ``residual=False`` (drop every shortcut).
"""
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CourseError


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """3x3 convolution, 'same' padding, no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs plus a shortcut: ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``.

    ``downsample`` maps x onto the output's shape when stride or width change (a 1x1
    projection on ImageNet, zero-padding on CIFAR); ``None`` means the identity.
    Input N x in_channels x H x W, output N x channels x H/stride x W/stride.
    """

    expansion = 1  # output channels = expansion * channels

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        cardinality: int = 1,
        width_per_group: int = 64,
        residual: bool = True,
    ) -> None:
        super().__init__()
        if cardinality != 1 or width_per_group != 64:
            raise CourseError(
                f"BasicBlock has no grouped conv (got cardinality={cardinality}, "
                f"width_per_group={width_per_group}): ResNeXt options need the bottleneck "
                "ResNets (resnet50 and deeper, resnext50_32x4d)"
            )
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = downsample
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))  # N x C x H/s x W/s
        out = self.bn2(self.conv2(out))
        if self.residual:
            out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand by 4, plus a shortcut.

    The 3x3 conv has ``width = channels * width_per_group / 64 * cardinality`` channels:
    ResNet is cardinality 1 with 64 per group; ResNeXt-50 32x4d has 32 groups of 4 at
    ``channels=64``, i.e. twice the width but the 3x3 conv split into 32 groups, which keeps
    the block's MACs about equal (tested).  Stride sits on the 3x3 conv (ResNet v1.5).
    Input N x in_channels x H x W, output N x 4*channels x H/stride x W/stride.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        cardinality: int = 1,
        width_per_group: int = 64,
        residual: bool = True,
    ) -> None:
        super().__init__()
        width = int(channels * (width_per_group / 64.0)) * cardinality
        out_channels = channels * self.expansion
        self.conv1 = conv1x1(in_channels, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups=cardinality)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))  # N x width x H x W
        out = self.relu(self.bn2(self.conv2(out)))  # N x width x H/s x W/s
        out = self.bn3(self.conv3(out))  # N x 4C x H/s x W/s
        if self.residual:
            out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


class ResNet(nn.Module):
    """ImageNet ResNet / ResNeXt: a stem, four stages of blocks, global pool, linear.

    Args:
        block: ``BasicBlock`` (resnet18/34) or ``Bottleneck`` (resnet50 and deeper).
        layers: blocks per stage, e.g. ``[3, 4, 6, 3]`` for resnet50.
        num_classes: outputs of the final linear layer.
        in_channels: 3 for RGB, 1 for grayscale.
        small_input: for 28x28 / 32x32 inputs: 3x3 stride-1 stem, no max-pool, so the last
            stage sees 4x4 instead of 7x7 (as in the CIFAR literature).
        residual: False drops every shortcut (and the projection convs with them).
        cardinality, width_per_group: ResNeXt's grouped 3x3 conv (bottleneck only).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        small_input: bool = False,
        residual: bool = True,
        cardinality: int = 1,
        width_per_group: int = 64,
    ) -> None:
        super().__init__()
        self.residual = residual
        self.cardinality = cardinality
        self.width_per_group = width_per_group
        self._width = 64  # channels entering the next stage; _make_layer updates it

        if small_input:
            self.conv1 = conv3x3(in_channels, 64)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        _init_weights(self)

    def _make_layer(
        self, block: type[BasicBlock] | type[Bottleneck], channels: int, blocks: int, stride: int = 1
    ) -> nn.Sequential:
        """One stage: the first block may change stride and width, the others keep them."""
        out_channels = channels * block.expansion
        downsample = None
        if self.residual and (stride != 1 or self._width != out_channels):
            # projection shortcut ("option B"): 1x1 conv + BN onto the new shape
            downsample = nn.Sequential(
                conv1x1(self._width, out_channels, stride),
                nn.BatchNorm2d(out_channels),
            )
        options = {
            "cardinality": self.cardinality,
            "width_per_group": self.width_per_group,
            "residual": self.residual,
        }
        stage = [block(self._width, channels, stride, downsample, **options)]
        self._width = out_channels
        stage += [block(out_channels, channels, **options) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Shapes for a 224x224 input (small_input, 32x32: 32 up to layer1, then 16, 8, 4);
        # e = block.expansion (1 basic, 4 bottleneck).
        x = self.relu(self.bn1(self.conv1(x)))  # N x 64 x 112 x 112
        x = self.maxpool(x)  # N x 64 x 56 x 56
        x = self.layer1(x)  # N x 64e x 56 x 56
        x = self.layer2(x)  # N x 128e x 28 x 28
        x = self.layer3(x)  # N x 256e x 14 x 14
        x = self.layer4(x)  # N x 512e x 7 x 7
        x = torch.flatten(self.avgpool(x), 1)  # N x 512e
        return self.fc(x)  # N x num_classes


class ZeroPadShortcut(nn.Module):
    """He et al.'s "option A" shortcut: subsample by ``stride``, append zero channels.

    No parameters, so a residual CIFAR net has exactly as many as its plain twin.
    Input N x C x H x W, output N x (C + extra_channels) x H/stride x W/stride.
    """

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]  # N x C x H/s x W/s
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))  # N x (C + extra) x H/s x W/s


class CifarResNet(nn.Module):
    """The CIFAR-10 ResNet of He et al. 2016, section 4.2: ``depth = 6n + 2`` layers.

    A 3x3 conv with 16 filters, then three stages of n basic blocks (2n layers each)
    with 16, 32, 64 filters on 32x32, 16x16, 8x8 maps, global average pool and a linear
    layer.  Shortcuts are option A (``ZeroPadShortcut``).  ``residual=False`` gives the
    plain net of the degradation experiment, with the same parameters.
    """

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, residual: bool = True) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise CourseError(
                f"a CIFAR ResNet has 6n+2 layers, got depth={depth}: use 20, 32, 44, 56, 110 or another 6n+2"
            )
        n = (depth - 2) // 6
        self.residual = residual
        self.conv1 = conv3x3(in_channels, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(16, 16, n, stride=1)
        self.layer2 = self._make_layer(16, 32, n, stride=2)
        self.layer3 = self._make_layer(32, 64, n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)
        _init_weights(self)

    def _make_layer(self, in_channels: int, channels: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if self.residual and (stride != 1 or in_channels != channels):
            downsample = ZeroPadShortcut(stride, channels - in_channels)
        stage = [BasicBlock(in_channels, channels, stride, downsample, residual=self.residual)]
        stage += [BasicBlock(channels, channels, residual=self.residual) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # N x 16 x 32 x 32
        x = self.layer1(x)  # N x 16 x 32 x 32
        x = self.layer2(x)  # N x 32 x 16 x 16
        x = self.layer3(x)  # N x 64 x 8 x 8
        x = torch.flatten(self.avgpool(x), 1)  # N x 64
        return self.fc(x)  # N x num_classes


def _init_weights(model: nn.Module) -> None:
    """He (fan-out) init for convs, BN as identity; linear layers keep PyTorch's default."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# --- ImageNet ResNets (names and layer counts as torchvision) ---------------------------


def resnet18(num_classes: int = 1000, **options: Any) -> ResNet:
    """ResNet-18: basic blocks [2, 2, 2, 2], 11.7M parameters at 1000 classes."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, **options)


def resnet34(num_classes: int = 1000, **options: Any) -> ResNet:
    """ResNet-34: basic blocks [3, 4, 6, 3]."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, **options)


def resnet50(num_classes: int = 1000, **options: Any) -> ResNet:
    """ResNet-50: bottlenecks [3, 4, 6, 3]."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, **options)


def resnet101(num_classes: int = 1000, **options: Any) -> ResNet:
    """ResNet-101: bottlenecks [3, 4, 23, 3]."""
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes, **options)


def resnet152(num_classes: int = 1000, **options: Any) -> ResNet:
    """ResNet-152: bottlenecks [3, 8, 36, 3]."""
    return ResNet(Bottleneck, [3, 8, 36, 3], num_classes, **options)


def resnext50_32x4d(num_classes: int = 1000, **options: Any) -> ResNet:
    """ResNeXt-50 (32x4d): resnet50's layout, 3x3 convs in 32 groups of 4 channels (at stage 1)."""
    options = {"cardinality": 32, "width_per_group": 4, **options}
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, **options)


def resnext101_32x8d(num_classes: int = 1000, **options: Any) -> ResNet:
    """ResNeXt-101 (32x8d): resnet101's layout, 3x3 convs in 32 groups of 8 channels (at stage 1)."""
    options = {"cardinality": 32, "width_per_group": 8, **options}
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes, **options)


# --- CIFAR ResNets and their plain twins (He et al. 2016, section 4.2) -------------------


def _cifar_builder(depth: int, residual: bool):
    kind = "ResNet" if residual else "plain net (no shortcuts)"

    def build(num_classes: int = 10, in_channels: int = 3, small_input: bool = False) -> CifarResNet:
        # small_input is ignored (accepted for a uniform interface): these nets are made for 32x32.
        return CifarResNet(depth, num_classes, in_channels, residual=residual)

    build.__name__ = f"{'resnet' if residual else 'plain'}{depth}"
    build.__doc__ = f"CIFAR {kind} with {depth} layers (He et al. 2016, section 4.2)."
    return build


MODELS = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "resnet152": resnet152,
    "resnext50_32x4d": resnext50_32x4d,
    "resnext101_32x8d": resnext101_32x8d,
}
for _depth in (20, 32, 44, 56, 110):
    MODELS[f"resnet{_depth}"] = _cifar_builder(_depth, residual=True)
    MODELS[f"plain{_depth}"] = _cifar_builder(_depth, residual=False)
