"""ShuffleNet v2 (Ma et al. 2018): channel split instead of group convolutions.

Ma et al. measured speed, not MACs, and found that group convs and element-wise adds cost
more time than their MACs suggest.  So the v2 unit drops both:

* stride 1: *split* the channels in two halves; one half passes unchanged, the other goes
  through 1x1 -> 3x3 depthwise -> 1x1 (ordinary, ungrouped convs, equal in/out widths);
  concatenate the halves and ``channel_shuffle`` them with 2 groups so that the next unit
  mixes both.
* stride 2: no split; both branches see the whole input and each halves the map
  (branch1: 3x3 depthwise -> 1x1, branch2: as above), so the width doubles.

Module names and layer order follow torchvision, so torchvision's ``state_dict`` loads
into ours (tested): ``conv1``, ``maxpool``, ``stage2`` ... ``stage4``, ``conv5``, ``fc``.

``small_input=True`` (28x28 / 32x32) makes the stem stride 1 and drops the max-pool, so
32x32 ends at 4x4, as the CIFAR literature does.
"""
from typing import Any

import torch
import torch.nn as nn

from .mobilenetv1 import init_weights
from .shufflenetv1 import channel_shuffle


def _depthwise3x3(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False)


def _conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, bias=False)


class ShuffleV2Unit(nn.Module):
    """The ShuffleNet v2 unit (see the module docstring).

    Input N x in_channels x H x W, output N x out_channels x H/stride x W/stride; with
    stride 1 the widths must be equal.  ``branch1`` (the stride-2 side branch) and
    ``branch2`` (the main branch) each make out_channels / 2 channels.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = out_channels // 2
        if stride == 1:
            branch2_in = half  # the main branch sees one half of the split
            self.branch1 = nn.Sequential()  # the other half passes unchanged
        else:
            branch2_in = in_channels
            self.branch1 = nn.Sequential(
                _depthwise3x3(in_channels, stride),
                nn.BatchNorm2d(in_channels),
                _conv1x1(in_channels, half),
                nn.BatchNorm2d(half),
                nn.ReLU(inplace=True),
            )
        self.branch2 = nn.Sequential(
            _conv1x1(branch2_in, half),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            _depthwise3x3(half, stride),  # no ReLU after the depthwise conv
            nn.BatchNorm2d(half),
            _conv1x1(half, half),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            kept, x = x.chunk(2, dim=1)  # 2 x (N x C/2 x H x W)
            out = torch.cat([kept, self.branch2(x)], dim=1)  # N x C x H x W
        else:
            out = torch.cat([self.branch1(x), self.branch2(x)], dim=1)  # N x C_out x H/2 x W/2
        return channel_shuffle(out, 2)


STAGE_REPEATS = (4, 8, 4)


class ShuffleNetV2(nn.Module):
    """ShuffleNet v2: stem, three stages of units, 1x1 conv, global pool, linear.

    Args:
        widths: output channels of the stem, stages 2, 3, 4 and conv5 (5 numbers).
        num_classes: outputs of the linear layer.
        in_channels: 3 for RGB, 1 for grayscale.
        small_input: stride-1 stem and no max-pool for 28x28 / 32x32 inputs.
    """

    def __init__(
        self, widths: list[int], num_classes: int = 1000, in_channels: int = 3, small_input: bool = False
    ) -> None:
        super().__init__()
        channels = widths[0]
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, stride=1 if small_input else 2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(3, stride=2, padding=1)
        stages = []
        for out_channels, repeats in zip(widths[1:4], STAGE_REPEATS):
            units = [ShuffleV2Unit(channels, out_channels, 2)]
            units += [ShuffleV2Unit(out_channels, out_channels, 1) for _ in range(repeats - 1)]
            stages.append(nn.Sequential(*units))
            channels = out_channels
        self.stage2, self.stage3, self.stage4 = stages
        self.conv5 = nn.Sequential(
            _conv1x1(channels, widths[4]),
            nn.BatchNorm2d(widths[4]),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(widths[4], num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Shapes for 224x224 at 1.0x (small_input with 32x32: 32, 32, 16, 8, 4).
        x = self.conv1(x)  # N x 24 x 112 x 112
        x = self.maxpool(x)  # N x 24 x 56 x 56
        x = self.stage2(x)  # N x 116 x 28 x 28
        x = self.stage3(x)  # N x 232 x 14 x 14
        x = self.stage4(x)  # N x 464 x 7 x 7
        x = self.conv5(x)  # N x 1024 x 7 x 7
        x = x.mean([2, 3])  # N x 1024
        return self.fc(x)  # N x num_classes


# Widths (stem, stage2, stage3, stage4, conv5) of Ma et al. Table 5, as torchvision.
WIDTHS = {
    "shufflenet_v2_x0_5": [24, 48, 96, 192, 1024],
    "shufflenet_v2_x1_0": [24, 116, 232, 464, 1024],
    "shufflenet_v2_x1_5": [24, 176, 352, 704, 1024],
    "shufflenet_v2_x2_0": [24, 244, 488, 976, 2048],
}


def _builder(name: str):
    def build(num_classes: int = 1000, **options: Any) -> ShuffleNetV2:
        return ShuffleNetV2(WIDTHS[name], num_classes, **options)

    build.__name__ = name
    scale = name[-3:].replace("_", ".")
    build.__doc__ = f"ShuffleNet v2 {scale}x (Ma et al. 2018). Options: ``in_channels``, ``small_input``."
    return build


MODELS = {name: _builder(name) for name in WIDTHS}
