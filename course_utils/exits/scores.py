"""Cached per-exit scores and the sweep: what a policy would do, computed without running the network.

``sweep(scores, costs, policy)`` is the pure function behind calibration, the budget controller and the
widget panel: from cached per-exit logits it returns accuracy, mean MACs, the exit histogram and per-exit
accuracy for one policy, in about a millisecond for 10,000 samples.  ``summarize`` turns any exit
assignment (a sweep's, or the one ``infer`` really made) into the same ``SweepResult``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Sequence

import torch

from .network import ExitCosts, ExitNetwork
from .policies import ExitPolicy, confidence, normalized_entropy


@dataclass
class ExitScores:
    """Per-exit predictions, confidences and entropies of N samples, computed once from logits."""

    predictions: torch.Tensor  # (E, N) long
    confidence: torch.Tensor  # (E, N) max softmax
    entropy: torch.Tensor  # (E, N) entropy / log C
    labels: torch.Tensor  # (N,)
    logits: torch.Tensor | None = None  # (E, N, C) float, when built from logits: what an ExitBundle stores

    @classmethod
    def from_logits(cls, per_exit_logits: Sequence[torch.Tensor] | torch.Tensor, labels: torch.Tensor) -> "ExitScores":
        """``per_exit_logits``: E tensors ``(N, C)`` (or one ``(E, N, C)``); labels ``(N,)``."""
        logits = torch.stack(list(per_exit_logits)) if not isinstance(per_exit_logits, torch.Tensor) else per_exit_logits
        logits = logits.detach().float().cpu()
        return cls(logits.argmax(2), torch.stack([confidence(l) for l in logits]),
                   torch.stack([normalized_entropy(l) for l in logits]), labels.detach().cpu(), logits)

    @classmethod
    def single_head(cls, logits: torch.Tensor, labels: torch.Tensor) -> "ExitScores":
        """One head's logits ``(N, C)`` as a two-exit table: the head, then a stand-in final exit (a copy).

        For rules that judge one head on its own, such as SpeedyCNet's removal: only exit 0's numbers matter.
        """
        return cls.from_logits([logits, logits], labels)

    @property
    def num_exits(self) -> int:
        return self.predictions.shape[0]

    def __len__(self) -> int:
        return self.predictions.shape[1]

    def exit_accuracy(self) -> list[float]:
        """Accuracy of every head on all N samples (as if each were the only exit)."""
        return (self.predictions == self.labels).float().mean(1).tolist()


@torch.inference_mode()
def collect_logits(model: ExitNetwork, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> ExitScores:
    """Run ``forward_all`` over every batch ``(x (B, C, H, W), y (B,))`` once; keep the scores for later sweeps."""
    was_training = model.training
    model.eval()
    per_exit, labels = None, []
    for x, y in batches:
        outs = model.forward_all(x)
        per_exit = [[] for _ in outs] if per_exit is None else per_exit
        for k, o in enumerate(outs):
            per_exit[k].append(o.float().cpu())
        labels.append(y.cpu())
    model.train(was_training)
    return ExitScores.from_logits([torch.cat(p) for p in per_exit], torch.cat(labels))


@dataclass
class SweepResult:
    """The outcome of one policy on N samples."""

    accuracy: float
    mean_macs: float  # per sample
    exit_counts: list[int]  # how many samples left at each head
    exit_accuracy: list[float | None]  # accuracy of the samples that left at each head
    exit_index: torch.Tensor  # (N,) where each sample left
    predictions: torch.Tensor  # (N,)
    mean_latency_ms: float | None = None  # per sample, from measured per-exit latencies, if given
    thresholds: list[float | None] | None = None
    exit_correct: list[int] | None = None  # how many of the samples leaving at each head were right

    @property
    def exit_fraction(self) -> list[float]:
        n = sum(self.exit_counts)
        return [c / n for c in self.exit_counts]

    @cached_property
    def reach_fraction(self) -> list[float]:
        """Fraction of the samples that run stage k (all who leave at k or later), per stage."""
        counts = torch.tensor(self.exit_counts, dtype=torch.float64)
        return (counts.flip(0).cumsum(0).flip(0) / sum(self.exit_counts)).tolist()

    @property
    def early_counts(self) -> tuple[int, int]:
        """(samples leaving before the final exit, how many of them were right)."""
        correct = self.exit_correct if self.exit_correct is not None else \
            [round(a * c) if a is not None else 0 for a, c in zip(self.exit_accuracy, self.exit_counts)]
        return sum(self.exit_counts[:-1]), sum(correct[:-1])


def summarize(exit_index: torch.Tensor, predictions: torch.Tensor, labels: torch.Tensor, num_exits: int,
              cumulative_costs: Sequence[float], exit_latency_ms: Sequence[float] | None = None,
              thresholds: list[float | None] | None = None) -> SweepResult:
    """Accuracy, mean cost, exit histogram and per-exit accuracy of an exit assignment.

    exit_index, predictions, labels: ``(N,)``; cumulative_costs: the cost of leaving at each of the
    ``num_exits`` exits; exit_latency_ms: optional measured time per sample to leave at each exit.
    """
    exit_index, labels = exit_index.cpu(), labels.cpu()
    correct = predictions.cpu() == labels
    counts = torch.bincount(exit_index, minlength=num_exits)
    correct_per_exit = torch.bincount(exit_index, weights=correct.double(), minlength=num_exits)
    n = len(labels)
    mean_macs = float((counts.double() * torch.tensor(list(cumulative_costs), dtype=torch.float64)).sum() / n)
    latency = None
    if exit_latency_ms is not None:
        latency = float((counts.double() * torch.tensor(list(exit_latency_ms), dtype=torch.float64)).sum() / n)
    return SweepResult(
        accuracy=float(correct.double().mean()), mean_macs=mean_macs, exit_counts=counts.tolist(),
        exit_accuracy=[(c / k) if k else None for c, k in zip(correct_per_exit.tolist(), counts.tolist())],
        exit_index=exit_index, predictions=predictions, mean_latency_ms=latency, thresholds=thresholds,
        exit_correct=[int(c) for c in correct_per_exit.tolist()])


def sweep(scores: ExitScores, costs: ExitCosts | Sequence[float], policy: ExitPolicy,
          exit_latency_ms: Sequence[float] | None = None) -> SweepResult:
    """Apply ``policy`` to cached scores: what early exit would give, without running the network.

    costs: an ``ExitCosts`` (disabled heads are then not charged) or the cumulative cost of
        leaving at each exit (E values).
    exit_latency_ms: optional measured time per sample to leave at each exit (E values).
    """
    thresholds = policy.resolved(scores.num_exits)
    masks = policy.exit_masks(scores)  # E x N
    exit_index = masks.int().argmax(0)  # the first head whose rule fires (final row is all True)
    predictions = scores.predictions.gather(0, exit_index[None]).squeeze(0)
    cumulative = costs.cumulative(policy.enabled(scores.num_exits)) if isinstance(costs, ExitCosts) else costs
    return summarize(exit_index, predictions, scores.labels, scores.num_exits, cumulative, exit_latency_ms,
                     thresholds)


def synthetic_scores(n: int = 2000, num_exits: int = 4, seed: int = 1, *, base: float = 0.55, step: float = 0.15,
                     noise: float = 0.3, margin_right: float = 4.0, margin_wrong: float = 1.0) -> ExitScores:
    """Made-up per-exit logits for tests and benchmarks, never for a result: heads that get better with depth.

    Exit k is right with probability ``base + step * k`` and surer when right (its logit margin is
    ``margin_right`` instead of ``margin_wrong``, over Gaussian noise of scale ``noise``); 10 classes,
    labels uniform.  Returns ``ExitScores`` for ``n`` samples and ``num_exits`` heads.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    per_exit = []
    for k in range(num_exits):
        right = torch.rand(n, generator=g) < base + step * k
        pred = torch.where(right, labels, (labels + 1) % 10)
        logits = torch.randn(n, 10, generator=g) * noise
        logits[torch.arange(n), pred] += torch.where(right, margin_right, margin_wrong)
        per_exit.append(logits)
    return ExitScores.from_logits(per_exit, labels)
