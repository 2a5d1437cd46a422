"""AlexNet and ZFNet: five convolutions, three max-pools, then a big MLP.

``alexnet`` is torchvision's AlexNet (the 64-192-384-256-256 widths of Krizhevsky's
"One weird trick", 2014), module for module, so torchvision's ``state_dict`` loads into it.
``zfnet`` is Zeiler & Fergus (2013), AlexNet retuned after looking at its filters: a
smaller, less strided first layer (7x7 stride 2 instead of 11x11 stride 4).

``small_input=True`` builds the CIFAR version of the same layer sequence used in the
literature (bearpaw/pytorch-classification, "AlexNet for CIFAR10: FC layers are removed,
paddings are adjusted"): 2x2 max-pools bring 32x32 down to 1x1 and a single linear layer
classifies the pooled 256-d feature.
"""
import torch
import torch.nn as nn

# Krizhevsky et al. (2012) used local response normalisation with these constants; ZFNet
# "contrast normalises across feature maps" after its first two layers and keeps them.
_LRN = dict(size=5, alpha=1e-4, beta=0.75, k=2.0)


class AlexNet(nn.Module):
    """``features`` (convs) -> ``avgpool`` (fixed grid) -> flatten -> ``classifier``.

    One class serves both AlexNet and ZFNet: they differ only in the layers the builders
    pass in.  Input ``(N, C, H, W)``, output logits ``(N, num_classes)``.
    """

    def __init__(self, features: nn.Sequential, avgpool: nn.Module, classifier: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.avgpool = avgpool
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # N x C x 224 x 224          (small input: N x C x 32 x 32)
        x = self.features(x)
        # N x 256 x 6 x 6            (small input: N x 256 x 1 x 1)
        x = self.avgpool(x)
        # N x 256 x 6 x 6 unchanged at 224 (other sizes are pooled to this grid)
        x = torch.flatten(x, 1)
        # N x 9216                   (small input: N x 256)
        x = self.classifier(x)
        # N x num_classes
        return x


def _mlp_classifier(in_features: int, num_classes: int, dropout: float) -> nn.Sequential:
    """The ImageNet head: dropout before each of the two 4096-wide hidden layers."""
    return nn.Sequential(
        nn.Dropout(p=dropout),
        nn.Linear(in_features, 4096),  # N x 4096
        nn.ReLU(inplace=True),
        nn.Dropout(p=dropout),
        nn.Linear(4096, 4096),  # N x 4096
        nn.ReLU(inplace=True),
        nn.Linear(4096, num_classes),  # N x num_classes
    )


def _alexnet_features(in_channels: int) -> nn.Sequential:
    """torchvision's layout; the indices (0, 3, 6, 8, 10) are part of the state_dict keys."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2),  # N x 64 x 55 x 55
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),  # N x 64 x 27 x 27
        nn.Conv2d(64, 192, kernel_size=5, padding=2),  # N x 192 x 27 x 27
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),  # N x 192 x 13 x 13
        nn.Conv2d(192, 384, kernel_size=3, padding=1),  # N x 384 x 13 x 13
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),  # N x 256 x 13 x 13
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),  # N x 256 x 13 x 13
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),  # N x 256 x 6 x 6
    )


def _alexnet_small_features(in_channels: int) -> nn.Sequential:
    """The CIFAR AlexNet: same convs, padding 5 on the first, 2x2 pools.

    ceil_mode lets 28x28 MNIST through (7 -> 4 -> 2 -> 1 instead of 7 -> 3 -> 1 -> 0) and
    changes nothing at 32x32, where every grid is even.  Shapes below are for 32x32.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=5),  # N x 64 x 8 x 8
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True),  # N x 64 x 4 x 4
        nn.Conv2d(64, 192, kernel_size=5, padding=2),  # N x 192 x 4 x 4
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True),  # N x 192 x 2 x 2
        nn.Conv2d(192, 384, kernel_size=3, padding=1),  # N x 384 x 2 x 2
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),  # N x 256 x 2 x 2
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),  # N x 256 x 2 x 2
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True),  # N x 256 x 1 x 1
    )


def _zfnet_features(in_channels: int) -> nn.Sequential:
    """Zeiler & Fergus (2013), Fig. 3, at 224x224 input.

    Layer sizes from the paper: 96 filters 7x7/2 -> 110x110, pool 3x3/2 -> 55x55;
    256 filters 5x5/2 -> 26x26, pool 3x3/2 -> 13x13; 384, 384, 256 filters 3x3/1 -> 13x13,
    pool 3x3/2 -> 6x6; fc 4096, 4096.  Padding 1 on conv1 and Caffe's round-up pooling
    (ceil_mode) are what reproduce those sizes exactly.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 96, kernel_size=7, stride=2, padding=1),  # N x 96 x 110 x 110
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),  # N x 96 x 55 x 55
        nn.LocalResponseNorm(**_LRN),
        nn.Conv2d(96, 256, kernel_size=5, stride=2),  # N x 256 x 26 x 26
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),  # N x 256 x 13 x 13
        nn.LocalResponseNorm(**_LRN),
        nn.Conv2d(256, 384, kernel_size=3, padding=1),  # N x 384 x 13 x 13
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 384, kernel_size=3, padding=1),  # N x 384 x 13 x 13
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),  # N x 256 x 13 x 13
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),  # N x 256 x 6 x 6
    )


def _zfnet_small_features(in_channels: int) -> nn.Sequential:
    """ZFNet adapted to 32x32 the way the CIFAR AlexNet is: same convs, 2x2 pools.

    No standard CIFAR ZFNet exists; this keeps ZF's change to AlexNet (7x7/2 instead of
    11x11/4 first layer) on top of the CIFAR AlexNet's recipe.  Shapes below are for 32x32;
    28x28 gives 14 -> 7 -> 4 -> 2 -> 1.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 96, kernel_size=7, stride=2, padding=3),  # N x 96 x 16 x 16
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True),  # N x 96 x 8 x 8
        nn.LocalResponseNorm(**_LRN),
        nn.Conv2d(96, 256, kernel_size=5, stride=2, padding=2),  # N x 256 x 4 x 4
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True),  # N x 256 x 2 x 2
        nn.LocalResponseNorm(**_LRN),
        nn.Conv2d(256, 384, kernel_size=3, padding=1),  # N x 384 x 2 x 2
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 384, kernel_size=3, padding=1),  # N x 384 x 2 x 2
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),  # N x 256 x 2 x 2
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True),  # N x 256 x 1 x 1
    )


def _build(features: nn.Sequential, num_classes: int, small_input: bool, dropout: float) -> AlexNet:
    if small_input:
        # Global pooling is a no-op at 1x1; it keeps odd input sizes working.
        return AlexNet(features, nn.AdaptiveAvgPool2d((1, 1)), nn.Sequential(nn.Linear(256, num_classes)))
    return AlexNet(features, nn.AdaptiveAvgPool2d((6, 6)), _mlp_classifier(256 * 6 * 6, num_classes, dropout))


def alexnet(
    num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, dropout: float = 0.5
) -> AlexNet:
    """AlexNet; input ``(N, in_channels, 224, 224)`` (or 32x32 / 28x28 with ``small_input``).

    With the defaults it is torchvision's ``alexnet`` (61,100,840 parameters), initialised
    with PyTorch's default layer initialisation, as torchvision does.
    """
    make = _alexnet_small_features if small_input else _alexnet_features
    return _build(make(in_channels), num_classes, small_input, dropout)


def zfnet(
    num_classes: int = 1000, in_channels: int = 3, small_input: bool = False, dropout: float = 0.5
) -> AlexNet:
    """ZFNet (Zeiler & Fergus 2013); input ``(N, in_channels, 224, 224)`` or small with ``small_input``.

    PyTorch's default initialisation replaces the paper's N(0, 0.01) weights, as for AlexNet.
    """
    make = _zfnet_small_features if small_input else _zfnet_features
    return _build(make(in_channels), num_classes, small_input, dropout)


MODELS = {"alexnet": alexnet, "zfnet": zfnet}
