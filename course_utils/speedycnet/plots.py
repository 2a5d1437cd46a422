"""SpeedyCNet's figures: what each learner trained on and removed, accuracy per exit, where the training time
went (totals beside totals, the cascade's stages stacked), and sample images the cascade removed or kept.

Every function returns the Figure, titled (``plots.finish``) with the data, the scale and the device.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import matplotlib.pyplot as plt
import numpy as np

from ..plots import finish

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from .cascade import CascadeResult

LEARNER_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]  # learner 1, 2, ...
PASS_STYLE = {"fit": ("", 1.0), "calibrate": ("///", 0.55), "preclassify": ("...", 0.3)}  # hatch, alpha
VGG_COLOR = "#555555"
ROW_LABELS = {"removed by learner 1": "removed\nby learner 1", "removed wrongly": "removed wrongly\n(Lk: by learner k)",
              "reached the last learner": "reached\nthe last learner"}


def _finish(fig, title: str, scale: str, device):
    """``plots.finish`` with the scale wrapped to the figure's width (about 12 characters per inch) and the device
    on a line of its own."""
    lines = textwrap.wrap(scale, int(12 * fig.get_figwidth())) if scale else []
    return finish(fig, "\n".join([title, *lines]), "", device, fontsize=10)


def _legend_below(ax, ncol: int = 3, **kw) -> None:
    """The legend under the axes (below its x label): it can never hide a bar."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol, fontsize=8, frameon=False, **kw)


def samples_panel(ax, stages: "pd.DataFrame") -> None:
    """Per learner: training samples it trained on, removed after, and removed although wrong.

    stages: ``CascadeResult.to_frame()`` (columns stage, samples_in, removed, removed_wrong).
    """
    x = np.arange(len(stages))
    ax.bar(x - 0.2, stages["samples_in"], 0.4, color="#4c72b0", label="trained on")
    ax.bar(x + 0.2, stages["removed"], 0.4, color="#dd8452", label="removed after it")
    ax.bar(x + 0.2, stages["removed_wrong"], 0.4, color="crimson", label="removed, though wrong")
    ax.set_xticks(x, [f"learner {s}\nremoved {r}\n({w} wrong)" for s, r, w in
                      zip(stages["stage"], stages["removed"], stages["removed_wrong"])], fontsize=8)
    ax.set(ylabel="training samples", title="Samples each learner trains on and removes")
    _legend_below(ax)


def exit_accuracy_panel(ax, exits_frame: "pd.DataFrame", vgg_accuracy: float) -> None:
    """Per exit on the test split: the head on every sample, and on the samples that really left there.

    exits_frame: ``CascadeEvaluation.to_frame()`` (exit, samples, accuracy_of_exited, head_accuracy_on_all).
    """
    x = np.arange(len(exits_frame))
    ax.bar(x - 0.2, exits_frame["head_accuracy_on_all"], 0.4, color="#4c72b0", label="head on all test samples")
    left = exits_frame["accuracy_of_exited"].astype(float)  # NaN where no sample left: no bar, not a 0 bar
    ax.bar(x + 0.2, left, 0.4, color="#dd8452", label="samples that leave here")
    ax.axhline(vgg_accuracy, color="k", ls="--", lw=1, label=f"VGG16 ({vgg_accuracy:.3f})")
    ax.set_xticks(x, [f"exit {e}\n{n} left" for e, n in zip(exits_frame["exit"], exits_frame["samples"])],
                  fontsize=8)
    ax.set(ylabel="test accuracy", ylim=(0, 1.02), title="Accuracy per exit (test split)")
    _legend_below(ax)


@dataclass
class TimeComparison:
    """One protocol's training times: VGG16's total beside the cascade's, stage by stage."""

    protocol: str
    vgg16_seconds: float
    stage_seconds: Sequence[float]  # learner 1, 2, ...: fit + calibrate + pre-classify
    setup_seconds: float = 0.0  # the cascade's data to the device, once

    @classmethod
    def of(cls, protocol: str, vgg16_seconds: float, cascade: "CascadeResult") -> "TimeComparison":
        return cls(protocol, vgg16_seconds, [s.seconds for s in cascade.stages], cascade.setup_seconds)

    @property
    def cascade_seconds(self) -> float:
        return self.setup_seconds + sum(self.stage_seconds)


def training_time_panel(ax, comparisons: Sequence[TimeComparison]) -> None:
    """Horizontal bars, two per protocol: VGG16's total, and the cascade's total stacked by learner.

    Totals are compared with totals; the label at each cascade bar's end is its speed-up over VGG16 (VGG16's
    seconds / the cascade's, as in the table: below 1x the cascade was slower).
    """
    rows, y = [], 0
    for c in comparisons:
        ax.barh(y, c.vgg16_seconds, color=VGG_COLOR, label="VGG16 (end to end)" if y == 0 else None)
        ax.text(c.vgg16_seconds, y, f" {c.vgg16_seconds:.1f} s", va="center", fontsize=8)
        left = 0.0
        for k, seconds in enumerate([c.setup_seconds, *c.stage_seconds]):
            name = "setup" if k == 0 else f"learner {k}"
            color = "#bbbbbb" if k == 0 else LEARNER_COLORS[(k - 1) % len(LEARNER_COLORS)]
            ax.barh(y + 1, seconds, left=left, color=color, label=name if y == 0 else None)
            left += seconds
        ax.text(left, y + 1, f" {left:.1f} s: speed-up {c.vgg16_seconds / left:.2f}x", va="center", fontsize=8)
        rows += [(y, f"VGG16\n{c.protocol}"), (y + 1, f"SpeedyCNet\n{c.protocol}")]
        y += 2.6
    ax.set_yticks([r[0] for r in rows], [r[1] for r in rows], fontsize=8)
    ax.invert_yaxis()
    longest = max([c.vgg16_seconds for c in comparisons] + [c.cascade_seconds for c in comparisons])
    ax.set_xlim(0, 1.6 * longest)  # room for the labels at the bars' ends
    ax.set(xlabel="training seconds (every pass)", title="Total training time: VGG16 vs the cascade")
    _legend_below(ax, ncol=3)


def stage_time_panel(ax, stages: "pd.DataFrame") -> None:
    """Per learner (in its colour of the totals panel), its seconds stacked by pass: fit (solid), calibration on
    val and pre-classification of the train split (hatched)."""
    from matplotlib.patches import Patch

    x = np.arange(len(stages))
    colors = [LEARNER_COLORS[k % len(LEARNER_COLORS)] for k in range(len(stages))]
    bottom = np.zeros(len(stages))
    handles = []
    for part, (hatch, alpha) in PASS_STYLE.items():
        values = stages[f"{part}_seconds"].to_numpy(float)
        ax.bar(x, values, 0.6, bottom=bottom, color=colors, alpha=alpha, hatch=hatch, edgecolor="black", lw=0.4)
        bottom += values
        handles.append(Patch(facecolor="#999999", alpha=alpha, hatch=hatch, edgecolor="black", label=part))
    ax.set_xticks(x, [f"learner {s}\n{t:.1f} s" for s, t in zip(stages["stage"], bottom)], fontsize=8)
    ax.set(ylabel="seconds", title="The cascade's time per learner, by pass")
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize=8, frameon=False)


def cascade_figure(stages: "pd.DataFrame", exits_frame: "pd.DataFrame", vgg_accuracy: float,
                   comparisons: Sequence[TimeComparison], *, scale: str = "", device=None,
                   title: str = "SpeedyCNet: samples, accuracy per exit and training time"):
    """The four panels above in a 2x2 grid (``stages``: ``CascadeResult.to_frame()`` of the cascade shown)."""
    fig, axes = plt.subplots(2, 2, figsize=(13, 9.5))
    samples_panel(axes[0, 0], stages)
    exit_accuracy_panel(axes[0, 1], exits_frame, vgg_accuracy)
    training_time_panel(axes[1, 0], comparisons)
    stage_time_panel(axes[1, 1], stages)
    for ax in axes.flat:
        ax.title.set_fontsize(10)
        ax.grid(axis="x" if ax is axes[1, 0] else "y", alpha=0.3)
    return _finish(fig, title, scale, device)


def _show(ax, image: "torch.Tensor") -> None:
    image = image.cpu().numpy()
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(image.transpose(1, 2, 0))


def removal_examples_figure(images: "torch.Tensor", examples: "pd.DataFrame", classes: Sequence[str], *,
                            scale: str = "", device=None, seed: int = 0, columns: int = 10):
    """One row per group of ``speedycnet.removal_examples``: each image titled with its label and the prediction,
    framed red (and marked "wrong") where the prediction is wrong.

    images: the training split's uint8 images ``(N, C, H, W)``; examples: ``removal_examples``' DataFrame.
    """
    from .evaluation import EXAMPLE_GROUPS

    groups = [g for g in EXAMPLE_GROUPS if (examples["group"] == g).any()]
    fig, grid = plt.subplots(max(len(groups), 1), columns, figsize=(1.35 * columns, 1.9 * max(len(groups), 1) + 0.9),
                             squeeze=False)
    for row, group in enumerate(groups):
        picked = examples[examples["group"] == group]
        for col, ax in enumerate(grid[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(ROW_LABELS.get(group, group), fontsize=8)
            if col >= len(picked):
                ax.set_frame_on(False)
                continue
            r = picked.iloc[col]
            _show(ax, images[r["index"]])
            wrong = not r["correct"]
            for spine in ax.spines.values():
                spine.set(color="crimson" if wrong else "#999999", linewidth=2.5 if wrong else 0.8)
            by = f" (L{r['removed_at']})" if group == EXAMPLE_GROUPS[1] else ""
            ax.set_title(f"label {classes[r['label']][:10]}\npred {classes[r['prediction']][:10]}{by}"
                         + ("\nWRONG" if wrong else ""), fontsize=7, color="crimson" if wrong else "black")
    if not groups:
        grid[0, 0].set_ylabel("no samples", fontsize=8)
    missing = "" if EXAMPLE_GROUPS[1] in groups else " (no training image was removed wrongly)"
    title = (f"SpeedyCNet: training images drawn at random (seed {seed}), with the learner's prediction; "
             f"red frame: a wrong prediction (for a removed image: removed wrongly){missing}")
    return _finish(fig, title, scale, device)
