"""The controller: an LSTM that designs a network one decision at a time, trained with REINFORCE.

Zoph & Le (2017), "Neural Architecture Search with Reinforcement Learning":

    step t:  h_t = LSTM(input_t, h_{t-1});  p(a_t | a_<t) = softmax(W_t h_t);  a_t ~ p
             input_{t+1} = embedding_t(a_t)          (the choice just made is fed back in)

After the child that ``a_1..a_T`` describes has been trained, its validation accuracy R is the
reward, and the controller's parameters theta move along the REINFORCE estimate of the gradient of
the expected reward (Williams, 1992):

    grad J = E[ sum_t grad log p(a_t | a_<t) * (R - b) ]

``b`` is an exponential moving average of past rewards (the baseline): subtracting it leaves the
gradient unbiased and cuts its variance, so a child is "good" only if it beats the recent average.
An entropy bonus (as in ENAS, Pham et al. 2018) keeps the policy from collapsing onto its first
lucky choices.  The controller is tiny and always runs on the CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import CourseError
from .space import SearchSpace


class Controller(nn.Module):
    """An LSTM policy over ``space``'s decision sequence (one softmax classifier per decision)."""

    def __init__(self, space: SearchSpace, hidden: int = 64, init_range: float = 0.08):
        super().__init__()
        self.space = space
        sizes = space.num_choices()
        self.start = nn.Parameter(torch.zeros(1, hidden))  # the input of the first step
        self.cell = nn.LSTMCell(hidden, hidden)
        self.heads = nn.ModuleList(nn.Linear(hidden, n) for n in sizes)
        self.embeddings = nn.ModuleList(nn.Embedding(n, hidden) for n in sizes[:-1])
        for p in self.parameters():  # Zoph & Le: uniform in [-0.08, 0.08], so the first policy is near uniform
            nn.init.uniform_(p, -init_range, init_range)

    def _run(self, n: int, actions: torch.Tensor | None, generator: torch.Generator | None):
        """Step through the decisions; sample them, or follow ``actions`` (teacher forcing)."""
        hidden = self.start.shape[1]
        x = self.start.expand(n, hidden)
        state = (x.new_zeros(n, hidden), x.new_zeros(n, hidden))
        chosen, log_prob, entropy, probs = [], x.new_zeros(n), x.new_zeros(n), []
        for t, head in enumerate(self.heads):
            state = self.cell(x, state)
            logp = torch.log_softmax(head(state[0]), dim=-1)  # (n, choices_t)
            p = logp.exp()
            if actions is None:
                a = torch.multinomial(p.detach(), 1, generator=generator).squeeze(1)
            else:
                a = actions[:, t]
            chosen.append(a)
            probs.append(p)
            log_prob = log_prob + logp.gather(1, a[:, None]).squeeze(1)
            entropy = entropy - (p * logp).sum(1)
            if t + 1 < len(self.heads):
                x = self.embeddings[t](a)
        return torch.stack(chosen, 1), log_prob, entropy, probs

    @torch.no_grad()
    def sample(self, n: int = 1, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample ``n`` decision sequences: actions ``(n, T)`` int64, log-probabilities ``(n,)``, entropies ``(n,)``.

        ``T = len(space.decisions())``; ``space.decode(actions[k])`` is the k-th architecture.
        The entropy is the sum over steps of each step's entropy given the choices before it.
        """
        return self._run(n, None, generator)[:3]

    def evaluate(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log_prob (n,), entropy (n,))`` of given actions ``(n, T)``, with gradients."""
        actions = torch.as_tensor(actions, dtype=torch.long)
        if actions.ndim != 2 or actions.shape[1] != len(self.heads):
            raise CourseError(f"actions must be shaped (n, {len(self.heads)}) for this space; got "
                              f"{tuple(actions.shape)}. Use space.encode(arch) for each architecture.")
        return self._run(len(actions), actions, None)[1:3]

    @torch.no_grad()
    def probabilities(self, actions: torch.Tensor) -> list[torch.Tensor]:
        """Per decision, the policy's distribution ``(n, choices_t)`` given the earlier ``actions`` ``(n, T)``."""
        actions = torch.as_tensor(actions, dtype=torch.long)
        return self._run(len(actions), actions, None)[3]


@dataclass
class EMABaseline:
    """``b <- decay * b + (1 - decay) * mean(rewards)``; the first batch sets ``b`` to its mean."""

    decay: float = 0.95
    value: float | None = None

    def advantage(self, rewards: torch.Tensor) -> torch.Tensor:
        """``rewards - b`` with ``b`` as it stood before these rewards (their mean when there is none yet)."""
        b = rewards.mean() if self.value is None else torch.tensor(self.value, dtype=rewards.dtype)
        return rewards - b

    def update(self, rewards: torch.Tensor) -> float:
        """Fold a batch of rewards into the average; returns the new ``b``."""
        mean = float(rewards.mean())
        self.value = mean if self.value is None else self.decay * self.value + (1 - self.decay) * mean
        return self.value


def reinforce_update(controller: Controller, optimizer: torch.optim.Optimizer, actions: torch.Tensor,
                     rewards: torch.Tensor, baseline: EMABaseline, entropy_weight: float = 0.0) -> dict:
    """One REINFORCE step on a batch of sampled ``actions`` ``(n, T)`` and their ``rewards`` ``(n,)``.

    loss = -mean_k[(R_k - b) * log p(a_k)] - entropy_weight * mean_k[H_k]; then ``b`` is updated.
    Returns ``{"loss", "advantage" (n,), "baseline", "entropy"}`` (the baseline after the update).
    """
    rewards = torch.as_tensor(rewards, dtype=torch.float32).reshape(-1)
    advantage = baseline.advantage(rewards)
    log_prob, entropy = controller.evaluate(actions)
    loss = -(advantage * log_prob).mean() - entropy_weight * entropy.mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    baseline.update(rewards)
    return {"loss": loss.item(), "advantage": advantage, "baseline": baseline.value,
            "entropy": entropy.mean().item()}


# ----------------------------------------------------------------------------- rewards
@dataclass(frozen=True)
class AccuracyReward:
    """The reward is the child's validation accuracy (Zoph & Le)."""

    def __call__(self, val_accuracy: float, macs: int) -> float:
        return float(val_accuracy)


@dataclass(frozen=True)
class CostAwareReward:
    """A MnasNet-style reward with MACs in place of latency: ``accuracy * (macs / target_macs) ** w``.

    MnasNet (Tan et al. 2019) uses ``accuracy * (latency / target) ** w`` with latency measured on a phone
    (a Pixel 1); the course counts MACs instead, so the reward is the same on every machine.
    ``w = alpha`` when ``macs <= target_macs``, else ``beta``.  The paper's soft constraint is
    ``alpha = beta = -0.07`` (twice the MACs costs about 5% of the reward); ``alpha=0, beta=-1`` is its
    hard constraint (no bonus for being small, a steep penalty for being large).
    """

    target_macs: float
    alpha: float = -0.07
    beta: float = -0.07

    def __post_init__(self) -> None:
        if not self.target_macs > 0:
            raise CourseError(f"target_macs must be > 0, got {self.target_macs}. Pass the MACs budget of one "
                              "forward pass on one image, e.g. 2e6.")

    def __call__(self, val_accuracy: float, macs: int) -> float:
        w = self.alpha if macs <= self.target_macs else self.beta
        return float(val_accuracy) * (macs / self.target_macs) ** w
