"""Reporting: which classes leave where, and the columns of the paper's table."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch

if TYPE_CHECKING:
    import pandas as pd


def exit_distribution(exit_index: torch.Tensor, labels: torch.Tensor, num_exits: int,
                      class_names: Sequence[str] | None = None) -> "pd.DataFrame":
    """Fraction of each class's samples leaving at each exit: a DataFrame (classes x exits), rows sum to 1."""
    import pandas as pd

    classes = int(labels.max()) + 1
    counts = torch.zeros(classes, num_exits, dtype=torch.float64)
    counts.index_put_((labels.cpu(), exit_index.cpu()), torch.ones(len(labels), dtype=torch.float64), accumulate=True)
    frac = counts / counts.sum(1, keepdim=True).clamp_min(1)
    names = list(class_names) if class_names is not None else [str(c) for c in range(classes)]
    return pd.DataFrame(frac.numpy(), index=names[:classes], columns=[f"exit {k + 1}" for k in range(num_exits)])


TABLE_COLUMNS = ["dataset", "backbone", "mode", "device", "batch_size", "ms_per_image_full", "ms_per_image_edcnn",
                 "time_reduction_pct", "macs_full", "macs_edcnn", "acc_full", "acc_edcnn"]
