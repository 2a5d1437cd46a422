"""Figures of the architecture walk (notebooks 00, 08, 09) read cleanly: no label over another or cut off, no
legend over data, and every title names the data, the scale and the device.  Built from the course's own
published numbers (the 22 networks of notebook 09), so the crowding is the real one."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from course_utils import comparison, nas, plots  # noqa: E402
from course_utils.figure_checks import legend_hides_data, overlapping_text  # noqa: E402

DEVICE = "cpu (AMD EPYC, 1 threads)"
# model, year, input side, params, MACs, published top-1, ms: notebook 09's full run (results/architectures.csv)
NETWORKS = [
    ("alexnet", 2012, 224, 61100840, 714188480, 56.522, 51.7),
    ("zfnet", 2013, 224, 62357608, 1168032896, 61.6, 79.3),
    ("googlenet", 2014, 224, 6624904, 1498376192, 69.778, 162.0),
    ("vgg16", 2014, 224, 138357544, 15470264320, 71.592, 630.2),
    ("resnet18", 2015, 224, 11689512, 1814073344, 69.758, 87.1),
    ("resnet34", 2015, 224, 21797672, 3663761408, 73.314, 142.8),
    ("resnet50", 2015, 224, 25557032, 4089184256, 76.13, 177.3),
    ("inception_v3", 2015, 299, 23834568, 5713216096, 77.294, 528.2),
    ("resnet101", 2015, 224, 44549160, 7801405440, 77.374, 317.2),
    ("resnet152", 2015, 224, 60192808, 11513626624, 78.312, 457.5),
    ("squeezenet1_0", 2016, 224, 1248424, 818924576, 58.092, 50.7),
    ("densenet121", 2016, 224, 7978856, 2834161664, 74.434, 169.0),
    ("resnext50_32x4d", 2016, 224, 25028904, 4230479872, 77.618, 222.8),
    ("resnext101_32x8d", 2016, 224, 88791336, 16414015488, 79.312, 643.1),
    ("shufflenet_v1_g3", 2017, 224, 1865728, 137460672, 67.4, 28.7),
    ("mobilenet_v1", 2017, 224, 4231976, 568740352, 70.6, 29.0),
    ("shufflenet_v2_x0_5", 2018, 224, 1366792, 40476448, 60.552, 20.8),
    ("shufflenet_v2_x1_0", 2018, 224, 2278604, 144907992, 69.362, 27.6),
    ("mobilenet_v2", 2018, 224, 3504872, 300774272, 71.878, 37.0),
    ("mnasnet1_0", 2018, 224, 4383312, 314415872, 73.456, 37.1),
    ("mobilenet_v3_large", 2019, 224, 5483032, 216589760, 74.042, 33.5),
    ("efficientnet_b0", 2019, 224, 5288548, 385814752, 77.692, 58.8),
]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    rows = []
    for model, year, side, params, macs, top1, ms in NETWORKS:
        arch = comparison.find(model)
        rows.append({"model": model, "year": year, "resolution": side, "params": params, "macs": macs, "top1": top1,
                     "top1_source": "published", "latency_ms": ms, "device": DEVICE, "label": arch.label,
                     "family": arch.family, "idea": arch.idea})
    return comparison.to_table(rows)


def assert_reads(fig, *words: str) -> None:
    """No text over another or off the canvas, no legend over data, the title names ``words``."""
    assert overlapping_text(fig) == []
    for ax in fig.axes:
        assert legend_hides_data(ax) == [], ax.get_title()
    title = fig._suptitle.get_text().replace("\n", " ")
    for word in words:
        assert word in title, (word, title)


def test_the_walks_numbers_are_the_ones_the_prose_quotes(table):
    by = table.set_index("model")
    assert by["macs"].idxmax() == "resnext101_32x8d" and by["params"].idxmax() == "vgg16"  # notebook 09's text
    assert round(by.loc["resnext101_32x8d", "macs"] / 1e9, 2) == 16.41
    assert round(by.loc["vgg16", "macs"] / 1e9, 2) == 15.47


@pytest.mark.parametrize("x", ["macs", "latency_ms"])
def test_bubble_chart_labels_every_network_without_overprinting(table, x):
    fig = comparison.bubble_chart(table, x=x, scale=comparison.default_scale(table))
    assert_reads(fig, "ImageNet top-1", "22 networks", "224x224 / 299x299", "AMD EPYC")
    ax = fig.axes[0]
    labels = {t.get_text() for t in ax.texts if t.get_text()}
    assert labels == set(table["label"])
    frame = ax.get_window_extent(fig.canvas.get_renderer())
    for text in ax.texts:  # every label inside the axes: none is clipped by the frame or hidden by a legend
        if text.get_text():
            box = text.get_window_extent()
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, text


def test_timeline_labels_every_network_in_both_panels_without_overprinting(table):
    fig = comparison.timeline_chart(table)
    assert_reads(fig, "ImageNet top-1", "22 networks", "AMD EPYC")
    top, bottom = fig.axes
    for ax in (top, bottom):
        assert sorted(t.get_text() for t in ax.texts if t.get_text()) == sorted(table["label"])


def test_place_labels_separates_a_crowd_and_draws_leader_lines():
    fig, ax = plt.subplots(figsize=(4, 3))
    xs, ys = np.full(6, 0.5) + np.arange(6) * 0.01, np.full(6, 0.5)  # six points almost on top of each other
    ax.scatter(xs, ys)
    ax.set(xlim=(0, 1), ylim=(0, 1))
    fig.tight_layout()
    placed = plots.place_labels(ax, xs, ys, [f"network {i}" for i in range(6)])
    assert len(placed) == 6 and overlapping_text(fig) == []
    leaders = [t for t in ax.texts if not t.get_text()]
    assert leaders, "labels pushed away from their point are joined to it by a line"


def test_loader_benchmark_ticks_stay_apart_and_the_title_counts_the_images():
    bench = pd.DataFrame({"loader": ["torchvision Dataset + DataLoader"] * 2 + ["course_utils DeviceLoader"],
                          "workers": [0, 2, 0], "images": [20000] * 3, "images_per_s": [2024.0, 3829.0, 155461.0],
                          "device": ["cpu (AMD EPYC, 2 threads)"] * 3})
    fig = plots.loader_benchmark(bench, scale="CIFAR-10: 20000 training images, one pass, batch 256")
    assert_reads(fig, "20,000 training images", "CIFAR-10", "AMD EPYC")
    assert "epoch" not in fig._suptitle.get_text().split("\n")[0]


def test_nas_cost_history_keeps_gpu_days_and_cpu_minutes_on_separate_axes():
    measured = pd.DataFrame({"method": ["random", "reinforce", "enas"], "seconds": [169.0, 130.0, 57.2]})
    fig = nas.plot_cost_history(measured, device="cpu (AMD EPYC, 2 threads)")
    plots.finish(fig, "What a search costs", "MNIST: 100 children x 2 epochs", "cpu (AMD EPYC, 2 threads)")
    assert_reads(fig, "MNIST", "AMD EPYC")
    papers, ours = fig.axes
    assert "GPU-days" in papers.get_xlabel() and papers.get_xscale() == "log"
    assert "minutes" in ours.get_xlabel() and "AMD EPYC" in ours.get_xlabel()
    assert [t.get_text() for t in ours.get_yticklabels()] == ["random", "reinforce", "enas"]
    assert len(nas.plot_cost_history().axes) == 1  # the papers alone
    enas = nas.COST_HISTORY.set_index("method").loc["ENAS (Pham et al. 2018)"]
    assert enas["gpu_days"] == 0.45 and "0.45 days" in enas["how"] and "16 hours" not in enas["how"]


# ----------------------------------------------------------------------------- the walk's other figures (01-07)
WALK_SCALE = "digits (8x8, upscaled to 32x32): 200 training images (20 per class), 1 epochs, batch 128, width x0.125"


def test_multiplier_curve_labels_the_shared_point_once_and_keeps_labels_apart():
    from course_utils import walk_plots

    rows = [{"alpha": a, "input": side, "MACs": 568.7e6 * a * a * (side / 224) ** 2,
             "top-1 (paper)": comparison.MOBILENET_V1_PUBLISHED.get((a, side))}
            for a in (1.0, 0.75, 0.5, 0.25) for side in (224, 192, 160, 128)]
    fig = walk_plots.multiplier_curve(pd.DataFrame(rows), title="MobileNet v1: shrinking width or resolution",
                                      scale="MACs counted on the meta device; top-1 as published")
    assert_reads(fig, "MACs counted", "published")
    labels = [t.get_text() for t in fig.axes[0].texts if t.get_text()]
    assert len(labels) == len(set(labels)) == len(comparison.MOBILENET_V1_PUBLISHED)


def test_connectivity_grids_and_cardinality_summary_keep_text_and_legends_clear():
    import torch

    from course_utils import walk_plots
    from course_utils.history import History

    grid = torch.rand(12, 12) > 0.5
    assert_reads(walk_plots.connectivity_grids({"without channel shuffle": grid, "with channel shuffle": grid},
                                               title="Two grouped 1x1 convolutions (3 groups): who sees whom",
                                               scale="12 channels, the non-zero pattern of the Jacobian"),
                 "12 channels")
    card = pd.DataFrame({"C": [1, 2, 4, 8, 32], "test_accuracy": [0.5, 0.55, 0.6, 0.58, 0.61],
                         "train_seconds": [10.0, 12.0, 15.0, 19.0, 30.0], "latency_ms": [1.0, 1.3, 1.8, 2.2, 3.5],
                         "macs": [100, 101, 102, 103, 104]})
    histories = {(c, 64 // c): History(epochs=[{"epoch": 1, "train_loss": 2.0, "val_accuracy": 0.4, "seconds": 1.0},
                                               {"epoch": 2, "train_loss": 1.0, "val_accuracy": acc, "seconds": 1.0}])
                 for c, acc in zip(card["C"], card["test_accuracy"])}
    assert_reads(walk_plots.cardinality_summary(histories, card, title="Equal-MAC ResNeXts", scale=WALK_SCALE,
                                                device=DEVICE), "digits", "AMD EPYC")


def test_step_losses_and_long_titles_fit_their_figure():
    from course_utils import walk_plots

    losses = {"vgg16": [2.303] * 100, "vgg16_bn": list(np.linspace(2.31, 1.4, 100))}
    title = "VGG-16 (32x32 version) with and without batch normalisation: the first SGD steps"
    fig = walk_plots.step_losses(losses, chance=float(np.log(10)), window=10, device=DEVICE, title=title,
                                 scale=WALK_SCALE + ", 100 SGD steps, lr 0.05")
    assert_reads(fig, "digits", "100 SGD steps", "AMD EPYC")
    assert [line.get_label() for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")] == [
        "vgg16 (mean of 10)", "vgg16_bn (mean of 10)", "chance: ln(classes) = 2.30"]


def test_ratio_bars_keep_the_legend_off_the_bars():
    from course_utils import walk_plots

    ratios = pd.DataFrame({"first": [3.1, 2.5, 1.2, 1.0], "all": [1.4, 1.2, 1.05, 1.0]},
                          index=["conv1", "conv2", "inception3a", "inception5b"])
    fig = walk_plots.ratio_bars(ratios, {"first": "first 10% of steps", "all": "all steps"}, ylabel="ratio",
                                title="How much the auxiliary heads add to each layer's gradient", scale=WALK_SCALE,
                                device=DEVICE)
    assert_reads(fig, "digits", "AMD EPYC")


def test_loader_benchmark_tick_labels_name_their_own_values():
    bench = pd.DataFrame({"loader": ["torchvision Dataset + DataLoader", "course_utils DeviceLoader"],
                          "workers": [0, 0], "images": [2000, 2000], "images_per_s": [1801.0, 4387.0],
                          "device": ["cpu (AMD EPYC, 2 threads)"] * 2})
    fig = plots.loader_benchmark(bench, scale="CIFAR-10: one pass over 2,000 training images, batch 256")
    ax = fig.axes[0]
    fig.canvas.draw()
    checked = 0
    for value, label in zip(ax.get_xticks(), ax.get_xticklabels()):
        if label.get_text() and ax.get_xlim()[0] <= value <= ax.get_xlim()[1]:
            assert label.get_text() == ("0" if value == 0 else f"{value / 1000:g}k"), (value, label.get_text())
            checked += 1
    assert checked >= 3
    short = nas.plot_cost_history(pd.DataFrame({"method": ["random"], "seconds": [0.9]}))
    assert "seconds" in short.axes[1].get_xlabel()


@pytest.mark.parametrize("latency,log_axis", [([11.1, 11.3, 11.5], False), ([1.0, 5.0, 40.0], True)])
def test_accuracy_vs_cost_keeps_tick_labels_apart_over_a_narrow_or_a_wide_range(latency, log_axis):
    from course_utils import walk_plots

    trained = pd.DataFrame({"model": ["mobilenet_v1@0.25", "mobilenet_v1@0.5", "shufflenet_v2_x0_5"],
                            "macs": [3.5e6, 12e6, 4.2e6], "latency_ms": latency, "test_accuracy": [0.5, 0.6, 0.55]})
    fig = walk_plots.accuracy_vs_cost(trained, title="Small mobile networks", scale="digits", device="cpu")
    assert overlapping_text(fig) == []
    assert (fig.axes[1].get_xscale() == "log") == log_axis  # a factor of 3 or more gets a log axis
    labels = [t.get_text() for t in fig.axes[1].get_xticklabels() if t.get_text()]
    assert labels and not any("times" in t for t in labels)  # plain numbers, no 1.12x10^1
    plt.close(fig)


def test_latency_vs_macs_places_crowded_labels_and_the_breakdown_keeps_names_and_legend_clear():
    from course_utils import walk_plots

    crowd = [("shufflenet_v1_g1", 140), ("shufflenet_v1_g3", 138), ("shufflenet_v1_g8", 141), ("mobilenet_v1@0.5", 149),
             ("shufflenet_v2_x1_0", 146), ("resnet18", 1820)]
    latency = pd.DataFrame([{"model": m, "family": m.split("_")[0], "macs": macs * 1e6, "latency_ms": 20 + i,
                             "p10_ms": 19 + i, "p90_ms": 22 + i, "GMACs_per_s": macs / (20 + i), "device": "cpu"}
                            for i, (m, macs) in enumerate(crowd)])
    fig = walk_plots.latency_vs_macs(latency, title="Measured latency against counted MACs", scale="224x224")
    assert overlapping_text(fig) == []
    assert {t.get_text() for t in fig.axes[0].texts} - {""} == {m for m, _ in crowd}  # every network still named
    kinds = ["1x1 conv", "pooling", "outside layers (add, concat, shuffle, Python)", "batchnorm", "depthwise conv",
             "activation", "linear", "other", "3x3 conv", "7x7 conv"]
    shares = pd.DataFrame({"MAC share": [0.5, 0.0, 0.0, 0.0, 0.3, 0.0, 0.1, 0.0, 0.1, 0.0],
                           "time share": [0.3, 0.07, 0.08, 0.15, 0.2, 0.05, 0.05, 0.0, 0.1, 0.0]}, index=kinds)
    fig = walk_plots.time_vs_mac_shares({"a": shares, "b": shares}, title="Where the time goes", scale="224x224",
                                        device="cpu")
    assert overlapping_text(fig) == []  # no segment name runs into the next, and the legend is inside the figure
    plt.close("all")
