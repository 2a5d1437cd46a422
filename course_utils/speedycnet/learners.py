"""SpeedyCNet's learners: VGG's conv stack cut at its max-pools, each piece with its own head.

``hierarchical_learners`` (the default) chains the pieces, so learner k+1 reads learner k's feature map and
learner 4's full path is VGG-16; ``independent_learners`` builds separate networks of growing depth, each
from raw pixels; ``small_first_learners`` makes the first of those narrow.  All are ``exits.ExitNetwork``s.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn

from ..errors import CourseError, UnknownNameError
from ..exits import ExitNetwork
from ..models import vgg

SPLIT = (1, 1, 1, 2)  # VGG blocks per learner: block 1 | block 2 | block 3 | blocks 4-5
HEAD_POOL = 4  # the "linear" head pools a feature map to at most 4 x 4 before its linear layer

HeadBuilder = Callable[[int, int, int], nn.Module]  # (channels, spatial size, num_classes) -> head


# ----------------------------------------------------------------------------- heads
def _linear_head(channels: int, spatial: int, num_classes: int, pool: int = HEAD_POOL) -> nn.Module:
    p = min(pool, spatial)
    return nn.Sequential(nn.AdaptiveAvgPool2d(p), nn.Flatten(), nn.Linear(channels * p * p, num_classes))


def _gap_head(channels: int, spatial: int, num_classes: int) -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


def _mlp_head(channels: int, spatial: int, num_classes: int, pool: int = HEAD_POOL) -> nn.Module:
    p = min(pool, spatial)
    hidden = max(32, 2 * channels)
    return nn.Sequential(nn.AdaptiveAvgPool2d(p), nn.Flatten(), nn.Linear(channels * p * p, hidden),
                         nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))


def _conv_head(channels: int, spatial: int, num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels),
                         nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(channels, num_classes))


HEADS: dict[str, HeadBuilder] = {"linear": _linear_head, "gap": _gap_head, "mlp": _mlp_head, "conv": _conv_head}


def _head_builder(head: str | HeadBuilder) -> HeadBuilder:
    if callable(head):
        return head
    if head not in HEADS:
        raise UnknownNameError(f"unknown head design {head!r}. Use one of: {', '.join(HEADS)}, "
                               "or a callable (channels, spatial_size, num_classes) -> nn.Module.")
    return HEADS[head]


# ----------------------------------------------------------------------------- learners
def vgg_blocks(cfg: str | vgg.Config = "vgg16", in_channels: int = 3, width_mult: float = 1.0,
               batch_norm: bool = True) -> list[nn.Sequential]:
    """VGG's conv stack cut at its max-pools: five ``nn.Sequential`` blocks for VGG-16.

    Built with ``vgg.make_layers`` exactly as ``models.create("vgg16_bn", small_input=True)`` builds
    ``features`` (ceil-mode pooling, so 28x28 reaches 1x1), with the same initialisation.
    """
    row = vgg.CFGS[cfg] if isinstance(cfg, str) else list(cfg)
    features = vgg.make_layers(row, batch_norm, in_channels, width_mult, ceil_mode=True)
    vgg.initialize_weights(features)  # torchvision's VGG init, as the baseline gets
    return [nn.Sequential(*features[s]) for s in vgg.stage_slices(row, batch_norm)]


def _check_split(split: Sequence[int], num_blocks: int) -> list[int]:
    split = [int(s) for s in split]
    if len(split) < 2 or any(s < 1 for s in split) or sum(split) != num_blocks:
        raise CourseError(
            f"split {tuple(split)} must give each of at least 2 learners >= 1 VGG block and use all "
            f"{num_blocks} blocks (e.g. (1, 1, 1, 2) or (2, 1, 1, 1) for VGG-16).")
    return split


def _make_head(builder: HeadBuilder, block_stack: nn.Module, in_channels: int, input_size: int,
               num_classes: int) -> nn.Module:
    with torch.no_grad():
        h = block_stack.eval()(torch.zeros(1, in_channels, input_size, input_size))
    block_stack.train()
    head = builder(h.shape[1], h.shape[-1], num_classes)
    vgg.initialize_weights(head)
    return head


def hierarchical_learners(num_classes: int = 10, in_channels: int = 3, input_size: int = 32, *,
                          width_mult: float = 1.0, split: Sequence[int] = SPLIT,
                          head: str | HeadBuilder = "linear", batch_norm: bool = True,
                          cfg: str | vgg.Config = "vgg16") -> ExitNetwork:
    """SpeedyCNet's default model: learners cut from VGG's conv stack, each feeding the next.

    Input ``(B, in_channels, input_size, input_size)`` (28 or 32; any size works); stage k maps
    learner k-1's feature map to its own; head k maps it to logits ``(B, num_classes)``.
    ``split``: VGG blocks per learner (sums to 5 for VGG-16).  ``head``: a name in ``HEADS`` or a
    callable ``(channels, spatial_size, num_classes) -> nn.Module``.
    """
    builder = _head_builder(head)
    blocks = vgg_blocks(cfg, in_channels, width_mult, batch_norm)
    split = _check_split(split, len(blocks))
    stages, heads, start = [], [], 0
    for n in split:
        stages.append(nn.Sequential(*blocks[start:start + n]))
        start += n
        heads.append(_make_head(builder, nn.Sequential(*stages), in_channels, input_size, num_classes))
    return ExitNetwork(stages, heads)


class _Learner(nn.Sequential):
    """An independent learner: VGG blocks then its head, from raw pixels."""


def independent_learners(num_classes: int = 10, in_channels: int = 3, input_size: int = 32, *,
                         width_mult: float = 1.0, split: Sequence[int] = SPLIT,
                         head: str | HeadBuilder = "linear", batch_norm: bool = True,
                         cfg: str | vgg.Config = "vgg16") -> ExitNetwork:
    """The variant: four separate learners of growing size, each reading raw pixels.

    Learner k is VGG blocks ``1 .. split[0] + ... + split[k]`` (its own weights) plus its head.  As an
    ``ExitNetwork`` its stages are identities and head k is the whole learner k, so ``infer`` still
    runs learner k only on the samples that no earlier learner let go.
    """
    builder = _head_builder(head)
    row = vgg.CFGS[cfg] if isinstance(cfg, str) else list(cfg)
    split = _check_split(split, len(vgg.stage_slices(row)))
    heads, depth = [], 0
    for n in split:
        depth += n
        blocks = vgg_blocks(row, in_channels, width_mult, batch_norm)[:depth]
        body = nn.Sequential(*blocks)
        heads.append(_Learner(body, _make_head(builder, body, in_channels, input_size, num_classes)))
    return ExitNetwork([nn.Identity() for _ in split], heads)


def small_first_learners(num_classes: int = 10, in_channels: int = 3, input_size: int = 32, *,
                         width_mult: float = 1.0, split: Sequence[int] = SPLIT, first_width: float = 0.25,
                         head: str | HeadBuilder = "linear", batch_norm: bool = True,
                         cfg: str | vgg.Config = "vgg16") -> ExitNetwork:
    """A small first learner, then larger ones: every sample passes learner 1, so it is made cheap.

    Learner 1 is ``independent_learners``' first learner at ``first_width`` of ``width_mult`` (VGG block 1 and
    its head, narrow); learners 2.. are ``independent_learners``' own at ``width_mult``, each from raw pixels.
    Why: in the hierarchy, learner 1 trains on all the data and took 88% of the cascade's time on MNIST at
    width 0.5 (17% of VGG16's seconds per epoch), which caps the speed-up near 5x whatever the later ones cost.
    """
    if not 0 < first_width <= 1:
        raise CourseError(f"first_width {first_width} must be in (0, 1]: learner 1's share of width_mult (e.g. 0.25).")
    small = independent_learners(num_classes, in_channels, input_size, width_mult=width_mult * first_width,
                                 split=split, head=head, batch_norm=batch_norm, cfg=cfg)
    large = independent_learners(num_classes, in_channels, input_size, width_mult=width_mult, split=split,
                                 head=head, batch_norm=batch_norm, cfg=cfg)
    heads = [small.heads[0], *large.heads[1:]]
    return ExitNetwork([nn.Identity() for _ in heads], heads)


def learner_stack(net: ExitNetwork, k: int) -> nn.Sequential:
    """Learner k's full path as one module (stages 0..k, then head k), sharing ``net``'s weights.

    ``(B, C, H, W) -> (B, num_classes)``: for training a learner end to end on all data (the ablation).
    """
    k = k % net.num_exits
    return nn.Sequential(*net.stages[:k + 1], net.heads[k])


def vgg16_baseline(num_classes: int = 10, in_channels: int = 3, *, width_mult: float = 1.0,
                   batch_norm: bool = True) -> nn.Module:
    """The baseline: ``models.create("vgg16[_bn]", small_input=True)`` at the same ``width_mult``."""
    from .. import models

    return models.create("vgg16_bn" if batch_norm else "vgg16", num_classes, in_channels=in_channels,
                         small_input=True, width_mult=width_mult)
