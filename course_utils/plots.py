"""The course's shared figures (matplotlib).  Each function returns the Figure, so notebooks can publish it.

A figure that shows a measurement says what was measured, on which data, at which scale and on which
device: ``finish`` puts the notebook's scale line (``ExperimentData.scale``, which names the dataset) and
the device under every title.  The architecture walk's own figures (notebooks 01-07) are in ``walk_plots``.
"""
from __future__ import annotations

import textwrap
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.ticker import FuncFormatter, MaxNLocator


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
           width: int | None = None, fontsize: float = 9, rect: tuple[float, float, float, float] | None = None):
    """Title ``fig`` with ``title`` over the scale and device, lay it out.

    Both are wrapped to ``width`` characters; by default, to as many as fit across the figure at ``fontsize``
    (a character is about 0.6 of the font size wide), so that no title runs off a narrow figure.
    """
    if width is None:
        width = max(40, int(fig.get_figwidth() * 72 / (0.6 * fontsize)))
    line = context_line(scale, device)
    wrapped = "\n".join(textwrap.wrap(line, width)) if line else ""
    title = "\n".join(part for line in title.splitlines() for part in (textwrap.wrap(line, width) or [""]))
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

    table: ``loader_benchmark.run``'s rows (``loader``, ``workers``, ``images_per_s``, ``device``; ``images``,
    the images of the timed pass, goes into the title when present).
    """
    fig, ax = plt.subplots(figsize=(7.5, 2.8))
    labels = [f"{r.loader}\n({r.workers} workers)" if r.loader.startswith("torch") else r.loader
              for r in table.itertuples()]
    ax.barh(labels, table["images_per_s"], color=["tab:gray"] * (len(table) - 1) + ["tab:green"])
    ax.set_xlabel("images per second (higher is better)")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 5, 10]))  # few ticks: they never run together
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:,g}k" if v else "0"))  # 1.5k, 50k
    ax.set_xlim(0, float(table["images_per_s"].max()) * 1.18)  # room for the value after the longest bar
    for i, v in enumerate(table["images_per_s"]):
        ax.text(v, i, f" {v:,.0f}", va="center", fontsize=8)
    images = f"{int(table['images'].iloc[-1]):,} training images" if "images" in table else "the training images"
    return finish(fig, f"One pass over {images} through each loader", scale, table["device"].iloc[0])


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


# ----------------------------------------------------------------------------- labels that never overprint
def _renderer(fig):
    """Draw ``fig`` (on an Agg canvas when it has no renderer of its own) and return its renderer."""
    if not hasattr(fig.canvas, "get_renderer"):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def _clash(box: np.ndarray, taken: list[np.ndarray], frame, margin: float = 3.0) -> float:
    """How badly ``box`` (x0, y0, x1, y1 in pixels) is placed: the area it shares with ``taken``, plus a large
    penalty when it does not lie ``margin`` px inside ``frame``; 0 is a free place."""
    outside = (box[0] < frame.x0 + margin or box[1] < frame.y0 + margin or box[2] > frame.x1 - margin
               or box[3] > frame.y1 - margin)
    shared = sum(max(0.0, min(box[2], t[2]) - max(box[0], t[0])) * max(0.0, min(box[3], t[3]) - max(box[1], t[1]))
                 for t in taken)
    return shared + (1e6 if outside else 0.0)


def _line_dots(ax, per_segment: int = 12, half: float = 1.5) -> list[np.ndarray]:
    """Small squares (pixels) along every line ``ax`` plots in data coordinates, for labels to keep off."""
    dots = []
    for line in ax.get_lines():
        if not line.get_visible() or line.get_transform() != ax.transData:
            continue
        xy = np.column_stack([np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)])
        xy = ax.transData.transform(xy[np.isfinite(xy).all(1)])
        if len(xy) > 1 and line.get_linestyle() not in ("None", "", " ", "none"):
            steps = np.linspace(0, 1, per_segment)[:, None]
            xy = np.concatenate([a + steps * (b - a) for a, b in zip(xy[:-1], xy[1:])])
        dots += [np.array([x - half, y - half, x + half, y + half]) for x, y in xy]
    return dots


# label offsets tried around a point, nearest first: (direction x, direction y), in units of the step
_DIRECTIONS = [(1, 0.6), (1, -0.6), (-1, 0.6), (-1, -0.6), (0, 1), (0, -1), (1, 0), (-1, 0)]


def place_labels(ax, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str], *, fontsize: float = 7.5,
                 radii: Sequence[float] = (3, 8, 14, 22, 32, 44, 58, 74), avoid: Sequence = (),
                 point_px: float = 4.0, lines: bool = True) -> list:
    """Write ``labels`` next to the points ``(xs, ys)`` (data coordinates) so that no two overprint.

    Call it once the axes are laid out (after ``tight_layout``/``finish``): every label is tried at growing
    distances (``radii``, points) in eight directions around its point and takes the first place inside the axes
    that meets no label already placed, no other point (a square of ``point_px`` pixels each side of it) and
    none of the artists in ``avoid`` (legends, say), nor, with ``lines``, the lines plotted in data coordinates.
    A label that had to move away from its point gets a thin leader line to it.  Returns the annotations.
    """
    xs, ys, fig = list(xs), list(ys), ax.figure
    renderer = _renderer(fig)
    frame = ax.get_window_extent(renderer)
    points = ax.transData.transform(np.column_stack([np.asarray(xs, float), np.asarray(ys, float)]))
    dots = [np.array([x - point_px, y - point_px, x + point_px, y + point_px]) for x, y in points]
    taken = [np.array(a.get_window_extent(renderer).extents) for a in avoid]
    if lines:
        taken += _line_dots(ax)
    px_per_pt = fig.dpi / 72
    placed = []
    for i, (label, (px, py)) in enumerate(zip(labels, points)):
        probe = ax.text(0, 0, label, fontsize=fontsize)
        extent = probe.get_window_extent(renderer)
        w, h = extent.width, extent.height
        probe.remove()
        others = taken + dots[:i] + dots[i + 1:]
        best = (float("inf"), 1, 0.6, radii[0], None)
        for r in radii:
            for dx, dy in _DIRECTIONS:
                cx, cy = px + dx * r * px_per_pt, py + dy * r * px_per_pt  # the label's anchor corner
                x0 = cx if dx > 0 else cx - w if dx < 0 else cx - w / 2
                y0 = cy if dy > 0 else cy - h if dy < 0 else cy - h / 2
                box = np.array([x0, y0, x0 + w, y0 + h])
                clash = _clash(box, others, frame)
                if clash < best[0]:
                    best = (clash, dx, dy, r, box)
            if best[0] == 0:
                break
        _, dx, dy, r, box = best  # the first free place, or the least crowded one when none is free
        taken.append(box)
        if r > radii[0]:  # a leader line, as its own text-less annotation: the label's box stays the text's
            ax.annotate("", (xs[i], ys[i]), xytext=(dx * r, dy * r), textcoords="offset points",
                        arrowprops={"arrowstyle": "-", "color": "0.55", "lw": 0.6, "shrinkA": 0, "shrinkB": 2})
        placed.append(ax.annotate(
            label, (xs[i], ys[i]), xytext=(dx * r, dy * r), textcoords="offset points", fontsize=fontsize,
            ha="left" if dx > 0 else "right" if dx < 0 else "center",
            va="bottom" if dy > 0 else "top" if dy < 0 else "center"))
    return placed
