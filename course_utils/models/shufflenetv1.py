"""ShuffleNet v1 (Zhang et al. 2018): pointwise group convolutions and channel shuffle.

In a depthwise-separable net the 1x1 convs hold nearly all the MACs.  ShuffleNet splits
them into ``g`` groups as well (each output channel sees only C/g inputs: g times cheaper)
and spends the savings on wider feature maps.  Stacked group convs would keep each group
isolated from the others, so after the first 1x1 group conv of every unit the channels are
*shuffled*: ``channel_shuffle`` deals them out like cards, so that every group of the next
conv receives channels from every group of the previous one.

The unit (paper Fig. 2):

    1x1 group conv to out/4 (BN, ReLU) -> shuffle -> 3x3 depthwise (BN, stride)
    -> 1x1 group conv (BN) ;  stride 1: add x, ReLU
                              stride 2: concat with a 3x3 avg-pooled x, ReLU

The network (paper Table 1): a 3x3 stride-2 conv with 24 channels, a 3x3 max-pool, three
stages of 4, 8, 4 units (the first of each with stride 2), global pool, linear.  Output
channels of the stages per group count: g=1: 144, 288, 576; g=2: 200, 400, 800;
g=3: 240, 480, 960; g=4: 272, 544, 1088; g=8: 384, 768, 1536, chosen so that all five
cost about 140M MACs at 224x224.  As in the paper, the first 1x1 conv of stage 2 is not
grouped (its input has only 24 channels).

``width_mult`` (the paper's "ShuffleNet s x") scales every width: stage widths are rounded
to multiples of 4g (a unit's bottleneck is a quarter of its output and splits into g
groups), the stem to a multiple of g.  ``small_input=True`` (28x28 / 32x32) makes the stem
stride 1 and drops the max-pool, so 32x32 ends at 4x4, as the CIFAR literature does.
"""
from typing import Any

import torch
import torch.nn as nn

from ..errors import CourseError
from .mobilenetv1 import check_width_mult, init_weights, round_channels


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` equal groups.

    View the C channels as a (groups x C/groups) matrix, transpose it, and read it out
    again: with groups=2 and 4 channels the order becomes 0, 2, 1, 3.  Shape unchanged,
    N x C x H x W; the memory format too (a channels_last input stays channels_last).
    """
    n, c, h, w = x.shape
    if c % groups != 0:
        raise CourseError(
            f"channel_shuffle needs channels divisible by groups, got {c} channels and {groups} groups"
        )
    out = torch.empty_like(x)  # same memory format as x
    # out's channel k * groups + j  <-  x's channel j * (C/g) + k
    out.view(n, c // groups, groups, h, w).copy_(x.view(n, groups, c // groups, h, w).transpose(1, 2))
    return out


class ShuffleUnit(nn.Module):
    """One ShuffleNet unit (see the module docstring).

    Input N x in_channels x H x W, output N x out_channels x H/stride x W/stride.
    ``first_conv_groups`` is the group count of the first 1x1 conv (1 at the start of
    stage 2), ``groups`` that of the second.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, groups: int, first_conv_groups: int
    ) -> None:
        super().__init__()
        self.stride = stride
        self.first_conv_groups = first_conv_groups
        bottleneck = out_channels // 4
        # stride 2 concatenates the pooled input, so the branch makes only the new channels
        branch_out = out_channels - in_channels if stride == 2 else out_channels
        self.compress = nn.Sequential(
            nn.Conv2d(in_channels, bottleneck, 1, groups=first_conv_groups, bias=False),
            nn.BatchNorm2d(bottleneck),
            nn.ReLU(inplace=True),
        )
        self.depthwise = nn.Sequential(  # no ReLU after the depthwise conv (paper, section 3.2)
            nn.Conv2d(bottleneck, bottleneck, 3, stride, 1, groups=bottleneck, bias=False),
            nn.BatchNorm2d(bottleneck),
        )
        self.expand = nn.Sequential(
            nn.Conv2d(bottleneck, branch_out, 1, groups=groups, bias=False),
            nn.BatchNorm2d(branch_out),
        )
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.compress(x)  # N x C_out/4 x H x W
        out = channel_shuffle(out, self.first_conv_groups)  # 1 group: nothing to shuffle
        out = self.depthwise(out)  # N x C_out/4 x H/s x W/s
        out = self.expand(out)  # N x branch_out x H/s x W/s
        if self.stride == 2:
            out = torch.cat([self.shortcut(x), out], dim=1)  # N x C_out x H/2 x W/2
        else:
            out = out + x
        return self.relu(out)


# Output channels of stages 2, 3, 4 at width 1, per group count (paper Table 1).
STAGE_CHANNELS = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}
STAGE_REPEATS = (4, 8, 4)


class ShuffleNetV1(nn.Module):
    """ShuffleNet v1 with ``groups`` in {1, 2, 3, 4, 8}.

    Args:
        num_classes: outputs of the linear layer.
        groups: group count of the 1x1 convs.
        width_mult: the paper's scale factor s (1.0, 0.5, 0.25).
        in_channels: 3 for RGB, 1 for grayscale.
        small_input: stride-1 stem and no max-pool for 28x28 / 32x32 inputs.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        groups: int = 3,
        width_mult: float = 1.0,
        in_channels: int = 3,
        small_input: bool = False,
    ) -> None:
        super().__init__()
        if groups not in STAGE_CHANNELS:
            raise CourseError(f"ShuffleNet v1 has no channel table for groups={groups}: use 1, 2, 3, 4 or 8")
        check_width_mult(width_mult)
        channels = round_channels(24 * width_mult, groups)
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, stride=1 if small_input else 2, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(3, stride=2, padding=1)
        stages = []
        for stage, (width, repeats) in enumerate(zip(STAGE_CHANNELS[groups], STAGE_REPEATS)):
            out_channels = round_channels(width * width_mult, 4 * groups)
            units = []
            for i in range(repeats):
                first_conv_groups = 1 if stage == 0 and i == 0 else groups
                units.append(ShuffleUnit(channels, out_channels, 2 if i == 0 else 1, groups, first_conv_groups))
                channels = out_channels
            stages.append(nn.Sequential(*units))
        self.stage2, self.stage3, self.stage4 = stages
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Shapes for 224x224 at g=3, width 1 (small_input with 32x32: 32, 32, 16, 8, 4).
        x = self.conv1(x)  # N x 24 x 112 x 112
        x = self.maxpool(x)  # N x 24 x 56 x 56
        x = self.stage2(x)  # N x 240 x 28 x 28
        x = self.stage3(x)  # N x 480 x 14 x 14
        x = self.stage4(x)  # N x 960 x 7 x 7
        x = x.mean([2, 3])  # N x 960
        return self.fc(x)  # N x num_classes


def _builder(groups: int):
    def build(num_classes: int = 1000, **options: Any) -> ShuffleNetV1:
        return ShuffleNetV1(num_classes, groups, **options)

    build.__name__ = f"shufflenet_v1_g{groups}"
    build.__doc__ = (
        f"ShuffleNet v1 1x with {groups} groups (Zhang et al. 2018). "
        "Options: ``width_mult``, ``in_channels``, ``small_input``."
    )
    return build


MODELS = {f"shufflenet_v1_g{g}": _builder(g) for g in STAGE_CHANNELS}
