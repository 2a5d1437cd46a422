"""The early-exit core that SpeedyCNet and edCNN share.

An ``ExitNetwork`` is a sequence of stages, each followed by an exit head:

    x -> stage_0 -> h_0 -> stage_1 -> h_1 -> ... -> stage_{E-1} -> h_{E-1}
                    |                |                          |
                  head_0           head_1        ...          head_{E-1}  (the final classifier)

``forward_all(x)`` computes every head (training, calibration, the reference path).
``infer(x, policy)`` is the real early exit: after each head the policy picks the samples that
leave, and only the others run the next stage (compaction).  ``infer_single`` is the
batch-size-1 path, which returns as soon as the policy says so.

Exit policies turn one head's logits into an "exit here" mask:
  ``MaxSoftmax(tau)``  exit when max softmax probability >= tau   (SDN-style confidence; tau in [0, 1])
  ``Entropy(tau)``     exit when entropy / log(C) <= tau          (BranchyNet-style; tau in [0, 1])
  ``Patience(t)``      exit when t consecutive heads agreed with the previous one (PABEE)
A threshold may be shared (a float) or given per early exit (a sequence of E-1 values; the final head
always exits); ``None`` disables an exit, and its head is then not even computed.

``sweep(scores, costs, policy)`` is the pure function behind calibration, the budget controller and
the widget panel: from cached per-exit logits it returns accuracy, mean MACs, the exit histogram and
per-exit accuracy for one policy, in about a millisecond for 10,000 samples.  A test checks that
``infer`` and ``sweep`` agree sample for sample: that is what makes the early exit real.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from .complexity import profile
from .errors import ThresholdError

Thresholds = float | Sequence[float | None] | None


# ----------------------------------------------------------------------------- policies
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
                f"value or {early} values, one per early exit (the final head always exits)."
            )
    for k, tau in enumerate(values):
        if tau is not None and not (isinstance(tau, (int, float)) and low <= tau <= high and not math.isnan(tau)):
            raise ThresholdError(
                f"{name} threshold for exit {k} is {tau!r}, outside its valid range [{low}, {high}]. "
                f"Use a value in [{low}, {high}], or None to disable that exit."
            )
    return [None if t is None else float(t) for t in values]


class ExitPolicy:
    """Decides, head by head, which samples leave the network.

    Subclasses implement ``decide`` (online, used by ``infer``) and ``exit_masks`` (all heads at once,
    used by ``sweep``); the equivalence test holds the two to the same answers.
    """

    name = "policy"

    def resolved(self, num_exits: int) -> list[float | None]:
        """The per-early-exit thresholds (None: exit disabled); raises ThresholdError when out of range."""
        raise NotImplementedError

    def start(self, batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
        """Per-sample state carried from head to head (compacted along with the samples)."""
        return {}

    def decide(self, logits: torch.Tensor, k: int, thresholds: list[float | None],
               state: dict[str, torch.Tensor]) -> torch.Tensor:
        """Exit mask ``(B,)`` bool for head ``k``'s logits ``(B, C)``; may update ``state`` in place."""
        raise NotImplementedError

    def exit_masks(self, scores: "ExitScores", thresholds: list[float | None]) -> torch.Tensor:
        """``(E, N)`` bool: would sample n exit at head k if it got there (final row all True)."""
        raise NotImplementedError

    def head_needed(self, k: int, thresholds: list[float | None]) -> bool:
        """Whether head ``k`` must be computed (disabled heads are skipped)."""
        return k >= len(thresholds) or thresholds[k] is not None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.thresholds!r})"


class MaxSoftmax(ExitPolicy):
    """Exit when the largest softmax probability is at least tau (tau in [0, 1])."""

    name = "max_softmax"

    def __init__(self, thresholds: Thresholds):
        self.thresholds = thresholds
        if not isinstance(thresholds, Sequence) or isinstance(thresholds, str):
            _resolve(thresholds, 2, self.name, 0.0, 1.0)  # check a shared value now

    def resolved(self, num_exits: int) -> list[float | None]:
        return _resolve(self.thresholds, num_exits, self.name, 0.0, 1.0)

    def decide(self, logits, k, thresholds, state):
        if k >= len(thresholds):
            return torch.ones(len(logits), dtype=torch.bool, device=logits.device)
        return confidence(logits) >= thresholds[k]

    def exit_masks(self, scores, thresholds):
        return _threshold_masks(scores.confidence, thresholds, lambda s, t: s >= t)


class Entropy(ExitPolicy):
    """Exit when the softmax entropy, in units of log(C), is at most tau (tau in [0, 1])."""

    name = "entropy"

    def __init__(self, thresholds: Thresholds):
        self.thresholds = thresholds
        if not isinstance(thresholds, Sequence) or isinstance(thresholds, str):
            _resolve(thresholds, 2, self.name, 0.0, 1.0)

    def resolved(self, num_exits: int) -> list[float | None]:
        return _resolve(self.thresholds, num_exits, self.name, 0.0, 1.0)

    def decide(self, logits, k, thresholds, state):
        if k >= len(thresholds):
            return torch.ones(len(logits), dtype=torch.bool, device=logits.device)
        return normalized_entropy(logits) <= thresholds[k]

    def exit_masks(self, scores, thresholds):
        return _threshold_masks(scores.entropy, thresholds, lambda s, t: s <= t)


class Patience(ExitPolicy):
    """Exit once ``patience`` consecutive heads predicted the same class as the head before them.

    Zhou et al. 2020 (PABEE).  ``patience`` is an integer >= 1; every head is computed until then.
    """

    name = "patience"

    def __init__(self, patience: int):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ThresholdError(f"patience must be an integer >= 1, got {patience!r}.")
        self.thresholds = patience

    def resolved(self, num_exits: int) -> list[float | None]:
        if self.thresholds > num_exits - 1:
            raise ThresholdError(
                f"patience {self.thresholds} can never be reached with {num_exits} exits; "
                f"use a value in [1, {num_exits - 1}]."
            )
        return [float(self.thresholds)] * (num_exits - 1)

    def start(self, batch_size, device):
        return {"previous": torch.full((batch_size,), -1, dtype=torch.long, device=device),
                "streak": torch.zeros(batch_size, dtype=torch.long, device=device)}

    def decide(self, logits, k, thresholds, state):
        pred = logits.argmax(1)
        state["streak"] = torch.where(pred == state["previous"], state["streak"] + 1, torch.zeros_like(pred))
        state["previous"] = pred
        if k >= len(thresholds):
            return torch.ones(len(logits), dtype=torch.bool, device=logits.device)
        return state["streak"] >= self.thresholds

    def exit_masks(self, scores, thresholds):
        preds = scores.predictions
        streak = torch.zeros_like(preds[0])
        rows = [torch.zeros_like(preds[0], dtype=torch.bool)]
        for k in range(1, len(preds)):
            streak = torch.where(preds[k] == preds[k - 1], streak + 1, torch.zeros_like(streak))
            rows.append(streak >= self.thresholds)
        rows[-1] = torch.ones_like(rows[-1])
        return torch.stack(rows)


def _threshold_masks(score: torch.Tensor, thresholds: list[float | None], rule) -> torch.Tensor:
    rows = [rule(score[k], t) if t is not None else torch.zeros_like(score[k], dtype=torch.bool)
            for k, t in enumerate(thresholds)]
    rows.append(torch.ones_like(score[-1], dtype=torch.bool))
    return torch.stack(rows)


POLICIES = {"max_softmax": MaxSoftmax, "entropy": Entropy, "patience": Patience}


def make_policy(name: str, thresholds) -> ExitPolicy:
    """Build a policy by name: ``"max_softmax"``, ``"entropy"`` or ``"patience"``."""
    if name not in POLICIES:
        raise ThresholdError(f"unknown exit policy {name!r}. Use one of: {', '.join(POLICIES)}.")
    return POLICIES[name](thresholds)


def confidence(logits: torch.Tensor) -> torch.Tensor:
    """Max softmax probability per row: ``(B, C) -> (B,)``, computed in float32."""
    return F.softmax(logits.float(), dim=1).amax(1)


def normalized_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Softmax entropy divided by log(C), in [0, 1]: ``(B, C) -> (B,)``."""
    logp = F.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp).sum(1) / math.log(logits.shape[1])


# ----------------------------------------------------------------------------- costs
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


# ----------------------------------------------------------------------------- the network
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
        thresholds = policy.resolved(self.num_exits)
        n = len(x)
        device = x.device
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
            if not policy.head_needed(k, thresholds):
                continue
            logits = head(h)
            if costs is not None:
                macs += len(alive) * costs.head_macs[k]
            if out_logits is None:
                out_logits = torch.empty(n, logits.shape[1], dtype=logits.dtype, device=device)
            leave = policy.decide(logits, k, thresholds, state)
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
    def infer_single(self, x: torch.Tensor, policy: ExitPolicy,
                     thresholds: list[float | None] | None = None) -> tuple[int, int, torch.Tensor]:
        """Batch-size-1 path ``(1, C, H, W) -> (prediction, exit index, logits (1, C))``.

        No bookkeeping: it returns at the first head whose rule fires.  Pass ``thresholds``
        (``policy.resolved(num_exits)``) to skip re-checking them on every call in a latency loop.
        """
        thresholds = thresholds if thresholds is not None else policy.resolved(self.num_exits)
        state = policy.start(1, x.device)
        h = x
        last = self.num_exits - 1
        for k, (stage, head) in enumerate(zip(self.stages, self.heads)):
            h = stage(h)
            if not policy.head_needed(k, thresholds):
                continue
            logits = head(h)
            if k == last or bool(policy.decide(logits, k, thresholds, state)[0]):
                return int(logits.argmax(1)), k, logits
        raise AssertionError("unreachable: the final head always exits")


# ----------------------------------------------------------------------------- cached logits and the sweep
@dataclass
class ExitScores:
    """Per-exit predictions, confidences and entropies of N samples, computed once from logits."""

    predictions: torch.Tensor  # (E, N) long
    confidence: torch.Tensor  # (E, N) max softmax
    entropy: torch.Tensor  # (E, N) entropy / log C
    labels: torch.Tensor  # (N,)

    @classmethod
    def from_logits(cls, per_exit_logits: Sequence[torch.Tensor] | torch.Tensor, labels: torch.Tensor) -> "ExitScores":
        """``per_exit_logits``: E tensors ``(N, C)`` (or one ``(E, N, C)``); labels ``(N,)``."""
        logits = torch.stack(list(per_exit_logits)) if not isinstance(per_exit_logits, torch.Tensor) else per_exit_logits
        logits = logits.detach().float().cpu()
        return cls(logits.argmax(2), torch.stack([confidence(l) for l in logits]),
                   torch.stack([normalized_entropy(l) for l in logits]), labels.detach().cpu())

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
    """Run ``forward_all`` over every batch once and keep the scores for later sweeps."""
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
    """The outcome of one policy on cached scores."""

    accuracy: float
    mean_macs: float  # per sample
    exit_counts: list[int]  # how many samples left at each head
    exit_accuracy: list[float | None]  # accuracy of the samples that left at each head
    exit_index: torch.Tensor  # (N,) where each sample left
    predictions: torch.Tensor  # (N,)
    mean_latency_ms: float | None = None  # per sample, from measured per-exit latencies, if given
    thresholds: list[float | None] | None = None

    @property
    def exit_fraction(self) -> list[float]:
        n = sum(self.exit_counts)
        return [c / n for c in self.exit_counts]


def sweep(scores: ExitScores, costs: ExitCosts | Sequence[float], policy: ExitPolicy,
          exit_latency_ms: Sequence[float] | None = None) -> SweepResult:
    """Apply ``policy`` to cached scores: what early exit would give, without running the network.

    costs: an ``ExitCosts`` (disabled heads are then not charged) or the cumulative cost of
        leaving at each exit (E values).
    exit_latency_ms: optional measured time per sample to leave at each exit (E values).
    """
    thresholds = policy.resolved(scores.num_exits)
    masks = policy.exit_masks(scores, thresholds)  # E x N
    exit_index = masks.int().argmax(0)  # the first head whose rule fires (final row is all True)
    predictions = scores.predictions.gather(0, exit_index[None]).squeeze(0)
    correct = predictions == scores.labels
    if isinstance(costs, ExitCosts):
        cumulative = costs.cumulative([policy.head_needed(k, thresholds) for k in range(scores.num_exits)])
    else:
        cumulative = list(costs)
    counts = torch.bincount(exit_index, minlength=scores.num_exits)
    correct_per_exit = torch.bincount(exit_index, weights=correct.double(), minlength=scores.num_exits)
    n = len(scores)
    mean_macs = float((counts.double() * torch.tensor(cumulative, dtype=torch.float64)).sum() / n)
    latency = None
    if exit_latency_ms is not None:
        latency = float((counts.double() * torch.tensor(list(exit_latency_ms), dtype=torch.float64)).sum() / n)
    return SweepResult(
        accuracy=float(correct.double().mean()), mean_macs=mean_macs, exit_counts=counts.tolist(),
        exit_accuracy=[(c / k) if k else None for c, k in zip(correct_per_exit.tolist(), counts.tolist())],
        exit_index=exit_index, predictions=predictions, mean_latency_ms=latency, thresholds=thresholds)


# ----------------------------------------------------------------------------- calibration
DEFAULT_GRID = tuple(round(x, 4) for x in torch.linspace(0.0, 1.0, 101).tolist())


def frontier(scores: ExitScores, costs: ExitCosts | Sequence[float], policy_name: str = "max_softmax",
             grid: Sequence[float] | None = None):
    """Accuracy and mean MACs for a shared threshold over ``grid``: a pandas DataFrame.

    Columns: threshold, accuracy, mean_macs, pareto (True where no other point is both cheaper and
    at least as accurate).  For ``"patience"`` the grid is 1 .. E-1.
    """
    import pandas as pd

    if policy_name == "patience":
        grid = list(range(1, scores.num_exits))
    grid = list(grid if grid is not None else DEFAULT_GRID)
    rows = []
    for tau in grid:
        r = sweep(scores, costs, make_policy(policy_name, tau))
        rows.append({"threshold": tau, "accuracy": r.accuracy, "mean_macs": r.mean_macs,
                     "exit_fraction": r.exit_fraction})
    df = pd.DataFrame(rows)
    order = df.sort_values(["mean_macs", "accuracy"], ascending=[True, False])
    best, pareto = -1.0, set()
    for i, acc in zip(order.index, order["accuracy"]):
        if acc > best:
            pareto.add(i)
            best = acc
    df["pareto"] = [i in pareto for i in df.index]
    return df


@dataclass
class Calibration:
    """Thresholds chosen on the validation split, and what they gave there."""

    policy: ExitPolicy
    val: SweepResult
    full_accuracy: float  # the final head alone, on the same split
    epsilon: float


def calibrate(scores: ExitScores, costs: ExitCosts | Sequence[float], policy_name: str = "max_softmax", *,
              epsilon: float = 0.0, per_exit: bool = False, grid: Sequence[float] | None = None,
              passes: int = 3) -> Calibration:
    """Cheapest thresholds whose accuracy on ``scores`` is within ``epsilon`` of the final head's.

    Call it with validation-split scores, never test.  A shared threshold is searched over ``grid``;
    with ``per_exit`` a coordinate search then tunes each exit's threshold in turn (``passes`` rounds),
    keeping any change that lowers mean MACs while the accuracy bound holds.
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ThresholdError(f"epsilon is an accuracy gap in [0, 1], got {epsilon!r}.")
    full_accuracy = scores.exit_accuracy()[-1]
    bound = full_accuracy - epsilon - 1e-12
    table = frontier(scores, costs, policy_name, grid)
    ok = table[table["accuracy"] >= bound]
    # The full network itself (no early exit) always meets the bound, so `ok` is only empty when the grid
    # cannot express "never exit" (max_softmax at 1.0 can still fire on saturated softmax).
    if ok.empty:
        choice: Thresholds = None if policy_name != "patience" else scores.num_exits - 1
    else:
        choice = ok.sort_values(["mean_macs", "accuracy"], ascending=[True, False]).iloc[0]["threshold"]
        choice = int(choice) if policy_name == "patience" else float(choice)
    policy = make_policy(policy_name, choice)
    best = sweep(scores, costs, policy)
    if per_exit and policy_name != "patience":
        grid_values = list(grid if grid is not None else DEFAULT_GRID) + [None]
        current = list(policy.resolved(scores.num_exits))
        for _ in range(passes):
            improved = False
            for k in range(len(current)):
                for tau in grid_values:
                    trial = current.copy()
                    trial[k] = tau
                    r = sweep(scores, costs, make_policy(policy_name, trial))
                    if r.accuracy >= bound and r.mean_macs < best.mean_macs - 1e-9:
                        current, best, improved = trial, r, True
            if not improved:
                break
        policy = make_policy(policy_name, current)
        best = sweep(scores, costs, policy)
    return Calibration(policy, best, full_accuracy, epsilon)


def exit_loss(weights: Sequence[float]):
    """Loss for joint training of all exits: ``sum_k w_k * CE(head_k)``, for ``train.fit(loss_fn=...)``.

    Returns ``loss_fn(outputs, targets) -> (loss, final logits)``, so that fit reports the final head's accuracy.
    """
    weights = [float(w) for w in weights]

    def loss_fn(outputs: list[torch.Tensor], targets: torch.Tensor):
        if len(outputs) != len(weights):
            raise ValueError(f"{len(weights)} exit-loss weights for {len(outputs)} exits")
        loss = sum(w * F.cross_entropy(o, targets) for w, o in zip(weights, outputs))
        return loss, outputs[-1]

    return loss_fn
