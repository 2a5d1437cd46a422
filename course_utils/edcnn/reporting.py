"""Reporting: which classes leave where, the columns of the paper's table, and what the MACs-vs-time figure says."""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

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


def macs_vs_time_findings(exit_macs_fraction: Sequence[float], exit_ms: Mapping[int, Sequence[float]],
                          timings: "pd.DataFrame", *, reference: str = "full", tolerance: float = 0.1) -> list[str]:
    """What the MACs-vs-time figure shows, in sentences computed from its own numbers (never written in advance).

    exit_macs_fraction: per exit, MACs to leave there / MACs to leave at the last exit.  exit_ms: batch size ->
    per-exit cumulative ms (``LatencyModel.exit_ms``).  timings: ``benchmark`` rows (name, batch_size,
    ms_per_image, macs_per_image) with the ``reference`` network at every batch size.  A time share within
    ``tolerance`` (relative) of the MACs share counts as "in proportion".
    """
    def compare(time: float, macs: float) -> str:
        if time > macs * (1 + tolerance):
            return "more time than its MACs suggest"
        if time < macs * (1 - tolerance):
            return "less time than its MACs suggest"
        return "time in proportion to its MACs"

    lines = []
    for bs, ms in exit_ms.items():
        share, macs = ms[0] / ms[-1], exit_macs_fraction[0]
        lines.append(f"batch {bs}: leaving at exit 1 costs {macs:.0%} of the last exit's MACs and {share:.0%} of its "
                     f"time: the first stage takes {compare(share, macs)}.")
    for bs, t in timings.groupby("batch_size", sort=True):
        ref = t[t["name"] == reference].iloc[0]
        saved = [(r.name, 1 - r.macs_per_image / ref["macs_per_image"], 1 - r.ms_per_image / ref["ms_per_image"])
                 for r in t.itertuples() if r.name != reference]
        behind = sum(time < macs for _, macs, time in saved)
        lines.append(f"batch {bs}, MACs saved / time saved against {reference}: "
                     + ", ".join(f"{name} {macs:.0%} / {time:.0%}" for name, macs, time in saved)
                     + f" ({behind} of {len(saved)} save less time than MACs).")
    return lines
