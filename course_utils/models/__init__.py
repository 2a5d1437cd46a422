"""The model zoo: one architecture family per file, one entry point.

    >>> from course_utils import models
    >>> net = models.create("resnet18", num_classes=10, small_input=True)
    >>> "vgg16_bn" in models.available()
    True

Names follow torchvision wherever torchvision has the same model, so that
``create(name)`` and ``torchvision.models.get_model(name)`` build the same network
(the faithfulness tests load one's ``state_dict`` into the other).  Each family
module exposes ``MODELS``: a plain dict from name to builder function.
"""
from typing import Callable

import torch.nn as nn

from ..errors import UnknownNameError
from . import (alexnet, googlenet, inception, mobilenetv1, mobilenetv2, resnet, resnext_cifar, shufflenetv1,
               shufflenetv2, vgg)

_FAMILIES = (alexnet, vgg, googlenet, inception, resnet, resnext_cifar, mobilenetv1, mobilenetv2, shufflenetv1,
             shufflenetv2)

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
for _family in _FAMILIES:
    _BUILDERS.update(_family.MODELS)


def available() -> list[str]:
    """All model names that ``create`` accepts, sorted."""
    return sorted(_BUILDERS)


def create(name: str, num_classes: int = 1000, **options) -> nn.Module:
    """Build model ``name`` with freshly initialised weights.

    Common options (each family documents the rest):
      in_channels: 3 for RGB, 1 for grayscale (MNIST).
      small_input: adapt the stem for 28x28 / 32x32 inputs, as the CIFAR literature does.
    Raises ``UnknownNameError`` listing the available names.
    """
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown model {name!r}. Available models: {', '.join(available())}"
        ) from None
    return builder(num_classes=num_classes, **options)
