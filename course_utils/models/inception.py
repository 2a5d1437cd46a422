"""Inception-v3 (Szegedy et al., 2016, "Rethinking the Inception architecture").

Three ideas on top of GoogLeNet, each a module type (torchvision's class names; the
paper's figure numbers in brackets):

* Factorise big convolutions.  ``InceptionA`` (35x35 grid, Fig. 5): a 5x5 costs 25/9 of
  a 3x3, and two stacked 3x3s see the same 5x5 window for 18/25 of the cost
  (``branch3x3dbl``).  ``InceptionC`` (17x17, Fig. 6): an n x n conv becomes 1 x n then
  n x 1 (n = 7: 14 instead of 49 weights per channel pair).  ``InceptionE`` (8x8, Fig. 7):
  the 1x3 and 3x1 run side by side and are concatenated, widening the output.
* Reduce the grid without a representational bottleneck: ``InceptionB`` (35 -> 17) and
  ``InceptionD`` (17 -> 8) (Fig. 10) concatenate stride-2 conv branches with a stride-2
  max-pool, instead of pooling first (a bottleneck) or convolving first at full size (3x cost).
* One auxiliary classifier (on the 17x17 grid), used as a regulariser.

torchvision's port (of Google's released model) keeps a plain 1x1 -> 5x5 branch in
InceptionA next to the factorised one; we follow it module for module so torchvision's
``state_dict`` loads.  In training mode with ``aux_logits`` the model returns
``InceptionOutputs(logits, aux_logits)``, otherwise a logits tensor.

``small_input=True``: the paper's Sec. 9 handles low-resolution input by removing the stem's
stride and pooling, so that the Inception modules still see grids of the size they were
designed for.  For 32x32 we remove all of it (stride-1, 'same'-padded stem convs, no
max-pools), as CIFAR ports of Inception-v3 do: the modules see 32 -> 15 -> 7 (28x28: 28 -> 13
-> 6) instead of 35 -> 17 -> 8.
"""
from collections import namedtuple
from typing import Any, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .googlenet import BasicConv2d

InceptionOutputs = namedtuple("InceptionOutputs", ["logits", "aux_logits"])


def _avg3x3(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average pool that keeps the grid; the pooling branch of A, C, E."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)


class InceptionA(nn.Module):
    """35x35 module: ``(N, C, H, W) -> (N, 224 + pool_features, H, W)``."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)

        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)

        # The factorised 5x5: two 3x3s.
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)

        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)  # N x 64 x H x W
        b5 = self.branch5x5_2(self.branch5x5_1(x))  # N x 64 x H x W
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))  # N x 96 x H x W
        bp = self.branch_pool(_avg3x3(x))  # N x pool_features x H x W
        return torch.cat([b1, b5, b3, bp], 1)  # N x (224 + pool_features) x H x W


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: ``(N, C, H, W) -> (N, 480 + C, (H-3)//2+1, (W-3)//2+1)``."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)

        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)  # N x 384 x H' x W'
        b3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))  # N x 96 x H' x W'
        bp = F.max_pool2d(x, kernel_size=3, stride=2)  # N x C x H' x W'
        return torch.cat([b3, b3dbl, bp], 1)  # N x (480 + C) x H' x W'


class InceptionC(nn.Module):
    """17x17 module with 7x7s factorised into 1x7 and 7x1: ``(N, C, H, W) -> (N, 768, H, W)``."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)

        # One 7x7 = 1x7 then 7x1.
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))

        # Two 7x7s = 7x1, 1x7, 7x1, 1x7.
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))

        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)  # N x 192 x H x W
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))  # N x 192 x H x W
        b7dbl = self.branch7x7dbl_1(x)  # N x c7 x H x W
        b7dbl = self.branch7x7dbl_3(self.branch7x7dbl_2(b7dbl))
        b7dbl = self.branch7x7dbl_5(self.branch7x7dbl_4(b7dbl))  # N x 192 x H x W
        bp = self.branch_pool(_avg3x3(x))  # N x 192 x H x W
        return torch.cat([b1, b7, b7dbl, bp], 1)  # N x 768 x H x W


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: ``(N, C, H, W) -> (N, 512 + C, (H-3)//2+1, (W-3)//2+1)``."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)

        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))  # N x 320 x H' x W'
        b7 = self.branch7x7x3_2(self.branch7x7x3_1(x))  # N x 192 x H x W
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(b7))  # N x 192 x H' x W'
        bp = F.max_pool2d(x, kernel_size=3, stride=2)  # N x C x H' x W'
        return torch.cat([b3, b7, bp], 1)  # N x (512 + C) x H' x W'


class InceptionE(nn.Module):
    """8x8 module with side-by-side 1x3 / 3x1 ("expanded filter bank"): ``-> (N, 2048, H, W)``."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)

        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))

        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))

        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)  # N x 320 x H x W
        b3 = self.branch3x3_1(x)  # N x 384 x H x W
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)  # N x 768 x H x W
        b3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))  # N x 384 x H x W
        b3dbl = torch.cat([self.branch3x3dbl_3a(b3dbl), self.branch3x3dbl_3b(b3dbl)], 1)  # N x 768 x H x W
        bp = self.branch_pool(_avg3x3(x))  # N x 192 x H x W
        return torch.cat([b1, b3, b3dbl, bp], 1)  # N x 2048 x H x W


class InceptionAux(nn.Module):
    """Auxiliary classifier on the 17x17 grid: pool to 5x5 -> 1x1 conv -> 5x5 conv -> fc."""

    def __init__(self, in_channels: int, num_classes: int, small_input: bool = False) -> None:
        super().__init__()
        self.small_input = small_input
        self.conv0 = BasicConv2d(in_channels, 128, kernel_size=1)
        self.conv1 = BasicConv2d(128, 768, kernel_size=5)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # N x 768 x 17 x 17          (small input: N x 768 x 15 x 15)
        if self.small_input:
            # 5x5/3 pooling would give 4x4, too small for conv1: pool to the same 5x5 grid.
            x = F.adaptive_avg_pool2d(x, (5, 5))
        else:
            x = F.avg_pool2d(x, kernel_size=5, stride=3)
        # N x 768 x 5 x 5
        x = self.conv0(x)
        # N x 128 x 5 x 5
        x = self.conv1(x)
        # N x 768 x 1 x 1
        x = F.adaptive_avg_pool2d(x, (1, 1))
        # N x 768 x 1 x 1 (a no-op at 299x299, kept for larger inputs)
        x = torch.flatten(x, 1)
        # N x 768
        x = self.fc(x)
        # N x num_classes
        return x


class Inception3(nn.Module):
    """Inception-v3.  Input ``(N, in_channels, 299, 299)`` (or 32x32 / 28x28 with ``small_input``).

    Options: ``aux_logits`` (build the auxiliary classifier), ``dropout`` (before the fc),
    ``init_weights`` (torchvision's truncated-normal init).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        small_input: bool = False,
        aux_logits: bool = True,
        dropout: float = 0.5,
        init_weights: bool = True,
    ) -> None:
        super().__init__()
        self.aux_logits = aux_logits

        # Stem.  At 299x299 it brings the grid to 35x35; for small inputs it keeps the grid.
        same = 1 if small_input else 0  # padding of the 3x3 convs that are 'valid' at 299
        self.Conv2d_1a_3x3 = BasicConv2d(in_channels, 32, kernel_size=3, stride=1 if small_input else 2, padding=same)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3, padding=same)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.Identity() if small_input else nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3, padding=same)
        self.maxpool2 = nn.Identity() if small_input else nn.MaxPool2d(kernel_size=3, stride=2)

        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        # Left as None (not absent) without aux_logits, as torchvision does.
        self.AuxLogits: Optional[InceptionAux] = InceptionAux(768, num_classes, small_input) if aux_logits else None
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(2048, num_classes)

        if init_weights:
            _init_weights(self)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, InceptionOutputs]:
        """Logits ``(N, num_classes)``; in training with ``aux_logits``, ``(logits, aux_logits)``."""
        # N x C x 299 x 299                      (small input: N x C x 32 x 32)
        x = self.Conv2d_1a_3x3(x)
        # N x 32 x 149 x 149                     (small input: grid kept at 32 x 32 ...)
        x = self.Conv2d_2a_3x3(x)
        # N x 32 x 147 x 147
        x = self.Conv2d_2b_3x3(x)
        # N x 64 x 147 x 147
        x = self.maxpool1(x)
        # N x 64 x 73 x 73
        x = self.Conv2d_3b_1x1(x)
        # N x 80 x 73 x 73
        x = self.Conv2d_4a_3x3(x)
        # N x 192 x 71 x 71
        x = self.maxpool2(x)
        # N x 192 x 35 x 35                      (small input: ... to here, N x 192 x 32 x 32)
        x = self.Mixed_5b(x)
        # N x 256 x 35 x 35
        x = self.Mixed_5c(x)
        # N x 288 x 35 x 35
        x = self.Mixed_5d(x)
        # N x 288 x 35 x 35
        x = self.Mixed_6a(x)
        # N x 768 x 17 x 17                      (small input: N x 768 x 15 x 15)
        x = self.Mixed_6b(x)
        # N x 768 x 17 x 17
        x = self.Mixed_6c(x)
        # N x 768 x 17 x 17
        x = self.Mixed_6d(x)
        # N x 768 x 17 x 17
        x = self.Mixed_6e(x)
        # N x 768 x 17 x 17
        aux = self.AuxLogits(x) if self.AuxLogits is not None and self.training else None
        x = self.Mixed_7a(x)
        # N x 1280 x 8 x 8                       (small input: N x 1280 x 7 x 7)
        x = self.Mixed_7b(x)
        # N x 2048 x 8 x 8
        x = self.Mixed_7c(x)
        # N x 2048 x 8 x 8
        x = self.avgpool(x)
        # N x 2048 x 1 x 1
        x = self.dropout(x)
        x = torch.flatten(x, 1)
        # N x 2048
        x = self.fc(x)
        # N x num_classes
        if self.training and self.aux_logits:
            return InceptionOutputs(x, aux)
        return x


def _init_weights(model: Inception3) -> None:
    """torchvision's Inception-v3 init: weights ~ N(0, std) truncated at +-2, BatchNorm to identity.

    std is 0.1 everywhere except the auxiliary fc (0.001).  torchvision also tags the aux
    5x5 conv with 0.01, but on its BasicConv2d wrapper, which the init loop never matches, so
    that conv gets 0.1 there too; we reproduce what it does, not what it tags.
    """
    special_std = {model.AuxLogits.fc: 0.001} if model.AuxLogits is not None else {}
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, mean=0.0, std=special_std.get(m, 0.1), a=-2, b=2)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def inception_v3(num_classes: int = 1000, **options: Any) -> Inception3:
    """Inception-v3; see ``Inception3`` for the options.  Defaults = torchvision's ``inception_v3``."""
    return Inception3(num_classes=num_classes, **options)


MODELS = {"inception_v3": inception_v3}
