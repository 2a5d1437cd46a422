"""The small CIFAR ResNeXt of notebook 06: its parameter count by hand, its shapes, equal cost across the template."""
import pytest
import torch
import torch.nn as nn

from course_utils import models
from course_utils.complexity import profile
from course_utils.models.resnext_cifar import STAGE_CHANNELS, TEMPLATE, CifarResNeXt


def bottleneck_params(in_channels: int, channels: int, cardinality: int, width_per_group: int,
                      projection: bool) -> int:
    """1x1 reduce + BN, grouped 3x3 + BN, 1x1 expand (x4) + BN, and the 1x1 + BN projection if any."""
    width = int(channels * width_per_group / 64) * cardinality
    out = 4 * channels
    total = in_channels * width + 2 * width  # conv1 (no bias) and bn1
    total += (width // cardinality) * width * 9 + 2 * width  # grouped conv2 and bn2
    total += width * out + 2 * out  # conv3 and bn3
    if projection:
        total += in_channels * out + 2 * out
    return total


def expected_params(cardinality: int, width_per_group: int, blocks: int, num_classes: int, in_channels: int) -> int:
    total = in_channels * 64 * 9 + 2 * 64  # stem conv and BN
    width = 64
    for i, channels in enumerate(STAGE_CHANNELS):
        for b in range(blocks):
            projection = b == 0 and (i > 0 or width != 4 * channels)
            total += bottleneck_params(width, channels, cardinality, width_per_group, projection)
            width = 4 * channels
    return total + width * num_classes + num_classes  # the linear head


@pytest.mark.parametrize("cardinality, width_per_group", TEMPLATE)
@pytest.mark.parametrize("blocks, num_classes, in_channels", [(2, 10, 3), (1, 10, 1), (3, 100, 3)])
def test_parameter_count_matches_the_hand_count(cardinality, width_per_group, blocks, num_classes, in_channels):
    with torch.device("meta"):
        net = CifarResNeXt(cardinality, width_per_group, blocks, num_classes, in_channels)
    counted = sum(p.numel() for p in net.parameters())
    assert counted == expected_params(cardinality, width_per_group, blocks, num_classes, in_channels)


def test_known_parameter_counts_of_the_notebook_family():
    counts = {}
    for c, w in TEMPLATE:
        with torch.device("meta"):
            counts[(c, w)] = sum(p.numel() for p in CifarResNeXt(c, w).parameters())
    assert counts[(1, 64)] == 221_386 and counts[(32, 4)] == 213_386


def test_the_template_costs_about_the_same():
    """Equal-MAC by construction: parameters within 4%, MACs within 7% of the C=1 network."""
    costs = []
    for c, w in TEMPLATE:
        with torch.device("meta"):
            p = profile(CifarResNeXt(c, w), (1, 3, 32, 32))
        costs.append((p.params, p.macs))
    base_params, base_macs = costs[0]
    for params, macs in costs:
        assert abs(params / base_params - 1) < 0.04
        assert abs(macs / base_macs - 1) < 0.07


def test_shapes_and_groups():
    torch.manual_seed(0)
    net = CifarResNeXt(8, 14, blocks=1, num_classes=7, in_channels=1).eval()
    x = torch.randn(2, 1, 32, 32)
    stem = net.stem(x)
    assert stem.shape == (2, 64, 32, 32)
    shapes = []
    for stage in net.stages:
        stem = stage(stem)
        shapes.append(tuple(stem.shape[1:]))
    assert shapes == [(64, 32, 32), (128, 16, 16), (256, 8, 8)]
    assert net(x).shape == (2, 7)
    grouped = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.groups > 1]
    assert len(grouped) == 3 and all(m.groups == 8 for m in grouped)
    assert [m.in_channels for m in grouped] == [8 * 3, 8 * 7, 8 * 14]  # d = 3, 7, 14 per group, doubling


def test_registered_in_the_zoo():
    assert "resnext_cifar" in models.available()
    with torch.device("meta"):
        net = models.create("resnext_cifar", num_classes=10, cardinality=4, width_per_group=24, blocks=1,
                            in_channels=1, small_input=True)
    assert isinstance(net, CifarResNeXt) and net.stem[0].in_channels == 1
