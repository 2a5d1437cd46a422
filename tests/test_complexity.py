"""complexity.py: parameter and MAC counts against torchvision's published metadata, the seeds'
arithmetic from real layers, the per-layer table, activation bytes, latency and error messages."""
from fractions import Fraction

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models import get_model, get_model_weights

from course_utils.complexity import (
    conv_macs, conv_params, format_count, measure_latencies, measure_latency, profile, separable_conv_macs,
)
from course_utils.errors import CourseError

# ----------------------------------------------------------------------------- torchvision's metadata
# torchvision's `_ops` is named GFLOPS in its docs but counts MACs. Its checker
# (test/common_extended_utils.py, used by test_extended_models.py::test_schema_meta_validation)
# counts only the multiplications of convolutions (batch * prod(weight.shape) * prod(out_hw)) and of
# matrix products (addmm: batch * in * out), i.e. MACs, on one image preprocessed by
# `weights.transforms()` (so the input is (1, 3, crop, crop)), divides by 1e9, rounds to 3 decimals
# and requires exact equality with meta["_ops"]. We do the same. `num_params` is
# sum(p.numel() for p in model.parameters()) of the model as the weights' builder leaves it.
#
# The architecture the weights use: googlenet's builder drops the aux heads after loading
# (aux_logits defaults to False there), inception_v3's keeps them (aux_logits defaults to True), so
# inception_v3's num_params includes AuxLogits, which does not run in eval mode and adds no MACs.
ARCHITECTURE = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": True, "init_weights": True},
}
TORCHVISION_MODELS = [
    "alexnet", "vgg16", "googlenet", "inception_v3", "resnet18", "resnet50", "resnext50_32x4d",
    "squeezenet1_0", "densenet121", "mobilenet_v2", "mobilenet_v3_small", "shufflenet_v2_x1_0",
    "mnasnet0_5", "efficientnet_b0", "regnet_y_400mf", "convnext_tiny",
]


@pytest.mark.parametrize("name", TORCHVISION_MODELS)
def test_matches_torchvision_metadata(name):
    weights = get_model_weights(name).DEFAULT
    crop = weights.transforms().crop_size[0]  # what torchvision's checker feeds: 224, 299 for inception
    model = get_model(name, weights=None, **ARCHITECTURE.get(name, {}))
    p = profile(model, (1, 3, crop, crop))
    assert p.params == weights.meta["num_params"]
    assert round(p.macs / 1e9, 3) == weights.meta["_ops"]
    assert p.layers.macs.sum() == p.macs
    assert p.layers.params.sum() == p.params


def test_resnet18_summary_and_not_run_rows():
    p = profile(torchvision.models.resnet18(), (1, 3, 224, 224))
    assert "11.69 M params, 1.81 G MACs" in repr(p)  # 11,689,512 params, 1,814,073,344 MACs
    assert p.flops == 2 * p.macs
    inception = torchvision.models.inception_v3(aux_logits=True, init_weights=True)
    layers = profile(inception, (1, 3, 299, 299)).layers
    not_run = layers[layers.kind == "not run"]
    assert set(not_run.name.str.split(".").str[0]) == {"AuxLogits"}
    assert not_run.params.sum() == sum(p.numel() for p in inception.AuxLogits.parameters())


def test_format_count():
    assert format_count(11_689_512) == "11.69 M"
    assert format_count(1_814_073_344, "MACs") == "1.81 GMACs"
    assert format_count(999) == "999"
    assert format_count(1500) == "1.50 k"


def test_meta_device_counts_like_the_cpu():
    cpu = profile(torchvision.models.mobilenet_v2(), (2, 3, 96, 96))
    with torch.device("meta"):
        meta_model = torchvision.models.mobilenet_v2()
    meta = profile(meta_model, (2, 3, 96, 96))
    assert (meta.params, meta.macs, meta.activation_bytes) == (cpu.params, cpu.macs, cpu.activation_bytes)
    assert meta.layers.equals(cpu.layers)


def test_macs_scale_with_the_batch():
    model = torchvision.models.resnet18()
    assert profile(model, (3, 3, 64, 64)).macs == 3 * profile(model, (1, 3, 64, 64)).macs


# ----------------------------------------------------------------------------- the seeds' arithmetic
def test_inception_bottleneck():
    # 28x28x192 input, 32 5x5 filters: 28*28*32 outputs, each 5*5*192 MACs
    assert conv_macs(192, 32, 5, 28) == 120_422_400
    reduce, conv = conv_macs(192, 16, 1, 28), conv_macs(16, 32, 5, 28)
    assert (reduce, conv) == (2_408_448, 10_035_200)
    assert reduce + conv == 12_443_648  # about a tenth


@pytest.mark.parametrize("channels", [1, 16, 64])
def test_factorising_5x5_into_two_3x3(channels):
    assert conv_params(channels, channels, 5) == 25 * channels**2
    two_3x3 = 2 * conv_params(channels, channels, 3)
    assert Fraction(two_3x3, conv_params(channels, channels, 5)) == Fraction(18, 25)  # 28% fewer
    macs = Fraction(2 * conv_macs(channels, channels, 3, 17), conv_macs(channels, channels, 5, 17))
    assert macs == Fraction(18, 25) and 1 - macs == Fraction(28, 100)


@pytest.mark.parametrize("channels", [1, 16, 64])
def test_factorising_3x3_into_3x1_and_1x3(channels):
    asym = conv_params(channels, channels, (3, 1)) + conv_params(channels, channels, (1, 3))
    assert Fraction(asym, conv_params(channels, channels, 3)) == Fraction(6, 9)  # a third fewer
    macs = conv_macs(channels, channels, (3, 1), 17) + conv_macs(channels, channels, (1, 3), 17)
    assert Fraction(macs, conv_macs(channels, channels, 3, 17)) == Fraction(2, 3)


@pytest.mark.parametrize("c_in, c_out, k, hw, stride", [
    (32, 64, 3, 56, 1), (192, 32, 5, 28, 1), (16, 24, 3, 32, 2), (8, 7, 7, 15, 1),
])
def test_depthwise_separable_costs_one_over_cout_plus_one_over_k2(c_in, c_out, k, hw, stride):
    ratio = Fraction(separable_conv_macs(c_in, c_out, k, hw, stride), conv_macs(c_in, c_out, k, hw, stride))
    assert ratio == Fraction(1, c_out) + Fraction(1, k * k)


@pytest.mark.parametrize("groups", [2, 4, 8, 32])
def test_grouped_conv_costs_one_over_g(groups):
    assert Fraction(conv_macs(64, 128, 3, 14, groups=groups), conv_macs(64, 128, 3, 14)) == Fraction(1, groups)
    assert Fraction(conv_params(64, 128, 3, groups=groups), conv_params(64, 128, 3)) == Fraction(1, groups)


def test_strided_same_padding_halves_the_grid():
    assert conv_macs(8, 8, 3, 32, stride=2) == 16 * 16 * 8 * 8 * 9


# ----------------------------------------------------------------------------- functional convolutions
class FunctionalConv(nn.Module):
    """A leaf whose forward calls F.conv2d itself: no nn.Conv2d for a hook-based counter to see."""

    def __init__(self, groups: int = 1):
        super().__init__()
        self.groups = groups
        self.weight = nn.Parameter(torch.randn(8, 8 // groups, 3, 3))

    def forward(self, x):
        return F.conv2d(x, self.weight, padding=1, groups=self.groups)


class ConvThenFunctional(nn.Module):
    """A module with a child AND a functional 1x1 convolution in its own forward."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.project = nn.Parameter(torch.randn(4, 8, 1, 1))

    def forward(self, x):
        return F.conv2d(self.conv(x), self.project)


@pytest.mark.parametrize("groups", [1, 8])
def test_functional_conv_is_counted(groups):
    p = profile(FunctionalConv(groups), (2, 8, 10, 10))
    assert p.macs == 2 * 8 * (8 // groups) * 9 * 10 * 10
    assert p.macs == profile(nn.Conv2d(8, 8, 3, padding=1, groups=groups, bias=False), (2, 8, 10, 10)).macs


def test_functional_conv_in_a_parent_gets_an_own_row():
    p = profile(ConvThenFunctional(), (1, 3, 6, 6))
    rows = p.layers.set_index("name")
    assert list(p.layers.name) == ["conv", "(root)"]
    assert rows.loc["conv", "macs"] == 8 * 3 * 9 * 36 and rows.loc["(root)", "macs"] == 4 * 8 * 36
    assert rows.loc["(root)", "kind"] == "own" and rows.loc["(root)", "params"] == 32
    assert p.layers.macs.sum() == p.macs and p.layers.params.sum() == p.params


# ----------------------------------------------------------------------------- the per-layer table
def small_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 10),
    )


def test_layer_table_of_a_small_sequential():
    p = profile(small_net(), (2, 3, 8, 8))
    t = p.layers
    assert list(t.name) == ["0", "1", "2", "3", "4", "5"]
    assert list(t.type) == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Flatten", "Linear"]
    assert list(t.output_shape) == [(2, 8, 8, 8), (2, 8, 8, 8), (2, 8, 8, 8), (2, 8, 4, 4), (2, 128), (2, 10)]
    assert list(t.params) == [8 * 3 * 9 + 8, 16, 0, 0, 0, 128 * 10 + 10]
    assert list(t.macs) == [2 * 8 * 3 * 9 * 64, 0, 0, 0, 0, 2 * 128 * 10]  # BN, ReLU, pool: no MACs
    assert t.macs.sum() == p.macs and t.params.sum() == p.params
    # float32 outputs; the in-place ReLU and the Flatten view allocate nothing new
    assert list(t.activation_bytes) == [4 * 1024, 4 * 1024, 0, 4 * 256, 0, 4 * 20]
    assert p.activation_bytes == 9296
    assert p.peak_bytes is None  # a CUDA-only counter


def test_reused_module_gives_two_rows_and_shared_parameters_count_once():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 5)
            self.act = nn.ReLU()
            self.unused = nn.Linear(5, 3)

        def forward(self, x):
            return self.act(self.fc(self.act(self.fc(x))))

    p = profile(Twice(), (4, 5))
    assert list(p.layers.name) == ["fc", "act", "fc", "act", "unused"]
    assert list(p.layers.kind) == ["leaf"] * 4 + ["not run"]
    assert list(p.layers.params) == [30, 0, 0, 0, 18]
    assert list(p.layers.macs) == [4 * 25, 0, 4 * 25, 0, 0]
    assert p.params == 48 and p.layers.params.sum() == p.params


def test_profile_runs_in_eval_mode_and_restores_each_modules_mode():
    model = small_net().train()
    model[5].eval()  # a mixed state must come back as it was
    before = model[1].running_mean.clone()
    seen = []
    model[0].register_forward_hook(lambda m, i, o: seen.append(m.training))
    profile(model, (2, 3, 8, 8))
    assert seen == [False]
    assert [m.training for m in model] == [True, True, True, True, True, False]
    assert torch.equal(model[1].running_mean, before)  # eval: BatchNorm statistics untouched


# ----------------------------------------------------------------------------- latency
def test_measure_latency_is_sane_and_restores_threads_and_mode():
    model = small_net().train()
    threads_before = torch.get_num_threads()
    want = 1 if threads_before != 1 else 2
    lat = measure_latency(model, (4, 3, 8, 8), warmup=2, runs=7, threads=want)
    assert lat.runs == 7 and len(lat.samples_ms) == 7 and lat.batch_size == 4
    assert 0 < lat.p10_ms <= lat.median_ms <= lat.p90_ms
    assert lat.threads == want
    assert torch.get_num_threads() == threads_before
    assert lat.device.startswith("cpu")
    assert model.training
    assert "ms median" in str(lat)


def test_measure_latency_rejects_bad_run_counts():
    with pytest.raises(CourseError, match="runs >= 1"):
        measure_latency(small_net(), (1, 3, 8, 8), runs=0)


class _Recorder(nn.Module):
    """Appends its name to a shared log on every forward: shows the order models were timed in."""

    def __init__(self, name: str, log: list) -> None:
        super().__init__()
        self.name, self.log, self.conv = name, log, nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.log.append(self.name)
        return self.conv(x)


def test_measure_latencies_interleaves_and_rotates_the_order():
    log: list[str] = []
    models = {n: _Recorder(n, log).train() for n in "abc"}
    threads_before = torch.get_num_threads()
    lats = measure_latencies(models, (2, 3, 4, 4), warmup=1, runs=3, threads=1)
    # warm-up a b c, then round 0 starts at a, round 1 at b, round 2 at c
    assert "".join(log) == "abc" + "abc" + "bca" + "cab"
    assert set(lats) == {"a", "b", "c"}
    assert all(l.runs == 3 and len(l.samples_ms) == 3 and l.batch_size == 2 and l.threads == 1 for l in lats.values())
    assert all(0 < l.p10_ms <= l.median_ms <= l.p90_ms for l in lats.values())
    assert all(m.training for m in models.values()) and torch.get_num_threads() == threads_before


def test_measure_latencies_rejects_no_models_and_bad_counts():
    with pytest.raises(CourseError, match="at least one model"):
        measure_latencies({}, (1, 3, 8, 8))
    with pytest.raises(CourseError, match="runs >= 1"):
        measure_latencies({"a": small_net()}, (1, 3, 8, 8), runs=0)


# ----------------------------------------------------------------------------- user errors
def test_wrong_channel_count_names_the_expected_input():
    model = torchvision.models.resnet18()
    with pytest.raises(CourseError) as info:
        profile(model, (1, 1, 64, 64))
    message = str(info.value)
    assert "(1, 1, 64, 64)" in message and "(N, 3, H, W)" in message
    assert "layer 'conv1'" in message and "Fix: pass input_size=(1, 3, H, W)" in message
    assert isinstance(info.value.__cause__, RuntimeError)  # the original stays attached
    with pytest.raises(CourseError, match=r"\(N, 3, H, W\)"):
        measure_latency(model, (1, 1, 64, 64), runs=1)


def test_wrong_feature_count_for_a_linear_model():
    with pytest.raises(CourseError, match=r"first layer '0' \(Linear\) wants inputs shaped \(N, \.\.\., 20\)\. "
                                          r"Fix: pass input_size=\(3, 20\)"):
        profile(nn.Sequential(nn.Linear(20, 5)), (3, 21))


def test_too_small_an_input_is_explained():
    with pytest.raises(CourseError, match=r"\(1, 3, 8, 8\).*wants inputs shaped \(N, 3, H, W\)"):
        profile(torchvision.models.alexnet(), (1, 3, 8, 8))


@pytest.mark.parametrize("bad", ["224", (1, 3, 224.5, 224), (1, 0, 4, 4), (), 224])
def test_bad_input_size_type(bad):
    with pytest.raises(CourseError, match=r"e\.g\. \(1, 3, 224, 224\)"):
        profile(small_net(), bad)


def test_meta_device_on_a_real_model_is_refused_with_the_fix():
    with pytest.raises(CourseError, match=r"with torch\.device\('meta'\)"):
        profile(small_net(), (1, 3, 8, 8), device="meta")
