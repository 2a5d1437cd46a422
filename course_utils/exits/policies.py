"""Exit policies: each turns one head's logits into an "exit here" mask, with the thresholds it holds.

  ``MaxSoftmax(tau)``  exit when max softmax probability >= tau   (SDN-style confidence; tau in [0, 1])
  ``Entropy(tau)``     exit when entropy / log(C) <= tau          (BranchyNet-style; tau in [0, 1])
  ``Patience(t)``      exit when t consecutive heads agreed with the previous one (PABEE)

A threshold may be shared (a float) or given per early exit (a sequence of E-1 values; the final head
always exits); ``None`` disables an exit, and its head is then not even computed.  A policy holds its
thresholds: ``decide`` and ``exit_masks`` read them, so callers never pass them again.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F

from ..errors import ThresholdError, UnknownNameError

if TYPE_CHECKING:  # only for annotations: scores.py imports this module
    from .scores import ExitScores

Thresholds = float | Sequence[float | None] | None


def confidence(logits: torch.Tensor) -> torch.Tensor:
    """Max softmax probability per row: ``(B, C) -> (B,)``, computed in float32."""
    return F.softmax(logits.float(), dim=1).amax(1)


def normalized_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Softmax entropy divided by log(C), in [0, 1]: ``(B, C) -> (B,)``."""
    logp = F.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp).sum(1) / math.log(logits.shape[1])


def _resolve(thresholds: Thresholds, num_exits: int, name: str, low: float, high: float) -> list[float | None]:
    """Expand a shared threshold to one per early exit and check the range."""
    early = num_exits - 1
    if thresholds is None or isinstance(thresholds, (int, float)):
        values = [thresholds] * early
    else:
        values = list(thresholds)
        if len(values) != early:
            raise ThresholdError(
                f"{name} got {len(values)} thresholds for a network with {num_exits} exits: give one shared "
                f"value or {early} values, one per early exit (the final head always exits).")
    for k, tau in enumerate(values):
        if tau is not None and not (isinstance(tau, (int, float)) and low <= tau <= high and not math.isnan(tau)):
            raise ThresholdError(
                f"{name} threshold for exit {k} is {tau!r}, outside its valid range [{low}, {high}]. "
                f"Use a value in [{low}, {high}], or None to disable that exit.")
    return [None if t is None else float(t) for t in values]


def _shared(thresholds: Thresholds) -> bool:
    return not isinstance(thresholds, Sequence) or isinstance(thresholds, str)


class ExitPolicy:
    """Decides, head by head, which samples leave the network, by the thresholds it was built with.

    Subclasses implement ``decide`` (online, used by ``infer``) and ``exit_masks`` (all heads at once,
    used by ``sweep``); the equivalence tests hold the two to the same answers.
    """

    name = "policy"

    def __init__(self, thresholds: Thresholds):
        self._per_exit = None if _shared(thresholds) else tuple(thresholds)  # a copy: the caller's list may change
        self._thresholds = thresholds if self._per_exit is None else list(self._per_exit)
        self._resolved: dict[int, list[float | None]] = {}  # per network depth, checked once
        self._check_now()

    def _check_now(self) -> None:
        """Check what can be checked before the network's depth is known (a shared value's range)."""
        if _shared(self._thresholds):
            self.resolved(2)

    @property
    def thresholds(self) -> Thresholds:
        """The thresholds as given: one shared value, or one per early exit (read-only)."""
        return self._thresholds if self._per_exit is None else list(self._per_exit)

    def resolved(self, num_exits: int) -> list[float | None]:
        """The per-early-exit thresholds (None: exit disabled); raises ThresholdError when out of range."""
        if num_exits not in self._resolved:
            self._resolved[num_exits] = self._check(num_exits)
        return list(self._resolved[num_exits])

    def _check(self, num_exits: int) -> list[float | None]:
        return _resolve(self._thresholds, num_exits, self.name, 0.0, 1.0)

    def threshold(self, k: int) -> float | None:
        """Early head ``k``'s threshold (None: that exit is disabled)."""
        t = self._thresholds if self._per_exit is None else self._per_exit[k]
        return None if t is None else float(t)

    def head_needed(self, k: int, num_exits: int) -> bool:
        """Whether head ``k`` of ``num_exits`` must be computed (disabled heads are skipped; the last never is)."""
        return k >= num_exits - 1 or self.threshold(k) is not None

    def enabled(self, num_exits: int) -> list[bool]:
        """``head_needed`` for every head: what ``ExitCosts.cumulative`` charges."""
        return [self.head_needed(k, num_exits) for k in range(num_exits)]

    def strictness(self, threshold: float) -> float:
        """Larger means fewer samples leave (for breaking ties between thresholds that remove the same set)."""
        return float(threshold)

    def start(self, batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
        """Per-sample state carried from head to head (compacted along with the samples)."""
        return {}

    def decide(self, logits: torch.Tensor, k: int, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """Exit mask ``(B,)`` bool for early head ``k``'s logits ``(B, C)``; may update ``state`` in place."""
        raise NotImplementedError

    def exit_masks(self, scores: "ExitScores") -> torch.Tensor:
        """``(E, N)`` bool: would sample n exit at head k if it got there (final row all True)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._thresholds!r})"


class MaxSoftmax(ExitPolicy):
    """Exit when the largest softmax probability is at least tau (tau in [0, 1])."""

    name = "max_softmax"

    def decide(self, logits: torch.Tensor, k: int, state: dict[str, torch.Tensor]) -> torch.Tensor:
        tau = self.threshold(k)
        if tau is None:
            return torch.zeros(len(logits), dtype=torch.bool, device=logits.device)
        return confidence(logits) >= tau

    def exit_masks(self, scores: "ExitScores") -> torch.Tensor:
        return _threshold_masks(scores.confidence, self.resolved(scores.num_exits), lambda s, t: s >= t)


class Entropy(ExitPolicy):
    """Exit when the softmax entropy, in units of log(C), is at most tau (tau in [0, 1])."""

    name = "entropy"

    def strictness(self, threshold: float) -> float:
        return -float(threshold)  # a lower entropy bound lets fewer samples leave

    def decide(self, logits: torch.Tensor, k: int, state: dict[str, torch.Tensor]) -> torch.Tensor:
        tau = self.threshold(k)
        if tau is None:
            return torch.zeros(len(logits), dtype=torch.bool, device=logits.device)
        return normalized_entropy(logits) <= tau

    def exit_masks(self, scores: "ExitScores") -> torch.Tensor:
        return _threshold_masks(scores.entropy, self.resolved(scores.num_exits), lambda s, t: s <= t)


class Patience(ExitPolicy):
    """Exit once ``patience`` consecutive heads predicted the same class as the head before them.

    Zhou et al. 2020 (PABEE).  ``patience`` is an integer >= 1; every head is computed until then.
    """

    name = "patience"

    def __init__(self, patience: int):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ThresholdError(f"patience must be an integer >= 1, got {patience!r}.")
        super().__init__(patience)

    def _check_now(self) -> None:
        pass  # whether the patience can be reached depends on the depth: checked by resolved()

    def _check(self, num_exits: int) -> list[float | None]:
        if self._thresholds > num_exits - 1:
            raise ThresholdError(
                f"patience {self._thresholds} can never be reached with {num_exits} exits; "
                f"use a value in [1, {num_exits - 1}].")
        return [float(self._thresholds)] * (num_exits - 1)

    def start(self, batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
        return {"previous": torch.full((batch_size,), -1, dtype=torch.long, device=device),
                "streak": torch.zeros(batch_size, dtype=torch.long, device=device)}

    def decide(self, logits: torch.Tensor, k: int, state: dict[str, torch.Tensor]) -> torch.Tensor:
        pred = logits.argmax(1)
        state["streak"] = torch.where(pred == state["previous"], state["streak"] + 1, torch.zeros_like(pred))
        state["previous"] = pred
        return state["streak"] >= self._thresholds

    def exit_masks(self, scores: "ExitScores") -> torch.Tensor:
        self.resolved(scores.num_exits)
        preds = scores.predictions
        streak = torch.zeros_like(preds[0])
        rows = [torch.zeros_like(preds[0], dtype=torch.bool)]
        for k in range(1, len(preds)):
            streak = torch.where(preds[k] == preds[k - 1], streak + 1, torch.zeros_like(streak))
            rows.append(streak >= self._thresholds)
        rows[-1] = torch.ones_like(rows[-1])
        return torch.stack(rows)


def _threshold_masks(score: torch.Tensor, thresholds: list[float | None], rule) -> torch.Tensor:
    rows = [rule(score[k], t) if t is not None else torch.zeros_like(score[k], dtype=torch.bool)
            for k, t in enumerate(thresholds)]
    rows.append(torch.ones_like(score[-1], dtype=torch.bool))
    return torch.stack(rows)


POLICIES: dict[str, type[ExitPolicy]] = {"max_softmax": MaxSoftmax, "entropy": Entropy, "patience": Patience}


def policy_class(name: str) -> type[ExitPolicy]:
    """The policy class registered as ``name``; an unknown name raises ``UnknownNameError`` listing the known ones."""
    if name not in POLICIES:
        raise UnknownNameError(f"unknown exit policy {name!r}. Use one of: {', '.join(POLICIES)}.")
    return POLICIES[name]


def make_policy(name: str, thresholds: Thresholds) -> ExitPolicy:
    """Build a policy by name (``"max_softmax"``, ``"entropy"`` or ``"patience"``) holding ``thresholds``."""
    return policy_class(name)(thresholds)
