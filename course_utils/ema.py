"""An exponential moving average of a model's weights, evaluated in place of the raw weights.

Averaging the last few hundred steps' weights smooths the noise of a large learning rate, so a short
schedule ends on better weights (hlb-CIFAR10 and airbench use EMA or Lookahead for this).  Only the
parameters are averaged; BatchNorm's running statistics are taken from the live model, which under DDP
``fit`` has made identical on every rank, so every rank's averaged model is identical too.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn


class WeightEMA:
    """``shadow = decay * shadow + (1 - decay) * weights``, applied every ``every`` optimizer steps.

    decay: per step; with ``every`` > 1 each update uses ``decay ** every``, so the horizon (about
    ``1 / (1 - decay)`` steps) does not depend on ``every``.  Cheaper updates, same average.
    Warm-up: the decay of an update is at most ``(1 + t) / (10 + t)`` after ``t`` steps (as TensorFlow's
    ``ExponentialMovingAverage(num_updates=t)``), so that a short run's average is not mostly its random initial
    weights: without it, a 13-step smoke run (two updates of weight 0.049 at ``every=5``) ends on an average that is
    still 90% its initial weights.  With ``decay`` 0.99 the warm-up is over after 881 steps (174 with ``every=5``).
    """

    def __init__(self, model: nn.Module, decay: float, every: int = 1):
        if not 0.0 < decay < 1.0 or every < 1:
            raise ValueError(f"EMA needs 0 < decay < 1 and every >= 1, got decay={decay}, every={every}")
        self.decay, self.every, self.steps = decay, every, 0
        self.shadow = {name: p.detach().clone() for name, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Call after every optimizer step."""
        self.steps += 1
        if self.steps % self.every:
            return
        weight = 1.0 - min(self.decay ** self.every, (1 + self.steps) / (10 + self.steps))
        for name, p in model.named_parameters():
            self.shadow[name].lerp_(p.detach(), weight)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Inside the block ``model`` holds the averaged weights; its own come back afterwards."""
        params = dict(model.named_parameters())
        saved = {name: p.detach().clone() for name, p in params.items()}
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(self.shadow[name])
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(saved[name])

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model`` for good."""
        for name, p in model.named_parameters():
            p.copy_(self.shadow[name])

    def state_dict(self) -> dict:
        return {"shadow": self.shadow, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
        self.steps = int(state["steps"])
