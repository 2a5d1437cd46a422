"""ENAS-style weight sharing (Pham et al. 2018): every child is a sub-network of one super-network.

Training each child from scratch is what made the first NAS cost 800 GPUs x 28 days.  ENAS trains
the weights of one super-network instead, and a child *inherits* its weights from it:

    layer i, kernel k:  one convolution with the space's widest ``max(filters)`` outputs; a child
                        with ``f`` filters and ``c`` input channels uses the slice ``W[:f, :c]``
                        (and the matching slice of that convolution's BatchNorm)
    skip j -> i:        one 1x1 adapter, sliced the same way; the classifier is sliced to ``f``

Two phases alternate, epoch by epoch:
  1. shared weights: for every training batch, sample a child from the controller and take one
     SGD step on the super-network's weights that the child uses;
  2. controller: ``controller_steps`` REINFORCE updates; a sample's reward is its accuracy on one
     validation batch *with the shared weights*: seconds instead of a child training.
At the end, ``final_samples`` children are sampled and scored on the whole validation split with
the shared weights; the best is the one to retrain from scratch.

BatchNorm here always normalises with the batch's own statistics (``track_running_stats=False``):
running averages would mix the statistics of many different children.  ``SuperNet.extract(arch)``
copies a child's slices into a standalone ``ChildNet``; in training mode (batch statistics) both
compute the same function, which is what "the children share one network's weights" means.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import save_checkpoint
from ..data import DeviceLoader
from ..device import autocast, stopwatch
from ..errors import CourseError
from .controller import AccuracyReward
from .search import CHECKPOINT_FORMAT, Reward, ReinforceSearch, SearchResult, check_last_batch, load_search
from .space import Architecture, ChildNet, SearchSpace, child_cost


class SuperNet(nn.Module):
    """The weights every child of ``space`` shares.  ``forward(x, arch)``: ``(B, C, H, W)`` -> ``(B, classes)``."""

    def __init__(self, space: SearchSpace, in_channels: int, num_classes: int):
        super().__init__()
        self.space, self.in_channels, self.num_classes = space, in_channels, num_classes
        wide = max(space.filters)
        self.convs, self.norms = nn.ModuleList(), nn.ModuleList()
        c = in_channels
        for _ in range(space.num_layers):
            self.convs.append(nn.ModuleDict({str(k): nn.Conv2d(c, wide, k, padding=k // 2, bias=False)
                                             for k in space.kernel_sizes}))
            self.norms.append(nn.ModuleDict({str(k): nn.BatchNorm2d(wide, track_running_stats=False)
                                             for k in space.kernel_sizes}))
            c = wide
        self.adapters = nn.ModuleDict()
        if space.skip_connections:
            for i in range(space.num_layers):
                for j in range(i):
                    self.adapters[f"{i}_{j}"] = nn.Sequential(nn.Conv2d(wide, wide, 1, bias=False),
                                                              nn.BatchNorm2d(wide, track_running_stats=False))
        self.classifier = nn.Linear(wide, num_classes)

    @staticmethod
    def _norm(y: torch.Tensor, bn: nn.BatchNorm2d, f: int) -> torch.Tensor:
        return F.batch_norm(y, None, None, bn.weight[:f], bn.bias[:f], training=True, eps=bn.eps)

    def forward(self, x: torch.Tensor, arch: Architecture) -> torch.Tensor:
        outs, widths, c = [], [], x.shape[1]
        for i, layer in enumerate(arch.layers):
            k, f = layer.kernel, layer.filters
            conv, bn = self.convs[i][str(k)], self.norms[i][str(k)]
            y = F.conv2d(x, conv.weight[:f, :c], stride=2 if layer.reduce == "stride2" else 1, padding=k // 2)
            y = F.relu(self._norm(y, bn, f))
            if layer.reduce == "maxpool":
                y = F.max_pool2d(y, 2, ceil_mode=True)
            for j in layer.skips:
                s = outs[j]
                if s.shape[-2:] != y.shape[-2:]:
                    s = F.adaptive_avg_pool2d(s, y.shape[-2:])
                if widths[j] != f:
                    adapter_conv, adapter_bn = self.adapters[f"{i}_{j}"]
                    s = self._norm(F.conv2d(s, adapter_conv.weight[:f, :widths[j]]), adapter_bn, f)
                y = y + s
            outs.append(y)
            widths.append(f)
            x, c = y, f
        pooled = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return F.linear(pooled, self.classifier.weight[:, :c], self.classifier.bias)

    @torch.no_grad()
    def extract(self, arch: Architecture) -> ChildNet:
        """A standalone ``ChildNet`` holding copies of ``arch``'s slices of the shared weights."""
        self.space.validate(arch)
        child = ChildNet(arch, self.in_channels, self.num_classes).to(self.classifier.weight.device)
        c = self.in_channels
        for i, layer in enumerate(arch.layers):
            k, f = layer.kernel, layer.filters
            child.layers[i][0].weight.copy_(self.convs[i][str(k)].weight[:f, :c])
            child.layers[i][1].weight.copy_(self.norms[i][str(k)].weight[:f])
            child.layers[i][1].bias.copy_(self.norms[i][str(k)].bias[:f])
            for key, adapter in child.adapters.items():
                if key.startswith(f"{i}_"):
                    src = self.adapters[key]
                    adapter[0].weight.copy_(src[0].weight[:f, :adapter[0].in_channels])
                    adapter[1].weight.copy_(src[1].weight[:f])
                    adapter[1].bias.copy_(src[1].bias[:f])
            c = f
        child.classifier.weight.copy_(self.classifier.weight[:, :c])
        child.classifier.bias.copy_(self.classifier.bias)
        return child


@dataclass
class ENASConfig:
    """The knobs of ``run_enas``."""

    epochs: int = 10  # of shared-weight training, each followed by a controller phase
    batch_size: int = 64
    lr: float = 0.05  # shared weights: SGD (Nesterov), cosine to 0 over all epochs
    momentum: float = 0.9
    weight_decay: float = 1e-4
    grad_clip: float = 5.0  # ENAS clips the shared weights' gradient norm at 5
    controller_steps: int = 50  # REINFORCE updates per epoch, one validation batch each
    val_batch_size: int = 256
    controller_lr: float = 0.01
    hidden: int = 64
    baseline_decay: float = 0.9
    entropy_weight: float = 1e-3
    final_samples: int = 10  # candidates scored on the whole validation split at the end


@torch.no_grad()
def shared_accuracy(supernet: SuperNet, arch: Architecture, batches: list) -> float:
    """Accuracy of ``arch`` with the shared weights over ``batches`` (a list of ``(x, y)``)."""
    correct = torch.zeros((), dtype=torch.long, device=batches[0][1].device)
    n = 0
    for x, y in batches:
        with autocast(x.device):
            correct += (supernet(x, arch).argmax(1) == y).sum()
        n += len(y)
    return correct.item() / n


def run_enas(space: SearchSpace, train: DeviceLoader, val: DeviceLoader, num_classes: int, *,
             config: ENASConfig | None = None, seed: int = 0, reward: Reward = AccuracyReward(),
             checkpoint: str | Path | None = None, progress: bool = True) -> SearchResult:
    """Search ``space`` with one shared super-network and the REINFORCE controller (ENAS).

    train, val: ``DeviceLoader``s (the controller's rewards come from ``val``).
    checkpoint: written after every epoch (super-network, its optimizer, controller, baseline, RNG
        states, trace); an existing file is resumed from.
    Returns a ``SearchResult`` with ``child_trainings=0``: ``history`` holds the ``final_samples``
    candidates scored with shared weights (``reward`` from the whole validation split), ``trace`` the
    controller's training samples (rewards from one validation batch each), ``extra["epochs"]`` the
    per-epoch log and ``extra["architectures_evaluated"]``.
    """
    config = config or ENASConfig()
    _check_config(config, train, val)
    run = _ENASRun(space, train, val, num_classes, config, seed, reward)
    fingerprint = run.fingerprint(train, val)
    trace: list[dict] = []
    epochs_log: list[dict] = []
    start_epoch, seconds = 0, 0.0
    if checkpoint and Path(checkpoint).exists():
        state = load_search(checkpoint, fingerprint)
        run.load_state_dict(state)
        trace, epochs_log = list(state["trace"]), list(state["epochs"])
        start_epoch, seconds = state["epoch"], state["seconds"]

    bar = _progress_bar(progress, config.epochs, start_epoch)
    try:
        for epoch in range(start_epoch, config.epochs):
            with stopwatch(run.device) as watch:
                shared_loss = run.train_shared(epoch)  # phase 1: the shared weights
                rewards = run.train_controller(epoch, trace)  # phase 2: the controller
            seconds += watch.seconds
            epochs_log.append({"epoch": epoch + 1, "shared_loss": shared_loss,
                               "mean_reward": sum(rewards) / len(rewards) if rewards else float("nan"),
                               "baseline": run.searcher.baseline.value, "seconds": seconds})
            if checkpoint:
                save_checkpoint({"format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, **run.state_dict(),
                                 "trace": trace, "epochs": epochs_log, "epoch": epoch + 1, "seconds": seconds},
                                checkpoint)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=round(shared_loss, 3), reward=round(epochs_log[-1]["mean_reward"], 3))
    finally:
        if bar is not None:
            bar.close()

    with stopwatch(run.device) as watch:
        candidates = run.final_candidates()
    return SearchResult("enas", pd.DataFrame(candidates), seconds + watch.seconds, child_trainings=0,
                        finished=True, trace=pd.DataFrame(trace),
                        extra={"epochs": pd.DataFrame(epochs_log), "supernet": run.supernet,
                               "searcher": run.searcher, "architectures_evaluated": len(trace) + len(candidates)})


def _check_config(config: ENASConfig, train: DeviceLoader, val: DeviceLoader) -> None:
    if config.epochs < 1 or config.controller_steps < 0 or config.final_samples < 1:
        raise CourseError(f"ENAS needs epochs >= 1, controller_steps >= 0 and final_samples >= 1; got {config}.")
    # the super-network's BatchNorm always uses batch statistics, on validation batches too
    check_last_batch(len(train.labels), config.batch_size, "config.batch_size")
    check_last_batch(len(val.labels), config.val_batch_size, "config.val_batch_size")


def _progress_bar(progress: bool, epochs: int, start_epoch: int):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=epochs, initial=start_epoch, desc="enas epochs")


class _ENASRun:
    """The super-network, its optimizer, the controller and the data of one ENAS search."""

    def __init__(self, space: SearchSpace, train: DeviceLoader, val: DeviceLoader, num_classes: int,
                 config: ENASConfig, seed: int, reward: Reward):
        self.space, self.num_classes, self.config, self.seed, self.reward = space, num_classes, config, seed, reward
        self.device = train.device
        self.input_size = tuple(int(s) for s in train.images.shape[1:])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.supernet = SuperNet(space, self.input_size[0], num_classes).to(self.device)
        self.searcher = ReinforceSearch(space, seed=seed, hidden=config.hidden, lr=config.controller_lr,
                                        batch_size=1, baseline_decay=config.baseline_decay,
                                        entropy_weight=config.entropy_weight)
        self.optimizer = torch.optim.SGD(self.supernet.parameters(), lr=config.lr, momentum=config.momentum,
                                         nesterov=True, weight_decay=config.weight_decay)
        self.loader = train.view(batch_size=config.batch_size)
        self.val_batches = list(val.view(batch_size=config.val_batch_size))
        self.criterion = nn.CrossEntropyLoss()

    def fingerprint(self, train: DeviceLoader, val: DeviceLoader) -> dict:
        """What a checkpoint must match to continue this search."""
        return {"method": "enas", "space": self.space.config(), "config": asdict(self.config), "seed": self.seed,
                "reward": repr(self.reward), "input_size": list(self.input_size), "num_classes": self.num_classes,
                "train_size": len(train.labels), "val_size": len(val.labels), "data_seed": train.seed}

    def state_dict(self) -> dict:
        return {"supernet": self.supernet.state_dict(), "optimizer": self.optimizer.state_dict(),
                "searcher": self.searcher.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.supernet.load_state_dict(state["supernet"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.searcher.load_state_dict(state["searcher"])

    def train_shared(self, epoch: int) -> float:
        """One epoch of SGD on the shared weights, one sampled child per batch (cosine lr); the mean loss."""
        config, loader = self.config, self.loader
        total_steps = config.epochs * len(loader)
        loader.set_epoch(epoch)
        self.supernet.train()
        loss_sum = torch.zeros((), device=self.device)
        for step, (x, y) in enumerate(loader):
            lr = 0.5 * config.lr * (1 + math.cos(math.pi * (epoch * len(loader) + step) / total_steps))
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            arch = self.searcher.propose(1)[0][0]
            with autocast(self.device):
                loss = self.criterion(self.supernet(x, arch), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.supernet.parameters(), config.grad_clip)
            self.optimizer.step()
            loss_sum += loss.detach().float()
        return loss_sum.item() / len(loader)

    def train_controller(self, epoch: int, trace: list[dict]) -> list[float]:
        """``controller_steps`` REINFORCE updates, each rewarded by shared-weight accuracy on one val batch.

        Appends each sample to ``trace``; returns the rewards.
        """
        rewards = []
        for s in range(self.config.controller_steps):
            arch, info = self.searcher.propose(1)[0]
            batch = self.val_batches[(epoch * self.config.controller_steps + s) % len(self.val_batches)]
            accuracy = shared_accuracy(self.supernet, arch, [batch])
            params, macs = child_cost(arch, self.input_size, self.num_classes)
            r = self.reward(accuracy, macs)
            self.searcher.observe([arch], [r])
            rewards.append(r)
            trace.append({"step": len(trace) + 1, "epoch": epoch + 1, "method": "enas", "arch": arch.key,
                          "reward": r, "val_accuracy": accuracy, "macs": macs, "params": params, **info})
        return rewards

    def final_candidates(self) -> list[dict]:
        """``final_samples`` children of the trained controller, scored on the whole val split."""
        self.supernet.eval()
        candidates = []
        for k, (arch, info) in enumerate(self.searcher.propose(self.config.final_samples)):
            accuracy = shared_accuracy(self.supernet, arch, self.val_batches)
            params, macs = child_cost(arch, self.input_size, self.num_classes)
            candidates.append({"child": k + 1, "method": "enas", "arch": arch.key,
                               "reward": self.reward(accuracy, macs), "val_accuracy": accuracy, "macs": macs,
                               "params": params, **info})
        return candidates
