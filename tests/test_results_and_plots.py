"""results.publish's context (device, scale, dataset) and the figure functions of plots / walk_plots.

The figures are drawn from small synthetic tables: each must return a Figure whose title names the
scale (and with it the dataset) and the device.
"""
import json

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from course_utils import plots, results, walk_plots  # noqa: E402
from course_utils.device import device_name  # noqa: E402
from course_utils.train import History  # noqa: E402

SCALE = "digits (8x8, upscaled to 32x32): 200 training images (20 per class), 1 epochs"


# ----------------------------------------------------------------------------- results
def test_publish_fills_the_context_metrics(tmp_path):
    out = results.publish(tmp_path, device=torch.device("cpu"), scale=SCALE, dataset="digits (8x8)",
                          metrics={"accuracy": np.float32(0.5)})
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == {"device": device_name("cpu"), "scale": SCALE, "dataset": "digits (8x8)", "accuracy": 0.5}


def test_publish_keeps_its_old_signature(tmp_path):
    results.publish(tmp_path, metrics={"device": "cpu (test)", "scale": "toy"}, tables=None, figures=None)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"device": "cpu (test)", "scale": "toy"}
    assert results.publish("", metrics={"device": "x"}) is None


def test_a_context_value_given_twice_must_agree():
    assert results.with_context({"device": "cpu (x)"}, device="cpu (x)") == {"device": "cpu (x)"}
    with pytest.raises(ValueError, match="'scale' given twice"):
        results.with_context({"scale": "old"}, scale="new")


def test_device_label():
    assert results.device_label("cpu") == results.device_label(torch.device("cpu")) == device_name("cpu")
    assert results.device_label("cpu (AMD EPYC, 2 threads)") == "cpu (AMD EPYC, 2 threads)"


# ----------------------------------------------------------------------------- figures
def history(accuracies):
    return History(epochs=[{"epoch": i + 1, "train_loss": 2.0 / (i + 1), "val_accuracy": a, "seconds": 1.0}
                           for i, a in enumerate(accuracies)])


def title_of(fig) -> str:
    return fig._suptitle.get_text()


def assert_titled(fig, scale=SCALE, device="cpu"):
    text = title_of(fig).replace("\n", " ")
    assert scale.split(":")[0] in text
    if device:
        assert results.device_label(device).split(" (")[0] in text
    matplotlib.pyplot.close(fig)


def test_finish_wraps_the_context_line():
    fig = matplotlib.pyplot.figure()
    plots.finish(fig, "Title", "x" * 50 + " " + "y" * 50, "cpu (a machine)", width=60)
    lines = title_of(fig).splitlines()
    assert lines[0] == "Title" and len(lines) > 2 and all(len(line) <= 60 for line in lines)
    assert " ".join(lines[1:]) == "x" * 50 + " " + "y" * 50 + " | cpu (a machine)"
    matplotlib.pyplot.close(fig)


def test_shared_figures():
    runs = {"a": history([0.2, 0.4]), "b": history([0.3, 0.5])}
    assert_titled(plots.training_curves(runs, title="t", scale=SCALE, device="cpu",
                                        styles={"a": {"linestyle": "--"}}))
    frame = pd.DataFrame({"macs": [1e9, 2e9], "params": [1e6, 3e6]}, index=["s1", "s2"])
    assert_titled(plots.bar_panels(frame, [("macs", "GMACs", 1e9, "tab:blue"), ("params", "M", 1e6)],
                                   title="t", scale=SCALE, device="cpu"))
    bench = pd.DataFrame({"loader": ["torchvision Dataset + DataLoader", "course_utils DeviceLoader"],
                          "workers": [0, 0], "images_per_s": [100.0, 1000.0], "device": [device_name("cpu")] * 2})
    assert_titled(plots.loader_benchmark(bench, scale=SCALE))
    trace = pd.DataFrame({"step": range(5), "reward": np.linspace(0.1, 0.5, 5)})
    assert_titled(plots.reward_trace(trace, window=2, title="t", scale=SCALE, device="cpu"))


def test_walk_figures():
    layers = pd.DataFrame({"layer": ["conv1", "fc2"], "params %": [10.0, 90.0], "MACs %": [95.0, 5.0]})
    assert_titled(walk_plots.share_bars(layers, title="t", scale=SCALE, device="cpu"))
    rf = pd.DataFrame({"type": ["Conv2d", "MaxPool2d", "Conv2d"], "rf_h": [3, 4, 8]})
    assert_titled(walk_plots.receptive_field(rf, title="t", scale=SCALE, device="cpu"))
    grads = pd.DataFrame([{"layer": layer, "run": run, "step": step, "grad_norm": 1.0 + step}
                          for layer in ("conv1", "conv3") for run in ("with aux", "without aux") for step in range(3)])
    assert_titled(walk_plots.gradient_norm_curves(grads, ["conv1", "conv3"], window=2, title="t", scale=SCALE,
                                                  device="cpu"))
    ratios = pd.DataFrame({"r1": [1.2, 0.9], "r2": [1.0, 1.1]}, index=["conv1", "conv3"])
    assert_titled(walk_plots.ratio_bars(ratios, {"r1": "first", "r2": "all"}, ylabel="x", title="t", scale=SCALE,
                                        device="cpu"))
    assert_titled(walk_plots.layer_gradient_norms({"plain8": [1.0, 0.5], "resnet8": [1.0, 0.9]}, title="t",
                                                  scale=SCALE, device="cpu"))
    lat = pd.DataFrame({"latency_ms": [1.0, 2.0], "p10_ms": [0.9, 1.8], "p90_ms": [1.2, 2.5]})
    assert_titled(walk_plots.latency_band_bars(lat, ["1x64d", "32x4d"], xlabel="x", title="t", scale=SCALE,
                                               device="cpu"))
    card = pd.DataFrame({"C": [1, 32], "test_accuracy": [0.5, 0.6], "train_seconds": [10.0, 20.0],
                         "latency_ms": [1.0, 3.0], "macs": [100, 104]})
    assert_titled(walk_plots.cardinality_summary({(1, 64): history([0.4, 0.5]), (32, 4): history([0.4, 0.6])}, card,
                                                 title="t", scale=SCALE, device="cpu"))


def test_mobile_figures():
    mult = pd.DataFrame({"alpha": [1.0, 0.5, 1.0], "input": [224, 224, 128], "MACs": [569e6, 149e6, 186e6],
                         "top-1 (paper)": [70.6, 63.7, 64.4]})
    assert_titled(walk_plots.multiplier_curve(mult, title="t", scale=SCALE, device="cpu"))
    grid = torch.eye(12, dtype=torch.bool)
    assert_titled(walk_plots.connectivity_grids({"a": grid, "b": ~grid}, title="t", scale=SCALE, device="cpu"))
    latency = pd.DataFrame({"model": ["resnet18", "mobilenet_v1"], "family": ["resnet", "mobilenet"],
                            "macs": [1.8e9, 0.57e9], "latency_ms": [20.0, 15.0], "p10_ms": [19.0, 14.0],
                            "p90_ms": [22.0, 17.0], "device": [device_name("cpu")] * 2})
    latency["GMACs_per_s"] = latency["macs"] / latency["latency_ms"] / 1e6
    assert_titled(walk_plots.latency_vs_macs(latency, title="t", scale=SCALE))
    shares = pd.DataFrame({"MAC share": [0.9, 0.1], "time share": [0.4, 0.6]}, index=["1x1 conv", "depthwise conv"])
    assert_titled(walk_plots.time_vs_mac_shares({"mobilenet_v1": shares}, title="t", scale=SCALE, device="cpu"))
    trained = pd.DataFrame({"model": ["mobilenet_v1@0.25", "shufflenet_v2_x0_5"], "macs": [1e6, 2e6],
                            "latency_ms": [1.0, 1.5], "test_accuracy": [0.4, 0.5]})
    assert_titled(walk_plots.accuracy_vs_cost(trained, title="t", scale=SCALE, device="cpu"))
