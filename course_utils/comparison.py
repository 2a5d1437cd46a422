"""The architecture comparison: published ImageNet top-1 next to our measured cost.

    rows = [comparison.measure(a, latency_runs=10) for a in comparison.ARCHITECTURES]
    table = comparison.to_table(rows)                  # model, year, params, macs, top1, ..., latency_ms
    comparison.bubble_chart(table)                     # top-1 against MACs, bubble area = parameters
    comparison.timeline_chart(table)                   # AlexNet 2012 -> NAS

Nothing here is typed in that can be measured: parameters, MACs and latency come from
``complexity.profile`` and ``complexity.measure_latency`` on the networks built here.  What we
cannot measure without ImageNet is the accuracy, so the top-1 is the published one:

* from torchvision's weights metadata (``get_model_weights(name)[weights].meta["_metrics"]``,
  no download) when torchvision has weights for that exact architecture (a test checks that our
  builder and torchvision's have the same parameter count);
* otherwise from the paper, with the table it comes from (``Architecture.top1_source``).

``IMAGENET1K_V1`` is the default choice of torchvision weights: the first weights torchvision
published, trained with (close to) the original recipe of each paper. Later ``V2`` weights of a few
networks (ResNet-50: 76.1 -> 80.9) come from a 2021 recipe (long schedules, mixup, EMA...) that the
other networks never got, and would turn the chart into a comparison of recipes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from .complexity import measure_latency, profile
from .device import device_name
from .errors import UnknownNameError
from .plots import finish, place_labels

TABLE_COLUMNS = ["model", "year", "resolution", "params", "macs", "top1", "top1_source", "latency_ms", "device"]
FAMILY_COLOURS = {
    "classic": "tab:gray",  # AlexNet, ZFNet, VGG: stacks of convolutions
    "inception": "tab:purple",  # multi-branch modules, 1x1 reductions
    "residual": "tab:blue",  # shortcuts (ResNet, ResNeXt, DenseNet)
    "mobile": "tab:green",  # depthwise / grouped convolutions, small budgets
    "nas": "tab:red",  # found by architecture search
}


@dataclass(frozen=True)
class Architecture:
    """One network of the comparison and where its published top-1 comes from.

    model: a name of ``course_utils.models.create`` (``builder="course"``) or of
        ``torchvision.models.get_model`` (``builder="torchvision"``, built with ``weights=None``).
    torchvision_weights: the torchvision model whose weights metadata holds the top-1; None when
        torchvision has no weights for it, and then ``top1`` / ``top1_source`` hold the paper's figure.
    options: passed to the builder (e.g. ``aux_logits=False``: training-only heads do not run at inference).
    """

    model: str
    label: str
    year: int  # first public appearance (arXiv or venue, whichever came first)
    family: str
    idea: str
    builder: str = "course"
    torchvision_weights: str | None = None
    top1: float | None = None
    top1_source: str = ""
    resolution: int = 224  # the crop the published top-1 was measured at
    options: dict = field(default_factory=dict)


ZFNET_SOURCE = ("Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014 "
                "(arXiv:1311.2901), Table 2: '1 convnet as per Fig. 3', top-1 val error 38.4%")
MOBILENET_V1_SOURCE = ("Howard et al., MobileNets, arXiv:1704.04861 (2017), Table 6/8: "
                       "'1.0 MobileNet-224' 70.6%")
SHUFFLENET_V1_SOURCE = ("Zhang et al., ShuffleNet, CVPR 2018 (arXiv:1707.01083), Table 2: "
                        "'ShuffleNet 1x', g=3, classification error 32.6%")

ARCHITECTURES: list[Architecture] = [
    Architecture("alexnet", "AlexNet", 2012, "classic", "ReLU, dropout, GPUs: deep CNNs win ImageNet",
                 torchvision_weights="alexnet"),
    Architecture("zfnet", "ZFNet", 2013, "classic", "AlexNet re-tuned by looking at its filters (7x7 stride 2 stem)",
                 top1=61.6, top1_source=ZFNET_SOURCE),
    Architecture("vgg16", "VGG-16", 2014, "classic", "only 3x3 convolutions, 16 layers deep",
                 torchvision_weights="vgg16"),
    Architecture("googlenet", "GoogLeNet", 2014, "inception", "Inception modules: parallel branches, 1x1 reductions",
                 torchvision_weights="googlenet", options={"aux_logits": False}),
    Architecture("inception_v3", "Inception-v3", 2015, "inception", "factorised convolutions (n x 1, 1 x n)",
                 torchvision_weights="inception_v3", resolution=299, options={"aux_logits": False}),
    Architecture("resnet18", "ResNet-18", 2015, "residual", "identity shortcuts: depth without degradation",
                 torchvision_weights="resnet18"),
    Architecture("resnet34", "ResNet-34", 2015, "residual", "basic blocks, 34 layers",
                 torchvision_weights="resnet34"),
    Architecture("resnet50", "ResNet-50", 2015, "residual", "bottleneck blocks (1x1 - 3x3 - 1x1)",
                 torchvision_weights="resnet50"),
    Architecture("resnet101", "ResNet-101", 2015, "residual", "bottleneck blocks, 101 layers",
                 torchvision_weights="resnet101"),
    Architecture("resnet152", "ResNet-152", 2015, "residual", "bottleneck blocks, 152 layers",
                 torchvision_weights="resnet152"),
    Architecture("squeezenet1_0", "SqueezeNet", 2016, "mobile", "fire modules: AlexNet accuracy, 50x fewer weights",
                 builder="torchvision", torchvision_weights="squeezenet1_0"),
    Architecture("densenet121", "DenseNet-121", 2016, "residual", "every layer sees every earlier layer (concat)",
                 builder="torchvision", torchvision_weights="densenet121"),
    Architecture("resnext50_32x4d", "ResNeXt-50", 2016, "residual", "cardinality: grouped 3x3 at equal MACs",
                 torchvision_weights="resnext50_32x4d"),
    Architecture("resnext101_32x8d", "ResNeXt-101", 2016, "residual", "cardinality 32, 8 channels per group",
                 torchvision_weights="resnext101_32x8d"),
    Architecture("mobilenet_v1", "MobileNet v1", 2017, "mobile", "depthwise-separable convolutions, width/resolution knobs",
                 top1=70.6, top1_source=MOBILENET_V1_SOURCE),
    Architecture("shufflenet_v1_g3", "ShuffleNet v1", 2017, "mobile", "grouped 1x1 convolutions + channel shuffle",
                 top1=67.4, top1_source=SHUFFLENET_V1_SOURCE),
    Architecture("mobilenet_v2", "MobileNet v2", 2018, "mobile", "inverted residuals, linear bottlenecks",
                 torchvision_weights="mobilenet_v2"),
    Architecture("shufflenet_v2_x0_5", "ShuffleNet v2 0.5x", 2018, "mobile", "designed for measured speed, not MACs",
                 torchvision_weights="shufflenet_v2_x0_5"),
    Architecture("shufflenet_v2_x1_0", "ShuffleNet v2 1.0x", 2018, "mobile", "channel split, no grouped 1x1",
                 torchvision_weights="shufflenet_v2_x1_0"),
    Architecture("mnasnet1_0", "MnasNet 1.0", 2018, "nas", "searched with latency in the reward",
                 builder="torchvision", torchvision_weights="mnasnet1_0"),
    Architecture("mobilenet_v3_large", "MobileNet v3", 2019, "nas", "platform-aware NAS + NetAdapt, h-swish, SE",
                 builder="torchvision", torchvision_weights="mobilenet_v3_large"),
    Architecture("efficientnet_b0", "EfficientNet-B0", 2019, "nas", "searched base net, compound depth/width/resolution scaling",
                 builder="torchvision", torchvision_weights="efficientnet_b0"),
]

# Howard et al. 2017, Table 6 (width multiplier alpha, 224x224) and Table 7 (resolution, alpha = 1):
# ImageNet top-1 (%). Keys: (alpha, input side).
MOBILENET_V1_PUBLISHED = {
    (1.0, 224): 70.6, (0.75, 224): 68.4, (0.5, 224): 63.7, (0.25, 224): 50.6,
    (1.0, 192): 69.1, (1.0, 160): 67.2, (1.0, 128): 64.4,
}
MOBILENET_V1_PUBLISHED_SOURCE = "Howard et al., MobileNets, arXiv:1704.04861 (2017), Tables 6 and 7"


def find(model: str) -> Architecture:
    """The ``ARCHITECTURES`` entry named ``model``; ``UnknownNameError`` lists the names."""
    for arch in ARCHITECTURES:
        if arch.model == model:
            return arch
    raise UnknownNameError(f"no architecture {model!r} in the comparison. Known: "
                           f"{', '.join(a.model for a in ARCHITECTURES)}.")


def published_top1(arch: Architecture, weights: str = "IMAGENET1K_V1") -> tuple[float, str]:
    """``(top-1 %, where it comes from)``: torchvision's weights metadata, else the paper's figure.

    weights: which torchvision weights, e.g. ``"IMAGENET1K_V1"`` or ``"DEFAULT"``.
    """
    if arch.torchvision_weights is None:
        return float(arch.top1), arch.top1_source
    from torchvision.models import get_model_weights

    enum = get_model_weights(arch.torchvision_weights)
    try:
        chosen = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
    except KeyError:
        names = ", ".join(["DEFAULT", *(w.name for w in enum)])
        raise UnknownNameError(f"torchvision has no weights {weights!r} for {arch.torchvision_weights}. "
                               f"Use one of: {names}.") from None
    top1 = float(chosen.meta["_metrics"]["ImageNet-1K"]["acc@1"])
    return top1, f"torchvision {arch.torchvision_weights} {chosen.name} metadata"


def build(arch: Architecture, num_classes: int = 1000) -> nn.Module:
    """The network of ``arch``, freshly initialised (no weights are downloaded)."""
    if arch.builder == "torchvision":
        from torchvision.models import get_model

        return get_model(arch.model, weights=None, num_classes=num_classes, **arch.options)
    from . import models

    return models.create(arch.model, num_classes=num_classes, **arch.options)


def measure(arch: Architecture, *, resolution: int | None = None, latency_runs: int = 10, warmup: int = 3,
            threads: int | None = None, weights: str = "IMAGENET1K_V1") -> dict[str, Any]:
    """Build ``arch`` on the CPU, count it, time it, and attach its published top-1.

    resolution: the input side (default: the one its top-1 was measured at, 224 or 299).
    latency_runs: timed forward passes of one image (batch 1); 0 skips the timing (latency NaN).
    Returns one row of the comparison table (``TABLE_COLUMNS`` plus label, family, idea, p10/p90, threads).
    """
    side = resolution or arch.resolution
    model = build(arch).eval()
    shape = (1, 3, side, side)
    p = profile(model, shape)
    top1, source = published_top1(arch, weights)
    row = {"model": arch.model, "year": arch.year, "resolution": side, "params": p.params, "macs": p.macs,
           "top1": top1, "top1_source": source, "latency_ms": float("nan"), "device": device_name("cpu"),
           "label": arch.label, "family": arch.family, "idea": arch.idea,
           "latency_p10_ms": float("nan"), "latency_p90_ms": float("nan"), "threads": torch.get_num_threads()}
    if latency_runs > 0:
        lat = measure_latency(model, shape, warmup=warmup, runs=latency_runs, threads=threads)
        row.update(latency_ms=lat.median_ms, latency_p10_ms=lat.p10_ms, latency_p90_ms=lat.p90_ms,
                   threads=lat.threads, device=lat.device)
    return row


def to_table(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The measured rows as a DataFrame, ``TABLE_COLUMNS`` first, sorted by year then MACs."""
    frame = pd.DataFrame(list(rows))
    rest = [c for c in frame.columns if c not in TABLE_COLUMNS]
    return frame[TABLE_COLUMNS + rest].sort_values(["year", "macs"], kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------- figures
def _bubble_area(params: np.ndarray | pd.Series) -> np.ndarray:
    """Marker area (points^2) proportional to the parameter count: 100M parameters -> 1500."""
    return np.asarray(params, dtype=float) / 1e8 * 1500


def default_scale(table: pd.DataFrame) -> str:
    """The scale line of the comparison's figures: inputs, networks, where the top-1 and the latency come from."""
    sides = " / ".join(f"{s}x{s}" for s in sorted(table["resolution"].unique())) if "resolution" in table else "224x224"
    return f"ImageNet top-1 as published; {len(table)} networks counted at {sides}, batch 1"


def bubble_chart(table: pd.DataFrame, x: str = "macs", ax: plt.Axes | None = None, title: str | None = None, *,
                 scale: str | None = None, device: str | None = None):
    """ImageNet top-1 against ``x`` (``"macs"`` or ``"latency_ms"``, log scale); bubble area = parameters.

    table: rows of ``to_table`` (needs ``label``, ``family``, ``params``, ``top1`` and ``x``).
    scale, device: the line under the title (default: ``default_scale(table)`` and the table's device).
    Labels are placed by ``plots.place_labels``: none overprints another. Returns the Figure.
    """
    if ax is None:
        fig, ax = plt.subplots(figsize=(11, 6.6))
    else:
        fig = ax.figure
    values = table[x] / 1e9 if x == "macs" else table[x]
    for family, colour in FAMILY_COLOURS.items():
        rows = table["family"] == family
        if rows.any():
            ax.scatter(values[rows], table.loc[rows, "top1"], s=_bubble_area(table.loc[rows, "params"]),
                       color=colour, alpha=0.45, edgecolor="black", linewidth=0.6, label=family)
    ax.set_xscale("log")
    ax.margins(x=0.12, y=0.08)  # room for the labels of the outermost networks
    ax.set_xlabel("multiply-accumulates per image (G, log scale, our counter)" if x == "macs"
                  else f"CPU latency per image (ms, log scale, median, {table['device'].iloc[0]})")
    ax.set_ylabel("ImageNet top-1 accuracy (%, published)")
    ax.grid(True, which="both", alpha=0.25)
    # both legends outside the axes, where no network can hide behind them
    families = [f for f in FAMILY_COLOURS if (table["family"] == f).any()]
    markers = [plt.Line2D([], [], marker="o", linestyle="", markersize=8, markerfacecolor=FAMILY_COLOURS[f],
                          markeredgecolor="black", alpha=0.6) for f in families]
    family_legend = ax.legend(markers, families, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
                              title="family", title_fontsize=8)
    ax.add_artist(family_legend)
    sizes = [5e6, 25e6, 100e6]
    handles = [ax.scatter([], [], s=_bubble_area([s])[0], color="white", edgecolor="black") for s in sizes]
    ax.legend(handles, [f"{s / 1e6:.0f} M" for s in sizes], loc="lower left", bbox_to_anchor=(1.01, 0.0), fontsize=8,
              title="parameters", title_fontsize=8, labelspacing=2.2, borderpad=1.2, handletextpad=2.6)
    title = title or ("ImageNet top-1 against operations (bubble area = parameters)" if x == "macs"
                      else "ImageNet top-1 against measured CPU latency (bubble area = parameters)")
    finish(fig, title, default_scale(table) if scale is None else scale,
           table["device"].iloc[0] if device is None else device, fontsize=10)
    place_labels(ax, values, table["top1"], table["label"])
    return fig


def timeline_chart(table: pd.DataFrame, *, scale: str | None = None, device: str | None = None):
    """Two panels against the year: published top-1, and MACs (log). Returns the Figure.

    The first shows accuracy climbing; the second shows the cost of a given accuracy collapsing once
    the mobile and searched networks arrive.  scale, device: the line under the title (default:
    ``default_scale(table)`` and the table's device).  Labels never overprint (``plots.place_labels``).
    """
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 8.5), sharex=True)
    offsets = table.groupby("year").cumcount()  # spread networks of the same year a little
    counts = table.groupby("year")["model"].transform("count")
    xs = table["year"] + (offsets - (counts - 1) / 2) * 0.13
    colours = table["family"].map(FAMILY_COLOURS)
    panels = ((top, table["top1"], "top-1 (%, published)"), (bottom, table["macs"] / 1e9, "GMACs per image (log)"))
    for ax, values, label in panels:
        ax.scatter(xs, values, s=40, c=colours, edgecolor="black", linewidth=0.5, zorder=3)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.25)
        ax.margins(x=0.06, y=0.1)
    by_year = table.sort_values("year")
    top.step(by_year["year"], by_year["top1"].cummax(), where="post", color="black", alpha=0.3, label="best so far")
    bottom.set_yscale("log")
    bottom.set_xlabel("year first published")
    bottom.set_xticks(sorted(table["year"].unique()))
    for family, colour in FAMILY_COLOURS.items():
        top.scatter([], [], color=colour, label=family, edgecolor="black", linewidth=0.5)
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="family", title_fontsize=8)
    finish(fig, "From AlexNet to architecture search: accuracy up, then cost down",
           default_scale(table) if scale is None else scale,
           table["device"].iloc[0] if device is None else device, fontsize=10)
    for ax, values, _ in panels:
        place_labels(ax, xs, values, table["label"], fontsize=7)
    return fig
