"""Tests of the modern families: ResNet/ResNeXt, MobileNet v1/v2, ShuffleNet v1/v2.

Faithfulness to torchvision (same parameters, same state_dict keys, same outputs), the
numbers of the papers (parameter counts, MACs), and a forward/backward pass of every
model at the small input sizes the course trains on.
"""
import pytest
import torch
import torch.nn as nn
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from course_utils import models
from course_utils.errors import CourseError
from course_utils.models import mobilenetv1, mobilenetv2, resnet, shufflenetv1, shufflenetv2
from course_utils.models.mobilenetv1 import input_resolution
from course_utils.models.resnet import BasicBlock, Bottleneck, ZeroPadShortcut
from course_utils.models.shufflenetv1 import channel_shuffle

FAMILIES = (resnet, mobilenetv1, mobilenetv2, shufflenetv1, shufflenetv2)
OUR_NAMES = sorted(name for family in FAMILIES for name in family.MODELS)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs_of(build, input_size: int = 224, in_channels: int = 3) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (FlopCounterMode flops / 2).

    The model lives on the meta device: shapes only, no arithmetic, so this is instant.
    """
    with torch.device("meta"):
        model = build()
        x = torch.empty(1, in_channels, input_size, input_size)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def test_every_name_is_registered_in_the_zoo():
    assert len(OUR_NAMES) == 28
    assert set(OUR_NAMES) <= set(models.available())


# --- 1. faithfulness to torchvision ---------------------------------------------------

FAITHFUL = [
    ("resnet18", {}),
    ("resnet34", {}),
    ("resnet50", {}),
    ("resnet101", {}),
    ("resnet152", {}),
    ("resnext50_32x4d", {}),
    ("resnext101_32x8d", {}),
    ("mobilenet_v2", {}),
    ("shufflenet_v2_x0_5", {}),
    ("shufflenet_v2_x1_0", {}),
    ("shufflenet_v2_x1_5", {}),
    ("shufflenet_v2_x2_0", {}),
    # options that torchvision shares: a new head, MobileNet v2's width rounding
    ("resnet18", {"num_classes": 10}),
    ("mobilenet_v2", {"width_mult": 0.5}),
]


@pytest.mark.parametrize("name,options", FAITHFUL, ids=[f"{n}-{o}" if o else n for n, o in FAITHFUL])
def test_same_network_as_torchvision(name, options):
    torch.manual_seed(0)
    theirs = torchvision.models.get_model(name, weights=None, **options)
    with torch.device("meta"):  # no time spent initialising weights that get replaced
        ours = models.create(name, **options)
    assert n_params(ours) == n_params(theirs)

    # Freshly initialised nets have BN statistics (0, 1) that make outputs tiny or huge;
    # one train-mode pass with cumulative averaging (momentum=None) sets them to batch
    # statistics, so that the outputs are O(1) and an absolute 1e-5 means something.
    # (A 112x112 pass is 4x cheaper and gives statistics as good for this purpose.)
    for m in theirs.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        theirs.train()(torch.randn(1, 3, 112, 112))

    ours.load_state_dict(theirs.state_dict(), strict=True, assign=True)  # strict: same names, same shapes
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = theirs.eval()(x)
        actual = ours.eval()(x)
    assert expected.std() > 0.05  # a non-trivial output, so the comparison can fail
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


# --- 2. every model, small inputs, forward and backward --------------------------------


@pytest.mark.parametrize("in_channels,size", [(3, 32), (1, 28)], ids=["rgb32", "gray28"])
@pytest.mark.parametrize("name", OUR_NAMES)
def test_small_input_forward_backward(name, in_channels, size):
    torch.manual_seed(0)
    model = models.create(name, num_classes=10, in_channels=in_channels, small_input=True)
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == in_channels

    x = torch.randn(2, in_channels, size, size)
    logits = model(x)
    assert logits.shape == (2, 10)
    nn.functional.cross_entropy(logits, torch.tensor([3, 7])).backward()
    grad = first_conv.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


# The last feature map before the global pool, for the documented CIFAR/MNIST stems.
LAST_MAP = [
    ("resnet18", "layer4", 4, 4),
    ("resnet20", "layer3", 8, 7),
    ("mobilenet_v1", "features", 2, 2),
    ("mobilenet_v2", "features", 4, 4),
    ("shufflenet_v1_g3", "stage4", 4, 4),
    ("shufflenet_v2_x1_0", "conv5", 4, 4),
]


@pytest.mark.parametrize("name,module,side32,side28", LAST_MAP)
def test_small_input_last_feature_map(name, module, side32, side28):
    for in_channels, size, side in [(3, 32, side32), (1, 28, side28)]:
        model = models.create(name, num_classes=10, in_channels=in_channels, small_input=True).eval()
        seen = []
        model.get_submodule(module).register_forward_hook(lambda m, i, out: seen.append(out.shape[-2:]))
        with torch.no_grad():
            model(torch.randn(1, in_channels, size, size))
        assert tuple(seen[0]) == (side, side)


def test_imagenet_stem_is_the_default():
    # the default (small_input=False) keeps the 7x7 stride-2 stem and the max-pool
    net = models.create("resnet18")
    assert net.conv1.kernel_size == (7, 7) and net.conv1.stride == (2, 2)
    assert isinstance(net.maxpool, nn.MaxPool2d)
    small = models.create("resnet18", small_input=True)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)


# --- 3. CIFAR ResNets and plain nets ---------------------------------------------------

# 6n+2 layers: 432 + 32 (stem) + 650 (fc) + 2n convs per stage with BN.  Each extra n
# adds 2 * (2304 + 32) + 2 * (9216 + 64) + 2 * (36864 + 128) = 97,216 parameters.
CIFAR_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962}


@pytest.mark.parametrize("depth", sorted(CIFAR_PARAMS))
def test_cifar_resnet_parameter_counts(depth):
    residual = models.create(f"resnet{depth}", num_classes=10)
    plain = models.create(f"plain{depth}", num_classes=10)
    assert n_params(residual) == CIFAR_PARAMS[depth]
    assert n_params(plain) == CIFAR_PARAMS[depth]  # option A shortcuts have no parameters
    n_convs = sum(isinstance(m, nn.Conv2d) for m in residual.modules())
    assert n_convs + 1 == depth  # 6n+2 weighted layers = convs + the linear layer


def test_option_a_shortcut_subsamples_and_zero_pads():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    out = ZeroPadShortcut(stride=2, extra_channels=2)(x)
    assert out.shape == (1, 4, 2, 2)
    assert torch.equal(out[:, :2], x[:, :, ::2, ::2])
    assert torch.equal(out[:, 2:], torch.zeros(1, 2, 2, 2))


def test_plain_block_has_no_shortcut():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 6, 6)
    for residual in (True, False):
        block = BasicBlock(4, 4, residual=residual).eval()
        nn.init.zeros_(block.bn2.weight)  # the residual branch now outputs exactly 0
        with torch.no_grad():
            out = block(x)
        expected = torch.relu(x) if residual else torch.zeros_like(x)
        torch.testing.assert_close(out, expected)


def test_plain_imagenet_resnet_drops_the_projections():
    # the three projection shortcuts of resnet18: 1x1 conv + BN at stages 2, 3, 4
    projections = sum(c_in * c_out + 2 * c_out for c_in, c_out in [(64, 128), (128, 256), (256, 512)])
    difference = n_params(models.create("resnet18")) - n_params(models.create("resnet18", residual=False))
    assert difference == projections
    plain = models.create("resnet18", residual=False)
    assert all(m.downsample is None and not m.residual for m in plain.modules() if isinstance(m, BasicBlock))


def test_cifar_depth_must_be_6n_plus_2():
    with pytest.raises(CourseError, match=r"6n\+2 layers, got depth=21: use 20, 32"):
        resnet.CifarResNet(21)


def test_basic_block_rejects_resnext_options():
    message = r"no grouped conv \(got cardinality=32, width_per_group=4\): ResNeXt options need"
    with pytest.raises(CourseError, match=message):
        models.create("resnet18", cardinality=32, width_per_group=4)


# --- 4. channel shuffle ----------------------------------------------------------------


def test_channel_shuffle_permutation():
    channels = torch.arange(4.0).view(1, 4, 1, 1)
    assert channel_shuffle(channels, 2).flatten().tolist() == [0, 2, 1, 3]
    channels = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(channels, 3).flatten().tolist() == [0, 2, 4, 1, 3, 5]
    assert channel_shuffle(channels, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    assert channel_shuffle(channels, 1).flatten().tolist() == [0, 1, 2, 3, 4, 5]


def test_channel_shuffle_matches_torchvision_and_keeps_channels_last():
    from torchvision.models.shufflenetv2 import channel_shuffle as reference

    for memory_format in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, 12, 3, 5).to(memory_format=memory_format).requires_grad_()
        for groups in (2, 3, 4):
            out = channel_shuffle(x, groups)
            assert torch.equal(out, reference(x, groups))
            assert out.is_contiguous(memory_format=memory_format)
        # the gradient is the inverse permutation: shuffling by C/g undoes shuffling by g
        grad = torch.randn(2, 12, 3, 5)
        channel_shuffle(x, 3).backward(grad)
        assert torch.equal(x.grad, channel_shuffle(grad, 4))


def test_channel_shuffle_needs_divisible_channels():
    with pytest.raises(CourseError, match="divisible by groups, got 5 channels and 2 groups"):
        channel_shuffle(torch.zeros(1, 5, 2, 2), 2)


# ShuffleNet v1, Zhang et al. Table 1: MACs ("complexity") at 1x, 224x224, per group count.
SHUFFLENET_V1_MACS = {1: 143e6, 2: 140e6, 3: 137e6, 4: 133e6, 8: 137e6}


@pytest.mark.parametrize("groups", sorted(SHUFFLENET_V1_MACS))
def test_shufflenet_v1_macs_match_the_paper(groups):
    macs = macs_of(lambda: models.create(f"shufflenet_v1_g{groups}"))
    assert macs == pytest.approx(SHUFFLENET_V1_MACS[groups], rel=0.015)


def test_shufflenet_v1_width_mult():
    # stage widths are rounded to multiples of 4g: g=8 at 0.5x gives 192/384/768, stem 16
    net = models.create("shufflenet_v1_g8", width_mult=0.5)
    assert net.conv1[0].out_channels == 16
    widths = [stage[-1].expand[0].out_channels for stage in (net.stage2, net.stage3, net.stage4)]
    assert widths == [192, 384, 768]
    assert macs_of(lambda: models.create("shufflenet_v1_g3", width_mult=0.5)) == pytest.approx(38e6, rel=0.03)


def test_shufflenet_v1_groups_must_be_in_the_table():
    with pytest.raises(CourseError, match="no channel table for groups=5: use 1, 2, 3, 4 or 8"):
        shufflenetv1.ShuffleNetV1(groups=5)


# --- 5. ResNeXt keeps ResNet's MACs ----------------------------------------------------


def test_resnext_bottleneck_costs_about_the_same_as_resnet_bottleneck():
    # stage-1 block at 56x56: 64 wide 3x3 vs 32 groups x 4 (128 wide, grouped)
    def block_macs(**options):
        return macs_of(lambda: Bottleneck(256, 64, **options), input_size=56, in_channels=256)

    plain = block_macs()
    grouped = block_macs(cardinality=32, width_per_group=4)
    assert grouped / plain == pytest.approx(1.0, abs=0.02)  # measured 1.007


def test_resnext50_costs_about_the_same_as_resnet50():
    ratio = macs_of(lambda: models.create("resnext50_32x4d")) / macs_of(lambda: models.create("resnet50"))
    assert ratio == pytest.approx(1.0, abs=0.05)  # measured 4.23G / 4.09G = 1.035


# --- 6. MobileNet v1: width and resolution multipliers ---------------------------------

# Howard et al. Table 6 (width) and Table 7 (resolution): MACs and parameters.
MOBILENET_V1_WIDTH = {1.0: (569e6, 4.2), 0.75: (325e6, 2.6), 0.5: (149e6, 1.3), 0.25: (41e6, 0.5)}
MOBILENET_V1_RESOLUTION = {1.0: (224, 569e6), 6 / 7: (192, 418e6), 5 / 7: (160, 290e6), 4 / 7: (128, 186e6)}


@pytest.mark.parametrize("alpha", sorted(MOBILENET_V1_WIDTH))
def test_mobilenet_v1_width_multiplier_matches_the_paper(alpha):
    paper_macs, paper_millions = MOBILENET_V1_WIDTH[alpha]
    macs = macs_of(lambda: models.create("mobilenet_v1", width_mult=alpha))
    assert macs == pytest.approx(paper_macs, rel=0.01)
    assert round(n_params(models.create("mobilenet_v1", width_mult=alpha)) / 1e6, 1) == paper_millions


def test_mobilenet_v1_half_width_costs_a_quarter():
    full = macs_of(lambda: models.create("mobilenet_v1"))
    half = macs_of(lambda: models.create("mobilenet_v1", width_mult=0.5))
    # pointwise convs scale with alpha^2, depthwise convs and the classifier with alpha
    assert half / full == pytest.approx(0.25, abs=0.02)  # measured 0.263


@pytest.mark.parametrize("rho", sorted(MOBILENET_V1_RESOLUTION))
def test_mobilenet_v1_resolution_multiplier(rho):
    size, paper_macs = MOBILENET_V1_RESOLUTION[rho]
    assert input_resolution(rho) == size
    macs = macs_of(lambda: models.create("mobilenet_v1"), input_size=size)
    assert macs == pytest.approx(paper_macs, rel=0.01)


def test_resolution_multiplier_must_be_positive():
    with pytest.raises(CourseError, match="rho must be positive, got 0: use e.g. 1, 6/7"):
        input_resolution(0)


def test_mobilenets_keep_features_and_classifier():
    # the tapping points of the early-exit notebooks: features.k and classifier
    v1, v2 = models.create("mobilenet_v1"), models.create("mobilenet_v2")
    assert isinstance(v1.features, nn.Sequential) and len(v1.features) == 14
    assert isinstance(v2.features, nn.Sequential) and len(v2.features) == 19
    assert isinstance(v1.classifier[-1], nn.Linear) and isinstance(v2.classifier[-1], nn.Linear)
    assert isinstance(v1.get_submodule("features.3"), mobilenetv1.DepthwiseSeparable)


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "shufflenet_v1_g3"])
def test_width_mult_must_be_positive(name):
    with pytest.raises(CourseError, match="width_mult must be positive, got 0: use e.g. 1.0"):
        models.create(name, width_mult=0)


@pytest.mark.parametrize("name", ["shufflenet_v1_g3", "shufflenet_v2_x0_5", "mobilenet_v2", "resnet20"])
def test_channels_last_gives_the_same_output(name):
    torch.manual_seed(0)
    model = models.create(name, num_classes=10, small_input=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        actual = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)
