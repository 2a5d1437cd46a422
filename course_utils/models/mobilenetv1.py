"""MobileNet v1 (Howard et al. 2017): a stack of depthwise-separable convolutions.

A 3x3 convolution from C_in to C_out channels costs 9 * C_in * C_out MACs per pixel.
MobileNet splits it into a depthwise 3x3 conv (one filter per channel, 9 * C_in MACs)
and a pointwise 1x1 conv that mixes channels (C_in * C_out MACs): about 8-9x cheaper.

Two knobs trade accuracy for cost:

* width multiplier alpha (``width_mult``): every layer has alpha times the channels, so
  the pointwise convs, which hold nearly all the MACs, cost about alpha^2 (0.5 -> ~1/4).
* resolution multiplier rho: the *input* is rho times smaller (224 -> 192, 160, 128),
  every feature map with it, so the MACs scale with rho^2 and the weights do not change.
  It is not a model option: pick the input size with ``input_resolution(rho)``.

The network is ``self.features`` (an ``nn.Sequential``: the stem at ``features.0``, the 13
depthwise-separable blocks at ``features.1`` ... ``features.13``), a global average pool
and ``self.classifier``, so that early exits can tap ``features.k``.

``small_input=True`` (CIFAR-10 32x32, MNIST 28x28) makes the stem stride 1 and keeps the
four stride-2 blocks: 32x32 ends at 2x2 (28x28 at 2x2) before the global pool, the usual
CIFAR adaptation of MobileNet v1.

This module also holds the small parts that MobileNet v2 and the ShuffleNets reuse:
``ConvBNAct``, ``round_channels`` and ``init_weights``.
"""
from typing import Any

import torch
import torch.nn as nn

from ..errors import CourseError


class ConvBNAct(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> activation; children ``0``, ``1``, ``2``.

    'Same' padding; ``groups=in_channels`` makes it depthwise; ``activation=None`` drops the
    activation.  Input N x in_channels x H x W, output N x out_channels x H/stride x W/stride.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        activation: type[nn.Module] | None = nn.ReLU,
    ) -> None:
        padding = (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)


def round_channels(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` (hardware likes multiples of 8).

    Rounds to the nearest multiple, at least ``divisor``, and never more than 10% down
    (the rule of the TensorFlow MobileNets, which torchvision also uses).
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def check_width_mult(width_mult: float) -> None:
    """Raise ``CourseError`` unless the width multiplier is positive."""
    if not width_mult > 0:
        raise CourseError(f"width_mult must be positive, got {width_mult}: use e.g. 1.0, 0.75, 0.5 or 0.25")


def init_weights(model: nn.Module) -> None:
    """He (fan-out) init for convs, BN as identity, small normal init for linear layers."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def input_resolution(rho: float, base: int = 224) -> int:
    """The input side length for resolution multiplier ``rho``: ``round(rho * base)``.

    The paper's 224, 192, 160, 128 are rho = 1, 6/7, 5/7, 4/7.  The model is unchanged;
    resize the images (e.g. ``F.interpolate``) to this size before the forward pass.
    """
    if not rho > 0:
        raise CourseError(
            f"the resolution multiplier rho must be positive, got {rho}: use e.g. 1, 6/7, 5/7 or 4/7"
        )
    return max(1, round(rho * base))


class DepthwiseSeparable(nn.Module):
    """A depthwise 3x3 conv (spatial filtering) then a pointwise 1x1 conv (channel mixing).

    Both are followed by BN and ReLU.  Input N x in_channels x H x W, output
    N x out_channels x H/stride x W/stride.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.depthwise = ConvBNAct(in_channels, in_channels, 3, stride, groups=in_channels)
        self.pointwise = ConvBNAct(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.depthwise(x)  # N x C_in x H/s x W/s
        return self.pointwise(x)  # N x C_out x H/s x W/s


# (output channels, stride) of the 13 blocks, Howard et al. Table 1, with the spatial size
# after each block for a 224x224 input.  (The table's "s2" on the last block is a typo: the
# map stays 7x7, as the paper's own output sizes show.)
BLOCKS = [
    (64, 1),  # 112
    (128, 2),  # 56
    (128, 1),
    (256, 2),  # 28
    (256, 1),
    (512, 2),  # 14
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),  # 7
    (1024, 1),
]


class MobileNetV1(nn.Module):
    """MobileNet v1: a 3x3 stem conv, 13 depthwise-separable blocks, pool, linear.

    Args:
        num_classes: outputs of the classifier.
        width_mult: the width multiplier alpha (1.0, 0.75, 0.5, 0.25 in the paper).
        in_channels: 3 for RGB, 1 for grayscale.
        small_input: stride-1 stem for 28x28 / 32x32 inputs (the last map is 2x2).
        dropout: dropout before the linear layer (the paper uses none).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        in_channels: int = 3,
        small_input: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_width_mult(width_mult)
        channels = round_channels(32 * width_mult)
        layers: list[nn.Module] = [ConvBNAct(in_channels, channels, 3, stride=1 if small_input else 2)]
        for out_channels, stride in BLOCKS:
            out_channels = round_channels(out_channels * width_mult)
            layers.append(DepthwiseSeparable(channels, out_channels, stride))
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, num_classes))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Shapes for 224x224 (small_input with 32x32: the last map is 2x2); a = width_mult.
        x = self.features(x)  # N x 1024a x 7 x 7
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)  # N x 1024a
        return self.classifier(x)  # N x num_classes


def mobilenet_v1(num_classes: int = 1000, **options: Any) -> MobileNetV1:
    """MobileNet v1 (Howard et al. 2017): 4.2M parameters, 569M MACs at 224x224.

    Options: ``width_mult``, ``in_channels``, ``small_input``, ``dropout``.
    """
    return MobileNetV1(num_classes, **options)


MODELS = {"mobilenet_v1": mobilenet_v1}
