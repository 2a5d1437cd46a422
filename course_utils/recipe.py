"""The course's training recipes, and the side-by-side measurement of time to a target accuracy.

Every network in a table (a baseline and the method built from it) trains with the same recipe, so a
speed-up is the method's, not the recipe's.  Two recipes:

* ``fast``: what hlb-CIFAR10 and Keller Jordan's airbench combine to reach an accuracy in the fewest
  steps: a large batch with a learning rate scaled to it, a short warm-up then linear decay (one-cycle),
  label smoothing, an EMA of the weights, flip-and-translate augmentation on the device (``DeviceLoader``)
  and test-time flip.  Nesterov SGD with decoupled-from-batch weight decay.
* ``plain``: the textbook baseline it is measured against: SGD with momentum 0.9, lr 0.1, weight decay
  5e-4, lr x0.1 at half and three quarters of training, no smoothing, no EMA, no test-time flip.

``time_to_accuracy`` trains a fresh model with one recipe and reports the wall-clock and CPU seconds until
val accuracy first reached the target; ``benchmarks/recipe_benchmark.py`` runs both, one after the other
in one process, so the two times share a machine state.
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from .data import DeviceLoader
from .device import device_name
from .errors import UnknownNameError
from .train import TrainConfig, fit

REFERENCE_BATCH = 128  # the learning rates below are for this batch and scale linearly with it


def fast(epochs: int, *, batch_size: int = 512, seed: int = 0, precision: str = "auto", **overrides) -> TrainConfig:
    """The fast recipe for ``epochs`` epochs (see the module docstring); ``overrides`` set any other field."""
    scale = batch_size / REFERENCE_BATCH
    settings = dict(epochs=epochs, batch_size=batch_size, optimizer="sgd", lr=0.1 * scale, momentum=0.9,
                    weight_decay=5e-4, schedule="onecycle", warmup_fraction=0.15, label_smoothing=0.2,
                    ema_decay=0.99, ema_every=5, tta_flip=True, seed=seed, precision=precision)
    return TrainConfig(**{**settings, **overrides})


def plain(epochs: int, *, batch_size: int = 128, seed: int = 0, precision: str = "auto", **overrides) -> TrainConfig:
    """Plain SGD with the step schedule (see the module docstring); ``overrides`` set any other field."""
    settings = dict(epochs=epochs, batch_size=batch_size, optimizer="sgd", lr=0.1 * batch_size / REFERENCE_BATCH,
                    momentum=0.9, weight_decay=5e-4, schedule="step", label_smoothing=0.0, seed=seed,
                    precision=precision)
    return TrainConfig(**{**settings, **overrides})


RECIPES: dict[str, Callable[..., TrainConfig]] = {"fast": fast, "plain": plain}


def recipe(name: str, epochs: int, **options) -> TrainConfig:
    """``RECIPES[name](epochs, **options)``; an unknown name lists the known ones."""
    if name not in RECIPES:
        raise UnknownNameError(f"unknown recipe {name!r}. Use one of: {', '.join(RECIPES)}.")
    return RECIPES[name](epochs, **options)


def time_to_accuracy(build: Callable[[], nn.Module], train: DeviceLoader, val: DeviceLoader, config: TrainConfig,
                     target: float) -> dict:
    """Train ``build()`` with ``config``; when did val accuracy first reach ``target``?

    Returns seconds and CPU seconds to the target (``None`` if never reached), the best val accuracy,
    the epochs run, and the total seconds.  The run stops at the first epoch that reaches the target:
    what comes after is not part of the measurement.
    """

    class Reached(Exception):
        pass

    records: list[dict] = []

    def stop_at_target(epoch: int, record: dict) -> None:
        records.append(record)
        if record.get("val_accuracy", 0.0) >= target:
            raise Reached

    try:
        fit(build(), train, val, config, on_epoch_end=stop_at_target)
    except Reached:
        pass
    reached = next((i for i, r in enumerate(records) if r.get("val_accuracy", 0.0) >= target), None)
    upto = records if reached is None else records[:reached + 1]
    return {"target": target, "reached": reached is not None,
            "seconds_to_target": sum(r["seconds"] for r in upto) if reached is not None else None,
            "cpu_seconds_to_target": sum(r["cpu_seconds"] for r in upto) if reached is not None else None,
            "epochs_run": len(records), "best_val_accuracy": max((r.get("val_accuracy", 0.0) for r in records), default=0.0),
            "seconds": sum(r["seconds"] for r in records), "device": device_name(train.device)}
