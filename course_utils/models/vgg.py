"""VGG (Simonyan & Zisserman, 2015): stacks of 3x3 convolutions between 2x2 max-pools.

A network is a row of ``CFGS``: conv widths, with ``"M"`` for a max-pool.  ``make_layers``
turns a row into ``features`` (conv [-> batch norm] -> ReLU per width, in torchvision's
order, so torchvision's ``state_dict`` loads).  The max-pools cut ``features`` into five
*stages*; ``stage_slices`` (or ``VGG.stages``) returns them, e.g. for VGG-16 at 32x32:

    stage  convs        output
      0    64, 64       N x  64 x 16 x 16
      1    128, 128     N x 128 x  8 x  8
      2    256 x 3      N x 256 x  4 x  4
      3    512 x 3      N x 512 x  2 x  2
      4    512 x 3      N x 512 x  1 x  1

``small_input=True`` is the classic CIFAR VGG (as in kuangliu/pytorch-cifar): the same conv
stack, global pooling of the 1x1 map and one linear layer on the 512-d feature instead of
the 4096-wide MLP.  VGG-16 then has 14,719,818 parameters and costs 313.2M MACs per 32x32
image (313.5M if, like some counters, one adds each conv's bias additions).
``width_mult`` scales every conv width.
"""
from functools import partial
from typing import Union

import torch
import torch.nn as nn

from ..errors import CourseError

Config = list[Union[int, str]]

# Conv widths; "M" = 2x2 max-pool.  The letters are the columns of the paper's Table 1.
CFGS: dict[str, Config] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],  # A
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],  # B
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],  # D
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",  # E
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def scale_channels(channels: int, width_mult: float) -> int:
    """``channels * width_mult`` rounded half up, at least 1."""
    if width_mult <= 0:
        raise CourseError(f"width_mult must be > 0, got {width_mult}; use e.g. 0.5 for half the channels.")
    return max(1, int(channels * width_mult + 0.5))


def make_layers(
    cfg: Config,
    batch_norm: bool = False,
    in_channels: int = 3,
    width_mult: float = 1.0,
    ceil_mode: bool = False,
) -> nn.Sequential:
    """The conv stack for one row of ``CFGS``: ``(N, in_channels, H, W) -> (N, C_last, H/32, W/32)``.

    Each width ``v`` adds Conv3x3(pad 1) [-> BatchNorm2d] -> ReLU with ``scale_channels(v,
    width_mult)`` channels; each ``"M"`` adds a 2x2/2 max-pool.  ``ceil_mode`` rounds pooled
    sizes up (28 -> 14 -> 7 -> 4 -> 2 -> 1) instead of down (... 7 -> 3 -> 1 -> 0).
    """
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=ceil_mode))  # H, W halve
            continue
        width = scale_channels(int(v), width_mult)
        layers.append(nn.Conv2d(in_channels, width, kernel_size=3, padding=1))  # C -> width, H, W kept
        if batch_norm:
            layers.append(nn.BatchNorm2d(width))
        layers.append(nn.ReLU(inplace=True))
        in_channels = width
    return nn.Sequential(*layers)


def stage_slices(cfg: Config, batch_norm: bool = False) -> list[slice]:
    """Index ranges of ``make_layers(cfg, batch_norm)`` that each end with a max-pool.

    ``[features[s] for s in stage_slices(cfg, bn)]`` are ``nn.Sequential`` views that share
    the modules (and weights) of ``features``; run in order they equal ``features``.
    """
    layers_per_conv = 3 if batch_norm else 2  # conv [, batch norm], ReLU
    slices, start, end = [], 0, 0
    for v in cfg:
        if v == "M":
            end += 1
            slices.append(slice(start, end))
            start = end
        else:
            end += layers_per_conv
    return slices


def stage_widths(cfg: Config, width_mult: float = 1.0) -> list[int]:
    """Output channels of each stage (the width just before each max-pool), scaled."""
    return [scale_channels(int(prev), width_mult) for prev, v in zip(cfg, cfg[1:]) if v == "M"]


class VGG(nn.Module):
    """``features`` -> ``avgpool`` -> flatten -> ``classifier``.

    Input ``(N, in_channels, 224, 224)``, or 32x32 / 28x28 with ``small_input``; output
    logits ``(N, num_classes)``.  ``cfg`` and ``batch_norm`` are kept for ``stages()``.
    """

    def __init__(
        self,
        cfg: Config,
        batch_norm: bool = False,
        num_classes: int = 1000,
        in_channels: int = 3,
        small_input: bool = False,
        width_mult: float = 1.0,
        dropout: float = 0.5,
        init_weights: bool = True,
    ) -> None:
        super().__init__()
        self.cfg = list(cfg)
        self.batch_norm = batch_norm
        # The VGG authors trained in Caffe, whose pooling rounds sizes up; for small inputs we
        # do the same so 28x28 MNIST reaches a 1x1 map.  It changes nothing at 32x32 or
        # 224x224 (all grids even); at ImageNet size we keep torchvision's floor rounding.
        self.features = make_layers(cfg, batch_norm, in_channels, width_mult, ceil_mode=small_input)
        width = stage_widths(cfg, width_mult)[-1]
        if small_input:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))  # a no-op on the 1x1 map
            self.classifier = nn.Sequential(nn.Linear(width, num_classes))
        else:
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(width * 7 * 7, 4096),  # N x 4096
                nn.ReLU(inplace=True),
                nn.Dropout(p=dropout),
                nn.Linear(4096, 4096),  # N x 4096
                nn.ReLU(inplace=True),
                nn.Dropout(p=dropout),
                nn.Linear(4096, num_classes),  # N x num_classes
            )
        if init_weights:
            _init_weights(self)

    def stages(self) -> list[nn.Sequential]:
        """The five pool-ended pieces of ``features`` (sharing its modules), in order."""
        return [self.features[s] for s in stage_slices(self.cfg, self.batch_norm)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # N x C x 224 x 224          (small input: N x C x 32 x 32)
        x = self.features(x)
        # N x 512 x 7 x 7            (small input: N x 512 x 1 x 1)
        x = self.avgpool(x)
        # N x 512 x 7 x 7 unchanged at 224 (other sizes are pooled to this grid)
        x = torch.flatten(x, 1)
        # N x 25088                  (small input: N x 512)
        x = self.classifier(x)
        # N x num_classes
        return x


def initialize_weights(model: nn.Module) -> None:
    """torchvision's VGG initialisation, in place: He (fan-out) for convs, N(0, 0.01) for linears.

    Public so that networks cut from VGG's layers (SpeedyCNet's learners and heads) start as VGG does.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


_init_weights = initialize_weights  # the name VGG's constructor calls (its argument `init_weights` shadows a public one)


# Each builder takes num_classes and the VGG options above: vgg16(num_classes=10, small_input=True).
MODELS = {
    name + suffix: partial(VGG, cfg, batch_norm)
    for name, cfg in CFGS.items()
    for suffix, batch_norm in (("", False), ("_bn", True))
}
