"""MobileNet v2 (Sandler et al. 2018): inverted residuals with linear bottlenecks.

MobileNet v1's depthwise-separable block works on wide feature maps everywhere.  v2 keeps
the maps *thin* between blocks (the bottleneck) and widens them only inside a block:

    1x1 expand by t (ReLU6) -> 3x3 depthwise (ReLU6) -> 1x1 project back, no activation

The projection is linear because a ReLU on a thin map would destroy information, and the
shortcut joins the thin ends ("inverted" compared to ResNet's bottleneck, whose shortcut
joins the wide ends).

Module names and layer order follow torchvision, so torchvision's ``state_dict`` loads
into ours (tested): ``self.features`` is an ``nn.Sequential`` (stem at ``features.0``,
17 inverted residual blocks at ``features.1`` ... ``features.17``, the final 1x1 conv at
``features.18``) and ``self.classifier`` is dropout + linear.

``small_input=True`` is the usual CIFAR-10 adaptation: stride 1 in the stem *and* in the
second stage (24 channels), so 32x32 ends at 4x4 (28x28 at 4x4) before the global pool.
"""
from typing import Any

import torch
import torch.nn as nn

from .mobilenetv1 import ConvBNAct, check_width_mult, init_weights, round_channels


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3, stride) -> project (1x1, linear), plus a shortcut.

    The shortcut exists only when input and output have the same shape (stride 1, same
    channels).  ``expand_ratio=1`` skips the expansion conv.  Input N x in_channels x H x W,
    output N x out_channels x H/stride x W/stride.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.use_shortcut = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_channels, hidden, 1, activation=nn.ReLU6))  # expand
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, activation=nn.ReLU6),  # depthwise
            nn.Conv2d(hidden, out_channels, 1, bias=False),  # project, linear
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)  # N x C_out x H/s x W/s
        return x + out if self.use_shortcut else out


# Rows (t, c, n, s) of Sandler et al. Table 2: expansion t, output channels c, n blocks,
# stride s of the first block; spatial size after each stage for a 224x224 input.
STAGES = [
    (1, 16, 1, 1),  # 112
    (6, 24, 2, 2),  # 56
    (6, 32, 3, 2),  # 28
    (6, 64, 4, 2),  # 14
    (6, 96, 3, 1),  # 14
    (6, 160, 3, 2),  # 7
    (6, 320, 1, 1),  # 7
]


class MobileNetV2(nn.Module):
    """MobileNet v2: stem, 17 inverted residual blocks, 1x1 conv to 1280, pool, classifier.

    Args:
        num_classes: outputs of the classifier.
        width_mult: multiplies every width (rounded to multiples of 8); the last conv keeps
            at least 1280 channels.
        in_channels: 3 for RGB, 1 for grayscale.
        small_input: for 28x28 / 32x32: stride 1 in the stem and the second stage.
        dropout: dropout before the linear layer.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        in_channels: int = 3,
        small_input: bool = False,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        check_width_mult(width_mult)
        channels = round_channels(32 * width_mult)
        last_channels = round_channels(1280 * max(1.0, width_mult))
        stem_stride = 1 if small_input else 2
        layers: list[nn.Module] = [ConvBNAct(in_channels, channels, 3, stem_stride, activation=nn.ReLU6)]
        for stage, (t, c, n, s) in enumerate(STAGES):
            if small_input and stage == 1:
                s = 1
            out_channels = round_channels(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(channels, out_channels, s if i == 0 else 1, expand_ratio=t))
                channels = out_channels
        layers.append(ConvBNAct(channels, last_channels, 1, activation=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last_channels, num_classes))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Shapes for 224x224 at width 1 (small_input with 32x32: the last map is 4x4).
        x = self.features(x)  # N x 1280 x 7 x 7
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)  # N x 1280
        return self.classifier(x)  # N x num_classes


def mobilenet_v2(num_classes: int = 1000, **options: Any) -> MobileNetV2:
    """MobileNet v2 (Sandler et al. 2018), as torchvision's ``mobilenet_v2``.

    Options: ``width_mult``, ``in_channels``, ``small_input``, ``dropout``.
    """
    return MobileNetV2(num_classes, **options)


MODELS = {"mobilenet_v2": mobilenet_v2}
