"""Tests of the classic families: AlexNet/ZFNet, VGG, GoogLeNet, Inception-v3.

Faithfulness to torchvision (same parameters, same state_dict keys, same outputs, same
auxiliary outputs in training), the papers' layer sizes, the CIFAR VGG-16 numbers, and a
forward/backward pass of every model at the small input sizes the course trains on.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from course_utils import models
from course_utils.errors import CourseError
from course_utils.models import alexnet, googlenet, inception, vgg

FAMILIES = (alexnet, vgg, googlenet, inception)
OUR_NAMES = sorted(name for family in FAMILIES for name in family.MODELS)
VGG_NAMES = [f"vgg{depth}{bn}" for depth in (11, 13, 16, 19) for bn in ("", "_bn")]
AUX_MODELS = ("googlenet", "inception_v3")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs_of(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass (FlopCounterMode counts 2 flops per MAC)."""
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def output_sizes(model: nn.Module, x: torch.Tensor, modules: dict[str, nn.Module]) -> dict[str, tuple]:
    """The output shape of each named module during one forward pass."""
    seen = {}

    def record(name: str):
        def hook(module, inputs, output) -> None:  # returning None keeps the output unchanged
            seen.setdefault(name, tuple(output.shape))
        return hook

    for name, m in modules.items():
        m.register_forward_hook(record(name))
    model(x)
    return seen


def test_every_name_is_registered_in_the_zoo():
    assert OUR_NAMES == sorted(["alexnet", "zfnet", "googlenet", "inception_v3", *VGG_NAMES])
    assert set(OUR_NAMES) <= set(models.available())


# --- 1. faithfulness to torchvision ---------------------------------------------------


@pytest.mark.parametrize("name", ["alexnet", *VGG_NAMES, *AUX_MODELS])
def test_same_network_as_torchvision(name):
    torch.manual_seed(0)
    # torchvision's defaults; init_weights=True is what its None default means, minus a warning
    options = {"init_weights": True} if name in AUX_MODELS else {}
    theirs = torchvision.models.get_model(name, weights=None, **options)
    # Ours on the meta device: no time spent initialising weights that theirs will replace
    # (the VGGs have 130M+ parameters).  Loading checks every key and every shape.
    with torch.device("meta"):
        ours = models.create(name)
    assert n_params(ours) == n_params(theirs)

    # Batch 1, except Inception-v3, whose training-mode aux head batch-normalises a 1x1 map.
    x = torch.randn(2, 3, 299, 299) if name == "inception_v3" else torch.randn(1, 3, 224, 224)
    # Fresh BN statistics (0, 1) make outputs tiny or huge (~1e12 for Inception-v3); one
    # train-mode pass with cumulative averaging (momentum=None) sets them to the batch
    # statistics, so that the outputs are O(1) and an absolute 1e-5 means something.
    batch_norms = [m for m in theirs.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in batch_norms:
        m.momentum = None
    if batch_norms:
        with torch.no_grad():
            theirs.train()(x)

    ours.load_state_dict(theirs.state_dict(), strict=True, assign=True)
    with torch.no_grad():
        expected = theirs.eval()(x)
        actual = ours.eval()(x)
    assert isinstance(actual, torch.Tensor) and actual.shape == (len(x), 1000)
    assert expected.std() > 1e-3  # a non-trivial output, so the comparison can fail
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)

    if name in AUX_MODELS:
        # Training mode: the same auxiliary heads, fed from the same modules.  Both nets
        # draw their dropout masks in the same order, so equal seeds give equal masks.
        with torch.no_grad():
            torch.manual_seed(1)
            expected = theirs.train()(x)
            torch.manual_seed(1)
            actual = ours.train()(x)
        assert type(actual).__name__ == type(expected).__name__ and actual._fields == expected._fields
        for a, e in zip(actual, expected):
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


# --- 2. every model, small inputs, forward and backward --------------------------------


@pytest.mark.parametrize("in_channels,size", [(3, 32), (1, 28)], ids=["rgb32", "gray28"])
@pytest.mark.parametrize("name", OUR_NAMES)
def test_small_input_forward_backward(name, in_channels, size):
    torch.manual_seed(0)
    model = models.create(name, num_classes=10, in_channels=in_channels, small_input=True)
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == in_channels

    x, y = torch.randn(2, in_channels, size, size), torch.tensor([3, 7])
    out = model.train()(x)
    logits, *aux = out if isinstance(out, tuple) else (out,)  # GoogLeNet, Inception: (logits, *aux)
    assert logits.shape == (2, 10) and all(a.shape == (2, 10) for a in aux)
    loss = F.cross_entropy(logits, y) + 0.3 * sum(F.cross_entropy(a, y) for a in aux)
    loss.backward()
    grad = first_conv.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0

    with torch.no_grad():
        assert model.eval()(x).shape == (2, 10)


# --- 3. auxiliary classifiers ----------------------------------------------------------


@pytest.mark.parametrize("name,fields", [
    ("googlenet", ("logits", "aux_logits2", "aux_logits1")),
    ("inception_v3", ("logits", "aux_logits")),
])
def test_aux_logits_only_in_training_mode(name, fields):
    # shapes and types only: the meta device skips the arithmetic
    with torch.device("meta"):
        x = torch.empty(2, 3, 32, 32)
        model = models.create(name, num_classes=10, small_input=True)
        out = model.train()(x)
        assert out._fields == fields
        assert all(t.shape == (2, 10) for t in out)
        out = model.eval()(x)
        assert isinstance(out, torch.Tensor) and out.shape == (2, 10)

        # aux_logits=False: no auxiliary heads at all, a plain tensor even in training
        without = models.create(name, num_classes=10, small_input=True, aux_logits=False)
        out = without.train()(x)
        assert isinstance(out, torch.Tensor) and out.shape == (2, 10)
    aux_heads = [m for n, m in model.named_children() if n.startswith("aux") or n == "AuxLogits"]
    assert len(aux_heads) == len(fields) - 1
    assert n_params(model) - n_params(without) == sum(n_params(m) for m in aux_heads)


# --- 4. layer sizes of the papers and of the small-input stems -------------------------


def test_zfnet_layer_sizes_of_the_paper():
    # Zeiler & Fergus (2013), Fig. 3: 110 -> 55 -> 26 -> 13 -> 13 -> 13 -> 6
    with torch.device("meta"):
        net = models.create("zfnet")
        layers = {str(i): m for i, m in enumerate(net.features) if isinstance(m, (nn.Conv2d, nn.MaxPool2d))}
        sizes = output_sizes(net, torch.empty(1, 3, 224, 224), layers)
    assert [s[1:] for s in sizes.values()] == [
        (96, 110, 110), (96, 55, 55), (256, 26, 26), (256, 13, 13),
        (384, 13, 13), (384, 13, 13), (256, 13, 13), (256, 6, 6),
    ]


# The grids each family's modules see, for 32x32 and 28x28 inputs.
SMALL_GRIDS = [
    ("alexnet", ["features"], [1], [1]),
    ("zfnet", ["features"], [1], [1]),
    ("vgg16", ["features"], [1], [1]),
    # GoogLeNet: 28 / 14 / 7 at 224x224
    ("googlenet", ["inception3b", "inception4e", "inception5b"], [32, 16, 8], [28, 14, 7]),
    # Inception-v3: 35 / 17 / 8 at 299x299
    ("inception_v3", ["Mixed_5d", "Mixed_6e", "Mixed_7c"], [32, 15, 7], [28, 13, 6]),
]


@pytest.mark.parametrize("name,modules,sides32,sides28", SMALL_GRIDS)
def test_small_input_grids(name, modules, sides32, sides28):
    for in_channels, size, sides in [(3, 32, sides32), (1, 28, sides28)]:
        with torch.device("meta"):
            net = models.create(name, num_classes=10, in_channels=in_channels, small_input=True).eval()
            shapes = output_sizes(net, torch.empty(1, in_channels, size, size),
                                  {m: net.get_submodule(m) for m in modules})
        assert [shapes[m][-1] for m in modules] == sides


def test_imagenet_stems_are_the_default():
    with torch.device("meta"):
        assert models.create("alexnet").features[0].stride == (4, 4)
        assert isinstance(models.create("googlenet").maxpool1, nn.MaxPool2d)
        net = models.create("inception_v3")
        small = models.create("inception_v3", small_input=True)
    assert net.Conv2d_1a_3x3.conv.stride == (2, 2) and isinstance(net.maxpool2, nn.MaxPool2d)
    assert small.Conv2d_1a_3x3.conv.stride == (1, 1) and isinstance(small.maxpool2, nn.Identity)


def test_googlenet_paper_5x5_option():
    # the paper's 5x5 instead of torchvision's 3x3: 16 more weights per (ch5x5red, ch5x5) pair
    ch5x5red_times_ch5x5 = [16 * 32, 32 * 96, 16 * 48, 24 * 64, 24 * 64, 32 * 64, 32 * 128, 32 * 128, 48 * 128]
    with torch.device("meta"):
        paper, port = models.create("googlenet", kernel_5x5=5), models.create("googlenet")
    assert paper.inception3a.branch3[1].conv.kernel_size == (5, 5)
    assert n_params(paper) - n_params(port) == 16 * sum(ch5x5red_times_ch5x5) == 380_928


# --- 5. the CIFAR VGG-16 ---------------------------------------------------------------


def test_vgg16_cifar_parameters_and_macs():
    with torch.device("meta"):
        net = models.create("vgg16", num_classes=10, small_input=True)
        bn_net = models.create("vgg16_bn", num_classes=10, small_input=True)
        x = torch.empty(1, 3, 32, 32)
        macs = macs_of(net, x)
        bn_macs = macs_of(bn_net, x)
        convs = {str(i): m for i, m in enumerate(net.features) if isinstance(m, nn.Conv2d)}
        conv_outputs = sum(torch.Size(s).numel() for s in output_sizes(net, x, convs).values())

    # 14,714,688 in the 13 convs + 5,130 in the 512 -> 10 linear layer
    assert n_params(net) == 14_719_818 and round(n_params(net) / 1e6, 1) == 14.7
    assert n_params(bn_net) == 14_728_266 and round(n_params(bn_net) / 1e6, 1) == 14.7
    # FlopCounterMode counts the multiply-accumulates of convs and linears only:
    # 313,196,544 in the convs + 5,120 in the classifier.
    assert macs == bn_macs == 313_201_664 and round(macs / 1e6, 1) == 313.2
    # The often-quoted 313.5M also counts one addition per conv output for the bias.
    assert conv_outputs == 276_480 and round((macs + conv_outputs) / 1e6, 1) == 313.5


def test_vgg16_cifar_accepts_mnist():
    net = models.create("vgg16", num_classes=10, in_channels=1, small_input=True).eval()
    with torch.no_grad():
        assert net.features(torch.randn(1, 1, 28, 28)).shape == (1, 512, 1, 1)


# --- 6. VGG width multiplier and stages ------------------------------------------------


def test_width_mult_scales_channels():
    def conv_params(model: nn.Module) -> int:
        return sum(n_params(m) for m in model.modules() if isinstance(m, nn.Conv2d))

    with torch.device("meta"):
        full = models.create("vgg16", num_classes=10, small_input=True)
        quarter = models.create("vgg16", num_classes=10, small_input=True, width_mult=0.25)
    widths = [m.out_channels for m in quarter.modules() if isinstance(m, nn.Conv2d)]
    assert widths == [16, 16, 32, 32, 64, 64, 64, 128, 128, 128, 128, 128, 128]
    assert quarter.classifier[0].in_features == 128
    # weights scale with width^2 (1/16); only the first conv (3 inputs) and biases scale by 1/4
    assert conv_params(quarter) == 920_784
    assert conv_params(quarter) / conv_params(full) == pytest.approx(1 / 16, rel=0.005)


def test_scale_channels_rounds_half_up_and_keeps_one():
    assert [vgg.scale_channels(c, 0.3) for c in (64, 128, 5)] == [19, 38, 2]  # 19.2, 38.4, 1.5
    assert vgg.scale_channels(64, 1e-3) == 1
    assert vgg.stage_widths(vgg.CFGS["vgg16"], 0.5) == [32, 64, 128, 256, 256]


def test_width_mult_must_be_positive():
    with pytest.raises(CourseError, match=r"width_mult must be > 0, got 0; use e.g. 0.5 for half"):
        models.create("vgg16", width_mult=0)


@pytest.mark.parametrize("name", ["vgg16", "vgg16_bn"])
def test_stages_split_the_conv_stack_at_the_pools(name):
    torch.manual_seed(0)
    net = models.create(name, num_classes=10, small_input=True, width_mult=0.5).eval()
    stages = net.stages()
    assert len(stages) == 5 and all(isinstance(s[-1], nn.MaxPool2d) for s in stages)
    assert sum(len(s) for s in stages) == len(net.features)
    assert [list(s) for s in stages] == [list(net.features[s]) for s in vgg.stage_slices(net.cfg, net.batch_norm)]

    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        h, shapes = x, []
        for stage in stages:
            h = stage(h)
            shapes.append(tuple(h.shape[1:]))
        torch.testing.assert_close(h, net.features(x), rtol=0, atol=0)
    assert shapes == [(32, 16, 16), (64, 8, 8), (128, 4, 4), (256, 2, 2), (256, 1, 1)]
    # the stages share the network's modules: training a stage trains the network
    assert stages[0][0] is net.features[0]
