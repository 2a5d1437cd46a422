"""Trunk splitting: a backbone as a chain of modules whose boundaries are the tapping points.

``split_backbone`` knows the course's layouts (``features`` + ``classifier``, ResNet's ``layer1..`` + ``fc``);
``Trunk.from_stages`` is an explicit split of anything else; ``check_trunk`` proves a split reproduces the
backbone's own forward pass before any exit is attached to it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn

from ..errors import CourseError


@dataclass
class Trunk:
    """A backbone as a chain: ``tail(modules[-1](... modules[0](x)))`` equals ``backbone(x)``.

    names: the tapping-point names, one per module, in execution order.
    tail: trunk output -> logits (pooling and the backbone's own classifier): the final exit.
    """

    names: list[str]
    modules: list[nn.Module]
    tail: nn.Module

    @classmethod
    def from_stages(cls, stages: Sequence[nn.Module], tail: nn.Module,
                    names: Sequence[str] | None = None) -> "Trunk":
        """An explicit split of any backbone: ``stages`` run in order, then ``tail`` gives the logits.

        Tapping points are then the stage names (``"stage0"``, ``"stage1"``, ... unless ``names`` is given).
        """
        names = list(names) if names is not None else [f"stage{k}" for k in range(len(stages))]
        if len(names) != len(stages):
            raise CourseError(f"{len(names)} names for {len(stages)} stages: give one name per stage.")
        return cls(names, list(stages), tail)


class GlobalPoolClassifier(nn.Sequential):
    """Global average pool -> flatten -> the backbone's classifier: ``(B, C, H, W) -> (B, classes)``."""

    def __init__(self, classifier: nn.Module, pool: nn.Module | None = None):
        super().__init__(pool if pool is not None else nn.AdaptiveAvgPool2d(1), nn.Flatten(), classifier)


def split_backbone(backbone: nn.Module) -> Trunk:
    """The trunk of a known layout: ``features`` + ``classifier`` (MobileNets, VGG) or ResNet's layers.

    Anything else: build a ``Trunk.from_stages(...)`` yourself and pass it as ``attach_exits(trunk=...)``.
    """
    if isinstance(getattr(backbone, "features", None), nn.Sequential) and hasattr(backbone, "classifier"):
        names = [f"features.{i}" for i in range(len(backbone.features))]
        tail = GlobalPoolClassifier(backbone.classifier, getattr(backbone, "avgpool", None))
        return Trunk(names, list(backbone.features), tail)
    if hasattr(backbone, "layer1") and hasattr(backbone, "fc"):
        names, modules = [], []
        for stem in ("conv1", "bn1", "relu", "maxpool"):
            if isinstance(getattr(backbone, stem, None), nn.Module):
                names.append(stem)
                modules.append(getattr(backbone, stem))
        k = 1
        while isinstance(getattr(backbone, f"layer{k}", None), nn.Sequential):
            for i, block in enumerate(getattr(backbone, f"layer{k}")):
                names.append(f"layer{k}.{i}")
                modules.append(block)
            k += 1
        return Trunk(names, modules, GlobalPoolClassifier(backbone.fc, getattr(backbone, "avgpool", None)))
    raise CourseError(
        f"cannot split a {type(backbone).__name__} into a chain of tapping points automatically (it has neither "
        "`features` + `classifier` nor ResNet's `layer1..` + `fc`). Pass an explicit split: "
        "attach_exits(backbone, taps, trunk=Trunk.from_stages([stage0, stage1, ...], tail)).")


def tapping_points(backbone: nn.Module) -> list[str]:
    """The names ``attach_exits`` accepts for ``backbone`` (the last one is where its classifier already sits)."""
    return split_backbone(backbone).names


@torch.no_grad()
def check_trunk(backbone: nn.Module, trunk: Trunk, input_shape: Sequence[int]) -> torch.Tensor:
    """Raise unless the trunk reproduces ``backbone`` on a random input; return the logits (for the class count)."""
    was_training = backbone.training
    backbone.eval()
    p = next(backbone.parameters())
    x = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0)).to(p.device, p.dtype)
    try:
        expected = backbone(x)
        h = x
        for m in trunk.modules:
            h = m(h)
        got = trunk.tail(h)
    finally:
        backbone.train(was_training)
    if not isinstance(expected, torch.Tensor) or expected.shape != got.shape or \
            not torch.allclose(expected, got, rtol=1e-4, atol=1e-5):
        raise CourseError(
            f"the trunk found for {type(backbone).__name__} does not reproduce its forward pass (its forward does "
            "more than run these modules in order). Pass an explicit split: "
            "attach_exits(backbone, taps, trunk=Trunk.from_stages([...], tail)).")
    return got
