"""The run-time budget controller: thresholds that meet a budget in MACs per image or ms per batch.

It holds the validation frontier (``exits.candidates``) of one model and policy and answers each budget
with the core's ``exits.CostBudget`` target, predicting milliseconds from a ``LatencyModel``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch

from .. import exits
from ..device import elapsed_ms, single_thread
from ..errors import ThresholdError, UnknownNameError
from .timing import LatencyModel

if TYPE_CHECKING:
    import pandas as pd


class BudgetWarning(UserWarning):
    """A budget or deadline was not met, or a stated fallback was used instead."""


@dataclass
class BudgetChoice:
    """Thresholds picked for one budget, and what the validation split says they give."""

    policy: exits.ExitPolicy
    budget: float
    unit: str  # "MACs/image" or "ms/batch"
    expected: exits.SweepResult  # on the calibration (validation) scores
    expected_cost: float  # in ``unit``, as the controller predicts it (after its run-time correction)
    feasible: bool  # False: no setting meets the budget and this is the stated fallback (the cheapest)
    note: str = ""


@dataclass
class BudgetRun:
    """One batch run under a budget: what was chosen, and what it measurably cost."""

    choice: BudgetChoice
    result: exits.EarlyExitResult
    ms: float  # wall-clock ms of the whole batch
    macs_per_image: float  # actually spent
    met: bool  # measured cost <= budget

    @property
    def ms_per_image(self) -> float:
        return self.ms / len(self.result.predictions)

    @property
    def measured(self) -> float:
        """The measured cost in the budget's unit."""
        return self.macs_per_image if self.choice.unit == "MACs/image" else self.ms



class BudgetController:
    """Pick exit thresholds that meet a run-time budget, from a frontier calibrated on validation scores.

    candidates: ``exits.candidates``, a shared threshold over ``grid`` (and, with ``include_full``, the network
    without early exits).  For a budget in MACs per image it keeps the most accurate candidate whose validation
    mean MACs fit (``exits.CostBudget``); in milliseconds per batch, it predicts each candidate's batch time from
    ``latency`` (a ``LatencyModel``) and the fractions of samples that reach each stage.  ``infer`` runs a batch,
    measures it, warns when a budget was missed, and tightens its predictions by the measured/predicted ratio for
    the next batches.

    fallback: ``"raise"`` (an unreachable budget raises ``ThresholdError``) or ``"cheapest"`` (run the cheapest
    setting, mark the choice ``feasible=False`` and warn with ``BudgetWarning``); never a silent violation.
    """

    def __init__(self, scores: exits.ExitScores, costs: exits.ExitCosts, policy_name: str = "max_softmax", *,
                 latency: LatencyModel | None = None, grid: Sequence[float] | None = None,
                 include_full: bool = True, fallback: str = "raise", margin: float = 0.0):
        if fallback not in ("raise", "cheapest"):
            raise UnknownNameError(f"unknown fallback {fallback!r}. Use 'raise' or 'cheapest'.")
        if not 0.0 <= margin < 1.0:
            raise ThresholdError(f"margin is a fraction of the budget kept in reserve, in [0, 1); got {margin!r}.")
        self.scores, self.costs, self.policy_name = scores, costs, policy_name
        self.latency, self.fallback, self.margin = latency, fallback, margin
        self.correction = {"MACs/image": 1.0, "ms/batch": 1.0}
        with single_thread():  # ~100 sweeps over small tensors: threads would only add latency
            self.candidates = exits.candidates(scores, costs, policy_name, grid, include_full=include_full)
            for c in self.candidates:
                c.result.reach_fraction  # computed once here, read by every time-budget choice

    def table(self) -> "pd.DataFrame":
        """Every candidate: threshold, val accuracy, mean MACs, predicted ms per batch of 256 (with a latency model)."""
        import pandas as pd

        return pd.DataFrame([{"threshold": c.threshold, "accuracy": c.result.accuracy, "mean_macs": c.result.mean_macs,
                              "ms_per_batch_256": self._predict_ms(c, 256) if self.latency else None}
                             for c in self.candidates])

    def _predict_ms(self, c: exits.Candidate, batch_size: int) -> float:
        return self.latency.expected_batch_ms(c.result.reach_fraction, batch_size)

    def _cost(self, c: exits.Candidate, unit: str, batch_size: int) -> float:
        raw = c.result.mean_macs if unit == "MACs/image" else self._predict_ms(c, batch_size)
        return raw * self.correction[unit]

    def cheapest(self, unit: str = "MACs/image", batch_size: int = 256) -> float:
        """The lowest cost any candidate reaches, in ``unit`` (as predicted now)."""
        return min(self._cost(c, unit, batch_size) for c in self.candidates)

    def choose(self, *, macs_per_image: float | None = None, ms_per_batch: float | None = None,
               batch_size: int = 256) -> BudgetChoice:
        """The most accurate candidate whose predicted cost fits the budget (give exactly one budget).

        Raises ``ThresholdError`` for a missing, non-positive or (with ``fallback="raise"``) unreachable budget.
        """
        if (macs_per_image is None) == (ms_per_batch is None):
            raise ThresholdError("give exactly one budget: macs_per_image=... or ms_per_batch=...")
        unit, budget = ("MACs/image", macs_per_image) if macs_per_image is not None else ("ms/batch", ms_per_batch)
        if not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 0):
            raise ThresholdError(f"a budget must be a positive number of {unit}, got {budget!r}.")
        if unit == "ms/batch" and self.latency is None:
            raise ThresholdError("a time budget needs a latency model: BudgetController(..., "
                                 "latency=measure_latency_model(net, batch_size)).")
        costs = {id(c): self._cost(c, unit, batch_size) for c in self.candidates}
        target = exits.CostBudget(budget * (1 - self.margin), cost=lambda c: costs[id(c)])
        pick = exits.best_candidate(self.candidates, target)
        if pick is not None:
            c = self.candidates[pick]
            return BudgetChoice(c.policy, budget, unit, c.result, target.cost_of(c), True)
        low = min(self.candidates, key=target.cost_of)
        where = (f"every sample leaving at exit 1 ({self.policy_name} threshold "
                 f"{low.threshold}) costs {target.cost_of(low):.4g} {unit}")
        if self.fallback == "raise":
            raise ThresholdError(
                f"the budget of {budget:.4g} {unit} cannot be met: the cheapest setting, {where}. Raise the budget "
                f"to at least {target.cost_of(low) / (1 - self.margin):.4g} {unit}, tap an earlier exit, or use "
                "BudgetController(..., fallback='cheapest') to run the cheapest setting anyway.")
        note = (f"budget {budget:.4g} {unit} is unreachable; fallback: the cheapest setting ({where}), "
                f"which exceeds the budget.")
        warnings.warn(note, BudgetWarning, stacklevel=2)
        return BudgetChoice(low.policy, budget, unit, low.result, target.cost_of(low), False, note)

    def infer(self, net: exits.ExitNetwork, x: torch.Tensor, *, macs_per_image: float | None = None,
              ms_per_batch: float | None = None) -> BudgetRun:
        """Choose thresholds for this batch's budget, run ``net.infer`` on ``x`` ``(B, C, H, W)``, measure it.

        The budget may change from one call to the next.  A measured cost above the budget warns
        (``BudgetWarning``) and makes the next choices proportionally more cautious.
        """
        choice = self.choose(macs_per_image=macs_per_image, ms_per_batch=ms_per_batch, batch_size=len(x))
        net.eval()
        holder: dict[str, exits.EarlyExitResult] = {}
        ms = elapsed_ms(lambda: holder.setdefault("r", net.infer(x, choice.policy)), x.device)
        result = holder["r"]
        macs = result.macs / len(x)
        measured = macs if choice.unit == "MACs/image" else ms
        met = measured <= choice.budget
        predicted_raw = choice.expected_cost / self.correction[choice.unit]
        if predicted_raw > 0:  # feedback: scale future predictions by what this batch really cost
            ratio = measured / predicted_raw
            self.correction[choice.unit] = max(ratio, 0.5 * self.correction[choice.unit] + 0.5 * ratio)
        if not met and choice.feasible:
            warnings.warn(f"batch of {len(x)} missed its budget: {measured:.4g} > {choice.budget:.4g} "
                          f"{choice.unit} (predicted {choice.expected_cost:.4g}); the next choices are "
                          "adjusted by the measured/predicted ratio.", BudgetWarning, stacklevel=2)
        return BudgetRun(choice, result, ms, macs, met)
