"""walk.py: receptive fields (by the recurrence and by back-propagation), per-stage costs that add
up to the whole network's, the gradient-norm probe, filter grids, and the two CPU-sized networks."""
import matplotlib
import pytest
import torch
import torch.nn as nn

from course_utils import models
from course_utils.complexity import profile
from course_utils.errors import CourseError, UnknownNameError
from course_utils.models.vgg import CFGS, make_layers
from course_utils.walk import (
    FACTORIZATIONS, FactorizedBlock, FactorizedNet, GradientNormProbe, SlimGoogLeNet, filter_grid,
    googlenet_stages, gradient_receptive_field, profile_stages, receptive_fields,
)

matplotlib.use("Agg")


# ----------------------------------------------------------------------------- receptive fields
def test_vgg16_receptive_fields_are_the_known_ones():
    table = receptive_fields(make_layers(CFGS["vgg16"]), input_size=224)
    convs = table[table.type == "Conv2d"]
    assert len(convs) == 13
    assert convs.rf_h.tolist()[:4] == [3, 5, 10, 14]  # two 3x3 see 5x5; a pool doubles the step
    assert convs.rf_h.iloc[-1] == 196 and table.rf_h.iloc[-1] == 212  # conv5_3, pool5
    assert table.jump.iloc[-1] == 32 and table.out_hw.iloc[-1] == 7
    assert (table.rf_h == table.rf_w).all()


def test_zfnet_layer_sizes_are_the_papers():
    table = receptive_fields(models.create("zfnet").features, input_size=224)
    assert table.out_hw.tolist() == [110, 55, 26, 13, 13, 13, 13, 6]  # Zeiler & Fergus, Fig. 3


@pytest.mark.parametrize("cfg, size", [("vgg16", 224), ("vgg11", 160)])
def test_backpropagation_agrees_with_the_recurrence(cfg, size):
    features = make_layers(CFGS[cfg], width_mult=1 / 32)  # the receptive field does not depend on width
    table = receptive_fields(features, input_size=size)
    assert gradient_receptive_field(features, size) == (table.rf_h.iloc[-1], table.rf_w.iloc[-1])


def test_a_window_larger_than_the_image_is_clipped():
    features = make_layers(CFGS["vgg11"], width_mult=1 / 32)
    assert receptive_fields(features).rf_h.iloc[-1] == 150
    assert gradient_receptive_field(features, 96) == (96, 96)


def test_backpropagation_agrees_on_strides_padding_and_ceil_mode():
    layers = nn.Sequential(nn.Conv2d(3, 4, 7, stride=2, padding=3), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                           nn.Conv2d(4, 4, 5, stride=2, padding=2), nn.Conv2d(4, 4, 3, dilation=2, padding=2))
    table = receptive_fields(layers, input_size=129)
    assert table.rf_h.tolist() == [7, 11, 27, 59]  # dilation 2 makes a 3x3 act as a 5x5
    assert gradient_receptive_field(layers, 129) == (59, 59)


def test_asymmetric_kernels_give_a_rectangle_then_a_square():
    layers = nn.Sequential(nn.Conv2d(1, 1, (3, 1), padding=(1, 0)), nn.Conv2d(1, 1, (1, 3), padding=(0, 1)))
    table = receptive_fields(layers)
    assert list(zip(table.rf_h, table.rf_w)) == [(3, 1), (3, 3)]
    assert table.kernel.tolist() == ["3x1", "1x3"]
    assert gradient_receptive_field(layers, 9) == (3, 3)


def test_unsupported_layer_is_named_with_the_fix():
    with pytest.raises(CourseError, match=r"layer '1' \(Upsample\).*Pass the layers before it"):
        receptive_fields(nn.Sequential(nn.Conv2d(3, 3, 3), nn.Upsample(scale_factor=2)))
    # an adaptive pool is a no-op only when it already has its output size
    assert len(receptive_fields(nn.Sequential(nn.Conv2d(3, 3, 3), nn.AdaptiveAvgPool2d(6)), input_size=8)) == 1
    with pytest.raises(CourseError, match="AdaptiveAvgPool2d"):
        receptive_fields(nn.Sequential(nn.Conv2d(3, 3, 3), nn.AdaptiveAvgPool2d(1)), input_size=8)


# ----------------------------------------------------------------------------- per-stage costs
def test_vgg16_stages_add_up_to_the_whole_network():
    with torch.device("meta"):  # shapes only: counting is instant
        net = models.create("vgg16", num_classes=10, small_input=True)
    stages = [(f"stage{i}", s) for i, s in enumerate(net.stages())]
    stages.append(("head", nn.Sequential(net.avgpool, nn.Flatten(1), net.classifier)))
    table = profile_stages(stages, (1, 3, 32, 32))
    whole = profile(net, (1, 3, 32, 32))
    assert table.macs.sum() == whole.macs == 313_201_664  # the CIFAR VGG-16 of the models docstring
    assert table.params.sum() == whole.params == 14_719_818
    assert table.output_shape.tolist() == [(1, 64, 16, 16), (1, 128, 8, 8), (1, 256, 4, 4), (1, 512, 2, 2),
                                           (1, 512, 1, 1), (1, 10)]
    assert table.macs_share.sum() == pytest.approx(100, abs=0.3)


def test_googlenet_stages_cover_the_inference_path():
    with torch.device("meta"):
        net = models.create("googlenet")
    table = profile_stages(googlenet_stages(net), (1, 3, 224, 224))
    whole = profile(net, (1, 3, 224, 224))
    aux = sum(p.numel() for m in (net.aux1, net.aux2) for p in m.parameters())
    assert table.macs.sum() == whole.macs
    assert table.params.sum() == whole.params - aux
    shapes = dict(zip(table.stage, table.output_shape))
    assert shapes["stem"] == (1, 192, 28, 28) and shapes["inception4e"] == (1, 832, 14, 14)
    assert shapes["inception5b"] == (1, 1024, 7, 7) and shapes["head"] == (1, 1000)


# ----------------------------------------------------------------------------- gradient norms
def test_probe_records_the_gradient_norm_of_every_step():
    torch.manual_seed(0)
    layer, head = nn.Linear(3, 2), nn.Linear(2, 1)
    net = nn.Sequential(layer, head)
    inputs = [torch.randn(4, 3) for _ in range(3)]
    expected = []
    with GradientNormProbe({"layer": layer, "head": head}) as probe:
        for x in inputs:
            net.zero_grad()
            net(x).sum().backward()
            grads = torch.cat([layer.weight.grad.flatten(), layer.bias.grad.flatten()])
            expected.append(grads.norm().item())
    net(inputs[0]).sum().backward()  # after the with block: not recorded
    frame = probe.frame()
    assert frame.groupby("layer").size().to_dict() == {"head": 3, "layer": 3}
    got = frame[frame.layer == "layer"].sort_values("step").grad_norm.tolist()
    assert got == pytest.approx(expected, rel=1e-6)


def test_probe_refuses_a_layer_without_parameters():
    with pytest.raises(CourseError, match="'act' has no trainable parameters.*conv or linear"):
        GradientNormProbe({"act": nn.ReLU()})


# ----------------------------------------------------------------------------- filters
def test_filter_grid_draws_one_image_per_filter():
    fig = filter_grid(torch.randn(10, 3, 5, 5), columns=4)
    assert len(fig.axes) == 12 and sum(bool(ax.images) for ax in fig.axes) == 10
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (5, 5, 3) and image.min() == 0 and image.max() == pytest.approx(1)
    assert sum(bool(ax.images) for ax in filter_grid(torch.randn(3, 1, 7, 7)).axes) == 3


def test_filter_grid_refuses_deep_layers_with_the_fix():
    with pytest.raises(CourseError, match=r"got \(8, 64, 3, 3\).*first convolution's weight"):
        filter_grid(torch.randn(8, 64, 3, 3))


# ----------------------------------------------------------------------------- SlimGoogLeNet
def test_slim_googlenet_at_full_width_is_the_small_input_googlenet():
    with torch.device("meta"):
        slim = SlimGoogLeNet(num_classes=10, width_mult=1.0)
        full = models.create("googlenet", num_classes=10, small_input=True)
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(slim) == shapes(full)


def test_slim_googlenet_outputs_and_aux_heads():
    torch.manual_seed(0)
    net = SlimGoogLeNet(num_classes=7, in_channels=1, width_mult=0.125, stem_stride=2)
    x = torch.randn(2, 1, 32, 32)
    out = net.train()(x)
    assert [tuple(o.shape) for o in out] == [(2, 7)] * 3
    assert tuple(net.eval()(x).shape) == (2, 7)
    before = sum(p.numel() for p in net.parameters())
    aux = sum(p.numel() for m in (net.aux1, net.aux2) for p in m.parameters())
    net.drop_aux()
    assert isinstance(net.train()(x), torch.Tensor)
    assert sum(p.numel() for p in net.parameters()) == before - aux
    # stem stride 2: the modules see 16/8/4 grids, a quarter of stride 1's grid cells
    with torch.device("meta"):
        p1 = profile(SlimGoogLeNet(width_mult=0.125, stem_stride=1), (1, 3, 32, 32)).macs
        p2 = profile(SlimGoogLeNet(width_mult=0.125, stem_stride=2), (1, 3, 32, 32)).macs
    assert 3.5 < p1 / p2 < 4.5


# ----------------------------------------------------------------------------- factorisations
@pytest.mark.parametrize("kind, weights_per_pair", [("5x5", 25), ("3x3+3x3", 18), ("3x1+1x3 (x2)", 12)])
def test_each_factorisation_sees_5x5_with_fewer_weights(kind, weights_per_pair):
    c = 16
    block = FactorizedBlock(kind, c, c)
    conv_weights = sum(m.weight.numel() for m in block.modules() if isinstance(m, nn.Conv2d))
    assert conv_weights == weights_per_pair * c * c
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    table = receptive_fields(convs)
    assert (table.rf_h.iloc[-1], table.rf_w.iloc[-1]) == (5, 5)
    assert tuple(block(torch.randn(1, c, 9, 9)).shape) == (1, c, 9, 9)


def test_factorized_nets_differ_only_in_their_blocks():
    nets = {kind: FactorizedNet(kind, num_classes=10, in_channels=1, width=4) for kind in FACTORIZATIONS}
    for kind, net in nets.items():
        assert tuple(net(torch.randn(2, 1, 28, 28)).shape) == (2, 10)
        block_weights = [sum(m.weight.numel() for m in b.modules() if isinstance(m, nn.Conv2d)) for b in net.blocks()]
        per_pair = sum(kh * kw for kh, kw in FACTORIZATIONS[kind])
        assert block_weights == [per_pair * c * c for c in (4, 8, 16)]
    shared = {kind: sum(p.numel() for n, p in net.named_parameters() if not any(
        n.startswith(f"features.{i}.") for i, m in enumerate(net.features) if isinstance(m, FactorizedBlock)))
        for kind, net in nets.items()}
    assert len(set(shared.values())) == 1  # stem, 1x1 transitions and head are the same
    with pytest.raises(UnknownNameError, match="unknown factorisation '7x7'. Use one of: 5x5, 3x3\\+3x3"):
        FactorizedNet("7x7")
