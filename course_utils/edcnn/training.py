"""Branch and joint training: weighted exit losses through the course's ``train.fit``.

Mode (a), ``train_branches``: the backbone is trained already and frozen; only the branches learn.
Mode (b), ``train_joint``: a new network and its branches learn together, with SDN's rising weights if asked.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from .. import exits
from ..errors import CourseError, UnknownNameError
from .elastic import ElasticNet

if TYPE_CHECKING:
    from ..train import History, TrainConfig

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]  # (x (B, C, H, W), y (B,)), e.g. a DeviceLoader
EpochHook = Callable[[int, dict], None]

WEIGHT_SCHEDULES = ("uniform", "sdn")
MODES = ("frozen", "joint")


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
                 train_final: bool = True, monitor: str = "final", label_smoothing: float = 0.0):
        self.schedule, self.fractions, self.epochs = schedule, list(fractions), epochs
        self.train_final, self.monitor, self.label_smoothing = train_final, monitor, label_smoothing
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Use the weights of ``epoch`` (0-based)."""
        self.epoch = epoch
        weights = exit_weights(self.schedule, self.fractions, epoch, self.epochs)
        if not self.train_final:
            weights[-1] = 0.0  # the frozen classifier cannot learn; it only costs a forward pass
        self.weights = weights
        self._loss = exits.exit_loss(weights, self.label_smoothing)

    def __call__(self, outputs: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, final = self._loss(outputs, targets)
        if self.monitor == "early":
            return loss, torch.stack([F.log_softmax(o.float(), 1) for o in outputs[:-1]]).mean(0)
        return loss, final


def _fit_with_schedule(net: ElasticNet, train_loader: Batches, val_loader: Batches | None, config: "TrainConfig",
                       loss: ExitLoss, on_epoch_end: EpochHook | None) -> "History":
    from .. import train as training

    if config.checkpoint and Path(config.checkpoint).exists():  # resume: continue the weight schedule too
        loss.set_epoch(int(training.load_checkpoint(config.checkpoint)["epoch"]))

    def next_epoch(epoch: int, record: dict) -> None:
        record["exit_weights"] = list(loss.weights)
        loss.set_epoch(epoch)  # `epoch` epochs are done: the next one is epoch `epoch`, 0-based
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)

    return training.fit(net, train_loader, val_loader, config, loss_fn=loss, on_epoch_end=next_epoch)


def train_branches(net: ElasticNet, train_loader: Batches, val_loader: Batches | None = None,
                   config: "TrainConfig | None" = None, *, weights: str | Sequence[float] = "uniform",
                   on_epoch_end: EpochHook | None = None) -> "History":
    """Mode (a): the backbone is trained already; freeze it and train only the branch heads.

    Goes through ``train.fit`` (checkpoints, resume).  The stages and the final classifier keep their weights
    and BatchNorm statistics exactly (they stay in eval mode); the final exit's loss weight is 0.
    fit's reported (and best-epoch) accuracy is that of the early heads' mean log-probabilities.
    Returns fit's ``History``.  The backbone stays frozen afterwards (``net.freeze_backbone(False)`` undoes it).
    """
    from .. import train as training

    config = config or training.TrainConfig()
    net.freeze_backbone(True)
    loss = ExitLoss(weights, net.depth_fractions(), config.epochs, train_final=False, monitor="early",
                    label_smoothing=config.label_smoothing)
    return _fit_with_schedule(net, train_loader, val_loader, config, loss, on_epoch_end)


def train_joint(net: ElasticNet, train_loader: Batches, val_loader: Batches | None = None,
                config: "TrainConfig | None" = None, *, weights: str | Sequence[float] = "uniform",
                on_epoch_end: EpochHook | None = None) -> "History":
    """Mode (b): train the whole network and its branches together on ``sum_k w_k CE(exit k)``.

    weights: ``"uniform"``, ``"sdn"`` (SDN's rising schedule) or one weight per exit; see ``exit_weights``.
    fit's reported accuracy is the final exit's.  Returns fit's ``History``.
    """
    from .. import train as training

    config = config or training.TrainConfig()
    net.freeze_backbone(False)
    loss = ExitLoss(weights, net.depth_fractions(), config.epochs, label_smoothing=config.label_smoothing)
    return _fit_with_schedule(net, train_loader, val_loader, config, loss, on_epoch_end)
