"""Calibration targets, the threshold frontier, and ``calibrate``: which thresholds to deploy.

A target says what a good setting is, answered from cached ``ExitScores`` (never the test split):

  ``AccuracyTarget(epsilon)``      accuracy within epsilon of the final exit's, at the lowest mean cost
  ``RemovalPrecision(precision)``  the samples leaving early are at least ``precision`` correct, and as many
                                   leave as possible (SpeedyCNet's removal rule)
  ``CostBudget(budget)``           cost per sample within a budget, at the highest accuracy (edCNN's controller)

``candidates`` sweeps one shared threshold over a grid; ``best_candidate`` picks the target's choice among
them; ``frontier`` tabulates them (with the Pareto front); ``calibrate`` does the pick and can then tune
each exit's threshold in turn.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import torch

from ..errors import ThresholdError
from ..pareto import pareto_mask
from .network import ExitCosts
from .policies import ExitPolicy, Thresholds, make_policy, policy_class
from .scores import ExitScores, SweepResult, sweep

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_GRID = tuple(round(x, 4) for x in torch.linspace(0.0, 1.0, 101).tolist())


@dataclass
class Candidate:
    """One shared threshold (None: no early exit) and what its sweep gave."""

    threshold: float | int | None
    policy: ExitPolicy
    result: SweepResult


def shared_grid(policy_name: str, num_exits: int, grid: Sequence[float] | None = None,
                include_full: bool = False) -> list:
    """The shared thresholds to try: ``grid`` (default ``DEFAULT_GRID``), plus None (never exit early) with
    ``include_full``; for ``"patience"`` always 1 .. E-1 (a patience of E-1 is the slowest setting)."""
    if policy_name == "patience":
        return list(range(1, num_exits))
    values = list(grid if grid is not None else DEFAULT_GRID)
    return values + [None] if include_full else values


def candidates(scores: ExitScores, costs: ExitCosts | Sequence[float], policy_name: str = "max_softmax",
               grid: Sequence[float] | None = None, *, include_full: bool = False) -> list[Candidate]:
    """One ``sweep`` per shared threshold of ``shared_grid(policy_name, E, grid, include_full)``."""
    out = []
    for value in shared_grid(policy_name, scores.num_exits, grid, include_full):
        policy = make_policy(policy_name, value)
        out.append(Candidate(value, policy, sweep(scores, costs, policy)))
    return out


# ----------------------------------------------------------------------------- targets
class Target(Protocol):
    """What a calibration target answers; ``AccuracyTarget``, ``RemovalPrecision`` and ``CostBudget`` are the three."""

    def accepts(self, c: Candidate, full_accuracy: float) -> bool:
        """Whether candidate ``c`` meets the target (``full_accuracy``: the final exit alone, same split)."""

    def key(self, c: Candidate) -> tuple:
        """Sort key among accepted candidates: the smallest is the target's choice."""

    def improves(self, trial: SweepResult, best: SweepResult) -> bool:
        """Whether an accepted per-exit ``trial`` is strictly better than ``best`` (calibrate's coordinate search)."""

    def fallback(self, policy_name: str, num_exits: int) -> Thresholds:
        """The thresholds to use when no candidate is accepted (or raise ``ThresholdError``)."""


@dataclass(frozen=True)
class AccuracyTarget:
    """Accuracy within ``epsilon`` of the final exit alone (on the same split), at the lowest mean cost."""

    epsilon: float = 0.0

    def __post_init__(self):
        if not (isinstance(self.epsilon, (int, float)) and 0.0 <= self.epsilon <= 1.0):
            raise ThresholdError(f"epsilon is an accuracy gap in [0, 1], got {self.epsilon!r}.")

    def accepts(self, c: Candidate, full_accuracy: float) -> bool:
        return c.result.accuracy >= full_accuracy - self.epsilon - 1e-12

    def key(self, c: Candidate) -> tuple:
        return c.result.mean_macs, -c.result.accuracy

    def improves(self, trial: SweepResult, best: SweepResult) -> bool:
        return trial.mean_macs < best.mean_macs - 1e-9

    def fallback(self, policy_name: str, num_exits: int) -> Thresholds:
        # The full network always meets the bound; the grid may lack "never exit" (max_softmax at 1.0
        # still fires on a saturated softmax), so say it explicitly.
        return num_exits - 1 if policy_name == "patience" else None


def clopper_pearson_lower(right: int, n: int, confidence: float = 0.95) -> float:
    """One-sided lower confidence bound on a proportion from ``right`` successes in ``n`` trials (exact, Clopper-Pearson).

    The true proportion is at least this with probability ``confidence``: with 4 of 4 removed samples
    right the bound is only 0.47, with 600 of 600 it is 0.995.  ``n == 0`` gives 0.
    """
    if n <= 0 or right <= 0:
        return 0.0
    if right >= n:  # Beta(n, 1) has the closed form x^n
        return (1.0 - confidence) ** (1.0 / n)
    from scipy.stats import beta

    return float(beta.ppf(1.0 - confidence, right, n - right + 1))


@dataclass(frozen=True)
class RemovalPrecision:
    """The samples leaving before the final exit are at least ``precision`` correct; as many leave as possible.

    confidence: ``None`` compares the val point estimate with ``precision``; a level (e.g. 0.95) asks instead
    that the one-sided Clopper-Pearson lower bound on the removed samples' precision reach ``precision``, so
    that 4 right of 4 never certifies 99.5%.
    Among thresholds that let the same number leave, the strictest is kept (the same set, with the most margin).
    With no qualifying threshold no sample leaves early.
    """

    precision: float = 0.995
    confidence: float | None = None

    def __post_init__(self):
        if not (isinstance(self.precision, (int, float)) and 0.0 < self.precision <= 1.0):
            raise ThresholdError(f"removal_precision is the accuracy required of removed val samples, in (0, 1]; "
                                 f"got {self.precision!r}. Use e.g. 0.995.")
        if self.confidence is not None and not 0.5 <= self.confidence < 1.0:
            raise ThresholdError(f"removal confidence is a level in [0.5, 1), got {self.confidence!r}. Use e.g. 0.95.")

    def accepts(self, c: Candidate, full_accuracy: float) -> bool:
        n, right = c.result.early_counts
        if self.confidence is not None:
            return n > 0 and clopper_pearson_lower(right, n, self.confidence) >= self.precision - 1e-12
        return n > 0 and right >= self.precision * n - 1e-9

    def key(self, c: Candidate) -> tuple:
        return -c.result.early_counts[0], -c.policy.strictness(c.threshold)

    def improves(self, trial: SweepResult, best: SweepResult) -> bool:
        return trial.early_counts[0] > best.early_counts[0]

    def fallback(self, policy_name: str, num_exits: int) -> Thresholds:
        return num_exits - 1 if policy_name == "patience" else None


@dataclass(frozen=True)
class CostBudget:
    """Cost per sample at most ``budget``, at the highest accuracy (ties: the cheaper).

    cost: a candidate's cost in the budget's unit (default: its mean MACs per sample); the budget
    controller passes its own, e.g. predicted milliseconds per batch.
    """

    budget: float
    cost: Callable[[Candidate], float] | None = None

    def __post_init__(self):
        if not (isinstance(self.budget, (int, float)) and self.budget == self.budget and self.budget > 0):
            raise ThresholdError(f"a budget must be a positive number, got {self.budget!r}.")

    def cost_of(self, c: Candidate) -> float:
        """Candidate ``c``'s cost in the budget's unit."""
        return c.result.mean_macs if self.cost is None else self.cost(c)

    def accepts(self, c: Candidate, full_accuracy: float) -> bool:
        return self.cost_of(c) <= self.budget

    def key(self, c: Candidate) -> tuple:
        return -c.result.accuracy, self.cost_of(c)

    def improves(self, trial: SweepResult, best: SweepResult) -> bool:
        return trial.accuracy > best.accuracy + 1e-12 or \
            (trial.accuracy >= best.accuracy - 1e-12 and trial.mean_macs < best.mean_macs - 1e-9)

    def fallback(self, policy_name: str, num_exits: int) -> Thresholds:
        raise ThresholdError(f"no setting costs at most {self.budget:.4g} per sample: raise the budget.")




def best_candidate(pool: Sequence[Candidate], target: Target, full_accuracy: float = 0.0) -> int | None:
    """Index of the target's choice in ``pool`` (the first of equals), or None when none qualifies."""
    fits = [i for i, c in enumerate(pool) if target.accepts(c, full_accuracy)]
    return min(fits, key=lambda i: target.key(pool[i])) if fits else None


def frontier(scores: ExitScores, costs: ExitCosts | Sequence[float], policy_name: str = "max_softmax",
             grid: Sequence[float] | None = None, *, target: Target | None = None) -> "pd.DataFrame":
    """Accuracy and mean MACs for a shared threshold over ``grid``: a pandas DataFrame.

    Columns: threshold, accuracy, mean_macs, exit_fraction, pareto (True where no other point is both
    cheaper and at least as accurate: ``pareto.pareto_mask``) and, with a ``target``, meets_target.
    For ``"patience"`` the grid is 1 .. E-1.
    """
    import pandas as pd

    pool = candidates(scores, costs, policy_name, grid)
    df = pd.DataFrame([{"threshold": c.threshold, "accuracy": c.result.accuracy, "mean_macs": c.result.mean_macs,
                        "exit_fraction": c.result.exit_fraction} for c in pool])
    df["pareto"] = pareto_mask(df, "mean_macs", "accuracy")
    if target is not None:
        full = scores.exit_accuracy()[-1]
        df["meets_target"] = [target.accepts(c, full) for c in pool]
    return df


@dataclass
class Calibration:
    """Thresholds chosen on the validation split, and what they gave there."""

    policy: ExitPolicy
    val: SweepResult
    full_accuracy: float  # the final head alone, on the same split
    target: Target
    feasible: bool = True  # False: no grid value met the target, and this is the target's stated fallback

    @property
    def epsilon(self) -> float | None:
        """The accuracy gap of an ``AccuracyTarget`` (None for other targets)."""
        return getattr(self.target, "epsilon", None)


def calibrate(scores: ExitScores, costs: ExitCosts | Sequence[float], policy_name: str = "max_softmax", *,
              target: Target | None = None, epsilon: float = 0.0, per_exit: bool = False,
              grid: Sequence[float] | None = None, passes: int = 3) -> Calibration:
    """The thresholds that best meet ``target`` on ``scores`` (default ``AccuracyTarget(epsilon)``).

    Call it with validation-split scores, never test.  A shared threshold is searched over ``grid``;
    with ``per_exit`` a coordinate search then tunes each exit's threshold in turn (``passes`` rounds),
    keeping any change that the target prefers while it still holds (not for ``"patience"``).
    """
    if target is None:
        target = AccuracyTarget(epsilon)
    elif epsilon:
        raise ThresholdError("give either a target or epsilon (epsilon is AccuracyTarget(epsilon)), not both.")
    policy_class(policy_name)
    full_accuracy = scores.exit_accuracy()[-1]
    pool = candidates(scores, costs, policy_name, grid)
    pick = best_candidate(pool, target, full_accuracy)
    if pick is None:
        policy = make_policy(policy_name, target.fallback(policy_name, scores.num_exits))
        best = sweep(scores, costs, policy)
    else:
        policy, best = pool[pick].policy, pool[pick].result
    if per_exit and policy_name != "patience":
        grid_values = list(grid if grid is not None else DEFAULT_GRID) + [None]
        current = policy.resolved(scores.num_exits)
        for _ in range(passes):
            improved = False
            for k in range(len(current)):
                for tau in grid_values:
                    trial = current.copy()
                    trial[k] = tau
                    trial_policy = make_policy(policy_name, trial)
                    r = sweep(scores, costs, trial_policy)
                    if target.accepts(Candidate(None, trial_policy, r), full_accuracy) and target.improves(r, best):
                        current, best, improved = trial, r, True
            if not improved:
                break
        policy = make_policy(policy_name, current)
        best = sweep(scores, costs, policy)
    return Calibration(policy, best, full_accuracy, target, pick is not None)
