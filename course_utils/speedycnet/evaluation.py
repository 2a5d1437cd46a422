"""Measuring a trained cascade and its baselines: timed training, plain accuracy, the cascade by real early exit."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from .. import exits
from ..data import DeviceLoader
from ..device import get_device, stopwatch
from ..exits import ExitNetwork, ExitPolicy
from ..train import History, TrainConfig, evaluate, fit, init_distributed
from .cascade import drop_last_batch

if TYPE_CHECKING:
    import pandas as pd

    from .cascade import CascadeResult


def timed_fit(model: nn.Module, dataset: str, train: tuple[torch.Tensor, torch.Tensor],
              val: tuple[torch.Tensor, torch.Tensor] | None, config: TrainConfig) -> tuple[History, float]:
    """``fit`` on uint8 data ``(N, C, H, W)`` through ``DeviceLoader`` (as the cascade's first stage is fed), timed.

    Returns ``(history, seconds)``: seconds = the whole call (data to device, every epoch, val passes).
    """
    device = get_device(config.device) if config.device else get_device()
    with stopwatch(device) as watch:
        _, world = init_distributed()
        tr = DeviceLoader.for_dataset(dataset, train[0], train[1], train=True, batch_size=config.batch_size,
                                      device=device, seed=config.seed,
                                      drop_last=drop_last_batch(len(train[1]), config.batch_size, world))
        va = None if val is None else DeviceLoader.for_dataset(dataset, val[0], val[1], train=False,
                                                               batch_size=max(config.batch_size, 256), device=device)
        history = fit(model, tr, va, config)
    return history, watch.seconds


def accuracy_on(model: nn.Module, dataset: str, images: torch.Tensor, labels: torch.Tensor,
                batch_size: int = 512, device: str | torch.device | None = None) -> float:
    """Accuracy of a plain classifier ``(B, C, H, W) -> (B, classes)`` on uint8 images."""
    device = get_device(device) if device else next(model.parameters()).device
    loader = DeviceLoader.for_dataset(dataset, images, labels, train=False, batch_size=batch_size, device=device)
    return evaluate(model, loader)["accuracy"]


@dataclass
class CascadeEvaluation:
    """The cascade on a labelled split, by real early exit."""

    accuracy: float
    predictions: torch.Tensor  # (N,)
    exit_index: torch.Tensor  # (N,) 0-based head each sample left at
    exit_counts: list[int]
    exit_accuracy: list[float | None]  # accuracy of the samples that left at each head
    head_accuracy: list[float]  # every head on all N samples (forward_all), as if it were the only exit
    mean_macs: float  # per sample, what infer actually spent

    def to_frame(self) -> "pd.DataFrame":
        """One row per exit: samples leaving there, their accuracy, the head's accuracy on all samples."""
        import pandas as pd

        return pd.DataFrame({"exit": range(1, len(self.exit_counts) + 1), "samples": self.exit_counts,
                             "accuracy_of_exited": self.exit_accuracy, "head_accuracy_on_all": self.head_accuracy})


@torch.no_grad()
def evaluate_cascade(net: ExitNetwork, policy: ExitPolicy, dataset: str, images: torch.Tensor,
                     labels: torch.Tensor, batch_size: int = 512) -> CascadeEvaluation:
    """Run ``net.infer`` (batched early exit) over uint8 ``images`` ``(N, C, H, W)``; also every head's accuracy.

    The per-exit counts and accuracies are ``exits.summarize`` of the exits ``infer`` really took.
    """
    device = next(net.parameters()).device
    net.eval()
    if net.costs is None:
        net.measure_costs(tuple(images.shape[1:]))
    loader = DeviceLoader.for_dataset(dataset, images, labels, train=False, batch_size=batch_size, device=device)
    preds, idx, macs = [], [], 0
    for x, _ in loader:
        r = net.infer(x, policy)
        preds.append(r.predictions.cpu())
        idx.append(r.exit_index.cpu())
        macs += r.macs
    heads = exits.collect_logits(net, loader)  # every head on every sample: the heads' own accuracy
    n = len(labels)
    real = exits.summarize(torch.cat(idx), torch.cat(preds), labels.cpu(), net.num_exits,
                           net.costs.cumulative(policy.enabled(net.num_exits)))
    return CascadeEvaluation(real.accuracy, real.predictions, real.exit_index, real.exit_counts, real.exit_accuracy,
                             heads.exit_accuracy(), macs / max(n, 1))


EXAMPLE_GROUPS = ("removed by learner 1", "removed wrongly", "reached the last learner")


@torch.no_grad()
def removal_examples(result: "CascadeResult", dataset: str, images: torch.Tensor, labels: torch.Tensor, *,
                     per_group: int = 10, seed: int = 0) -> "pd.DataFrame":
    """Training samples drawn at random (seeded) from what the cascade did with them, and what it predicted.

    Groups (``EXAMPLE_GROUPS``): removed by learner 1 (the easy ones), removed wrongly by any learner, and never
    removed (they reached the last learner).  images, labels: the training split given to ``train_cascade``.
    Returns a DataFrame with one row per drawn sample: group, index (into the training split), label,
    prediction (the removing learner's, recorded during training; for the last group, the last learner's),
    removed_at (1-based learner, 0 for never), correct.
    """
    import pandas as pd

    removed_at, predicted = result.removed_at.cpu(), result.removed_prediction.cpu()
    labels = labels.cpu()
    generator = torch.Generator().manual_seed(seed)
    masks = (removed_at == 0, (removed_at >= 0) & (predicted != labels), removed_at == -1)
    rows = []
    for group, mask in zip(EXAMPLE_GROUPS, masks):
        pool = torch.nonzero(mask).flatten()
        chosen = pool[torch.randperm(len(pool), generator=generator)[:per_group]].sort().values
        pred = predicted[chosen]
        if group == EXAMPLE_GROUPS[-1] and len(chosen):  # never removed: ask the last learner
            device = next(result.net.parameters()).device
            x = images[chosen].to(device)
            x = DeviceLoader.for_dataset(dataset, x, labels[chosen].to(device), train=False, device=device).transform(x)
            result.net.eval()
            pred = result.net.forward_all(x)[-1].argmax(1).cpu()
        rows += [{"group": group, "index": int(i), "label": int(labels[i]), "prediction": int(p),
                  "removed_at": int(removed_at[i]) + 1, "correct": int(p) == int(labels[i])}
                 for i, p in zip(chosen, pred)]
    return pd.DataFrame(rows, columns=["group", "index", "label", "prediction", "removed_at", "correct"])
