"""One readable training loop: ``fit``, ``evaluate``, atomic checkpoints, resume, and DDP.

    config = TrainConfig(epochs=10, batch_size=128, lr=0.05)
    history = fit(model, train_loader, val_loader, config)

``train`` and ``val`` are ``data.DeviceLoader``s (their data already sits on the device).
Every epoch is checkpointed atomically when ``config.checkpoint`` is set, and a later call with
the same checkpoint resumes where the last one stopped: on the CPU, an interrupted-and-resumed run
ends with exactly the weights of an uninterrupted one, because each epoch's data order derives from
(seed, epoch) and the RNG states are saved.

Under ``torchrun`` (``WORLD_SIZE`` > 1) ``fit`` joins the process group (gloo on CPU, nccl on GPU),
wraps the model in DistributedDataParallel and shards each batch stream by rank.
"""
from __future__ import annotations

import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn as nn

from .data import DeviceLoader
from . import checkpoint
from .checkpoint import save_checkpoint
from .device import autocast, device_name, get_device, synchronize
from .errors import CheckpointError, NonFiniteLossError, UnknownNameError

CHECKPOINT_FORMAT = "course_utils.fit/1"
LossFn = Callable[[Any, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


@dataclass
class TrainConfig:
    """Every knob of ``fit`` in one visible place."""

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum) or "adamw"
    lr: float = 0.05  # peak learning rate
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # "onecycle", "cosine" or "constant"; stepped every batch
    warmup_fraction: float = 0.2  # onecycle's rising part
    label_smoothing: float = 0.0
    seed: int = 0
    patience: int | None = None  # stop when val accuracy has not improved for this many epochs
    restore_best: bool = True  # with a val set: end with the weights of the best val epoch
    device: str | None = None  # None: CUDA when available, else CPU (see device.get_device)
    amp: bool = True  # bf16/fp16 autocast on CUDA; ignored on the CPU, where it is slower
    checkpoint: str | None = None  # path; written every epoch, resumed from when present
    progress: bool = True  # a tqdm bar

    def validate(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise UnknownNameError(f"unknown optimizer {self.optimizer!r}. Use 'sgd' or 'adamw'.")
        if self.schedule not in ("onecycle", "cosine", "constant"):
            raise UnknownNameError(f"unknown schedule {self.schedule!r}. Use 'onecycle', 'cosine' or 'constant'.")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError("epochs and batch_size must be >= 1 and lr > 0")


# What must match for a checkpoint to continue the same run (others, like `progress`, may change).
_TRAJECTORY_FIELDS = ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule",
                      "warmup_fraction", "label_smoothing", "seed", "patience")


@dataclass
class History:
    """Per-epoch records, the best epoch, and where it ran."""

    epochs: list[dict] = field(default_factory=list)
    best_epoch: int | None = None  # 1-based; None without a val set
    best_val_accuracy: float | None = None
    stopped_early: bool = False
    device: str = ""

    @property
    def seconds(self) -> float:
        """Wall-clock seconds of every epoch run, training and evaluation."""
        return sum(e["seconds"] for e in self.epochs)

    def seconds_to_best(self) -> float:
        """Seconds up to the end of the best epoch: what a run needs once it knows when to stop."""
        last = self.best_epoch or len(self.epochs)
        return sum(e["seconds"] for e in self.epochs[:last])

    def time_to_accuracy(self, target: float) -> float | None:
        """Seconds until val accuracy first reached ``target`` (None if it never did)."""
        total = 0.0
        for e in self.epochs:
            total += e["seconds"]
            if e.get("val_accuracy") is not None and e["val_accuracy"] >= target:
                return total
        return None

    def to_frame(self):
        """The per-epoch records as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.epochs)


def default_loss(outputs: Any, targets: torch.Tensor, criterion: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy on the logits; a tuple ``(logits, *aux)`` adds 0.3 x each auxiliary loss.

    That is GoogLeNet's weighting of its auxiliary classifiers (Szegedy et al. 2015), which
    Inception-v3 also uses.  Returns ``(loss, logits)``: logits ``(B, classes)`` for accuracy.
    """
    if isinstance(outputs, torch.Tensor):
        return criterion(outputs, targets), outputs
    main, *aux = outputs
    return criterion(main, targets) + 0.3 * sum(criterion(a, targets) for a in aux), main


# ----------------------------------------------------------------------------- distributed
def init_distributed() -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes; return ``(rank, world_size)``.

    Outside torchrun this returns ``(0, 1)`` and does nothing.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        use_cuda = torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DistributedDataParallel wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# ----------------------------------------------------------------------------- evaluation
@torch.inference_mode()
def evaluate(model: nn.Module, data: DeviceLoader, *, loss_fn: LossFn | None = None,
             amp: bool = True) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` (in eval mode) over every batch of ``data``."""
    was_training = model.training
    model.eval()
    device = data.device
    criterion = nn.CrossEntropyLoss()
    compute_loss = loss_fn or (lambda outputs, targets: default_loss(outputs, targets, criterion))
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    for x, y in data:
        with autocast(device, amp):
            loss, logits = compute_loss(model(x), y)
        loss_sum += loss.float() * len(y)
        correct += (logits.argmax(1) == y).sum()
        n += len(y)
    model.train(was_training)
    return {"loss": loss_sum.item() / max(n, 1), "accuracy": correct.item() / max(n, 1), "n": n}


# ----------------------------------------------------------------------------- checkpoints
def load_checkpoint(path: str | os.PathLike, *, expected_format: str = CHECKPOINT_FORMAT) -> dict:
    """Read a checkpoint that ``fit`` (or another ``save_checkpoint`` caller) wrote; see ``checkpoint``."""
    return checkpoint.load_checkpoint(path, expected_format=expected_format)


def _fingerprint(model: nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def _check_compatible(state: dict, model: nn.Module, config: TrainConfig, path) -> None:
    mine, theirs = _fingerprint(model), state["fingerprint"]
    if mine != theirs:
        missing = sorted(set(mine) ^ set(theirs))[:3]
        shapes = [k for k in mine if k in theirs and mine[k] != theirs[k]][:3]
        detail = f"different tensors {missing}" if missing else f"different shapes at {shapes}"
        raise CheckpointError(
            f"checkpoint {path} was saved for another model ({detail}). "
            "Use a new checkpoint path for this model, or delete the old file."
        )
    saved = state["config"]
    diff = [f"{k}: {saved.get(k)!r} -> {getattr(config, k)!r}" for k in _TRAJECTORY_FIELDS
            if saved.get(k) != getattr(config, k)]
    if diff:
        raise CheckpointError(
            f"checkpoint {path} was saved with another training config ({'; '.join(diff)}), so resuming "
            "would not continue the same run. Restore those settings, or use a new checkpoint path."
        )


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


# ----------------------------------------------------------------------------- the loop
def _make_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=True,
                               weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _make_schedule(optimizer, config: TrainConfig, total_steps: int):
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=total_steps, pct_start=config.warmup_fraction,
            cycle_momentum=config.optimizer == "sgd")
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def fit(model: nn.Module, train: DeviceLoader, val: DeviceLoader | None = None,
        config: TrainConfig | None = None, *, loss_fn: LossFn | None = None,
        on_epoch_end: Callable[[int, dict], None] | None = None) -> History:
    """Train ``model`` on ``train``; evaluate on ``val`` after every epoch.

    model: any module mapping a batch ``(B, C, H, W)`` to logits ``(B, classes)``, or to a tuple
        ``(logits, *aux)`` in training mode (GoogLeNet, Inception-v3).
    train, val: ``DeviceLoader``s on the device the model should run on.
    loss_fn: ``(outputs, targets) -> (loss, logits)``; the default is ``default_loss``.
    on_epoch_end: called as ``on_epoch_end(epoch, record)`` after the epoch's checkpoint is saved.
    Returns the ``History``; the model is left trained (with the best val weights if
    ``config.restore_best``) and in eval mode.
    Raises ``NonFiniteLossError`` naming the step where the loss became NaN or infinite.
    """
    config = config or TrainConfig()
    config.validate()
    rank, world = init_distributed()
    device = get_device(config.device) if config.device else train.device
    if train.device != device:
        raise ValueError(f"the training data lives on {train.device} but config.device is {device}; "
                         "build the DeviceLoader with device=config.device")
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    loader = train.view(batch_size=config.batch_size, rank=rank, world_size=world)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (all frozen?)")
    optimizer = _make_optimizer(params, config)
    scheduler = _make_schedule(optimizer, config, config.epochs * len(loader))
    use_fp16 = config.amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=use_fp16)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    compute_loss = loss_fn or (lambda outputs, targets: default_loss(outputs, targets, criterion))

    history = History(device=device_name(device))
    best_state, start_epoch, since_best = None, 0, 0
    if config.checkpoint and Path(config.checkpoint).exists():
        state = load_checkpoint(config.checkpoint)
        _check_compatible(state, model, config, config.checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        history.epochs = list(state["history"])
        history.best_epoch, history.best_val_accuracy = state["best_epoch"], state["best_val_accuracy"]
        best_state, start_epoch, since_best = state["best_state"], state["epoch"], state["since_best"]
        history.stopped_early = state.get("stopped_early", False)
        if history.stopped_early:
            start_epoch = config.epochs  # the finished run stopped early: nothing left to do

    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    # Host syncs stall the GPU pipeline, so on CUDA the NaN check runs every few steps.
    check_every = 1 if device.type == "cpu" else 50
    bar = None
    if config.progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.epochs * len(loader), initial=start_epoch * len(loader), desc="fit", leave=False)
    try:
        for epoch in range(start_epoch, config.epochs):
            loader.set_epoch(epoch)
            net.train()
            synchronize(device)
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            first_bad = torch.full((), -1, device=device, dtype=torch.long)
            seen = 0
            for step, (x, y) in enumerate(loader):
                with autocast(device, config.amp):
                    loss, logits = compute_loss(net(x), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                detached = loss.detach().float()
                first_bad = torch.where((first_bad < 0) & ~torch.isfinite(detached), step, first_bad)
                loss_sum += detached * len(y)
                correct += (logits.detach().argmax(1) == y).sum()
                seen += len(y)
                if (step + 1) % check_every == 0 or step + 1 == len(loader):
                    _raise_if_nonfinite(first_bad, epoch, len(loader), config)
                if bar is not None:
                    bar.update(1)
            totals = torch.stack([loss_sum, correct.float(), torch.tensor(float(seen), device=device)])
            if world > 1:
                dist.all_reduce(totals)
            synchronize(device)
            train_seconds = time.perf_counter() - t0
            record = {"epoch": epoch + 1, "train_loss": totals[0].item() / totals[2].item(),
                      "train_accuracy": totals[1].item() / totals[2].item(),
                      "lr": optimizer.param_groups[0]["lr"], "train_seconds": train_seconds}
            t1 = time.perf_counter()
            if val is not None:
                # every rank evaluates the whole val set, so all agree on early stopping
                result = evaluate(model, val, loss_fn=loss_fn, amp=config.amp)
                record.update(val_loss=result["loss"], val_accuracy=result["accuracy"])
                if history.best_val_accuracy is None or result["accuracy"] > history.best_val_accuracy:
                    history.best_val_accuracy, history.best_epoch, since_best = result["accuracy"], epoch + 1, 0
                    if config.restore_best:
                        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    since_best += 1
            record["seconds"] = train_seconds + (time.perf_counter() - t1)
            record["cumulative_seconds"] = history.seconds + record["seconds"]
            history.epochs.append(record)
            if bar is not None:
                bar.set_postfix({k: round(v, 4) for k, v in record.items() if k.startswith(("train_l", "val_acc"))})
            history.stopped_early = config.patience is not None and since_best >= config.patience
            if config.checkpoint and rank == 0:
                save_checkpoint({
                    "format": CHECKPOINT_FORMAT, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": _rng_state(),
                    "epoch": epoch + 1, "history": history.epochs, "best_epoch": history.best_epoch,
                    "best_val_accuracy": history.best_val_accuracy, "best_state": best_state,
                    "since_best": since_best, "stopped_early": history.stopped_early,
                    "fingerprint": _fingerprint(model), "config": asdict(config)}, config.checkpoint)
            if world > 1:
                dist.barrier()
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, record)
            if history.stopped_early:
                break
    finally:
        if bar is not None:
            bar.close()
    if best_state is not None and config.restore_best:
        model.load_state_dict(best_state)
    model.eval()
    return history


def _raise_if_nonfinite(first_bad: torch.Tensor, epoch: int, steps_per_epoch: int, config: TrainConfig) -> None:
    bad = int(first_bad.item())
    if bad >= 0:
        raise NonFiniteLossError(
            f"the loss became NaN or infinite at epoch {epoch + 1}, step {bad + 1} of {steps_per_epoch} "
            f"(global step {epoch * steps_per_epoch + bad + 1}). Lower the learning rate (now {config.lr}), "
            "check the inputs for NaNs, or add gradient clipping. The last checkpoint, if any, is from "
            "before this epoch."
        )


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def set_trainable(module: nn.Module, trainable: bool) -> nn.Module:
    """Freeze or unfreeze every parameter of ``module``; returns it."""
    for p in module.parameters():
        p.requires_grad_(trainable)
    return module


__all__ = ["TrainConfig", "History", "fit", "evaluate", "default_loss", "autocast", "save_checkpoint", "load_checkpoint",
           "init_distributed", "unwrap", "count_parameters", "set_trainable"]
