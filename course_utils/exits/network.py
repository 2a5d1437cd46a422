"""The exit network: stages with a head after each, real early exit with compaction, and MAC costs.

    x -> stage_0 -> h_0 -> stage_1 -> h_1 -> ... -> stage_{E-1} -> h_{E-1}
                    |                |                          |
                  head_0           head_1        ...          head_{E-1}  (the final classifier)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..complexity import profile
from .policies import ExitPolicy


@dataclass
class ExitCosts:
    """MACs per sample of each stage and each head (index k = exit k)."""

    stage_macs: list[int]
    head_macs: list[int]

    def cumulative(self, enabled: Sequence[bool] | None = None) -> list[int]:
        """MACs spent by a sample that leaves at exit k, having run every enabled earlier head."""
        enabled = list(enabled) if enabled is not None else [True] * len(self.head_macs)
        total, out = 0, []
        for k, (s, h) in enumerate(zip(self.stage_macs, self.head_macs)):
            total += s
            out.append(total + h)
            if enabled[k]:
                total += h
        return out

    @property
    def full(self) -> int:
        """MACs of the network without its early heads: every stage plus the final head."""
        return sum(self.stage_macs) + self.head_macs[-1]


def count_macs(module: nn.Module, example: torch.Tensor) -> tuple[int, torch.Tensor]:
    """MACs of ``module`` per sample of ``example`` (counted by ``complexity.profile``), and its output."""
    macs = profile(module, tuple(example.shape)).macs // len(example)
    with torch.no_grad():
        return macs, module(example)


@dataclass
class EarlyExitResult:
    """What ``infer`` returns for a batch of B samples."""

    predictions: torch.Tensor  # (B,) long
    exit_index: torch.Tensor  # (B,) long, which head each sample left at
    logits: torch.Tensor  # (B, C) the logits of that head
    macs: int  # MACs actually spent on the whole batch (stages and heads run)
    samples_per_stage: list[int] = field(default_factory=list)  # how many samples ran each stage


class ExitNetwork(nn.Module):
    """Stages with an exit head after each; the last head is the network's own classifier.

    stages[k]: features of stage k-1 (the input for k=0) -> features of stage k.
    heads[k]: features of stage k -> logits ``(B, num_classes)``.
    """

    def __init__(self, stages: Iterable[nn.Module], heads: Iterable[nn.Module]):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.heads = nn.ModuleList(heads)
        if len(self.stages) != len(self.heads) or len(self.stages) < 1:
            raise ValueError(f"need one head per stage, got {len(self.stages)} stages and {len(self.heads)} heads")
        self.costs: ExitCosts | None = None

    @property
    def num_exits(self) -> int:
        return len(self.heads)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every head's logits (see ``forward_all``)."""
        return self.forward_all(x)

    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every head's logits, each ``(B, num_classes)``: the reference path and training's."""
        outputs = []
        for stage, head in zip(self.stages, self.heads):
            x = stage(x)
            outputs.append(head(x))
        return outputs

    def measure_costs(self, input_shape: Sequence[int]) -> ExitCosts:
        """Count each stage's and head's MACs for one sample of ``input_shape`` (C, H, W); cached."""
        was_training = self.training
        self.eval()
        p = next(self.parameters())
        x = torch.zeros(1, *input_shape, device=p.device, dtype=p.dtype)
        stage_macs, head_macs = [], []
        for stage, head in zip(self.stages, self.heads):
            macs, x = count_macs(stage, x)
            stage_macs.append(macs)
            head_macs.append(count_macs(head, x)[0])
        self.train(was_training)
        self.costs = ExitCosts(stage_macs, head_macs)
        return self.costs

    @torch.inference_mode()
    def infer(self, x: torch.Tensor, policy: ExitPolicy) -> EarlyExitResult:
        """Real early exit on a batch ``(B, C, H, W)``: exited samples leave; only the rest run on.

        Each compaction step (boolean indexing) costs one host sync on CUDA: the price of
        not computing what is not needed.
        """
        policy.resolved(self.num_exits)  # raises before any work when the thresholds do not fit
        n, device, last = len(x), x.device, self.num_exits - 1
        predictions = torch.empty(n, dtype=torch.long, device=device)
        exit_index = torch.empty(n, dtype=torch.long, device=device)
        out_logits = None
        alive = torch.arange(n, device=device)
        state = policy.start(n, device)
        costs = self.costs
        macs, per_stage = 0, []
        h = x
        for k, (stage, head) in enumerate(zip(self.stages, self.heads)):
            h = stage(h)
            per_stage.append(len(alive))
            if costs is not None:
                macs += len(alive) * costs.stage_macs[k]
            if not policy.head_needed(k, self.num_exits):
                continue
            logits = head(h)
            if costs is not None:
                macs += len(alive) * costs.head_macs[k]
            if out_logits is None:
                out_logits = torch.empty(n, logits.shape[1], dtype=logits.dtype, device=device)
            leave = policy.decide(logits, k, state) if k < last else \
                torch.ones(len(logits), dtype=torch.bool, device=device)
            gone = alive[leave]
            predictions[gone] = logits[leave].argmax(1)
            exit_index[gone] = k
            out_logits[gone] = logits[leave]
            stay = ~leave
            alive, h = alive[stay], h[stay]
            state = {key: value[stay] for key, value in state.items()}
            if len(alive) == 0:
                break
        return EarlyExitResult(predictions, exit_index, out_logits, macs if costs is not None else -1, per_stage)

    @torch.inference_mode()
    def infer_single(self, x: torch.Tensor, policy: ExitPolicy) -> tuple[int, int, torch.Tensor]:
        """Batch-size-1 path ``(1, C, H, W) -> (prediction, exit index, logits (1, C))``.

        No bookkeeping: it returns at the first head whose rule fires.  The policy checks its
        thresholds once per network depth, so a latency loop pays nothing for that.
        """
        last = self.num_exits - 1
        policy.resolved(self.num_exits)
        state = policy.start(1, x.device)
        h = x
        for k, (stage, head) in enumerate(zip(self.stages, self.heads)):
            h = stage(h)
            if not policy.head_needed(k, self.num_exits):
                continue
            logits = head(h)
            if k == last or bool(policy.decide(logits, k, state)[0]):
                return int(logits.argmax(1)), k, logits
        raise AssertionError("unreachable: the final head always exits")


def exit_loss(weights: Sequence[float], label_smoothing: float = 0.0
              ) -> Callable[[list[torch.Tensor], torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Loss for joint training of all exits: ``sum_k w_k * CE(head_k)``, for ``train.fit(loss_fn=...)``.

    label_smoothing: as in ``F.cross_entropy``, for every head (the recipe's value: every exit trains as the
    network it hangs on did).
    Returns ``loss_fn(outputs, targets) -> (loss, final logits)``, so that fit reports the final head's accuracy.
    """
    weights = [float(w) for w in weights]

    def loss_fn(outputs: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(outputs) != len(weights):
            raise ValueError(f"{len(weights)} exit-loss weights for {len(outputs)} exits")
        loss = sum(w * F.cross_entropy(o, targets, label_smoothing=label_smoothing) for w, o in zip(weights, outputs))
        return loss, outputs[-1]

    return loss_fn
