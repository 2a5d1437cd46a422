"""edCNN's figures: the accuracy/cost frontier, MACs against measured time, where a batch's time goes, and which
classes leave at which exit.

Every function takes plain tables (the notebook's, or synthetic ones in the tests) and returns the Figure, titled
(``plots.finish``) with the data, the scale and the device.  Legends sit outside the axes, so none hides data;
each policy and each exit keeps one colour throughout.
"""
from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter

from ..plots import finish

if TYPE_CHECKING:
    import pandas as pd

POLICY_STYLE = {"max_softmax": ("#1f77b4", "-", "o"), "entropy": ("#2ca02c", "--", "D"),
                "patience": ("#9467bd", "-.", "s")}
# one clearly different colour per exit (the first ten of matplotlib's qualitative tab10)
EXIT_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf"]
TIME_COLOR, MACS_COLOR = "#4c72b0", "#dd8452"


def _style(policy: str, k: int) -> tuple[str, str, str]:
    return POLICY_STYLE.get(policy, (EXIT_COLORS[(k + 4) % len(EXIT_COLORS)], ":", "^"))


def _legend_below(ax, ncol: int = 2, fontsize: float = 8, order: Sequence[int] | None = None) -> None:
    """The legend under the axes (below its x label): it can never hide data.  ``order``: the entries' order
    (matplotlib fills the legend's columns one after another)."""
    from matplotlib.transforms import offset_copy

    handles, labels = ax.get_legend_handles_labels()
    order = list(order) if order is not None else list(range(len(handles)))
    # anchored a fixed distance in points below the axes (tick labels + x label), not a fraction of the axes'
    # height: a short axes (one mode, a long scale line above) put a fractional offset on top of the x label
    below = offset_copy(ax.transAxes, fig=ax.figure, y=-36, units="points")
    ax.legend([handles[i] for i in order], [labels[i] for i in order], loc="upper center",
              bbox_to_anchor=(0.5, 0.0), bbox_transform=below, ncol=ncol, fontsize=fontsize, frameon=False)


def _finish(fig, title: str, scale: str, device, rect=None):
    """``plots.finish`` with the scale wrapped to the figure's width (about 12 characters per inch) and the device
    on a line of its own."""
    lines = textwrap.wrap(scale, int(12 * fig.get_figwidth())) if scale else []
    return finish(fig, "\n".join([title, *lines]), "", device, fontsize=10, rect=rect)


def frontier_figure(frontier: "pd.DataFrame", calibrated: "pd.DataFrame", final_accuracy: Mapping[str, float], *,
                    epsilon: float, scale: str = "", device=None,
                    title: str = "edCNN: val accuracy against mean MACs per image, every shared threshold"):
    """One panel per mode: each policy's frontier as a line, its calibrated setting as a marker of the same colour.

    frontier: rows of ``exits.frontier`` with columns mode, policy, macs_fraction (mean MACs / the full
    network's), accuracy (0-1).  calibrated: one row per mode and policy with mode, policy, macs_fraction,
    accuracy (on val).  final_accuracy: mode -> the final exit's val accuracy (the dotted line).
    """
    modes = list(dict.fromkeys(frontier["mode"]))
    # one mode alone gets a wider figure: its title and scale wrap to fewer lines and leave the axes their height
    fig, axes = plt.subplots(1, len(modes), figsize=(max(6 * len(modes), 8), 5.2), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        for k, policy in enumerate(dict.fromkeys(frontier["policy"])):
            color, line, marker = _style(policy, k)
            curve = frontier[(frontier["mode"] == mode) & (frontier["policy"] == policy)]
            ax.plot(curve["macs_fraction"], 100 * curve["accuracy"], line, color=color, label=policy)
            point = calibrated[(calibrated["mode"] == mode) & (calibrated["policy"] == policy)]
            size = max(11 - 3 * k, 6)  # shrinking: a later marker on the same point leaves the earlier one visible
            ax.plot(point["macs_fraction"], 100 * point["accuracy"], marker, color=color, ms=size, mec="black",
                    ls="none", label=f"{policy}, calibrated (ε={epsilon})")
        ax.axhline(100 * final_accuracy[mode], ls=":", c="k", label="final exit alone")
        ax.set(xlabel="mean MACs per image / full network", ylabel="val accuracy (%)", title=f"mode: {mode}")
        ax.grid(alpha=0.3)
        n = len(ax.get_lines())  # policy line, its marker, ..., the final exit: lines in column 1, markers in 2
        _legend_below(ax, order=[*range(0, n - 1, 2), n - 1, *range(1, n - 1, 2)])
    return _finish(fig, title, scale, device)


def macs_vs_time_figure(exit_macs_fraction: Sequence[float], exit_ms: Mapping[int, Sequence[float]],
                        timings: "pd.DataFrame", *, reference: str = "full", scale: str = "", device=None,
                        title: str = "edCNN: MACs are not milliseconds"):
    """Left: per exit, cumulative MACs against measured time to leave there (both as % of the last exit), one line
    per batch size.  Right: each contender's MACs and measured ms per image as % of the full network's at the same
    batch size, the absolute ms in the legend.  Points on the dotted diagonal save time in proportion to MACs.

    exit_macs_fraction: per exit, MACs to leave there / MACs to leave at the last exit.  exit_ms: batch size ->
    per-exit ms (``LatencyModel.exit_ms``).  timings: ``edcnn.benchmark`` rows (name, batch_size, ms_per_image,
    macs_per_image), including the ``reference`` contender at every batch size.
    """
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.4))
    macs = 100 * np.asarray(exit_macs_fraction, float)
    for (bs, ms), marker in zip(exit_ms.items(), "os^v"):
        ms = np.asarray(ms, float)
        ax1.plot(macs, 100 * ms / ms[-1], marker + "-", label=f"batch {bs}")
    ax1.plot([0, 100], [0, 100], ":", c="grey", label="time ∝ MACs")
    ax1.set(xlabel="MACs to leave at exit k (% of the last exit)", ylabel="time to leave at exit k (% of the last)",
            title="Per exit: cumulative MACs vs measured time", xlim=(0, 105), ylim=(0, 105))
    names = list(dict.fromkeys(timings["name"]))
    for (bs, t), marker in zip(timings.groupby("batch_size", sort=True), "os^v"):
        ref = t[t["name"] == reference].iloc[0]
        for k, name in enumerate(names):
            r = t[t["name"] == name].iloc[0]
            ax2.plot(100 * r["macs_per_image"] / ref["macs_per_image"], 100 * r["ms_per_image"] / ref["ms_per_image"],
                     marker, color=EXIT_COLORS[k % len(EXIT_COLORS)], ms=8, alpha=0.85, ls="none",
                     label=f"{name}, batch {bs}: {r['ms_per_image']:.3g} ms")
    low, high = ax2.get_xlim()[0], ax2.get_ylim()[0]
    lim = (max(0.0, min(low, high) - 5), max(105.0, ax2.get_ylim()[1] + 5))
    ax2.plot(lim, lim, ":", c="grey", label="time ∝ MACs")
    ax2.set(xlim=lim, ylim=lim, xlabel=f"MACs per image (% of {reference})",
            ylabel=f"measured ms per image (% of {reference})", title="Contenders: MACs vs measured time")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_formatter(PercentFormatter(decimals=0))
        ax.yaxis.set_major_formatter(PercentFormatter(decimals=0))
        ax.grid(alpha=0.3)
    _legend_below(ax1, ncol=3)
    n = len(ax2.get_lines())  # the diagonal, then one column per batch size
    _legend_below(ax2, ncol=2, fontsize=7, order=[n - 1, *range(n - 1)])
    return _finish(fig, title, scale, device)


def time_breakdown_figure(breakdowns: Mapping[str, "pd.DataFrame"], *, images: int, scale: str = "", device=None,
                          title: str = "edCNN: share of a batch's time and of its MACs, per part"):
    """One panel per contender (``edcnn.time_breakdown`` frames): measured time share beside MACs share, per part.

    The original network's parts are its stages (no exit, no policy); an elastic network's are its exits and the
    exit policy with compaction.
    """
    rows = max(len(df) for df in breakdowns.values())
    fig, axes = plt.subplots(1, len(breakdowns), figsize=(6.5 * len(breakdowns), 0.45 * rows + 2.6), squeeze=False)
    for ax, (name, df) in zip(axes[0], breakdowns.items()):
        pos = np.arange(len(df))
        ax.barh(pos - 0.2, 100 * df["time_share"], 0.4, color=TIME_COLOR, label="share of the time (measured)")
        ax.barh(pos + 0.2, 100 * df["macs_share"], 0.4, color=MACS_COLOR, label="share of the MACs")
        ax.set_yticks(pos, df["part"], fontsize=8)
        ax.set(xlabel="% of the batch", title=f"{name}: {df['total_ms'].sum():.1f} ms for {images} images")
        ax.title.set_fontsize(10)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
        _legend_below(ax)
    return _finish(fig, title, scale, device)


def exits_per_class_figure(distributions: Mapping[str, "pd.DataFrame"], *, mode: str, scale: str = "", device=None,
                           title: str = "edCNN: where each class's test images leave"):
    """One panel per policy: per class (rows), the fraction of its test images leaving at each exit, stacked.

    distributions: policy -> ``edcnn.exit_distribution`` frame (classes x exits).  One legend for the figure,
    under the panels; every exit keeps its colour in every panel.
    """
    fig, axes = plt.subplots(1, len(distributions), figsize=(6 * len(distributions), 4.8), squeeze=False)
    for ax, (policy, dist) in zip(axes[0], distributions.items()):
        left = np.zeros(len(dist))
        for k, column in enumerate(dist.columns):
            ax.barh(np.arange(len(dist)), dist[column], left=left, color=EXIT_COLORS[k % len(EXIT_COLORS)],
                    label=column)
            left += dist[column].to_numpy(float)
        ax.set_yticks(np.arange(len(dist)), [str(c)[:12] for c in dist.index], fontsize=8)
        ax.set(xlabel="fraction of the class's test images", xlim=(0, 1), title=f"{mode}, {policy}")
        ax.invert_yaxis()
    handles = [Line2D([], [], color=EXIT_COLORS[k % len(EXIT_COLORS)], lw=8)
               for k in range(len(next(iter(distributions.values())).columns))]
    fig.legend(handles, list(next(iter(distributions.values())).columns), loc="lower center",
               ncol=len(handles), fontsize=8, frameon=False)
    return _finish(fig, title, scale, device, rect=(0, 0.07, 1, 1))
