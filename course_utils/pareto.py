"""The Pareto front: the points that no other point beats on both cost and score.

One implementation for the course: the accuracy/MACs frontier of an early-exit sweep (``exits``),
the NAS children (``nas``) and the architecture comparison (notebook 09) all call it.
"""
from __future__ import annotations

import pandas as pd


def pareto_front(frame: pd.DataFrame, cost: str, score: str) -> pd.DataFrame:
    """The rows no other row beats on both counts (lower-or-equal ``cost`` and higher ``score``), by cost.

    frame: one row per candidate.  Returns the front's rows, cheapest first; of rows with the same
    cost and score the first is kept.  A row is on the front iff its score beats every cheaper row's.
    """
    ordered = frame.sort_values([cost, score], ascending=[True, False], kind="stable")
    keep, best = [], float("-inf")
    for idx, value in zip(ordered.index, ordered[score]):
        if value > best:
            keep.append(idx)
            best = value
    return frame.loc[keep]


def pareto_mask(frame: pd.DataFrame, cost: str, score: str) -> pd.Series:
    """A boolean column: True for the rows of ``pareto_front(frame, cost, score)``."""
    return pd.Series(frame.index.isin(pareto_front(frame, cost, score).index), index=frame.index)
