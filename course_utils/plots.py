"""The course's shared figures (matplotlib).  Each function returns the Figure, so notebooks can publish it.

A figure that shows a measurement says what was measured, on which data, at which scale and on which
device: ``finish`` puts the notebook's scale line (``ExperimentData.scale``, which names the dataset) and
the device under every title.  The architecture walk's own figures (notebooks 01-07) are in ``walk_plots``.
"""
from __future__ import annotations

import textwrap
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd
import torch


def image_grid(images: torch.Tensor, labels: torch.Tensor | None = None, classes: Sequence[str] | None = None,
               *, columns: int = 10, title: str = "", scale: float = 1.0):
    """Show uint8 images ``(N, C, H, W)`` in a grid, each titled with its class name if given."""
    n = len(images)
    rows = max(1, -(-n // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 0.9 * scale, rows * 1.0 * scale), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i].cpu()
        if img.shape[0] == 1:
            ax.imshow(img[0], cmap="gray", vmin=0, vmax=255)
        else:
            ax.imshow(img.permute(1, 2, 0))
        if labels is not None:
            name = classes[int(labels[i])] if classes is not None else str(int(labels[i]))
            ax.set_title(name[:10], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def one_per_class(images: torch.Tensor, labels: torch.Tensor, per_class: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``per_class`` images of every class, ordered by class: ``(K * per_class, C, H, W)``."""
    keep = torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in torch.unique(labels)])
    return images[keep], labels[keep]


def class_balance(counts: dict[str, torch.Tensor], classes: Sequence[str], title: str = ""):
    """Grouped bars: samples per class for each split (``{"train": counts, ...}``)."""
    fig, ax = plt.subplots(figsize=(max(5, len(classes) * 0.6), 2.6))
    width = 0.8 / len(counts)
    for i, (split, c) in enumerate(counts.items()):
        xs = [k + i * width for k in range(len(classes))]
        ax.bar(xs, c.tolist(), width=width, label=split)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(classes))], [c[:8] for c in classes], rotation=45, fontsize=7)
    ax.set_ylabel("samples")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- titles: what, on which data, where
def context_line(scale: str = "", device: str | torch.device | None = None) -> str:
    """``"<scale> | <device>"``: the line under every figure's title (the scale names the dataset)."""
    from .results import device_label

    parts = [scale] if scale else []
    if device is not None:
        parts.append(device_label(device))
    return " | ".join(parts)


def finish(fig, title: str, scale: str = "", device: str | torch.device | None = None, *,
           width: int = 130, fontsize: float = 9, rect: tuple[float, float, float, float] | None = None):
    """Title ``fig`` with ``title`` over the scale and device (wrapped to ``width`` characters), lay it out."""
    line = context_line(scale, device)
    wrapped = "\n".join(textwrap.wrap(line, width)) if line else ""
    fig.suptitle(f"{title}\n{wrapped}" if wrapped else title, fontsize=fontsize)
    fig.tight_layout(rect=rect)
    return fig


# ----------------------------------------------------------------------------- figures shared by several notebooks
def training_curves(runs: Mapping[str, Any], *, title: str = "Training", scale: str = "",
                    device: str | torch.device | None = None, loss_label: str = "training loss",
                    styles: Mapping[str, Mapping[str, Any]] | None = None, figsize=(10, 3.8)):
    """Two panels per epoch: training loss (left) and validation accuracy (right), one line per run.

    runs: name -> ``train.History`` (anything with ``to_frame()`` giving ``epoch``, ``train_loss``,
    ``val_accuracy`` columns).  styles: name -> extra ``plot`` keywords (colour, linestyle, label).
    """
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=figsize)
    for name, history in runs.items():
        frame = history.to_frame()
        style = {"marker": "o", "markersize": 3, "label": name, **((styles or {}).get(name, {}))}
        ax_loss.plot(frame["epoch"], frame["train_loss"], **style)
        ax_acc.plot(frame["epoch"], frame["val_accuracy"], **style)
    ax_loss.set(xlabel="epoch", ylabel=loss_label, title="training loss")
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy", title="validation accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.title.set_fontsize(9)
    return finish(fig, title, scale, device)


def bar_panels(frame: pd.DataFrame, panels: Sequence[tuple], *, labels: Sequence[str] | None = None,
               colors: Any = None, title: str = "", scale: str = "", device: str | torch.device | None = None,
               panel_width: float = 4.0, height: float = 3.4, label_size: float = 8):
    """One bar chart per column, side by side.

    panels: ``[(column, panel title, divisor), ...]``, optionally with a fourth item, that panel's colour(s).
    labels: the bars' names (default: the frame's index); colors: one colour, or one per bar, for every panel
    without its own.
    """
    labels = [str(v) for v in (frame.index if labels is None else labels)]
    fig, axes = plt.subplots(1, len(panels), figsize=(panel_width * len(panels), height), squeeze=False)
    for ax, (column, panel_title, divisor, *color) in zip(axes[0], panels):
        ax.bar(labels, frame[column] / divisor, color=color[0] if color else colors)
        ax.set_title(panel_title, fontsize=9)
        ax.tick_params(axis="x", labelsize=label_size)
        ax.grid(axis="y", alpha=0.3)
    return finish(fig, title, scale, device)


def loader_benchmark(table: pd.DataFrame, *, scale: str = ""):
    """Horizontal bars: images per second of each loader configuration, the DeviceLoader (last row) in green.

    table: ``loader_benchmark.run``'s rows (``loader``, ``workers``, ``images_per_s``, ``device``).
    """
    fig, ax = plt.subplots(figsize=(7, 2.6))
    labels = [f"{r.loader}\n({r.workers} workers)" if r.loader.startswith("torch") else r.loader
              for r in table.itertuples()]
    ax.barh(labels, table["images_per_s"], color=["tab:gray"] * (len(table) - 1) + ["tab:green"])
    ax.set_xlabel("images per second (higher is better)")
    for i, v in enumerate(table["images_per_s"]):
        ax.text(v, i, f" {v:,.0f}", va="center", fontsize=8)
    return finish(fig, "One training epoch through each loader", scale, table["device"].iloc[0])


def reward_trace(trace: pd.DataFrame, *, window: int, title: str, scale: str = "",
                 device: str | torch.device | None = None, label: str = "reward"):
    """Rewards by step (dots) and their running mean over ``window`` steps (``trace``: ``step``, ``reward``)."""
    fig, ax = plt.subplots(figsize=(9, 3.6))
    if len(trace):
        ax.scatter(trace["step"], trace["reward"], s=8, alpha=0.4, label=label)
        ax.plot(trace["step"], trace["reward"].rolling(max(2, window), min_periods=1).mean(), label="running mean")
    ax.set(xlabel="controller step", ylabel="reward")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return finish(fig, title, scale, device)
