"""edCNN: elastic depth.  Exits attached to a backbone, branch training, run-time budgets.

    backbone = models.create("mobilenet_v1", 10, small_input=True)
    net = attach_exits(backbone, ["features.3", "features.5", "features.7"])   # an exits.ExitNetwork
    net.exit_table()                       # each exit's MACs and the cumulative MACs to reach it
    train_branches(net, train, val, cfg)   # (a) backbone trained already and frozen: only the branches learn
    train_joint(net, train, val, cfg, weights="sdn")   # (b) a new model, weighted exit losses
    cal = exits.calibrate(val_scores, net.costs, "max_softmax", epsilon=0.0)
    net.infer(x, cal.policy)               # the core's real early exit, with compaction

A tapping point is the name of a module in the backbone's trunk (``features.5`` for the MobileNets,
``layer2.1`` for a ResNet) after which a branch head is attached, or the boundary between two stages of
an explicit split (``Trunk.from_stages``).  The backbone's own classifier stays the final exit; its
weights are shared, not copied, so ``net.backbone`` is still the original network, and timing it is
timing the full model.

The run-time part: ``BudgetController`` picks thresholds from the calibrated (validation) frontier to
meet a budget in MACs per image or milliseconds per batch, one batch at a time; ``anytime`` returns the
deepest prediction reached when a deadline passes.  A budget that cannot be met raises
``ThresholdError`` or, when asked, falls back to the cheapest setting and says so (``BudgetWarning``).

The exit policies, ``infer``, ``infer_single``, ``sweep``, ``frontier`` and ``calibrate`` live in
``exits``; this module only builds networks for them and measures them.
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import exits
from .device import synchronize
from .errors import CourseError, ThresholdError, UnknownNameError
from .models.mobilenetv1 import ConvBNAct

# Exits per backbone for 32x32 inputs: after blocks that end a resolution, or halfway through the long
# 4x4 stage, so that they sit at about 20, 35, 50, 70 and 85 % of the backbone's MACs.
DEFAULT_TAPS = {
    "mobilenet_v1": ["features.3", "features.5", "features.7", "features.9", "features.11"],
    "mobilenet_v2": ["features.3", "features.6", "features.10", "features.13", "features.16"],
}
HEADS = ("pool_linear", "conv_pool_linear")
WEIGHT_SCHEDULES = ("uniform", "sdn")
MODES = ("frozen", "joint")


class BudgetWarning(UserWarning):
    """A budget or deadline was not met, or a stated fallback was used instead."""


@contextlib.contextmanager
def single_thread():
    """Run torch on one CPU thread inside the block (restored after).

    For sweeps over cached scores: on tensors of ~10^4 elements a thread pool only adds wake-up latency,
    and on a busy machine a strided reduction such as ``argmax(0)`` becomes several times slower with it.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- the trunk
@dataclass
class Trunk:
    """A backbone as a chain: ``tail(modules[-1](... modules[0](x)))`` equals ``backbone(x)``.

    names: the tapping-point names, one per module, in execution order.
    tail: trunk output -> logits (pooling and the backbone's own classifier): the final exit.
    """

    names: list[str]
    modules: list[nn.Module]
    tail: nn.Module

    @classmethod
    def from_stages(cls, stages: Sequence[nn.Module], tail: nn.Module,
                    names: Sequence[str] | None = None) -> "Trunk":
        """An explicit split of any backbone: ``stages`` run in order, then ``tail`` gives the logits.

        Tapping points are then the stage names (``"stage0"``, ``"stage1"``, ... unless ``names`` is given).
        """
        names = list(names) if names is not None else [f"stage{k}" for k in range(len(stages))]
        if len(names) != len(stages):
            raise CourseError(f"{len(names)} names for {len(stages)} stages: give one name per stage.")
        return cls(names, list(stages), tail)


class GlobalPoolClassifier(nn.Sequential):
    """Global average pool -> flatten -> the backbone's classifier: ``(B, C, H, W) -> (B, classes)``."""

    def __init__(self, classifier: nn.Module, pool: nn.Module | None = None):
        super().__init__(pool if pool is not None else nn.AdaptiveAvgPool2d(1), nn.Flatten(), classifier)


def split_backbone(backbone: nn.Module) -> Trunk:
    """The trunk of a known layout: ``features`` + ``classifier`` (MobileNets, VGG) or ResNet's layers.

    Anything else: build a ``Trunk.from_stages(...)`` yourself and pass it as ``attach_exits(trunk=...)``.
    """
    if isinstance(getattr(backbone, "features", None), nn.Sequential) and hasattr(backbone, "classifier"):
        names = [f"features.{i}" for i in range(len(backbone.features))]
        tail = GlobalPoolClassifier(backbone.classifier, getattr(backbone, "avgpool", None))
        return Trunk(names, list(backbone.features), tail)
    if hasattr(backbone, "layer1") and hasattr(backbone, "fc"):
        names, modules = [], []
        for stem in ("conv1", "bn1", "relu", "maxpool"):
            if isinstance(getattr(backbone, stem, None), nn.Module):
                names.append(stem)
                modules.append(getattr(backbone, stem))
        k = 1
        while isinstance(getattr(backbone, f"layer{k}", None), nn.Sequential):
            for i, block in enumerate(getattr(backbone, f"layer{k}")):
                names.append(f"layer{k}.{i}")
                modules.append(block)
            k += 1
        return Trunk(names, modules, GlobalPoolClassifier(backbone.fc, getattr(backbone, "avgpool", None)))
    raise CourseError(
        f"cannot split a {type(backbone).__name__} into a chain of tapping points automatically (it has neither "
        "`features` + `classifier` nor ResNet's `layer1..` + `fc`). Pass an explicit split: "
        "attach_exits(backbone, taps, trunk=Trunk.from_stages([stage0, stage1, ...], tail)).")


@torch.no_grad()
def _check_trunk(backbone: nn.Module, trunk: Trunk, input_shape: Sequence[int]) -> torch.Tensor:
    """Raise unless the trunk reproduces ``backbone`` on a random input; return the logits (for the class count)."""
    was_training = backbone.training
    backbone.eval()
    p = next(backbone.parameters())
    x = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0)).to(p.device, p.dtype)
    try:
        expected = backbone(x)
        h = x
        for m in trunk.modules:
            h = m(h)
        got = trunk.tail(h)
    finally:
        backbone.train(was_training)
    if not isinstance(expected, torch.Tensor) or expected.shape != got.shape or \
            not torch.allclose(expected, got, rtol=1e-4, atol=1e-5):
        raise CourseError(
            f"the trunk found for {type(backbone).__name__} does not reproduce its forward pass (its forward does "
            "more than run these modules in order). Pass an explicit split: "
            "attach_exits(backbone, taps, trunk=Trunk.from_stages([...], tail)).")
    return got


# ----------------------------------------------------------------------------- branch heads
def make_head(kind: str, in_channels: int, num_classes: int, *, pool_size: int = 1,
              width: int | None = None) -> nn.Module:
    """A branch head: ``(B, in_channels, H, W) -> (B, num_classes)``.

    ``"pool_linear"``: adaptive average pool to ``pool_size`` x ``pool_size``, flatten, linear.
    ``"conv_pool_linear"``: a light conv first, a depthwise 3x3 with stride 2 (cheap, and it widens the
    receptive field) and a pointwise 1x1 to ``width`` channels (default ``in_channels``), then pool and linear.
    """
    if kind not in HEADS:
        raise UnknownNameError(f"unknown head {kind!r}. Use one of: {', '.join(HEADS)}.")
    if pool_size < 1:
        raise CourseError(f"pool_size must be >= 1, got {pool_size}.")
    layers: list[nn.Module] = []
    channels = in_channels
    if kind == "conv_pool_linear":
        width = width or in_channels
        layers += [ConvBNAct(in_channels, in_channels, 3, stride=2, groups=in_channels),
                   ConvBNAct(in_channels, width, 1)]
        channels = width
    layers += [nn.AdaptiveAvgPool2d(pool_size), nn.Flatten(), nn.Linear(channels * pool_size ** 2, num_classes)]
    head = nn.Sequential(*layers)
    for m in head.modules():  # like the backbones' init: He for convs, small normal for the linear layer
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    return head


# ----------------------------------------------------------------------------- the elastic network
class ElasticNet(exits.ExitNetwork):
    """An ``ExitNetwork`` whose stages are slices of a backbone's trunk; the last head is its own classifier.

    taps: one name per exit (the last is ``"final"``).
    backbone: the original network (shares every weight with the stages and the final head; not a submodule,
        so its weights appear once in ``state_dict``).
    """

    def __init__(self, stages: Sequence[nn.Module], heads: Sequence[nn.Module], *, taps: Sequence[str],
                 input_shape: Sequence[int], backbone: nn.Module | None = None):
        super().__init__(stages, heads)
        self.taps = list(taps)
        self.input_shape = tuple(input_shape)
        object.__setattr__(self, "backbone", backbone)  # a plain attribute: no duplicate parameters
        self.backbone_frozen = False

    def train(self, mode: bool = True) -> "ElasticNet":
        """Like ``nn.Module.train``, but a frozen backbone stays in eval mode (BatchNorm statistics unchanged)."""
        super().train(mode)
        if self.backbone_frozen:
            for m in (*self.stages, self.heads[-1]):
                m.train(False)
        return self

    def freeze_backbone(self, frozen: bool = True) -> "ElasticNet":
        """Freeze (or unfreeze) the stages and the final classifier: weights and BatchNorm statistics."""
        for m in (*self.stages, self.heads[-1]):
            for p in m.parameters():
                p.requires_grad_(not frozen)
        self.backbone_frozen = frozen
        return self.train(self.training)

    def backbone_state(self) -> dict[str, torch.Tensor]:
        """Copies of every backbone tensor (stages and final head, parameters and buffers)."""
        keep = ("stages.", f"heads.{self.num_exits - 1}.")
        return {k: v.detach().clone() for k, v in self.state_dict().items() if k.startswith(keep)}

    def full_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The original network without any branch: ``(B, C, H, W) -> (B, classes)``."""
        if self.backbone is not None:
            return self.backbone(x)
        for stage in self.stages:
            x = stage(x)
        return self.heads[-1](x)

    def exit_table(self):
        """Per exit: tap, MACs of its stage and head, cumulative MACs to reach and to leave there, as a DataFrame.

        ``macs_to_exit`` counts every earlier head (they must run to decide); ``fraction_of_full`` divides it by
        the MACs of the original network (all stages plus the final classifier, no branch).
        """
        import pandas as pd

        costs = self.costs or self.measure_costs(self.input_shape)
        reach = torch.tensor(costs.stage_macs).cumsum(0).tolist()
        leave = costs.cumulative()
        rows = [{"exit": k + 1, "tap": self.taps[k], "stage_macs": costs.stage_macs[k], "head_macs": costs.head_macs[k],
                 "macs_to_reach": reach[k] + sum(costs.head_macs[:k]), "macs_to_exit": leave[k],
                 "fraction_of_full": leave[k] / costs.full} for k in range(self.num_exits)]
        return pd.DataFrame(rows)

    def depth_fractions(self) -> list[float]:
        """Where each exit sits, as a fraction of the backbone's stage MACs (SDN's exit positions)."""
        costs = self.costs or self.measure_costs(self.input_shape)
        total = sum(costs.stage_macs)
        return [m / total for m in torch.tensor(costs.stage_macs, dtype=torch.float64).cumsum(0).tolist()]


def tapping_points(backbone: nn.Module) -> list[str]:
    """The names ``attach_exits`` accepts for ``backbone`` (the last one is where its classifier already sits)."""
    return split_backbone(backbone).names


def _resolve_taps(taps: Sequence[str] | int, trunk: Trunk, stage_macs: list[int]) -> list[int]:
    """Tap names (or a count) -> sorted trunk indices; every mistake names the valid choices."""
    names = trunk.names
    valid = names[:-1]
    if isinstance(taps, int) and not isinstance(taps, bool):
        if not 1 <= taps <= len(valid):
            raise CourseError(f"asked for {taps} exits, but this trunk has {len(valid)} tapping points; "
                              f"use 1 .. {len(valid)}.")
        # SDN's placement: exits at evenly spaced fractions of the trunk's MACs (0.15, 0.30, ... for six)
        cumulative = torch.tensor(stage_macs[:-1], dtype=torch.float64).cumsum(0) / sum(stage_macs)
        chosen: list[int] = []
        for i in range(taps):
            target = 0.9 * (i + 1) / taps
            order = (cumulative - target).abs().argsort().tolist()
            chosen.append(next(j for j in order if j not in chosen))
        return sorted(chosen)
    if isinstance(taps, str) or not len(taps):
        raise CourseError(f"taps must be a list of tapping-point names (or a number of exits), got {taps!r}; "
                          f"e.g. {valid[len(valid) // 3:len(valid) // 3 + 2]}.")
    index = {n: i for i, n in enumerate(names)}
    chosen = []
    for tap in taps:
        if tap not in index:
            inside = [n for n in names if isinstance(tap, str) and tap.startswith(n + ".")]
            where = f"it is inside {inside[0]}, and exits can only tap between trunk modules. " if inside else ""
            raise UnknownNameError(f"unknown tapping point {tap!r}: {where}Tapping points are: {', '.join(valid)}.")
        if index[tap] == len(names) - 1:
            raise CourseError(f"{tap!r} is the end of the trunk, where the backbone's own classifier is already the "
                              f"final exit; tap an earlier point: {', '.join(valid[-3:])} ...")
        chosen.append(index[tap])
    if len(set(chosen)) != len(chosen):
        raise CourseError(f"tapping point listed twice in {list(taps)}: give each point once.")
    if chosen != sorted(chosen):
        raise CourseError(f"tapping points {list(taps)} are out of order: list them from the input to the output, "
                          f"i.e. {[names[i] for i in sorted(chosen)]}.")
    return chosen


def attach_exits(backbone: nn.Module, taps: Sequence[str] | int | None = None, *, num_classes: int | None = None,
                 head: str = "pool_linear", pool_size: int = 1, head_width: int | None = None,
                 input_shape: Sequence[int] = (3, 32, 32), trunk: Trunk | None = None,
                 backbone_name: str | None = None) -> ElasticNet:
    """Attach branch heads to ``backbone`` at ``taps``; return an ``ElasticNet`` with MACs already counted.

    taps: module names in the trunk (see ``tapping_points``), a number of exits (placed SDN-style at evenly
        spaced fractions of the MACs), or None for ``DEFAULT_TAPS[backbone_name]``.
    head, pool_size, head_width: the branch heads (see ``make_head``); the final exit is the backbone's classifier.
    input_shape: one sample ``(C, H, W)``, for the MAC count and a check that the trunk reproduces the backbone.
    trunk: an explicit split (``Trunk.from_stages``) for a backbone whose layout is not known.
    Raises ``UnknownNameError`` for a tap that is not a tapping point, ``CourseError`` for other bad taps.
    """
    trunk = trunk or split_backbone(backbone)
    logits = _check_trunk(backbone, trunk, input_shape)
    num_classes = num_classes or logits.shape[1]
    if taps is None:
        if backbone_name not in DEFAULT_TAPS:
            raise CourseError(f"no default taps for {backbone_name!r}: pass taps=[...] (tapping points: "
                              f"{', '.join(trunk.names[:-1])}), or a number of exits.")
        taps = DEFAULT_TAPS[backbone_name]
    # per-module MACs and output channels, on one sample
    p = next(backbone.parameters())
    x = torch.zeros(1, *input_shape, device=p.device, dtype=p.dtype)
    was_training = backbone.training
    backbone.eval()
    module_macs, channels = [], []
    for m in trunk.modules:
        macs, x = exits.count_macs(m, x)
        module_macs.append(macs)
        channels.append(x.shape[1])
    backbone.train(was_training)
    chosen = _resolve_taps(taps, trunk, module_macs)
    bounds = [*chosen, len(trunk.modules) - 1]
    stages, heads, start = [], [], 0
    for end in bounds:
        stages.append(nn.Sequential(*trunk.modules[start:end + 1]))
        start = end + 1
    for end in chosen:
        heads.append(make_head(head, channels[end], num_classes, pool_size=pool_size, width=head_width))
    heads.append(trunk.tail)
    net = ElasticNet(stages, heads, taps=[trunk.names[i] for i in chosen] + ["final"], input_shape=input_shape,
                     backbone=backbone).to(p.device)
    net.train(was_training)
    net.measure_costs(input_shape)
    return net


# ----------------------------------------------------------------------------- training
def exit_weights(schedule: str | Sequence[float], fractions: Sequence[float], epoch: int = 0,
                 epochs: int = 1) -> list[float]:
    """Loss weight of every exit (the last is the final classifier) at ``epoch`` (0-based) of ``epochs``.

    ``"uniform"``: 1 for every exit.  ``"sdn"``: SDN's rising schedule (Kaya et al. 2019): early exit k's weight
    grows linearly from 0.01 to its depth fraction ``fractions[k]`` over training; the final exit keeps 1.
    A sequence: those weights, constant.
    """
    n = len(fractions)
    if isinstance(schedule, str):
        if schedule == "uniform":
            return [1.0] * n
        if schedule == "sdn":
            progress = epoch / max(epochs - 1, 1)
            return [0.01 + (f - 0.01) * progress for f in fractions[:-1]] + [1.0]
        raise UnknownNameError(f"unknown exit-weight schedule {schedule!r}. Use one of: "
                               f"{', '.join(WEIGHT_SCHEDULES)}, or a list of {n} weights.")
    weights = [float(w) for w in schedule]
    if len(weights) != n or any(not (w >= 0 and math.isfinite(w)) for w in weights) or not any(weights):
        raise CourseError(f"exit weights {list(schedule)} are not {n} finite non-negative numbers with one > 0; "
                          f"give one weight per exit, the final classifier last.")
    return weights


class ExitLoss:
    """``loss_fn`` for ``train.fit``: weighted cross-entropy over the exits, weights updated every epoch.

    Wraps ``exits.exit_loss``.  Returns ``(loss, logits)``, where the logits that ``fit`` scores for accuracy
    (and for restoring the best epoch) are the final head's, or, with ``monitor="early"`` (branch training,
    where the final head is frozen), the mean log-probabilities of the early heads.
    """

    def __init__(self, schedule: str | Sequence[float], fractions: Sequence[float], epochs: int, *,
                 train_final: bool = True, monitor: str = "final"):
        self.schedule, self.fractions, self.epochs = schedule, list(fractions), epochs
        self.train_final, self.monitor = train_final, monitor
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Use the weights of ``epoch`` (0-based)."""
        self.epoch = epoch
        weights = exit_weights(self.schedule, self.fractions, epoch, self.epochs)
        if not self.train_final:
            weights[-1] = 0.0  # the frozen classifier cannot learn; it only costs a forward pass
        self.weights = weights
        self._loss = exits.exit_loss(weights)

    def __call__(self, outputs: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, final = self._loss(outputs, targets)
        if self.monitor == "early":
            return loss, torch.stack([F.log_softmax(o.float(), 1) for o in outputs[:-1]]).mean(0)
        return loss, final


def _fit_with_schedule(net: ElasticNet, train_loader, val_loader, config, loss: ExitLoss, on_epoch_end):
    from . import train as training

    if config.checkpoint and Path(config.checkpoint).exists():  # resume: continue the weight schedule too
        loss.set_epoch(int(training.load_checkpoint(config.checkpoint)["epoch"]))

    def next_epoch(epoch: int, record: dict) -> None:
        record["exit_weights"] = list(loss.weights)
        loss.set_epoch(epoch)  # `epoch` epochs are done: the next one is epoch `epoch`, 0-based
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)

    return training.fit(net, train_loader, val_loader, config, loss_fn=loss, on_epoch_end=next_epoch)


def train_branches(net: ElasticNet, train_loader, val_loader=None, config=None, *,
                   weights: str | Sequence[float] = "uniform", on_epoch_end=None):
    """Mode (a): the backbone is trained already; freeze it and train only the branch heads.

    Goes through ``train.fit`` (checkpoints, resume).  The stages and the final classifier keep their weights
    and BatchNorm statistics exactly (they stay in eval mode); the final exit's loss weight is 0.
    fit's reported (and best-epoch) accuracy is that of the early heads' mean log-probabilities.
    Returns fit's ``History``.  The backbone stays frozen afterwards (``net.freeze_backbone(False)`` undoes it).
    """
    from . import train as training

    config = config or training.TrainConfig()
    net.freeze_backbone(True)
    loss = ExitLoss(weights, net.depth_fractions(), config.epochs, train_final=False, monitor="early")
    return _fit_with_schedule(net, train_loader, val_loader, config, loss, on_epoch_end)


def train_joint(net: ElasticNet, train_loader, val_loader=None, config=None, *,
                weights: str | Sequence[float] = "uniform", on_epoch_end=None):
    """Mode (b): train the whole network and its branches together on ``sum_k w_k CE(exit k)``.

    weights: ``"uniform"``, ``"sdn"`` (SDN's rising schedule) or one weight per exit; see ``exit_weights``.
    fit's reported accuracy is the final exit's.  Returns fit's ``History``.
    """
    from . import train as training

    config = config or training.TrainConfig()
    net.freeze_backbone(False)
    loss = ExitLoss(weights, net.depth_fractions(), config.epochs)
    return _fit_with_schedule(net, train_loader, val_loader, config, loss, on_epoch_end)


# ----------------------------------------------------------------------------- timing
def _elapsed_ms(fn: Callable[[], Any], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return (time.perf_counter() - start) * 1e3


@dataclass
class Contender:
    """One thing to time: ``net`` with early-exit ``policy``, or the original network when ``policy`` is None."""

    name: str
    net: ElasticNet
    policy: exits.ExitPolicy | None = None


def benchmark(contenders: Sequence[Contender], x: torch.Tensor, *, batch_size: int, repeats: int = 5,
              warmup: int = 1):
    """Wall-clock milliseconds per image of every contender over the same images, timed in turn.

    x: normalised images ``(N, C, H, W)`` on the device.  Batch size 1 uses ``infer_single``, larger batches
    ``infer`` (compaction); the original network is ``net.full_forward``.  Every repeat times each contender
    once over all N images, in alternating order (drift from other load hits all alike); ``warmup`` untimed
    rounds come first.  Returns a DataFrame with one row per contender: name, batch_size, images,
    ms_per_image (median over repeats), ms_p10, ms_p90, macs_per_image (spent, exactly), repeats.
    """
    import numpy as np
    import pandas as pd

    device = x.device
    batches = [x[i:i + batch_size] for i in range(0, len(x), batch_size)]
    runners, macs = {}, {}
    for c in contenders:
        c.net.eval()
        costs = c.net.costs or c.net.measure_costs(c.net.input_shape)
        if c.policy is None:
            runners[c.name] = lambda net=c.net: [net.full_forward(b) for b in batches]
            macs[c.name] = float(costs.full)
        else:
            if batch_size == 1:
                thr = c.policy.resolved(c.net.num_exits)
                runners[c.name] = lambda net=c.net, p=c.policy, t=thr: [net.infer_single(b, p, t) for b in batches]
            else:
                runners[c.name] = lambda net=c.net, p=c.policy: [net.infer(b, p) for b in batches]
            # MACs are input-dependent but not time-dependent: count them once (infer equals infer_single)
            with torch.inference_mode():
                macs[c.name] = sum(c.net.infer(b, c.policy).macs for b in x.split(256)) / len(x)
    times: dict[str, list[float]] = {name: [] for name in runners}
    with torch.inference_mode():
        for r in range(warmup + repeats):
            order = list(runners) if r % 2 == 0 else list(reversed(runners))
            for name in order:
                ms = _elapsed_ms(runners[name], device)
                if r >= warmup:
                    times[name].append(ms / len(x))
    rows = []
    for name, t in times.items():
        p10, med, p90 = np.percentile(t, [10, 50, 90])
        rows.append({"name": name, "batch_size": batch_size, "images": len(x), "ms_per_image": float(med),
                     "ms_p10": float(p10), "ms_p90": float(p90), "macs_per_image": macs[name], "repeats": repeats})
    return pd.DataFrame(rows)


def measure_batches(net: exits.ExitNetwork, batches, policy: exits.ExitPolicy):
    """Run ``net.infer`` batch by batch and measure each: the per-batch record of a deployed early exit.

    batches: an iterable of ``(x (B, C, H, W), y (B,))``, e.g. a ``DeviceLoader``.  Returns a DataFrame with one
    row per batch: batch, images, ms (wall clock, synchronised), ms_per_image, macs_per_image (actually spent),
    accuracy, exit_counts.
    """
    import pandas as pd

    net.eval()
    rows = []
    with torch.inference_mode():
        for i, (x, y) in enumerate(batches):
            holder: dict[str, exits.EarlyExitResult] = {}
            ms = _elapsed_ms(lambda: holder.update(r=net.infer(x, policy)), x.device)
            r = holder["r"]
            rows.append({"batch": i, "images": len(x), "ms": ms, "ms_per_image": ms / len(x),
                         "macs_per_image": r.macs / len(x), "accuracy": float((r.predictions == y).float().mean()),
                         "exit_counts": torch.bincount(r.exit_index, minlength=net.num_exits).tolist()})
    return pd.DataFrame(rows)


@torch.inference_mode()
def time_breakdown(net: ElasticNet, x: torch.Tensor, policy: exits.ExitPolicy | None, *, repeats: int = 3):
    """Where the time of ``net.infer(x, policy)`` goes: per exit, stage and head milliseconds and MACs.

    Forward hooks time every stage and head inside the core's own ``infer``; what is left of the wall-clock time
    is the policy, compaction and Python (the row ``"policy + compaction"``).  ``policy=None`` times the network
    with every branch disabled.  Medians over ``repeats`` runs after one warm-up.  Returns a DataFrame with
    rows per exit plus that row, columns: part, samples, stage_ms, head_ms, total_ms, macs, time_share, macs_share.
    """
    import numpy as np
    import pandas as pd

    net.eval()
    policy = policy if policy is not None else exits.MaxSoftmax(None)
    device = x.device
    marks: dict[tuple[str, int], list[float]] = {}
    starts: dict[tuple[str, int], float] = {}
    handles = []
    for kind, mods in (("stage", net.stages), ("head", net.heads)):
        for k, m in enumerate(mods):
            def pre(_m, _inp, key=(kind, k)):
                synchronize(device)
                starts[key] = time.perf_counter()

            def post(_m, _inp, _out, key=(kind, k)):
                synchronize(device)
                marks.setdefault(key, []).append((time.perf_counter() - starts[key]) * 1e3)

            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        net.infer(x, policy)  # warm-up
        marks.clear()
        walls, holder = [], {}
        for _ in range(repeats):
            walls.append(_elapsed_ms(lambda: holder.update(r=net.infer(x, policy)), device))
        result = holder["r"]
    finally:
        for h in handles:
            h.remove()
    costs = net.costs
    thresholds = policy.resolved(net.num_exits)
    rows = []
    for k in range(net.num_exits):
        stage = float(np.median(marks[("stage", k)])) if ("stage", k) in marks else 0.0
        head = float(np.median(marks[("head", k)])) if ("head", k) in marks else 0.0
        n = result.samples_per_stage[k] if k < len(result.samples_per_stage) else 0
        head_on = policy.head_needed(k, thresholds) and n > 0
        rows.append({"part": f"exit {k + 1} ({net.taps[k]})", "samples": n, "stage_ms": stage, "head_ms": head,
                     "total_ms": stage + head,
                     "macs": n * costs.stage_macs[k] + (n * costs.head_macs[k] if head_on else 0)})
    wall = float(np.median(walls))
    rows.append({"part": "policy + compaction", "samples": len(x), "stage_ms": 0.0, "head_ms": 0.0,
                 "total_ms": max(wall - sum(r["total_ms"] for r in rows), 0.0), "macs": 0})
    df = pd.DataFrame(rows)
    df["time_share"] = df["total_ms"] / df["total_ms"].sum()
    df["macs_share"] = df["macs"] / max(df["macs"].sum(), 1)
    return df


@dataclass
class LatencyModel:
    """Milliseconds of stage k plus head k for a batch of n: ``overhead_ms[k] + per_sample_ms[k] * n``.

    Fitted from two timed batch sizes; with compaction, stage k runs on the samples still alive.
    """

    overhead_ms: list[float]
    per_sample_ms: list[float]
    device: str = ""

    def exit_ms(self, batch_size: int = 1) -> list[float]:
        """Per-sample ms to leave at exit k when a whole batch of ``batch_size`` goes that far (E values)."""
        per = [a / batch_size + b for a, b in zip(self.overhead_ms, self.per_sample_ms)]
        return torch.tensor(per, dtype=torch.float64).cumsum(0).tolist()

    def batch_ms(self, reaching: Sequence[float]) -> float:
        """Predicted ms of one batch in which ``reaching[k]`` samples run stage k (and head k)."""
        return float(sum(a + b * n for a, b, n in zip(self.overhead_ms, self.per_sample_ms, reaching) if n > 0))


@torch.inference_mode()
def measure_latency_model(net: ElasticNet, batch_size: int = 256, *, repeats: int = 5,
                          device: torch.device | str | None = None) -> LatencyModel:
    """Time every stage + head at batch sizes 1 and ``batch_size`` (medians of ``repeats``) and fit a line."""
    import numpy as np

    from .device import device_name

    net.eval()
    p = next(net.parameters())
    device = torch.device(device) if device is not None else p.device
    times = {}
    for n in sorted({1, batch_size}):
        h = torch.randn(n, *net.input_shape, device=device, dtype=p.dtype)
        per_exit = []
        for stage, head in zip(net.stages, net.heads):
            def run(stage=stage, head=head, h=h):
                head(stage(h))

            run()  # warm-up
            per_exit.append(float(np.median([_elapsed_ms(run, device) for _ in range(repeats)])))
            h = stage(h)
        times[n] = per_exit
    one, big = times[1], times[max(times)]
    if batch_size > 1:
        b = [max((tb - t1) / (batch_size - 1), 0.0) for t1, tb in zip(one, big)]
        a = [max(t1 - bk, 0.0) for t1, bk in zip(one, b)]
    else:
        a, b = [0.0] * len(one), list(one)
    return LatencyModel(a, b, device_name(device))


# ----------------------------------------------------------------------------- the run-time budget controller
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

    candidates: a shared threshold over ``grid`` (and, with ``include_full``, the network without early exits).
    For a budget in MACs per image it keeps the most accurate candidate whose validation mean MACs fit; in
    milliseconds per batch, it predicts each candidate's batch time from ``latency`` (a ``LatencyModel``) and
    the fractions of samples that reach each stage.  ``infer`` runs a batch, measures it, warns when a
    budget was missed, and tightens its predictions by the measured/predicted ratio for the next batches.

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
        if policy_name == "patience":
            values: list = list(range(1, scores.num_exits))
        else:
            values = list(grid if grid is not None else exits.DEFAULT_GRID)
            if include_full:
                values.append(None)
        self.candidates = []
        with single_thread():
            for v in values:
                policy = exits.make_policy(policy_name, v)
                r = exits.sweep(scores, costs, policy)
                counts = torch.tensor(r.exit_counts, dtype=torch.float64)
                reach = (counts.flip(0).cumsum(0).flip(0) / len(scores)).tolist()  # fraction running stage k
                self.candidates.append((v, policy, r, reach))

    def table(self):
        """Every candidate: threshold, val accuracy, mean MACs, predicted ms per batch of 256 (with a latency model)."""
        import pandas as pd

        return pd.DataFrame([{"threshold": v, "accuracy": r.accuracy, "mean_macs": r.mean_macs,
                              "ms_per_batch_256": self._predict_ms(reach, 256) if self.latency else None}
                             for v, _, r, reach in self.candidates])

    def _predict_ms(self, reach: list[float], batch_size: int) -> float:
        return self.latency.batch_ms([f * batch_size for f in reach])

    def _cost(self, candidate, unit: str, batch_size: int) -> float:
        _, _, r, reach = candidate
        raw = r.mean_macs if unit == "MACs/image" else self._predict_ms(reach, batch_size)
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
        limit = budget * (1 - self.margin)
        costs = [self._cost(c, unit, batch_size) for c in self.candidates]
        fits = [i for i, c in enumerate(costs) if c <= limit]
        if fits:
            best = max(fits, key=lambda i: (self.candidates[i][2].accuracy, -costs[i]))
            v, policy, r, _ = self.candidates[best]
            return BudgetChoice(policy, budget, unit, r, costs[best], True)
        low = min(range(len(costs)), key=costs.__getitem__)
        where = (f"every sample leaving at exit 1 ({self.policy_name} threshold "
                 f"{self.candidates[low][0]}) costs {costs[low]:.4g} {unit}")
        if self.fallback == "raise":
            raise ThresholdError(
                f"the budget of {budget:.4g} {unit} cannot be met: the cheapest setting, {where}. Raise the budget "
                f"to at least {costs[low] / (1 - self.margin):.4g} {unit}, tap an earlier exit, or use "
                "BudgetController(..., fallback='cheapest') to run the cheapest setting anyway.")
        note = (f"budget {budget:.4g} {unit} is unreachable; fallback: the cheapest setting ({where}), "
                f"which exceeds the budget.")
        warnings.warn(note, BudgetWarning, stacklevel=2)
        v, policy, r, _ = self.candidates[low]
        return BudgetChoice(policy, budget, unit, r, costs[low], False, note)

    def infer(self, net: exits.ExitNetwork, x: torch.Tensor, *, macs_per_image: float | None = None,
              ms_per_batch: float | None = None) -> BudgetRun:
        """Choose thresholds for this batch's budget, run ``net.infer``, and measure time and MACs.

        The budget may change from one call to the next.  A measured cost above the budget warns
        (``BudgetWarning``) and makes the next choices proportionally more cautious.
        """
        choice = self.choose(macs_per_image=macs_per_image, ms_per_batch=ms_per_batch, batch_size=len(x))
        net.eval()
        holder: dict[str, exits.EarlyExitResult] = {}
        ms = _elapsed_ms(lambda: holder.setdefault("r", net.infer(x, choice.policy)), x.device)
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


# ----------------------------------------------------------------------------- anytime prediction
@dataclass
class AnytimeResult:
    """The deepest prediction reached by a deadline."""

    predictions: torch.Tensor  # (B,)
    logits: torch.Tensor  # (B, C)
    exit_index: int  # the head that answered (0-based)
    answer_ms: float  # when that head's answer was ready
    elapsed_ms: float  # when the call returned
    deadline_ms: float
    met: bool  # answer_ms <= deadline_ms


@torch.inference_mode()
def anytime(net: exits.ExitNetwork, x: torch.Tensor, deadline_ms: float, *,
            latency: LatencyModel | None = None, on_miss: str = "warn") -> AnytimeResult:
    """Run ``x`` ``(B, C, H, W)`` head by head and answer with the deepest head finished by the deadline.

    Every sample goes as deep as the time allows (no confidence rule).  With a ``latency`` model, a stage
    predicted to overrun is not started, so no time is wasted; without one, a stage that overruns is
    discarded and the call returns late (``elapsed_ms`` says by how much).  When not even exit 1 is ready
    in time, its answer is returned with ``met=False`` and a ``BudgetWarning`` (``on_miss="raise"``: a
    ``ThresholdError``); the deadline is never missed silently.
    """
    if not (isinstance(deadline_ms, (int, float)) and deadline_ms > 0 and math.isfinite(deadline_ms)):
        raise ThresholdError(f"deadline_ms must be a positive number of milliseconds, got {deadline_ms!r}.")
    if on_miss not in ("warn", "raise"):
        raise UnknownNameError(f"unknown on_miss {on_miss!r}. Use 'warn' or 'raise'.")
    net.eval()
    device = x.device
    synchronize(device)
    start = time.perf_counter()
    answer, answer_k, answer_ms = None, 0, 0.0
    h = x
    for k, (stage, head) in enumerate(zip(net.stages, net.heads)):
        now = (time.perf_counter() - start) * 1e3
        if answer is not None and latency is not None and \
                now + latency.batch_ms([0] * k + [len(x)]) > deadline_ms:
            break  # the next exit would come too late: keep what we have
        h = stage(h)
        logits = head(h)
        synchronize(device)
        now = (time.perf_counter() - start) * 1e3
        if now <= deadline_ms or answer is None:
            answer, answer_k, answer_ms = logits, k, now
        if now >= deadline_ms:
            break
    elapsed = (time.perf_counter() - start) * 1e3
    met = answer_ms <= deadline_ms
    if not met:
        message = (f"deadline {deadline_ms:.3g} ms missed: even exit 1 took {answer_ms:.3g} ms for a batch of "
                   f"{len(x)}. Give a longer deadline or a smaller batch.")
        if on_miss == "raise":
            raise ThresholdError(message)
        warnings.warn(message, BudgetWarning, stacklevel=2)
    return AnytimeResult(answer.argmax(1), answer, answer_k, answer_ms, elapsed, float(deadline_ms), met)


# ----------------------------------------------------------------------------- reporting
def exit_distribution(exit_index: torch.Tensor, labels: torch.Tensor, num_exits: int,
                      class_names: Sequence[str] | None = None):
    """Fraction of each class's samples leaving at each exit: a DataFrame (classes x exits), rows sum to 1."""
    import pandas as pd

    classes = int(labels.max()) + 1
    counts = torch.zeros(classes, num_exits, dtype=torch.float64)
    counts.index_put_((labels.cpu(), exit_index.cpu()), torch.ones(len(labels), dtype=torch.float64), accumulate=True)
    frac = counts / counts.sum(1, keepdim=True).clamp_min(1)
    names = list(class_names) if class_names is not None else [str(c) for c in range(classes)]
    return pd.DataFrame(frac.numpy(), index=names[:classes], columns=[f"exit {k + 1}" for k in range(num_exits)])


def dataset_label(name: str) -> str:
    """How a figure names its dataset: the shared CIFAR-10 is "CIFAR-10 (JPEG-decoded copy)"."""
    from . import data

    names = {"cifar10": "CIFAR-10", "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "digits": "digits"}
    label = names.get(name, name)
    try:
        if "JPEG" in data.source(name):
            label += " (JPEG-decoded copy)"
    except CourseError:
        pass
    return label


TABLE_COLUMNS = ["dataset", "backbone", "mode", "device", "batch_size", "ms_per_image_full", "ms_per_image_edcnn",
                 "time_reduction_pct", "macs_full", "macs_edcnn", "acc_full", "acc_edcnn"]
