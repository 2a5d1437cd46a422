"""A small ResNeXt for 32x32 inputs (notebook 06): the equal-MAC cardinality experiment of Xie et al. 2017.

The ImageNet ResNeXt-50 costs 4 G MACs, too much for a CPU.  This network is built from the same
``Bottleneck`` as ``resnet.py`` (its 3x3 conv split into ``cardinality`` groups) at CIFAR size:

    stem       3x3 conv to 64 channels, BN, ReLU              N x 64 x 32 x 32
    stage 1    blocks x Bottleneck(inner 16, out 64)         N x 64 x 32 x 32
    stage 2    blocks x Bottleneck(inner 32, out 128), /2    N x 128 x 16 x 16
    stage 3    blocks x Bottleneck(inner 64, out 256), /2    N x 256 x 8 x 8
    head       global average pool, linear                   N x num_classes

Projection shortcuts (1x1 conv + BN) where the shape changes, as in the ImageNet ResNets.  Its first
stage has a quarter of ResNet-50's widths, so the paper's template ``(C, width_per_group)`` = (1, 64),
(2, 40), (4, 24), (8, 14), (32, 4) gives d = 16, 10, 6, 3, 1 channels per group in the first stage
(doubling in each later stage), at nearly equal parameters and MACs (tested).

    >>> from course_utils import models
    >>> net = models.create("resnext_cifar", num_classes=10, cardinality=32, width_per_group=4)
"""
import torch
import torch.nn as nn

from .resnet import Bottleneck, conv1x1, conv3x3

STAGE_CHANNELS = (16, 32, 64)  # the bottleneck's inner width of each stage; a stage outputs 4x that
TEMPLATE = ((1, 64), (2, 40), (4, 24), (8, 14), (32, 4))  # (cardinality, width_per_group) of Xie et al.'s Table 2


class CifarResNeXt(nn.Module):
    """A small ResNeXt for 32x32 inputs, built from the course's ``Bottleneck``.

    Input ``(N, in_channels, 32, 32)`` -> logits ``(N, num_classes)``.  Stage widths (out channels)
    64, 128, 256 on 32x32, 16x16, 8x8 maps; ``blocks`` bottlenecks per stage.  Weights keep PyTorch's
    default initialisation.
    """

    def __init__(self, cardinality: int, width_per_group: int, blocks: int = 2, num_classes: int = 10,
                 in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv3x3(in_channels, 64), nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        stages, width = [], 64
        for i, channels in enumerate(STAGE_CHANNELS):
            stride = 1 if i == 0 else 2
            layers = []
            for b in range(blocks):
                down = None
                if b == 0 and (stride != 1 or width != 4 * channels):
                    down = nn.Sequential(conv1x1(width, 4 * channels, stride), nn.BatchNorm2d(4 * channels))
                layers.append(Bottleneck(width, channels, stride if b == 0 else 1, down,
                                         cardinality=cardinality, width_per_group=width_per_group))
                width = 4 * channels
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # N x 64 x 32 x 32
        x = self.stages(x)  # N x 256 x 8 x 8 (stage 1: 64 x 32 x 32, stage 2: 128 x 16 x 16)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)  # N x 256
        return self.fc(x)  # N x num_classes


def resnext_cifar(num_classes: int = 10, *, cardinality: int = 32, width_per_group: int = 4, blocks: int = 2,
                  in_channels: int = 3, small_input: bool = True) -> CifarResNeXt:
    """The CIFAR ResNeXt with ``cardinality`` groups of ``width_per_group`` (ResNet-50 units; default 32x4d).

    ``small_input`` is accepted for a uniform interface and ignored: the network is made for 32x32.
    """
    return CifarResNeXt(cardinality, width_per_group, blocks, num_classes, in_channels)


MODELS = {"resnext_cifar": resnext_cifar}
