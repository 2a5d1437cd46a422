"""The course's shared figures (matplotlib).  Each function returns the Figure, so notebooks can publish it."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
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
