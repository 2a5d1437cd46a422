"""The figures of the architecture walk (notebooks 01-07): one function each, so notebooks show ideas, not matplotlib.

Every function returns the Figure (for ``results.publish``) and titles it with ``plots.finish``: what the
figure shows, then the scale (which names the dataset) and the device.  Counted figures (parameters and
MACs on the ``meta`` device) pass a scale that says so: they are the same on every machine.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from .plots import finish, place_labels

Device = str | torch.device | None


# ----------------------------------------------------------------------------- 01: AlexNet, ZFNet
def share_bars(table: pd.DataFrame, *, title: str, scale: str = "", device: Device = None):
    """Side-by-side bars: each layer's share of the parameters and of the MACs.

    table: one row per layer with ``layer``, ``params %`` and ``MACs %`` columns.
    """
    fig, ax = plt.subplots(figsize=(7, 3.0))
    xs = range(len(table))
    ax.bar([x - 0.2 for x in xs], table["params %"], width=0.4, label="parameters", color="tab:orange")
    ax.bar([x + 0.2 for x in xs], table["MACs %"], width=0.4, label="MACs", color="tab:blue")
    ax.set_xticks(list(xs), table["layer"])
    ax.set_ylabel("share of the network (%)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return finish(fig, title, scale, device)


# ----------------------------------------------------------------------------- 02: VGG
def receptive_field(rf: pd.DataFrame, *, title: str, scale: str = "", device: Device = None,
                    marks: Mapping[str, int] | None = None):
    """The receptive field of one unit after each layer, pools marked in red, input sides as dashed lines.

    rf: ``walk.receptive_fields`` (``type``, ``rf_h``).  marks: label -> side, e.g. ``{"ImageNet input": 224}``.
    """
    marks = {"ImageNet input": 224, "CIFAR input": 32} if marks is None else marks
    fig, ax = plt.subplots(figsize=(8, 3.6))
    xs = range(1, len(rf) + 1)
    ax.plot(xs, rf["rf_h"], marker="o", markersize=4, color="tab:blue", label="receptive field (pixels)")
    pools = [x for x, t in zip(xs, rf["type"]) if t == "MaxPool2d"]
    ax.scatter(pools, rf["rf_h"][rf["type"] == "MaxPool2d"], color="tab:red", zorder=3, label="after a 2x2 max-pool")
    for (label, side), style in zip(marks.items(), ("--", ":", "-.")):
        ax.axhline(side, color="gray", linestyle=style, linewidth=1)
        ax.text(1, side + 4, f"{label}: {side}", fontsize=8, color="gray")
    ax.set_xticks(list(xs), [f"{'p' if t == 'MaxPool2d' else 'c'}{i}" for i, t in zip(xs, rf["type"])], fontsize=7)
    ax.set(xlabel="layer (c = 3x3 conv, p = pool)", ylabel="pixels")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left")
    return finish(fig, title, scale, device)


def step_losses(losses: Mapping[str, Sequence[float]], *, title: str, scale: str = "", device: Device = None,
                window: int = 10, chance: float | None = None):
    """Training loss of every step (faint) and its running mean over ``window`` steps, one line per run.

    losses: run name -> the loss of each SGD step.  chance: a dashed reference line (e.g. ln 10 for 10 classes).
    """
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for k, (name, values) in enumerate(losses.items()):
        series = pd.Series(list(values), dtype=float)
        steps = range(1, len(series) + 1)
        ax.plot(steps, series, color=f"C{k}", alpha=0.25, linewidth=0.8)
        ax.plot(steps, series.rolling(window, min_periods=1).mean(), color=f"C{k}", label=f"{name} (mean of {window})")
    if chance is not None:
        ax.axhline(chance, color="gray", linestyle="--", linewidth=1, label=f"chance: ln(classes) = {chance:.2f}")
    ax.set(xlabel="SGD step", ylabel="training loss (batch)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return finish(fig, title, scale, device)


# ----------------------------------------------------------------------------- 03: GoogLeNet
def gradient_norm_curves(grad_norms: pd.DataFrame, layers: Sequence[str], *, window: int, title: str,
                         scale: str = "", device: Device = None,
                         styles: Mapping[str, str] = (("with aux", "-"), ("without aux", "--"))):
    """One panel per probed layer: its gradient norm by training step (moving average over ``window``).

    grad_norms: ``walk.GradientNormProbe.frame()`` rows with a ``run`` column; styles: run -> line style.
    """
    styles = dict(styles)
    fig, axes = plt.subplots(1, len(layers), figsize=(3 * len(layers), 3.2), sharex=True, squeeze=False)
    for ax, layer in zip(axes[0], layers):
        for run, style in styles.items():
            rows = grad_norms[(grad_norms["layer"] == layer) & (grad_norms["run"] == run)]
            series = rows.set_index("step")["grad_norm"]
            ax.plot(series.rolling(window, min_periods=1).mean(), linestyle=style, label=run)
        ax.set_title(layer, fontsize=9)
        ax.set_xlabel("training step", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("gradient norm")
    axes[0, 0].legend(fontsize=7)
    return finish(fig, title, scale, device)


def ratio_bars(frame: pd.DataFrame, columns: Mapping[str, str], *, ylabel: str, title: str, scale: str = "",
               device: Device = None):
    """Grouped bars per row of ``frame`` (one group per index label), a line at 1: ratios against a baseline.

    columns: column -> legend label, e.g. ``{"ratio, all": "all steps"}``.
    """
    fig, ax = plt.subplots(figsize=(8, 3.0))
    xs = np.arange(len(frame))
    width = 0.8 / len(columns)
    for i, (column, label) in enumerate(columns.items()):
        ax.bar(xs + (i - (len(columns) - 1) / 2) * width, frame[column], width=width, label=label)
    ax.axhline(1, color="gray", linewidth=1)
    ax.set_xticks(list(xs), [str(v) for v in frame.index], fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    ax.grid(axis="y", alpha=0.3)
    return finish(fig, title, scale, device)


# ----------------------------------------------------------------------------- 05: ResNet
def layer_gradient_norms(grad_norms: Mapping[str, Sequence[float]], *, title: str, scale: str = "",
                         device: Device = None):
    """Gradient norm of every convolution, input to output, one line per network (log scale).

    Networks whose name starts with ``plain`` are dashed, the others solid.
    """
    fig, ax = plt.subplots(figsize=(8, 3.4))
    for name, norms in grad_norms.items():
        ax.semilogy(range(1, len(norms) + 1), norms, marker=".",
                    linestyle="--" if name.startswith("plain") else "-", label=name)
    ax.set(xlabel="convolution layer (1 = next to the input)", ylabel="|grad W| (log)")
    ax.grid(alpha=0.3)
    ax.legend()
    return finish(fig, title, scale, device)


# ----------------------------------------------------------------------------- 06: ResNeXt
def latency_band_bars(frame: pd.DataFrame, labels: Sequence[str], *, xlabel: str, title: str, scale: str = "",
                      device: Device = None):
    """Median latency per row as bars, the p10-p90 band as error bars (``latency_ms``, ``p10_ms``, ``p90_ms``)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    ax.bar(labels, frame["latency_ms"], color="tab:blue", alpha=0.7)
    ax.errorbar(labels, frame["latency_ms"], yerr=[frame["latency_ms"] - frame["p10_ms"],
                                                   frame["p90_ms"] - frame["latency_ms"]],
                fmt="none", color="black", capsize=3)
    ax.set(xlabel=xlabel, ylabel="ms (median, p10-p90)")
    return finish(fig, title, scale, device)


def cardinality_summary(histories: Mapping[tuple[int, int], Any], cardinality: pd.DataFrame, *, title: str,
                        scale: str = "", device: Device = None):
    """Three panels for equal-MAC ResNeXts: validation curves, test accuracy, and costs relative to C=1.

    histories: (C, d) -> ``train.History``; cardinality: one row per (C, d) with ``C``, ``test_accuracy``,
    ``train_seconds``, ``latency_ms`` and ``macs``, the C=1 row first.
    """
    fig, (ax_curve, ax_acc, ax_cost) = plt.subplots(1, 3, figsize=(14, 3.8))
    for (c, w), history in histories.items():
        frame = history.to_frame()
        ax_curve.plot(frame["epoch"], frame["val_accuracy"], marker="o", markersize=3, label=f"C={c}, {w}d")
    ax_curve.set(xlabel="epoch", ylabel="validation accuracy", title="validation accuracy")
    ax_curve.legend(fontsize=8)
    ax_curve.grid(alpha=0.3)
    ticks = [f"C={c}" for c in cardinality["C"]]
    ax_acc.bar(ticks, cardinality["test_accuracy"], color="tab:green", alpha=0.8)
    low, high = cardinality["test_accuracy"].min(), cardinality["test_accuracy"].max()
    ax_acc.set_ylim(max(0.0, low - 0.05), min(1.0, high + 0.03))
    ax_acc.set(ylabel="test accuracy", title="test accuracy (zoomed)")
    first = cardinality.iloc[0]
    relative = pd.DataFrame({"training time": cardinality["train_seconds"] / first["train_seconds"],
                             "latency (batch 1)": cardinality["latency_ms"] / first["latency_ms"],
                             "MACs": cardinality["macs"] / first["macs"]})
    relative.index = ticks
    relative.plot.bar(ax=ax_cost, rot=0, color=["tab:gray", "tab:blue", "tab:orange"], alpha=0.8)
    ax_cost.axhline(1.0, color="black", linewidth=0.8)
    ax_cost.set(ylabel="relative to C=1", title="cost relative to C=1")
    ax_cost.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    for ax in (ax_curve, ax_acc, ax_cost):
        ax.title.set_fontsize(10)
    return finish(fig, title, scale, device)


# ----------------------------------------------------------------------------- 07: MobileNet, ShuffleNet
def multiplier_curve(multipliers: pd.DataFrame, *, title: str, scale: str = "", device: Device = None):
    """Published top-1 against counted MACs, along the width (alpha) and the resolution (rho) knob.

    multipliers: rows with ``alpha``, ``input``, ``MACs`` and ``top-1 (paper)`` (NaN where unpublished).
    """
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    known = multipliers.dropna(subset=["top-1 (paper)"])
    full_side = int(known["input"].max())
    for label, rows, marker in ((f"width α ({full_side} px)", known[known["input"] == full_side], "o"),
                                ("resolution ρ (α = 1)", known[known["alpha"] == 1.0], "s")):
        ax.plot(rows["MACs"] / 1e6, rows["top-1 (paper)"], marker=marker, label=label)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}" if str(v)[0] in "25" else ""))
    ax.set(xlabel="MACs (M, our counter, log)", ylabel="ImageNet top-1 (%, Howard et al.)")
    legend = ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, which="both")
    ax.margins(x=0.15, y=0.12)  # room for the labels of the outermost points
    finish(fig, title, scale, device)
    points = known.drop_duplicates(["alpha", "input"])  # (1.0, full side) is on both curves: label it once
    place_labels(ax, points["MACs"] / 1e6, points["top-1 (paper)"],
                 [f"α={r.alpha:g}, {int(r.input)}px" for r in points.itertuples()], fontsize=7, avoid=[legend])
    return fig


def connectivity_grids(grids: Mapping[str, torch.Tensor], *, title: str, scale: str = "", device: Device = None,
                       tick_every: int = 4):
    """Boolean (out, in) matrices side by side: which output channel depends on which input channel."""
    fig, axes = plt.subplots(1, len(grids), figsize=(3.6 * len(grids), 4.4), squeeze=False)
    for ax, (label, grid) in zip(axes[0], grids.items()):
        grid = grid.cpu().numpy() if torch.is_tensor(grid) else np.asarray(grid)
        ax.imshow(grid, cmap="Greens", vmin=0, vmax=1.3)
        ax.set(title=label, xlabel="input channel", ylabel="output channel")
        ax.title.set_fontsize(9)
        ax.set_xticks(range(0, grid.shape[1], tick_every))
        ax.set_yticks(range(0, grid.shape[0], tick_every))
    return finish(fig, title, scale, device)


def latency_vs_macs(latency: pd.DataFrame, *, title: str, scale: str = "", reference: str = "resnet18"):
    """Measured latency against counted MACs (log-log), one colour per family, with the line of one MAC rate.

    latency: rows with ``model``, ``family``, ``macs``, ``latency_ms``, ``p10_ms``, ``p90_ms``, ``GMACs_per_s``
    and ``device``.  The dashed line is where every network would sit if its MACs ran at ``reference``'s rate.
    """
    fig, ax = plt.subplots(figsize=(8, 5.2))
    families = {f: c for f, c in zip(sorted(latency["family"].unique()), plt.cm.tab10.colors)}
    for r in latency.itertuples():
        ax.errorbar(r.macs / 1e6, r.latency_ms, yerr=[[r.latency_ms - r.p10_ms], [r.p90_ms - r.latency_ms]],
                    fmt="o", color=families[r.family], markersize=6, capsize=2)
    ref = latency.loc[latency["model"] == reference] if (latency["model"] == reference).any() else latency.iloc[:1]
    rate = float(ref["GMACs_per_s"].iloc[0])
    xs = np.geomspace(latency["macs"].min() / 1e6 / 1.5, latency["macs"].max() / 1e6 * 1.5, 50)
    ax.plot(xs, xs / rate, color="gray", linestyle="--",  # M MACs / (G MACs/s) = ms
            label=f"if every MAC ran at {ref['model'].iloc[0]}'s rate ({rate:.0f} GMAC/s)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlabel="MACs (M, our counter, log)", ylabel="latency (ms, median, log)")
    legend = ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3, which="both")
    ax.margins(x=0.2, y=0.15)  # room for the labels of the outermost points
    finish(fig, title, scale, latency["device"].iloc[0])
    # networks of similar cost crowd together (ShuffleNets, MobileNets at 0.5): labels placed so none overprints
    place_labels(ax, latency["macs"] / 1e6, latency["latency_ms"], list(latency["model"]), fontsize=7, avoid=[legend])
    return fig


def time_vs_mac_shares(breakdowns: Mapping[str, pd.DataFrame], *, title: str, scale: str = "",
                       device: Device = None):
    """For each network, two stacked bars: its MACs and its time, split by layer kind.

    breakdowns: network -> table indexed by layer kind with ``MAC share`` and ``time share`` columns.
    """
    kinds = sorted({k for t in breakdowns.values() for k in t.index})
    colour = {k: plt.cm.tab20(i % 20) for i, k in enumerate(kinds)}
    legend_rows = -(-len(kinds) // 3)
    height = 1.6 * len(breakdowns) + 1.4 + 0.25 * legend_rows
    fig, axes = plt.subplots(len(breakdowns), 1, figsize=(9, height), squeeze=False)
    labels = []
    for ax, (name, table) in zip(axes[:, 0], breakdowns.items()):
        for row, column in ((1, "MAC share"), (0, "time share")):
            left = 0.0
            for kind in kinds:
                value = float(table[column].get(kind, 0.0))
                if value > 0:
                    ax.barh(row, value, left=left, color=colour[kind], edgecolor="white")
                    if value > 0.06:
                        labels.append((ax, value, ax.text(left + value / 2, row, kind.replace(" conv", ""),
                                                          ha="center", va="center", fontsize=7)))
                    left += value
        ax.set_yticks([0, 1], ["time", "MACs"])
        ax.set_xlim(0, 1)
        ax.set_title(name, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("share of the forward pass")
    bottom = (0.1 + 0.17 * legend_rows) / height  # the legend's own strip, inside the figure
    fig.legend([plt.Rectangle((0, 0), 1, 1, color=colour[k]) for k in kinds], kinds,
               loc="lower center", ncol=3, fontsize=7, bbox_to_anchor=(0.5, 0.005))
    finish(fig, title, scale, device, rect=(0, bottom, 1, 1))
    renderer = fig.canvas.get_renderer()
    for ax, value, text in labels:  # a name wider than its segment would run into the next one: the legend has it
        if text.get_window_extent(renderer).width > value * ax.get_window_extent(renderer).width - 4:
            text.remove()
    return fig


def accuracy_vs_cost(trained: pd.DataFrame, *, title: str, scale: str = "", device: Device = None,
                     highlight: str = "mobilenet"):
    """Test accuracy against MACs (left) and measured latency (right), log x; ``highlight`` models in green."""
    fig, (ax_macs, ax_lat) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    colours = ["tab:green" if m.startswith(highlight) else "tab:red" for m in trained["model"]]
    for ax, column, label in ((ax_macs, "macs", "MACs per image (M)"),
                              (ax_lat, "latency_ms", "CPU latency, batch 1 (ms)")):
        values = trained[column] / (1e6 if column == "macs" else 1)
        ax.scatter(values, trained["test_accuracy"], s=60, c=colours)
        for v, a, m in zip(values, trained["test_accuracy"], trained["model"]):
            ax.annotate(m, (v, a), xytext=(4, 3), textcoords="offset points", fontsize=7.5)
        # a log axis over less than a factor of 3 labels its minor ticks in scientific notation, on top of
        # each other: such a narrow range reads better on a linear axis
        wide = values.max() >= 3 * values.min() > 0
        if wide:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(plt.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(plt.NullFormatter())
        else:
            ax.xaxis.set_major_locator(plt.MaxNLocator(5))
        ax.set_xlabel(label + (", log" if wide else ""))
        ax.grid(alpha=0.3, which="both")
    ax_macs.set_ylabel("test accuracy")
    return finish(fig, title, scale, device)
