"""GoogLeNet / Inception-v1 (Szegedy et al., 2015, "Going deeper with convolutions").

An Inception module runs four branches side by side and concatenates them on the channel
axis: a 1x1 conv; a 1x1 "bottleneck" then 3x3; a 1x1 bottleneck then a larger conv; a 3x3
max-pool then a 1x1 projection.  The 1x1 bottlenecks cut the channels before the expensive
convs, which is what lets 9 modules stay at 1.5 GMACs.  The head is global average pooling
and one linear layer; two auxiliary classifiers on intermediate modules add gradient signal
during training (their losses are weighted 0.3) and are skipped at inference.

This is torchvision's port, module for module (BatchNorm after every conv, which the paper
did not have, and 3x3 instead of 5x5 in the third branch; see ``Inception``), so
torchvision's ``state_dict`` loads.  In training mode with ``aux_logits`` the model returns
``GoogLeNetOutputs(logits, aux_logits2, aux_logits1)``, otherwise a logits tensor.

``small_input=True`` is the CIFAR GoogLeNet of the literature (kuangliu/pytorch-cifar): the
stem keeps the full 32x32 resolution (3x3 stride-1 first conv, no stem max-pools), so the
Inception modules see 32/16/8 grids, close to the 28/14/7 they have at 224x224.
"""
from collections import namedtuple
from typing import Any, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

GoogLeNetOutputs = namedtuple("GoogLeNetOutputs", ["logits", "aux_logits2", "aux_logits1"])


class BasicConv2d(nn.Module):
    """Conv (no bias: BatchNorm has one) -> BatchNorm(eps=1e-3) -> ReLU.

    The unit of torchvision's GoogLeNet and Inception-v3 (the eps is TensorFlow's default,
    which the ported weights were trained with).
    """

    def __init__(self, in_channels: int, out_channels: int, **conv_options: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv_options)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    """Four parallel branches, concatenated: ``(N, C, H, W) -> (N, ch1x1+ch3x3+ch5x5+pool_proj, H, W)``.

    The paper's third branch is 1x1 -> 5x5.  torchvision's port uses a 3x3 there (a known
    slip, pytorch/vision#906) and its weights were trained so; we keep 3x3 by default to stay
    loadable and offer ``kernel_5x5=5`` for the paper's version.
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        kernel_5x5: int = 3,
    ) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_channels, ch3x3red, kernel_size=1),  # bottleneck
            BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(in_channels, ch5x5red, kernel_size=1),  # bottleneck
            BasicConv2d(ch5x5red, ch5x5, kernel_size=kernel_5x5, padding=kernel_5x5 // 2),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            BasicConv2d(in_channels, pool_proj, kernel_size=1),  # projection
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        return torch.cat(branches, 1)  # N x (ch1x1 + ch3x3 + ch5x5 + pool_proj) x H x W


class InceptionAux(nn.Module):
    """Auxiliary classifier: 4x4 average pool -> 1x1 conv (128) -> fc 1024 -> fc num_classes."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7) -> None:
        super().__init__()
        self.conv = BasicConv2d(in_channels, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # aux1: N x 512 x 14 x 14, aux2: N x 528 x 14 x 14   (small input: 16 x 16)
        x = F.adaptive_avg_pool2d(x, (4, 4))
        # N x C x 4 x 4
        x = self.conv(x)
        # N x 128 x 4 x 4
        x = torch.flatten(x, 1)
        # N x 2048
        x = F.relu(self.fc1(x), inplace=True)
        # N x 1024
        x = self.dropout(x)
        x = self.fc2(x)
        # N x num_classes
        return x


class GoogLeNet(nn.Module):
    """Inception-v1.  Input ``(N, in_channels, 224, 224)`` (or 32x32 / 28x28 with ``small_input``).

    Options: ``aux_logits`` (build the two auxiliary classifiers), ``dropout`` /
    ``dropout_aux`` (before the final / auxiliary fc), ``kernel_5x5`` (3 as torchvision, 5 as
    the paper), ``init_weights`` (torchvision's truncated-normal init).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        small_input: bool = False,
        aux_logits: bool = True,
        dropout: float = 0.2,
        dropout_aux: float = 0.7,
        kernel_5x5: int = 3,
        init_weights: bool = True,
    ) -> None:
        super().__init__()
        self.aux_logits = aux_logits

        if small_input:
            # Keep the resolution: 3x3 stride-1 first conv and no stem pooling.
            self.conv1 = BasicConv2d(in_channels, 64, kernel_size=3, padding=1)
            self.maxpool1 = nn.Identity()
        else:
            self.conv1 = BasicConv2d(in_channels, 64, kernel_size=7, stride=2, padding=3)
            self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.Identity() if small_input else nn.MaxPool2d(3, stride=2, ceil_mode=True)

        # Widths from the paper's Table 1: 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj.
        def inception(*widths: int) -> Inception:
            return Inception(*widths, kernel_5x5=kernel_5x5)

        self.inception3a = inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        self.inception4a = inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)

        self.inception5a = inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = inception(832, 384, 192, 384, 48, 128, 128)

        # Left as None (not absent) without aux_logits, as torchvision does.
        self.aux1: Optional[InceptionAux] = InceptionAux(512, num_classes, dropout_aux) if aux_logits else None
        self.aux2: Optional[InceptionAux] = InceptionAux(528, num_classes, dropout_aux) if aux_logits else None

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(1024, num_classes)

        if init_weights:
            initialize_weights(self)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, GoogLeNetOutputs]:
        """Logits ``(N, num_classes)``; in training with ``aux_logits``, ``(logits, aux2, aux1)``."""
        # N x C x 224 x 224                      (small input: N x C x 32 x 32)
        x = self.conv1(x)
        # N x 64 x 112 x 112                     (small input: N x 64 x 32 x 32)
        x = self.maxpool1(x)
        # N x 64 x 56 x 56
        x = self.conv2(x)
        # N x 64 x 56 x 56
        x = self.conv3(x)
        # N x 192 x 56 x 56
        x = self.maxpool2(x)
        # N x 192 x 28 x 28                      (small input: N x 192 x 32 x 32)
        x = self.inception3a(x)
        # N x 256 x 28 x 28
        x = self.inception3b(x)
        # N x 480 x 28 x 28
        x = self.maxpool3(x)
        # N x 480 x 14 x 14                      (small input: N x 480 x 16 x 16)
        x = self.inception4a(x)
        # N x 512 x 14 x 14
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4b(x)
        # N x 512 x 14 x 14
        x = self.inception4c(x)
        # N x 512 x 14 x 14
        x = self.inception4d(x)
        # N x 528 x 14 x 14
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        x = self.inception4e(x)
        # N x 832 x 14 x 14
        x = self.maxpool4(x)
        # N x 832 x 7 x 7                        (small input: N x 832 x 8 x 8)
        x = self.inception5a(x)
        # N x 832 x 7 x 7
        x = self.inception5b(x)
        # N x 1024 x 7 x 7
        x = self.avgpool(x)
        # N x 1024 x 1 x 1
        x = torch.flatten(x, 1)
        # N x 1024
        x = self.dropout(x)
        x = self.fc(x)
        # N x num_classes
        if self.training and self.aux_logits:
            return GoogLeNetOutputs(x, aux2, aux1)
        return x


def initialize_weights(model: nn.Module) -> None:
    """torchvision's GoogLeNet init, in place: weights ~ N(0, 0.01) truncated at +-2, BatchNorm to identity.

    Public so that variants built from GoogLeNet's blocks (``walk``'s scaled GoogLeNet) start as it does.
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def googlenet(num_classes: int = 1000, **options: Any) -> GoogLeNet:
    """GoogLeNet; see ``GoogLeNet`` for the options.  Defaults = torchvision's ``googlenet``."""
    return GoogLeNet(num_classes=num_classes, **options)


MODELS = {"googlenet": googlenet}
