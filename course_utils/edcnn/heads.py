"""Branch heads: the small classifiers attached at the tapping points."""
from __future__ import annotations

import torch.nn as nn

from ..errors import CourseError, UnknownNameError
from ..models.mobilenetv1 import ConvBNAct

HEADS = ("pool_linear", "conv_pool_linear")


def make_head(kind: str, in_channels: int, num_classes: int, *, pool_size: int = 1,
              width: int | None = None) -> nn.Module:
    """A branch head: ``(B, in_channels, H, W) -> (B, num_classes)``.

    ``"pool_linear"``: adaptive average pool to ``pool_size`` x ``pool_size``, flatten, linear.
    ``"conv_pool_linear"``: a light conv first, a depthwise 3x3 with stride 2 (cheap, and it widens the
    receptive field) and a pointwise 1x1 to ``width`` channels (default ``in_channels``), then pool and linear.
    """
    if kind not in HEADS:
        raise UnknownNameError(f"unknown head {kind!r}. Use one of: {', '.join(HEADS)}.")
    if pool_size < 1:
        raise CourseError(f"pool_size must be >= 1, got {pool_size}.")
    layers: list[nn.Module] = []
    channels = in_channels
    if kind == "conv_pool_linear":
        width = width or in_channels
        layers += [ConvBNAct(in_channels, in_channels, 3, stride=2, groups=in_channels),
                   ConvBNAct(in_channels, width, 1)]
        channels = width
    layers += [nn.AdaptiveAvgPool2d(pool_size), nn.Flatten(), nn.Linear(channels * pool_size ** 2, num_classes)]
    head = nn.Sequential(*layers)
    for m in head.modules():  # like the backbones' init: He for convs, small normal for the linear layer
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    return head
