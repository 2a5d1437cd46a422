"""What the threshold panel shows, as plain numbers: one function from a sweep to the panel's views.

The panel draws three views of one ``exits.sweep`` result:

* the frontier (accuracy against MACs per image on the panel's split), with the current thresholds as a
  point on it and the full network as a reference line;
* the exit histogram, each exit's bar split into samples that left there right and wrong;
* example images that leave early and late, each with its predicted and true label.

This module computes those numbers and nothing else, so the panel, the benchmark that chose its plotting
library and the tests all draw the same ones, and a browser test can compare what is displayed with
``sweep`` directly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .exits import SweepResult


@dataclass
class Example:
    """One thumbnail: which sample, where it left, what it was called and what it is."""

    index: int  # into the panel's split
    exit: int  # 0-based
    predicted: int
    label: int

    @property
    def right(self) -> bool:
        return self.predicted == self.label


@dataclass
class PanelView:
    """The numbers behind one redraw of the panel."""

    accuracy: float
    mean_macs: float
    mean_ms: float | None  # at the panel's batch size, from the measured per-exit latencies (None: not measured)
    exit_right: list[int]  # per exit: samples that left there and were right
    exit_wrong: list[int]  # per exit: samples that left there and were wrong
    rows: list[tuple[str, list[Example]]]  # ("leave early (exit 2)", [...]), ("leave late (exit 6)", [...])


def example_order(n: int, candidates: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
    """The samples that may be shown, in a fixed random order: random examples, but the same ones after a move.

    candidates: indices that have a thumbnail (default: all ``n``).
    """
    pool = torch.arange(n) if candidates is None else candidates.long()
    g = torch.Generator().manual_seed(seed)
    return pool[torch.randperm(len(pool), generator=g)]


def panel_view(result: SweepResult, labels: torch.Tensor, order: torch.Tensor | None = None,
               per_row: int = 6) -> PanelView:
    """The panel's numbers for ``result`` (a sweep over samples with ``labels`` ``(N,)``).

    order: the samples that may appear as examples, in display preference (``example_order``); None: no examples.
    Rows: the earliest exit anyone leaves at ("leave early") and the latest ("leave late"); a single row when
    every sample leaves at the same exit, so no row is ever empty.
    """
    right = [int(c) for c in (result.exit_correct if result.exit_correct is not None else
                              [round(a * c) if a is not None else 0
                               for a, c in zip(result.exit_accuracy, result.exit_counts)])]
    wrong = [int(c) - r for c, r in zip(result.exit_counts, right)]
    rows: list[tuple[str, list[Example]]] = []
    if order is not None and len(order):
        where = result.exit_index[order]
        used = sorted(set(where.tolist()))
        if used:
            picks = [("leave early", used[0]), ("leave late", used[-1])] if len(used) > 1 else [("every sample leaves",
                                                                                                 used[0])]
            for title, k in picks:
                idx = order[where == k][:per_row].tolist()
                rows.append((f"{title} (exit {k + 1})",
                             [Example(i, k, int(result.predictions[i]), int(labels[i])) for i in idx]))
    return PanelView(result.accuracy, result.mean_macs, result.mean_latency_ms, right, wrong, rows)
