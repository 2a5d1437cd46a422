"""SpeedyCNet's cascade trainer: learners trained in turn, each on the training data still hard.

Stage k (``_train_stage``): fit learner k with every earlier learner frozen, on the samples not yet removed;
calibrate its removal threshold on the val samples that reach it; pre-classify the remaining training
samples and remove the confident ones (caching feature maps for the next stage).  ``train_cascade`` is the
loop over the stages.  Under ``torchrun`` rank 0's threshold and removal mask are broadcast.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn

from .. import exits
from ..data import DeviceLoader
from ..device import autocast, device_name, get_device, stopwatch
from ..errors import CourseError, ThresholdError, UnknownNameError
from ..exits import ExitNetwork, ExitPolicy
from ..train import History, TrainConfig, fit, init_distributed, set_trainable
from .removal import REMOVAL_RULES, removal_mask, removal_threshold

if TYPE_CHECKING:
    import pandas as pd


# ----------------------------------------------------------------------------- records
@dataclass
class StageRecord:
    """What happened at one stage of the cascade."""

    stage: int  # 1-based learner number
    samples_in: int  # training samples learner k trained on
    removed: int  # of those, removed after its pre-classification
    removed_wrong: int  # removed although learner k's prediction was wrong
    epochs: int
    best_epoch: int | None
    batch_size: int
    threshold: float | None  # the removal/exit threshold of head k (None: removes nothing)
    fit_seconds: float  # train.fit, including its per-epoch val evaluation
    calibrate_seconds: float  # learner k over the remaining val samples, choosing the threshold
    preclassify_seconds: float  # learner k over the remaining training samples (and feature caching)
    val_in: int = 0
    val_removed: int = 0
    val_removed_wrong: int = 0
    val_accuracy: float | None = None  # learner k on the val samples that reached it
    cascade_val_accuracy: float | None = None  # learners 1..k as a cascade (k final), on all val
    cache_bytes: int = 0  # cached feature maps kept for the next stage (train + val)
    cache_peak_bytes: int = 0  # during the pass: the previous cache plus all new feature maps, before removal
    trainable_parameters: int = 0
    disagreements: int = 0  # DDP: samples where some rank's own removal decision differed from rank 0's

    @property
    def seconds(self) -> float:
        """Every pass this stage needed."""
        return self.fit_seconds + self.calibrate_seconds + self.preclassify_seconds


@dataclass
class CascadeResult:
    """The trained cascade, its thresholds, and what each stage cost."""

    net: ExitNetwork
    policy: ExitPolicy  # the exit rule: used for removal in training and for inference
    stages: list[StageRecord]
    removed_at: torch.Tensor  # (N_train,) long: 0-based stage whose learner removed the sample; -1 never
    val_removed_at: torch.Tensor  # (N_val,) the same for the val split
    trained_on: list[torch.Tensor]  # per stage: indices (into the training set) learner k trained on
    histories: list[History]
    timeline: list[dict] = field(default_factory=list)  # per epoch: stage, epoch, seconds, cascade_val_accuracy
    device: str = ""
    setup_seconds: float = 0.0  # moving the data to the device once
    removed_prediction: torch.Tensor | None = None  # (N_train,) long: the removing learner's class; -1 never removed

    @property
    def seconds(self) -> float:
        """Total training wall-clock: every stage's fit, calibration and pre-classification passes."""
        return self.setup_seconds + sum(s.seconds for s in self.stages)

    @property
    def thresholds(self) -> list[float | None]:
        return self.policy.resolved(self.net.num_exits)

    def time_to_accuracy(self, target: float) -> float | None:
        """Seconds until the cascade so far (learners 1..k, k final) first reached ``target`` val accuracy."""
        for point in self.timeline:
            if point["cascade_val_accuracy"] is not None and point["cascade_val_accuracy"] >= target:
                return point["seconds"]
        return None

    def to_frame(self) -> "pd.DataFrame":
        """One row per stage (a pandas DataFrame), with ``seconds`` and ``removed_fraction``."""
        import pandas as pd

        rows = []
        for s in self.stages:
            row = dict(vars(s))
            row["seconds"] = s.seconds
            row["removed_fraction"] = s.removed / s.samples_in if s.samples_in else 0.0
            rows.append(row)
        return pd.DataFrame(rows)


@dataclass
class CascadeConfig:
    """Every knob of ``train_cascade``.

    train: one ``TrainConfig`` for every stage, or one per stage (epochs, lr, patience, seed, device).
    policy: the exit rule, ``"max_softmax"`` or ``"entropy"`` (``exits``' policies).
    thresholds: fixed thresholds (one shared value or one per early exit; None disables an exit), or
        None to calibrate each learner's threshold on the val split to ``removal_precision``.
    removal: ``"confident"`` (the inference rule) or ``"confident_correct"``; the ablations ``"random"`` (as
        many samples, chosen at random) and ``"none"`` (nothing removed). Val always follows the inference rule.
    cache_features: keep the remaining samples' feature maps so frozen stages are not recomputed.
    cache_dtype: dtype of cached features (None: as computed; bf16 halves the memory on a GPU).
    grid: thresholds ``removal_threshold`` tries (None: ``REMOVAL_GRID``).
    min_batch_size: None, or let later stages' batches shrink with their data (see the field below).
    """

    train: TrainConfig | Sequence[TrainConfig] = field(default_factory=TrainConfig)
    policy: str = "max_softmax"
    thresholds: exits.Thresholds = None
    removal_precision: float = 0.995
    # The removal precision is certified by a one-sided Clopper-Pearson lower bound at this level on the val
    # samples a threshold removes, not by a point estimate over a handful of them (None: the point estimate).
    removal_confidence: float | None = 0.95
    removal: str = "confident"
    cache_features: bool = True
    cache_dtype: torch.dtype | None = None
    grid: Sequence[float] | None = None
    chunk_size: int = 1024  # samples per pre-classification batch
    min_samples: int = 16  # stop the cascade when fewer training samples than this remain
    # None: every stage uses its TrainConfig's batch size.  A number: stage k's batch shrinks with its data,
    # batch_k = batch * n_k / n_1 (so every stage takes about as many steps per epoch as stage 1), but never
    # below min_batch_size; without it a learner that sees 5 % of the data gets 5 % of the optimizer steps.
    min_batch_size: int | None = None
    amp: bool = True  # bf16/fp16 autocast for the passes on CUDA

    def stage_config(self, k: int) -> TrainConfig:
        if isinstance(self.train, TrainConfig):
            return self.train
        return list(self.train)[k]

    def validate(self, num_exits: int) -> list[float | None] | None:
        """Check every option; return the fixed per-early-exit thresholds (None: calibrate)."""
        if self.policy not in ("max_softmax", "entropy"):
            raise ThresholdError(
                f"the cascade removes samples learner by learner, so its policy must decide from one head's "
                f"logits: use 'max_softmax' or 'entropy', not {self.policy!r}.")
        if self.removal not in REMOVAL_RULES:
            raise UnknownNameError(f"unknown removal rule {self.removal!r}. Use one of: {', '.join(REMOVAL_RULES)}.")
        if not isinstance(self.train, TrainConfig) and len(list(self.train)) != num_exits:
            raise CourseError(f"got {len(list(self.train))} TrainConfigs for {num_exits} learners; "
                              "give one shared TrainConfig or one per learner.")
        if self.min_batch_size is not None and self.min_batch_size < 1:
            raise CourseError(f"min_batch_size must be None or >= 1, got {self.min_batch_size!r}.")
        exits.RemovalPrecision(self.removal_precision, self.removal_confidence)  # raises ThresholdError out of range
        if self.thresholds is None:
            return None
        return exits.make_policy(self.policy, self.thresholds).resolved(num_exits)



# ----------------------------------------------------------------------------- the trainer's pieces
class _StageModel(nn.Module):
    """What ``fit`` trains at stage k: frozen earlier stages (kept in eval mode), stage k, head k."""

    def __init__(self, frozen: Sequence[nn.Module], stage: nn.Module, head: nn.Module):
        super().__init__()
        self.frozen = nn.Sequential(*frozen)
        self.stage, self.head = stage, head

    def train(self, mode: bool = True) -> "_StageModel":
        super().train(mode)
        self.frozen.eval()  # frozen BatchNorm keeps its running statistics
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.frozen):
            with torch.no_grad():
                x = self.frozen(x)
        return self.head(self.stage(x))


@torch.no_grad()
def _pass(modules: Sequence[nn.Module], head: nn.Module, source: torch.Tensor, normalise: DeviceLoader | None,
          chunk: int, keep: bool, amp: bool, cache_dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run ``modules`` then ``head`` over ``source`` in chunks: logits ``(N, C)`` float and, if ``keep``, features."""
    device = source.device
    logits, feats = [], []
    for start in range(0, len(source), chunk):
        x = source[start:start + chunk]
        if normalise is not None:
            x = normalise.transform(x)
        with autocast(device, amp):
            for m in modules:
                x = m(x)
            out = head(x)
        logits.append(out.float())
        if keep:
            feats.append(x.to(cache_dtype) if cache_dtype is not None else x)
    if not logits:
        return torch.empty(0, 0, device=device), None
    return torch.cat(logits), (torch.cat(feats) if keep else None)


def _distributed() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def _broadcast(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Rank 0's copy of ``t`` on every rank (on ``device``: nccl only moves CUDA tensors)."""
    t = t.to(device)
    if _distributed():
        dist.broadcast(t, src=0)
    return t


def drop_last_batch(n: int, batch_size: int, world: int) -> bool:
    """Drop a last batch of exactly one sample: BatchNorm cannot train on one sample of a 1x1 map."""
    return (n // max(world, 1)) % batch_size == 1 and n // max(world, 1) > batch_size


def _nbytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


@dataclass
class _Run:
    """What every stage reads: the net, the data on the device, the options."""

    net: ExitNetwork
    dataset: str
    config: CascadeConfig
    fixed: list[float | None] | None  # fixed thresholds, or None: calibrate
    device: torch.device
    world: int
    images: torch.Tensor
    labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    normalise: DeviceLoader


@dataclass
class _Progress:
    """What the stages change: who is still in the cascade, the caches, the thresholds, the records."""

    alive: torch.Tensor  # indices of the training samples still in the cascade
    alive_val: torch.Tensor
    removed_at: torch.Tensor  # (N_train,) 0-based stage that removed the sample, -1 never
    removed_prediction: torch.Tensor  # (N_train,) the class the removing learner predicted, -1 never removed
    val_removed_at: torch.Tensor
    thresholds: list[float | None]
    feats: torch.Tensor | None = None  # cached h_{k-1} of the alive samples; None: start from raw pixels
    feats_val: torch.Tensor | None = None
    val_correct_removed: int = 0  # val samples that exited at an earlier head with the right class
    elapsed: float = 0.0
    stages: list[StageRecord] = field(default_factory=list)
    histories: list[History] = field(default_factory=list)
    trained_on: list[torch.Tensor] = field(default_factory=list)
    timeline: list[dict] = field(default_factory=list)


@dataclass
class _Pass:
    """Learner k's pass over val, kept for the removal decision."""

    logits: torch.Tensor | None = None  # (N_val_in, C)
    labels: torch.Tensor | None = None
    feats: torch.Tensor | None = None


# ----------------------------------------------------------------------------- one stage
def _stage_config(run: _Run, progress: _Progress, k: int) -> TrainConfig:
    """Stage k's TrainConfig; with ``min_batch_size`` its batch shrinks with the data left."""
    cfg = run.config.stage_config(k)
    if run.config.min_batch_size is not None and k > 0:
        scaled = round(cfg.batch_size * len(progress.alive) / len(run.labels))
        cfg = replace(cfg, batch_size=max(run.config.min_batch_size, min(cfg.batch_size, scaled)))
    return cfg


def _stage_loaders(run: _Run, progress: _Progress, cfg: TrainConfig, k: int):
    """Train and val loaders of stage k: cached feature maps, or raw pixels through the frozen stages."""
    alive, alive_val, world = progress.alive, progress.alive_val, run.world
    drop = drop_last_batch(len(alive), cfg.batch_size, world)
    eval_batch = max(cfg.batch_size, 256)
    if progress.feats is not None:
        train_loader = DeviceLoader(progress.feats, run.labels[alive], batch_size=cfg.batch_size, shuffle=True,
                                    device=run.device, seed=cfg.seed + k, drop_last=drop)
        val_loader = DeviceLoader(progress.feats_val, run.val_labels[alive_val], batch_size=eval_batch,
                                  device=run.device) if len(alive_val) else None
        return train_loader, val_loader
    train_loader = DeviceLoader.for_dataset(run.dataset, run.images[alive], run.labels[alive], train=True,
                                            batch_size=cfg.batch_size, device=run.device, seed=cfg.seed + k,
                                            drop_last=drop)
    val_loader = DeviceLoader.for_dataset(run.dataset, run.val_images[alive_val], run.val_labels[alive_val],
                                          train=False, batch_size=eval_batch, device=run.device) \
        if len(alive_val) else None
    return train_loader, val_loader


def _fit_stage(run: _Run, progress: _Progress, k: int, cfg: TrainConfig) -> StageRecord:
    """Train learner k (stage k + head k), every other parameter frozen; start its record."""
    net = run.net
    set_trainable(net, False)
    set_trainable(net.stages[k], True)
    set_trainable(net.heads[k], True)
    frozen = [] if progress.feats is not None else list(net.stages[:k])
    model = _StageModel(frozen, net.stages[k], net.heads[k])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    progress.trained_on.append(progress.alive.cpu())
    n_val_in, n_val = len(progress.alive_val), len(run.val_labels)

    def on_epoch_end(epoch: int, record: dict, before: float = progress.elapsed,
                     correct_before: int = progress.val_correct_removed) -> None:
        acc = record.get("val_accuracy")
        cascade = None if acc is None else (correct_before + acc * n_val_in) / max(n_val, 1)
        progress.timeline.append({"stage": k + 1, "epoch": epoch, "seconds": before + record["cumulative_seconds"],
                                  "cascade_val_accuracy": cascade})

    with stopwatch(run.device) as watch:  # the loaders' set-up counts too
        train_loader, val_loader = _stage_loaders(run, progress, cfg, k)
        history = fit(model, train_loader, val_loader, cfg, on_epoch_end=on_epoch_end)
    progress.histories.append(history)
    return StageRecord(stage=k + 1, samples_in=len(progress.alive), removed=0, removed_wrong=0,
                       epochs=len(history.epochs), best_epoch=history.best_epoch, threshold=None,
                       fit_seconds=watch.seconds, calibrate_seconds=0.0, preclassify_seconds=0.0,
                       val_in=n_val_in, trainable_parameters=trainable, batch_size=cfg.batch_size)


def _stage_modules(run: _Run, progress: _Progress, k: int) -> list[nn.Module]:
    """What a pass of stage k runs before head k: stage k on cached features, else stages 0..k."""
    return [run.net.stages[k]] if progress.feats is not None else list(run.net.stages[:k + 1])


def _keep_features(run: _Run, progress: _Progress, k: int) -> bool:
    """Cache stage k's feature maps for stage k+1 (never after the last stage, nor for identity stages)."""
    last = k == run.net.num_exits - 1
    modules = _stage_modules(run, progress, k)
    return run.config.cache_features and not last and not all(isinstance(m, nn.Identity) for m in modules)


def _val_pass(run: _Run, progress: _Progress, k: int, record: StageRecord, cfg: TrainConfig) -> _Pass:
    """Learner k's accuracy on the val samples that reach it, and its cascade's (learners 1..k, k final)."""
    n_val_in, n_val = record.val_in, len(run.val_labels)
    if k == run.net.num_exits - 1:  # fit's final val evaluation already measured the last learner
        history = progress.histories[-1]
        best = history.best_val_accuracy if cfg.restore_best else None
        record.val_accuracy = best if best is not None else (
            history.epochs[-1].get("val_accuracy") if history.epochs else None)
        result, correct_k = _Pass(), None if record.val_accuracy is None else round(record.val_accuracy * n_val_in)
    elif n_val_in:
        cached = progress.feats is not None
        source = progress.feats_val if cached else run.val_images[progress.alive_val]
        logits, feats = _pass(_stage_modules(run, progress, k), run.net.heads[k], source,
                              None if cached else run.normalise, run.config.chunk_size,
                              _keep_features(run, progress, k), run.config.amp, run.config.cache_dtype)
        result = _Pass(logits, run.val_labels[progress.alive_val], feats)
        correct_k = int((logits.argmax(1) == result.labels).sum())
        record.val_accuracy = correct_k / n_val_in
    else:
        result, correct_k = _Pass(), None
    if record.val_accuracy is not None and n_val:
        record.cascade_val_accuracy = (progress.val_correct_removed + correct_k) / n_val
    return result


def _calibrate_stage(run: _Run, progress: _Progress, k: int, record: StageRecord, cfg: TrainConfig) -> None:
    """Learner k's val pass, its threshold (fixed, or calibrated to ``removal_precision``), val removal."""
    config = run.config
    val = _val_pass(run, progress, k, record, cfg)
    if k == run.net.num_exits - 1:
        return
    if run.fixed is not None:
        tau = run.fixed[k]
    elif val.logits is not None:
        tau = removal_threshold(val.logits, val.labels, config.policy, config.removal_precision, config.grid,
                                config.removal_confidence)
    else:
        tau = None
    tau_t = _broadcast(torch.tensor(-1.0 if tau is None else tau, dtype=torch.float64), run.device)
    tau = None if tau_t.item() < 0 else float(tau_t.item())
    progress.thresholds[k] = record.threshold = tau
    if val.logits is None:
        return
    policy = exits.make_policy(config.policy, progress.thresholds)
    vmask = removal_mask(val.logits, val.labels, policy, k, "confident")  # the inference rule
    vcorrect = val.logits.argmax(1) == val.labels
    record.val_removed = int(vmask.sum())
    record.val_removed_wrong = int((vmask & ~vcorrect).sum())
    progress.val_correct_removed += int((vmask & vcorrect).sum())
    progress.val_removed_at[progress.alive_val[vmask].cpu()] = k
    progress.alive_val = progress.alive_val[~vmask]
    progress.feats_val = val.feats[~vmask] if _keep_features(run, progress, k) else None


def _preclassify_stage(run: _Run, progress: _Progress, k: int, record: StageRecord) -> None:
    """Learner k over the remaining training samples: remove the confident ones, cache the others' features."""
    config, cached, keep = run.config, progress.feats is not None, _keep_features(run, progress, k)
    source = progress.feats if cached else run.images[progress.alive]
    logits, kept = _pass(_stage_modules(run, progress, k), run.net.heads[k], source,
                         None if cached else run.normalise, config.chunk_size, keep, config.amp, config.cache_dtype)
    y = run.labels[progress.alive]
    # the random ablation draws from the stage's own seed, so a rerun removes the same samples
    draw = torch.Generator().manual_seed(1000 * run.config.stage_config(k).seed + k)
    local = removal_mask(logits, y, exits.make_policy(config.policy, progress.thresholds), k, config.removal, draw)
    mask = _broadcast(local.to(torch.uint8), run.device).bool()
    diff = (mask != local).sum()
    if _distributed():
        dist.all_reduce(diff)
    record.disagreements = int(diff)
    record.removed = int(mask.sum())
    record.removed_wrong = int((mask & (logits.argmax(1) != y)).sum())
    progress.removed_at[progress.alive[mask].cpu()] = k
    progress.removed_prediction[progress.alive[mask].cpu()] = logits.argmax(1)[mask].cpu()
    progress.alive = progress.alive[~mask]
    if keep:  # the pass held the previous cache and every remaining sample's new features at once
        record.cache_peak_bytes = _nbytes(source if cached else None, kept, progress.feats_val)
    progress.feats = kept[~mask] if keep else None
    record.cache_bytes = _nbytes(progress.feats, progress.feats_val)


def _train_stage(run: _Run, progress: _Progress, k: int) -> StageRecord:
    """Stage k: fit learner k, calibrate its threshold on val, pre-classify and remove; every pass timed."""
    cfg = _stage_config(run, progress, k)
    record = _fit_stage(run, progress, k, cfg)
    with stopwatch(run.device) as watch:
        _calibrate_stage(run, progress, k, record, cfg)
    record.calibrate_seconds = watch.seconds
    with stopwatch(run.device) as watch:
        if k < run.net.num_exits - 1:
            _preclassify_stage(run, progress, k, record)
    record.preclassify_seconds = watch.seconds
    progress.elapsed += record.seconds
    progress.stages.append(record)
    return record


# ----------------------------------------------------------------------------- the loop
def train_cascade(net: ExitNetwork, dataset: str, train: tuple[torch.Tensor, torch.Tensor],
                  val: tuple[torch.Tensor, torch.Tensor], config: CascadeConfig | None = None) -> CascadeResult:
    """Train ``net``'s learners in turn, each on the training samples the earlier ones did not remove.

    train, val: uint8 images ``(N, C, H, W)`` and labels ``(N,)`` (``data.load``); ``dataset`` names the
        normalisation (and augmentation) to use.  Thresholds are calibrated on ``val``, never test.
    Returns a ``CascadeResult``: the trained net (eval mode), the exit policy, per-stage records.
    """
    config = config or CascadeConfig()
    num = net.num_exits
    fixed = config.validate(num)
    _, world = init_distributed()
    device = get_device(config.stage_config(0).device) if config.stage_config(0).device else get_device()
    with stopwatch(device) as setup:
        net.to(device)
        images, labels = train[0].to(device), train[1].to(device)
        val_images, val_labels = val[0].to(device), val[1].to(device)
        normalise = DeviceLoader.for_dataset(dataset, images[:1], labels[:1], train=False, device=device)
    run = _Run(net, dataset, config, fixed, device, world, images, labels, val_images, val_labels, normalise)
    progress = _Progress(alive=torch.arange(len(labels), device=device),
                         alive_val=torch.arange(len(val_labels), device=device),
                         removed_at=torch.full((len(labels),), -1, dtype=torch.long),
                         removed_prediction=torch.full((len(labels),), -1, dtype=torch.long),
                         val_removed_at=torch.full((len(val_labels),), -1, dtype=torch.long),
                         thresholds=[None] * (num - 1), elapsed=setup.seconds)
    for k in range(num):
        record = _train_stage(run, progress, k)
        if k < num - 1 and len(progress.alive) < max(config.min_samples, 2 * world):
            # (almost) nothing left to train on: later learners stay untrained, so everything exits here
            progress.thresholds[k] = record.threshold = 0.0 if config.policy == "max_softmax" else 1.0
            break
    set_trainable(net, True)
    net.eval()
    policy = exits.make_policy(config.policy, progress.thresholds)
    return CascadeResult(net=net, policy=policy, stages=progress.stages, removed_at=progress.removed_at,
                         val_removed_at=progress.val_removed_at, trained_on=progress.trained_on,
                         histories=progress.histories, timeline=progress.timeline, device=device_name(device),
                         setup_seconds=setup.seconds, removed_prediction=progress.removed_prediction)
