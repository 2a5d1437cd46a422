"""One readable training loop: ``fit``, ``evaluate``, atomic checkpoints, resume, and DDP.

    config = TrainConfig(epochs=10, batch_size=128, lr=0.05)
    history = fit(model, train_loader, val_loader, config)

``train`` and ``val`` are ``data.DeviceLoader``s (their data already sits on the device).
Every epoch is checkpointed atomically when ``config.checkpoint`` is set, and a later call with
the same checkpoint resumes where the last one stopped: on the CPU, an interrupted-and-resumed run
ends with exactly the weights of an uninterrupted one, because each epoch's data order derives from
(seed, epoch) and the RNG states are saved.

Under ``torchrun`` (``WORLD_SIZE`` > 1) ``fit`` joins the process group (gloo on CPU, nccl on GPU),
wraps the model in DistributedDataParallel and shards each batch stream by rank; after every epoch
``sync_buffers`` gives all ranks the same BatchNorm statistics, so they evaluate the same model.

Each epoch's record holds wall-clock ``seconds`` (``train_seconds`` of them training) and the
process's ``cpu_seconds`` (``train_cpu_seconds``), both from ``device.stopwatch``.
"""
from __future__ import annotations

import math
import os
import random
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn as nn

from .data import DeviceLoader
from .distributed import barrier, init_distributed, is_distributed, sync_buffers, unwrap, wrap_ddp  # noqa: F401 (unwrap re-exported)
from . import checkpoint
from .checkpoint import save_checkpoint
from .device import autocast, device_name, get_device, stopwatch
from .ema import WeightEMA
from .history import History
from .errors import NonFiniteLossError, UnknownNameError

CHECKPOINT_FORMAT = "course_utils.fit/1"
SCHEDULES = ("onecycle", "cosine", "step", "constant", "plateau")
PRECISIONS = ("auto", "fp32", "bf16")
LossFn = Callable[[Any, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]
NAN_CHECK_EVERY_CUDA = 50  # steps between NaN checks on CUDA, where reading the loss stalls the pipeline (CPU: 1)


@dataclass
class TrainConfig:
    """Every knob of ``fit`` in one visible place."""

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum) or "adamw"
    lr: float = 0.05  # peak learning rate
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # "onecycle", "cosine", "step" (x0.1 at 50% and 75%) or "constant"; per batch;
    #   or "plateau": constant, x0.1 each time val accuracy has not improved for `patience` epochs (at most
    #   `plateau_decays` times), then early stopping: the rate anneals, yet training lasts only as long as it needs
    warmup_fraction: float = 0.2  # onecycle's rising part
    label_smoothing: float = 0.0
    seed: int = 0
    patience: int | None = None  # stop when val accuracy has not improved for this many epochs
    plateau_decays: int = 2  # schedule "plateau": learning-rate decays before the stop
    restore_best: bool = True  # with a val set: end with the weights of the best val epoch
    device: str | None = None  # None: CUDA when available, else CPU (see device.get_device)
    amp: bool = True  # False: fp32 everywhere, whatever `precision` says
    precision: str = "auto"  # "auto": bf16/fp16 on CUDA, fp32 on the CPU; "bf16" or "fp32" anywhere.
    #   Choose "bf16" on a CPU only where precision.choose_precision measured it faster (AMX, not depthwise).
    channels_last: bool | None = None  # None: on CUDA or with bf16 (the layout the fast kernels want)
    ema_decay: float | None = None  # evaluate and keep an EMA of the weights (per-step decay), e.g. 0.99
    ema_every: int = 1  # update the EMA every this many steps (decay ** every each time)
    tta_flip: bool = False  # evaluate on the image and its mirror, averaging the logits (natural images)
    checkpoint: str | None = None  # path; written every epoch, resumed from when present
    progress: bool = True  # a tqdm bar

    def validate(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise UnknownNameError(f"unknown optimizer {self.optimizer!r}. Use 'sgd' or 'adamw'.")
        if self.schedule not in SCHEDULES:
            raise UnknownNameError(f"unknown schedule {self.schedule!r}. Use one of: {', '.join(SCHEDULES)}.")
        if self.precision not in PRECISIONS:
            raise UnknownNameError(f"unknown precision {self.precision!r}. Use one of: {', '.join(PRECISIONS)}.")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay}")
        if self.schedule == "plateau" and (self.patience is None or self.patience < 1 or self.plateau_decays < 0):
            raise ValueError("schedule 'plateau' decays the rate when val accuracy stalls for `patience` epochs: "
                             "set patience >= 1 (and plateau_decays >= 0), or use schedule 'constant'")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError("epochs and batch_size must be >= 1 and lr > 0")


# What must match for a checkpoint to continue the same run (others, like `progress`, may change).
_TRAJECTORY_FIELDS = ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule",
                      "warmup_fraction", "label_smoothing", "seed", "patience", "precision", "ema_decay",
                      "ema_every", "tta_flip", "plateau_decays")


def amp_dtype(config: TrainConfig, device: torch.device) -> tuple[bool, torch.dtype | None]:
    """``(enabled, dtype)`` for ``device.autocast``: what ``config.amp`` and ``config.precision`` ask for here."""
    if not config.amp or config.precision == "fp32":
        return False, None
    if config.precision == "bf16":
        return True, torch.bfloat16
    return device.type == "cuda", None  # auto: the CUDA default (bf16, fp16 without it); fp32 on the CPU


def uses_channels_last(config: TrainConfig, device: torch.device) -> bool:
    if config.channels_last is not None:
        return config.channels_last
    return device.type == "cuda" or amp_dtype(config, device)[1] == torch.bfloat16


def default_loss(outputs: Any, targets: torch.Tensor, criterion: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy on the logits; a tuple ``(logits, *aux)`` adds 0.3 x each auxiliary loss.

    That is GoogLeNet's weighting of its auxiliary classifiers (Szegedy et al. 2015), which
    Inception-v3 also uses.  Returns ``(loss, logits)``: logits ``(B, classes)`` for accuracy.
    """
    if isinstance(outputs, torch.Tensor):
        return criterion(outputs, targets), outputs
    main, *aux = outputs
    return criterion(main, targets) + 0.3 * sum(criterion(a, targets) for a in aux), main


# ----------------------------------------------------------------------------- evaluation
@torch.inference_mode()
def evaluate(model: nn.Module, data: DeviceLoader, *, loss_fn: LossFn | None = None,
             amp: bool = True, dtype: torch.dtype | None = None, flip: bool = False) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` (in eval mode) over every batch of ``data``.

    dtype: the autocast dtype (``None``: the device default, i.e. fp32 on the CPU).
    flip: test-time augmentation, the mean of the logits of each image and its mirror image.
    """
    was_training = model.training
    model.eval()
    device = data.device
    compute_loss = loss_fn or partial(default_loss, criterion=nn.CrossEntropyLoss())
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    for x, y in data:
        with autocast(device, amp, dtype):
            outputs = model(x)
            if flip:
                outputs = (outputs + model(x.flip(-1))) / 2
            loss, logits = compute_loss(outputs, y)
        loss_sum += loss.float() * len(y)
        correct += (logits.argmax(1) == y).sum()
        n += len(y)
    model.train(was_training)
    return {"loss": loss_sum.item() / max(n, 1), "accuracy": correct.item() / max(n, 1), "n": n}


# ----------------------------------------------------------------------------- optimisation
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
    if config.schedule == "step":  # the classic recipe: x0.1 at half and at three quarters of training
        milestones = [max(1, int(total_steps * f)) for f in (0.5, 0.75)]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


class _Stepper:
    """The optimizer, its schedule (stepped every batch), the fp16 gradient scaler and the weights' EMA, as one ``step``."""

    def __init__(self, model: nn.Module, config: TrainConfig, total_steps: int, device: torch.device):
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters (all frozen?)")
        self.optimizer = _make_optimizer(params, config)
        self.scheduler = _make_schedule(self.optimizer, config, total_steps)
        enabled, dtype = amp_dtype(config, device)
        use_fp16 = enabled and dtype is None and device.type == "cuda" and not torch.cuda.is_bf16_supported()
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_fp16)
        self.model = model
        self.ema = WeightEMA(model, config.ema_decay, config.ema_every) if config.ema_decay else None

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)

    def evaluated_weights(self):
        """A context in which the model holds the weights to evaluate: the EMA's, if there is one."""
        return self.ema.applied(self.model) if self.ema is not None else nullcontext()

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def decays(self, config: TrainConfig) -> int:
        """How many times ``decay`` has cut the rate (it lives in the scheduler's base rates, so a resume keeps it)."""
        return round(math.log10(config.lr / self.scheduler.base_lrs[0]))

    def decay(self, factor: float = 0.1) -> None:
        """Scale the rate from the next step on (schedule "plateau": a per-step LambdaLR over these base rates)."""
        self.scheduler.base_lrs = [lr * factor for lr in self.scheduler.base_lrs]
        for group in self.optimizer.param_groups:
            group["lr"] *= factor

    def state_dict(self) -> dict:
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "scaler": self.scaler.state_dict()}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])


class _EpochStats:
    """The epoch's loss and accuracy sums, and the first step whose loss was NaN or infinite.

    They stay on the device: reading them would stall the GPU pipeline at every step.
    """

    def __init__(self, device: torch.device):
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.first_bad = torch.full((), -1, device=device, dtype=torch.long)
        self.seen = 0

    def add(self, step: int, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        loss = loss.detach().float()
        self.first_bad = torch.where((self.first_bad < 0) & ~torch.isfinite(loss), step, self.first_bad)
        self.loss_sum += loss * len(y)
        self.correct += (logits.detach().argmax(1) == y).sum()
        self.seen += len(y)

    def raise_if_nonfinite(self, epoch: int, steps_per_epoch: int, lr: float) -> None:
        bad = int(self.first_bad.item())
        if bad >= 0:
            raise NonFiniteLossError(
                f"the loss became NaN or infinite at epoch {epoch + 1}, step {bad + 1} of {steps_per_epoch} "
                f"(global step {epoch * steps_per_epoch + bad + 1}). Lower the learning rate (now {lr}), "
                "check the inputs for NaNs, or add gradient clipping. The last checkpoint, if any, is from "
                "before this epoch."
            )

    def means(self) -> tuple[float, float]:
        """Mean loss and accuracy over every rank's samples."""
        seen = torch.tensor(float(self.seen), device=self.loss_sum.device)
        totals = torch.stack([self.loss_sum, self.correct.float(), seen])
        if is_distributed():
            dist.all_reduce(totals)
        loss, correct, seen = totals.tolist()
        return loss / seen, correct / seen


def _stalled(config: TrainConfig, stepper: _Stepper, best: "_Best") -> bool:
    """Early stopping: True when val accuracy has not improved for ``patience`` epochs. Under "plateau" the
    first ``plateau_decays`` stalls cut the rate instead and give it ``patience`` epochs more."""
    if config.patience is None or best.since < config.patience:
        return False
    if config.schedule == "plateau" and stepper.decays(config) < config.plateau_decays:
        stepper.decay(0.1)
        best.since = 0
        return False
    return True


@dataclass
class _Best:
    """The best val epoch's weights (kept when ``restore_best``) and the epochs since it, for early stopping."""

    state: dict | None = None
    since: int = 0

    def update(self, history: History, epoch: int, accuracy: float, model: nn.Module, keep: bool) -> None:
        if history.best_val_accuracy is None or accuracy > history.best_val_accuracy:
            history.best_val_accuracy, history.best_epoch, self.since = accuracy, epoch, 0
            if keep:
                self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.since += 1


# ----------------------------------------------------------------------------- checkpoints
def load_checkpoint(path: str | os.PathLike, *, expected_format: str = CHECKPOINT_FORMAT) -> dict:
    """Read a checkpoint that ``fit`` (or another ``save_checkpoint`` caller) wrote; see ``checkpoint``."""
    return checkpoint.load_checkpoint(path, expected_format=expected_format)


def _resume(config: TrainConfig, model: nn.Module, stepper: _Stepper, history: History, best: _Best) -> int:
    """Restore the run that ``config.checkpoint`` holds, if it exists; the epoch to start at (0: none)."""
    if not config.checkpoint or not Path(config.checkpoint).exists():
        return 0
    state = load_checkpoint(config.checkpoint)
    trajectory = {k: getattr(config, k) for k in _TRAJECTORY_FIELDS}
    defaults = TrainConfig()
    for k in _TRAJECTORY_FIELDS:  # a checkpoint from before a field existed ran with that field's default
        state["config"].setdefault(k, getattr(defaults, k))
    checkpoint.check_compatible(state, model, trajectory, config.checkpoint)
    model.load_state_dict(state["model"])
    stepper.load_state_dict(state)
    checkpoint.set_rng_state(state["rng"])
    history.epochs = list(state["history"])
    history.best_epoch, history.best_val_accuracy = state["best_epoch"], state["best_val_accuracy"]
    history.stopped_early = state.get("stopped_early", False)
    best.state, best.since = state["best_state"], state["since_best"]
    return config.epochs if history.stopped_early else state["epoch"]  # an early stop: nothing left to do


def _save(config: TrainConfig, model: nn.Module, stepper: _Stepper, history: History, best: _Best) -> None:
    """Write the run so far to ``config.checkpoint`` (atomically), all that ``_resume`` needs."""
    save_checkpoint({
        "format": CHECKPOINT_FORMAT, "model": model.state_dict(), **stepper.state_dict(),
        "rng": checkpoint.rng_state(), "epoch": len(history.epochs), "history": history.epochs,
        "best_epoch": history.best_epoch, "best_val_accuracy": history.best_val_accuracy,
        "best_state": best.state, "since_best": best.since, "stopped_early": history.stopped_early,
        "fingerprint": checkpoint.fingerprint(model), "config": asdict(config)}, config.checkpoint)


# ----------------------------------------------------------------------------- the loop
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
    ``config.restore_best``) and in eval mode.  Under DDP every rank ends with identical weights and buffers.
    Raises ``NonFiniteLossError`` naming the step where the loss became NaN or infinite.
    """
    config = config or TrainConfig()
    config.validate()
    rank, world = init_distributed()
    device = _device(train, config)
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    model.to(device)
    if uses_channels_last(config, device):
        model.to(memory_format=torch.channels_last)
    loader = train.view(batch_size=config.batch_size, rank=rank, world_size=world)
    stepper = _Stepper(model, config, config.epochs * len(loader), device)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    compute_loss = loss_fn or partial(default_loss, criterion=criterion)
    history, best = History(device=device_name(device)), _Best()
    start_epoch = _resume(config, model, stepper, history, best)
    net = wrap_ddp(model, device)
    bar = _progress_bar(config, rank, len(loader), start_epoch)
    try:
        for epoch in range(start_epoch, config.epochs):
            record = _train_epoch(net, loader, epoch, compute_loss, stepper, config, bar)
            with stopwatch(device) as watch:
                sync_buffers(model)  # DDP: every rank evaluates, and rank 0 saves, the same statistics
                if val is not None:  # every rank evaluates the whole val set, so all agree on early stopping
                    with stepper.evaluated_weights():  # the EMA's, if any: what `best` keeps too
                        result = evaluate(model, val, loss_fn=loss_fn, amp=config.amp,
                                          dtype=amp_dtype(config, device)[1], flip=config.tta_flip)
                        best.update(history, epoch + 1, result["accuracy"], model, keep=config.restore_best)
                    record.update(val_loss=result["loss"], val_accuracy=result["accuracy"])
            record["seconds"] = record["train_seconds"] + watch.seconds
            record["cpu_seconds"] = record["train_cpu_seconds"] + watch.cpu_seconds
            record["cumulative_seconds"] = history.seconds + record["seconds"]
            history.epochs.append(record)
            history.stopped_early = _stalled(config, stepper, best)
            if config.checkpoint and rank == 0:
                _save(config, model, stepper, history, best)
            barrier()  # no rank runs ahead of the checkpoint
            if bar is not None:
                bar.set_postfix({k: round(v, 4) for k, v in record.items() if k.startswith(("train_l", "val_acc"))})
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, record)
            if history.stopped_early:
                break
    finally:
        if bar is not None:
            bar.close()
    if best.state is not None and config.restore_best:
        model.load_state_dict(best.state)
    elif stepper.ema is not None:
        stepper.ema.copy_to(model)
    model.eval()
    return history


def _train_epoch(net: nn.Module, loader: DeviceLoader, epoch: int, compute_loss: LossFn, stepper: _Stepper,
                 config: TrainConfig, bar) -> dict:
    """One pass over this rank's shard of the training set: the epoch's record, loss and accuracy over all ranks."""
    device = loader.device
    check_every = 1 if device.type == "cpu" else NAN_CHECK_EVERY_CUDA
    loader.set_epoch(epoch)
    net.train()
    stats = _EpochStats(device)
    with stopwatch(device) as watch:
        for step, (x, y) in enumerate(loader):
            with autocast(device, *amp_dtype(config, device)):
                loss, logits = compute_loss(net(x), y)
            stepper.step(loss)
            stats.add(step, loss, logits, y)
            if (step + 1) % check_every == 0 or step + 1 == len(loader):
                stats.raise_if_nonfinite(epoch, len(loader), config.lr)
            if bar is not None:
                bar.update(1)
        train_loss, train_accuracy = stats.means()
    return {"epoch": epoch + 1, "train_loss": train_loss, "train_accuracy": train_accuracy, "lr": stepper.lr,
            "train_seconds": watch.seconds, "train_cpu_seconds": watch.cpu_seconds}


def _device(train: DeviceLoader, config: TrainConfig) -> torch.device:
    device = get_device(config.device) if config.device else train.device
    if train.device != device:
        raise ValueError(f"the training data lives on {train.device} but config.device is {device}; "
                         "build the DeviceLoader with device=config.device")
    return device


def _progress_bar(config: TrainConfig, rank: int, steps_per_epoch: int, start_epoch: int):
    if not config.progress or rank != 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=config.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch, desc="fit",
                leave=False)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def set_trainable(module: nn.Module, trainable: bool) -> nn.Module:
    """Freeze or unfreeze every parameter of ``module``; returns it."""
    for p in module.parameters():
        p.requires_grad_(trainable)
    return module


__all__ = ["TrainConfig", "History", "fit", "evaluate", "default_loss", "autocast", "save_checkpoint", "load_checkpoint",
           "init_distributed", "unwrap", "sync_buffers", "count_parameters", "set_trainable"]
