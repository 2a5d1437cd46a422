"""SpeedyCNet's removal rule: which samples a trained learner lets go, and with which threshold.

The threshold is an ``exits`` calibration: ``RemovalPrecision(p)`` on the learner's own val scores picks the
loosest threshold whose removed val samples are at least p correct.  The removal itself is the exit policy's
``decide``, the very rule ``ExitNetwork.infer`` applies at that head.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .. import exits
from ..errors import UnknownNameError
from ..exits import ExitPolicy

# "random" and "none" are the ablations that attribute a speed-up to removal: "random" removes as many samples
# as "confident" would, chosen at random (less data, but not the easy data); "none" removes nothing (every
# learner trains on all the data), so what the cascade saves beyond it is what removal saves.
REMOVAL_RULES = ("confident", "confident_correct", "random", "none")
# Thresholds tried by removal_threshold: every 0.01 plus finer steps near both ends (max softmax
# saturates near 1 and normalised entropy near 0 on easy data).
REMOVAL_GRID = tuple(sorted(set(exits.DEFAULT_GRID) | {1e-4, 5e-4, 1e-3, 5e-3, 0.995, 0.999, 0.9995, 0.9999}))


def removal_threshold(logits: torch.Tensor, labels: torch.Tensor, policy_name: str = "max_softmax",
                      precision: float = 0.995, grid: Sequence[float] | None = None,
                      confidence: float | None = 0.95) -> float | None:
    """The loosest threshold on ``grid`` whose removed samples are at least ``precision`` correct.

    confidence: certify the precision with a one-sided Clopper-Pearson lower bound at this level (4 right
    of 4 removed val samples certify only 47%); ``None`` compares the point estimate instead.

    logits ``(N, C)`` and labels ``(N,)`` of the val samples that reach this learner (never test).
    "Loosest" = removes the most samples; among thresholds removing the same number, the strictest is
    kept (the same set, with the most margin).  Returns None when no threshold qualifies: the learner
    then removes nothing.  (``exits.calibrate`` with ``exits.RemovalPrecision(precision)``.)
    """
    target = exits.RemovalPrecision(precision, confidence)  # checks the ranges first
    scores = exits.ExitScores.single_head(logits, labels)
    grid = [float(t) for t in (grid if grid is not None else REMOVAL_GRID)]
    return exits.calibrate(scores, [0, 0], policy_name, target=target, grid=grid).policy.threshold(0)


def removal_mask(logits: torch.Tensor, labels: torch.Tensor, policy: ExitPolicy, k: int,
                 removal: str = "confident", generator: torch.Generator | None = None) -> torch.Tensor:
    """``(N,)`` bool: which samples learner k removes, from its logits ``(N, C)``.

    "confident" is exactly ``policy.decide`` at head k (what ``ExitNetwork.infer`` does there);
    "confident_correct" also requires the prediction to equal the label (training data only);
    "random" removes as many samples as "confident", drawn uniformly with ``generator`` (a CPU generator);
    "none" removes nothing.
    """
    if removal not in REMOVAL_RULES:
        raise UnknownNameError(f"unknown removal rule {removal!r}. Use one of: {', '.join(REMOVAL_RULES)}.")
    mask = policy.decide(logits, k, {})
    if removal == "confident_correct":
        mask = mask & (logits.argmax(1) == labels)
    elif removal == "none":
        mask = torch.zeros_like(mask)
    elif removal == "random":
        count = int(mask.sum())
        chosen = torch.randperm(len(mask), generator=generator)[:count].to(mask.device)
        mask = torch.zeros_like(mask)
        mask[chosen] = True
    return mask
