"""The NAS notebook's figures: reward curves, layer diagrams, accuracy vs MACs, the cost history."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from ..pareto import pareto_front
from .search import SearchResult
from .space import Architecture

# Search costs as the papers report them (GPU-days; the GPU model differs from row to row).
COST_HISTORY = pd.DataFrame([
    {"method": "NAS (Zoph & Le 2017)", "year": 2017, "gpu_days": 800 * 28,
     "how": "800 GPUs x 28 days; 12,800 children trained from scratch", "source": "Zoph et al. 2018, sec. 1"},
    {"method": "NASNet (Zoph et al. 2018)", "year": 2018, "gpu_days": 500 * 4,
     "how": "500 P100 GPUs x 4 days; search a cell, stack it", "source": "Zoph et al. 2018, sec. 4"},
    {"method": "AmoebaNet (Real et al. 2019)", "year": 2019, "gpu_days": 450 * 7,
     "how": "450 K40 GPUs x 7 days; evolution instead of RL", "source": "Real et al. 2019, sec. 4"},
    {"method": "ENAS (Pham et al. 2018)", "year": 2018, "gpu_days": 0.45,
     "how": "1 GTX 1080Ti, 0.45 days for the CIFAR-10 cell (micro) search; children share weights",
     "source": "Pham et al. 2018, table 2 (every search of the paper: under 16 hours, sec. 1)"},
    {"method": "DARTS (Liu et al. 2019)", "year": 2019, "gpu_days": 4.0,
     "how": "1 GPU; a continuous relaxation searched by gradient descent (1.5 days first-order)",
     "source": "Liu et al. 2019, table 1"},
])


def plot_rewards(results: Sequence[SearchResult], ax=None, window: int = 5):
    """Reward of every child in order (dots), its running mean over ``window`` children, and the best so far."""
    ax = ax or plt.subplots(figsize=(8, 4))[1]
    for k, result in enumerate(results):
        h = result.history
        color = f"C{k}"
        ax.scatter(h["child"], h["reward"], s=12, alpha=0.45, color=color)
        ax.plot(h["child"], h["reward"].rolling(window, min_periods=1).mean(), color=color,
                label=f"{result.method}: mean of last {window}")
        ax.plot(h["child"], h["reward"].cummax(), color=color, ls="--", lw=1, label=f"{result.method}: best so far")
    ax.set(xlabel="child (in sampling order)", ylabel="reward", title="Reward of each sampled child")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def draw_architecture(arch: Architecture, ax=None, input_size: Sequence[int] | None = None, title: str = ""):
    """A layer diagram: input, one box per layer (kernel, filters, reduction, output shape), head; skips as arcs."""
    n = len(arch.layers)
    ax = ax or plt.subplots(figsize=(1.9 * (n + 2), 2.6))[1]
    shapes = arch.output_shapes(input_size) if input_size is not None else None
    labels = ["input" + (f"\n{'x'.join(map(str, input_size))}" if input_size is not None else "")]
    for i, layer in enumerate(arch.layers):
        text = f"L{i}: {layer.kernel}x{layer.kernel} conv\n{layer.filters} filters"
        if layer.reduce != "none":
            text += f"\n{'stride 2' if layer.reduce == 'stride2' else 'max-pool 2'}"
        if shapes is not None:
            text += f"\n-> {'x'.join(map(str, shapes[i]))}"
        labels.append(text)
    labels.append("avg pool\n+ linear")
    width = 1.5
    for x, text in enumerate(labels):
        face = "#dfe9f5" if 0 < x <= n else "#eeeeee"
        ax.add_patch(FancyBboxPatch((x * 2 - width / 2, -0.6), width, 1.2, boxstyle="round,pad=0.05",
                                    fc=face, ec="#345"))
        ax.text(x * 2, 0, text, ha="center", va="center", fontsize=7.5)
        if x:
            ax.annotate("", xy=(x * 2 - width / 2, 0), xytext=((x - 1) * 2 + width / 2, 0),
                        arrowprops={"arrowstyle": "->", "color": "#345"})
    for i, layer in enumerate(arch.layers):  # skip j -> i: from above box j+1 to above box i+1
        for j in layer.skips:
            rad = -0.35 if i - j > 1 else -0.6
            ax.add_patch(FancyArrowPatch(((j + 1) * 2, 0.65), ((i + 1) * 2, 0.65), connectionstyle=f"arc3,rad={rad}",
                                         arrowstyle="->", mutation_scale=10, color="#c33", lw=1))
    ax.set(xlim=(-1.2, 2 * (n + 1) + 1.2), ylim=(-0.9, 0.7 + 0.45 * n), title=title)
    ax.set_aspect("equal")
    ax.axis("off")
    return ax


def plot_pareto(frame: pd.DataFrame, ax=None, score: str = "val_accuracy", by: str = "method"):
    """Every sampled child's ``score`` against its MACs (log scale), coloured by ``by``; the Pareto front as a line."""
    ax = ax or plt.subplots(figsize=(7, 4.5))[1]
    for k, (name, group) in enumerate(frame.groupby(by, sort=False)):
        ax.scatter(group["macs"], group[score], s=18, alpha=0.6, color=f"C{k}", label=str(name))
    front = pareto_front(frame, "macs", score)
    ax.step(front["macs"], front[score], where="post", color="k", lw=1.2, label="Pareto front")
    ax.scatter(front["macs"], front[score], s=50, facecolors="none", edgecolors="k")
    ax.set_xscale("log")
    ax.set(xlabel="MACs per image (log scale)", ylabel=score.replace("_", " "),
           title="Accuracy against cost of every sampled child")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return ax


def _duration(days: float) -> str:
    """``22400`` -> ``'22,400 days'``, ``0.45`` -> ``'10.8 h'``, ``2e-5`` -> ``'1.7 s'``."""
    for unit, per_day in (("days", 1), ("h", 24), ("min", 1440), ("s", 86400)):
        if days * per_day >= 1 or unit == "s":
            value = days * per_day
            return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"
    return ""


def plot_cost_history(measured: pd.DataFrame | None = None, *, device: str = "this device"):
    """The papers' search costs and this notebook's, in two panels, each in its own unit: a Figure.

    Left: the papers' GPU-days (log scale; the GPU model differs from row to row). Right, when ``measured``
    (rows with ``method`` and ``seconds``, wall clock) is given: this notebook's searches in minutes (seconds
    when all took under two minutes) on ``device``. A GPU-day on a 2017 data-centre GPU and a minute of a
    laptop CPU are not one unit, so they share no axis.
    """
    panels = 1 if measured is None else 2
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 3.8), squeeze=False,
                             gridspec_kw={"width_ratios": [1.35, 1][:panels]})
    ax = axes[0][0]
    rows = COST_HISTORY.sort_values("gpu_days", ascending=False)
    ax.barh(range(len(rows)), rows["gpu_days"], color="#557")
    ax.set_yticks(range(len(rows)), rows["method"], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(rows["gpu_days"].min() / 3, rows["gpu_days"].max() * 40)  # room for the value after each bar
    for y, v in enumerate(rows["gpu_days"]):
        ax.text(v, y, " " + _duration(v), va="center", fontsize=7)
    ax.set(xlabel="GPU-days, as each paper reports them (log scale)")
    ax.set_title("The papers' searches (their GPUs)", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    if measured is not None:
        ax = axes[0][1]
        unit, per = ("minutes", 60) if measured["seconds"].max() >= 120 else ("seconds", 1)
        values = measured["seconds"] / per
        ax.barh(range(len(measured)), values, color="#c63")
        ax.set_yticks(range(len(measured)), measured["method"], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, float(values.max()) * 1.3)
        for y, (v, s) in enumerate(zip(values, measured["seconds"])):
            ax.text(v, y, " " + _duration(s / 86400), va="center", fontsize=7)
        ax.set(xlabel=f"wall-clock {unit} on {device}")
        ax.set_title("This notebook's searches", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    return fig
