"""SpeedyCNet: a cascade of hierarchical learners, trained one after another on the data still hard.

The idea: some data is easy.  Four learners are trained in turn; after learner k is trained it
pre-classifies the training samples that reached it, and those it classifies confidently (by the same
rule that early exit uses at inference) are removed: learners k+1, k+2, ... never see them.

The model is an ``exits.ExitNetwork`` (the core shared with edCNN), so inference, per-exit accuracy,
sweeps and calibration all come from ``course_utils.exits``:

    net = hierarchical_learners(10, in_channels=1, input_size=28, width_mult=0.25)
    result = train_cascade(net, "mnist", (x, y), (xv, yv), CascadeConfig(train=TrainConfig(epochs=8, patience=2)))
    out = result.net.infer(x_test, result.policy)        # real early exit, with compaction

Learners (the default, ``hierarchical_learners``).  VGG-16's conv stack has five pool-ended blocks;
``split`` says how many blocks each learner adds (default ``(1, 1, 1, 2)``: learner 1 = block 1,
learner 4 = blocks 4-5), so learner k+1 takes learner k's feature map and the whole hierarchy is
exactly VGG-16's conv stack.  Each learner has its own head (``head``: ``"linear"``, ``"gap"``,
``"mlp"``, ``"conv"`` or a callable); with ``"linear"`` the last head is VGG-16's small-input
classifier, so learner 4's full stack *is* VGG-16.  ``width_mult`` scales every conv the way
``models.create("vgg16_bn", width_mult=...)`` does, so the baseline and the cascade shrink together.
The variant ``independent_learners`` has four separate networks of growing depth (VGG-16 blocks
1..k each), each from raw pixels: its stages are identities and each head is a whole learner.

The cascade trainer (``train_cascade``).  Stage k:
  1. trains learner k (stage k + head k) with ``train.fit``, every earlier learner frozen (eval mode),
     on the training samples not yet removed, early-stopping on the val samples not yet removed;
  2. picks learner k's threshold on the val split (``removal_threshold``: the loosest threshold whose
     removed val samples are at least ``removal_precision`` correct), unless thresholds are fixed;
  3. pre-classifies the remaining training samples and removes the confident ones (option
     ``removal="confident_correct"``: only those also classified correctly).
With ``cache_features`` the pre-classification pass keeps stage k's feature maps of the samples that
stay, and stage k+1 trains on them directly: the frozen stages are never recomputed.  That costs memory
(recorded per stage as ``cache_bytes``) and, on CIFAR-10, augmentation for stages 2-4 (cached features
are of un-augmented images); without it, stage k runs the frozen stages on every augmented batch.
Every pass is timed into the stage's seconds: training, calibration and pre-classification.

Under ``torchrun`` every rank trains (``fit`` shards batches and syncs gradients), every rank
pre-classifies all remaining samples with the same weights, and rank 0's removal mask and threshold are
broadcast, so all ranks hold the same removal set; ``StageRecord.disagreements`` counts the samples
where a rank's own decision differed before the broadcast (0 when the weights agree, as they should).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn

from . import exits
from .data import DeviceLoader
from .device import device_name, get_device, synchronize
from .errors import CourseError, ThresholdError, UnknownNameError
from .exits import ExitNetwork, ExitPolicy
from .models import vgg
from .train import History, TrainConfig, evaluate, fit, init_distributed, set_trainable

SPLIT = (1, 1, 1, 2)  # VGG blocks per learner: block 1 | block 2 | block 3 | blocks 4-5
HEAD_POOL = 4  # the "linear" head pools a feature map to at most 4 x 4 before its linear layer
REMOVAL_RULES = ("confident", "confident_correct")
# Thresholds tried by removal_threshold: every 0.01 plus finer steps near both ends (max softmax
# saturates near 1 and normalised entropy near 0 on easy data).
REMOVAL_GRID = tuple(sorted(set(exits.DEFAULT_GRID) | {1e-4, 5e-4, 1e-3, 5e-3, 0.995, 0.999, 0.9995, 0.9999}))

HeadBuilder = Callable[[int, int, int], nn.Module]  # (channels, spatial size, num_classes) -> head


# ----------------------------------------------------------------------------- heads
def _linear_head(channels: int, spatial: int, num_classes: int, pool: int = HEAD_POOL) -> nn.Module:
    p = min(pool, spatial)
    return nn.Sequential(nn.AdaptiveAvgPool2d(p), nn.Flatten(), nn.Linear(channels * p * p, num_classes))


def _gap_head(channels: int, spatial: int, num_classes: int) -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


def _mlp_head(channels: int, spatial: int, num_classes: int, pool: int = HEAD_POOL) -> nn.Module:
    p = min(pool, spatial)
    hidden = max(32, 2 * channels)
    return nn.Sequential(nn.AdaptiveAvgPool2d(p), nn.Flatten(), nn.Linear(channels * p * p, hidden),
                         nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))


def _conv_head(channels: int, spatial: int, num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels),
                         nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(channels, num_classes))


HEADS: dict[str, HeadBuilder] = {"linear": _linear_head, "gap": _gap_head, "mlp": _mlp_head, "conv": _conv_head}


def _head_builder(head: str | HeadBuilder) -> HeadBuilder:
    if callable(head):
        return head
    if head not in HEADS:
        raise UnknownNameError(f"unknown head design {head!r}. Use one of: {', '.join(HEADS)}, "
                               "or a callable (channels, spatial_size, num_classes) -> nn.Module.")
    return HEADS[head]


# ----------------------------------------------------------------------------- learners
def vgg_blocks(cfg: str | vgg.Config = "vgg16", in_channels: int = 3, width_mult: float = 1.0,
               batch_norm: bool = True) -> list[nn.Sequential]:
    """VGG's conv stack cut at its max-pools: five ``nn.Sequential`` blocks for VGG-16.

    Built with ``vgg.make_layers`` exactly as ``models.create("vgg16_bn", small_input=True)`` builds
    ``features`` (ceil-mode pooling, so 28x28 reaches 1x1), with the same initialisation.
    """
    row = vgg.CFGS[cfg] if isinstance(cfg, str) else list(cfg)
    features = vgg.make_layers(row, batch_norm, in_channels, width_mult, ceil_mode=True)
    vgg._init_weights(features)  # torchvision's VGG init, as the baseline gets
    return [nn.Sequential(*features[s]) for s in vgg.stage_slices(row, batch_norm)]


def _check_split(split: Sequence[int], num_blocks: int) -> list[int]:
    split = [int(s) for s in split]
    if len(split) < 2 or any(s < 1 for s in split) or sum(split) != num_blocks:
        raise CourseError(
            f"split {tuple(split)} must give each of at least 2 learners >= 1 VGG block and use all "
            f"{num_blocks} blocks (e.g. (1, 1, 1, 2) or (2, 1, 1, 1) for VGG-16).")
    return split


def _make_head(builder: HeadBuilder, block_stack: nn.Module, in_channels: int, input_size: int,
               num_classes: int) -> nn.Module:
    with torch.no_grad():
        h = block_stack.eval()(torch.zeros(1, in_channels, input_size, input_size))
    block_stack.train()
    head = builder(h.shape[1], h.shape[-1], num_classes)
    vgg._init_weights(head)
    return head


def hierarchical_learners(num_classes: int = 10, in_channels: int = 3, input_size: int = 32, *,
                          width_mult: float = 1.0, split: Sequence[int] = SPLIT,
                          head: str | HeadBuilder = "linear", batch_norm: bool = True,
                          cfg: str | vgg.Config = "vgg16") -> ExitNetwork:
    """SpeedyCNet's default model: learners cut from VGG's conv stack, each feeding the next.

    Input ``(B, in_channels, input_size, input_size)`` (28 or 32; any size works); stage k maps
    learner k-1's feature map to its own; head k maps it to logits ``(B, num_classes)``.
    ``split``: VGG blocks per learner (sums to 5 for VGG-16).  ``head``: a name in ``HEADS`` or a
    callable ``(channels, spatial_size, num_classes) -> nn.Module``.
    """
    builder = _head_builder(head)
    blocks = vgg_blocks(cfg, in_channels, width_mult, batch_norm)
    split = _check_split(split, len(blocks))
    stages, heads, start = [], [], 0
    for n in split:
        stages.append(nn.Sequential(*blocks[start:start + n]))
        start += n
        heads.append(_make_head(builder, nn.Sequential(*stages), in_channels, input_size, num_classes))
    return ExitNetwork(stages, heads)


class _Learner(nn.Sequential):
    """An independent learner: VGG blocks then its head, from raw pixels."""


def independent_learners(num_classes: int = 10, in_channels: int = 3, input_size: int = 32, *,
                         width_mult: float = 1.0, split: Sequence[int] = SPLIT,
                         head: str | HeadBuilder = "linear", batch_norm: bool = True,
                         cfg: str | vgg.Config = "vgg16") -> ExitNetwork:
    """The variant: four separate learners of growing size, each reading raw pixels.

    Learner k is VGG blocks ``1 .. split[0] + ... + split[k]`` (its own weights) plus its head.  As an
    ``ExitNetwork`` its stages are identities and head k is the whole learner k, so ``infer`` still
    runs learner k only on the samples that no earlier learner let go.
    """
    builder = _head_builder(head)
    row = vgg.CFGS[cfg] if isinstance(cfg, str) else list(cfg)
    split = _check_split(split, len(vgg.stage_slices(row)))
    heads, depth = [], 0
    for n in split:
        depth += n
        blocks = vgg_blocks(row, in_channels, width_mult, batch_norm)[:depth]
        body = nn.Sequential(*blocks)
        heads.append(_Learner(body, _make_head(builder, body, in_channels, input_size, num_classes)))
    return ExitNetwork([nn.Identity() for _ in split], heads)


def learner_stack(net: ExitNetwork, k: int) -> nn.Sequential:
    """Learner k's full path as one module (stages 0..k, then head k), sharing ``net``'s weights.

    ``(B, C, H, W) -> (B, num_classes)``: for training a learner end to end on all data (the ablation).
    """
    k = k % net.num_exits
    return nn.Sequential(*net.stages[:k + 1], net.heads[k])


def vgg16_baseline(num_classes: int = 10, in_channels: int = 3, *, width_mult: float = 1.0,
                   batch_norm: bool = True) -> nn.Module:
    """The baseline: ``models.create("vgg16[_bn]", small_input=True)`` at the same ``width_mult``."""
    from . import models

    return models.create("vgg16_bn" if batch_norm else "vgg16", num_classes, in_channels=in_channels,
                         small_input=True, width_mult=width_mult)


# ----------------------------------------------------------------------------- the removal rule
def removal_threshold(logits: torch.Tensor, labels: torch.Tensor, policy_name: str = "max_softmax",
                      precision: float = 0.995, grid: Sequence[float] | None = None) -> float | None:
    """The loosest threshold on ``grid`` whose removed samples are at least ``precision`` correct.

    logits ``(N, C)`` and labels ``(N,)`` of the val samples that reach this learner (never test).
    "Loosest" = removes the most samples; among thresholds removing the same number, the strictest is
    kept (the same set, with the most margin).  Returns None when no threshold qualifies: the learner
    then removes nothing.
    """
    if not (isinstance(precision, (int, float)) and 0.0 < precision <= 1.0):
        raise ThresholdError(f"removal_precision is the accuracy required of removed val samples, in (0, 1]; "
                             f"got {precision!r}. Use e.g. 0.995.")
    correct = logits.argmax(1) == labels
    best, best_n = None, 0
    for tau in (grid if grid is not None else REMOVAL_GRID):
        policy = exits.make_policy(policy_name, float(tau))
        mask = policy.decide(logits, 0, [float(tau)], {})
        n = int(mask.sum())
        if n == 0 or int(correct[mask].sum()) < precision * n - 1e-9:
            continue
        stricter = best is not None and (tau > best if policy_name == "max_softmax" else tau < best)
        if n > best_n or (n == best_n and stricter):
            best, best_n = float(tau), n
    return best


def removal_mask(logits: torch.Tensor, labels: torch.Tensor, policy: ExitPolicy, k: int,
                 thresholds: list[float | None], removal: str = "confident") -> torch.Tensor:
    """``(N,)`` bool: which samples learner k removes, from its logits ``(N, C)``.

    "confident" is exactly ``policy.decide`` (what ``ExitNetwork.infer`` does at head k);
    "confident_correct" also requires the prediction to equal the label (training data only).
    """
    if thresholds[k] is None:
        return torch.zeros(len(logits), dtype=torch.bool, device=logits.device)
    mask = policy.decide(logits, k, thresholds, {})
    if removal == "confident_correct":
        mask = mask & (logits.argmax(1) == labels)
    return mask


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

    def to_frame(self):
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
    removal: ``"confident"`` (the inference rule) or ``"confident_correct"``.
    cache_features: keep the remaining samples' feature maps so frozen stages are not recomputed.
    cache_dtype: dtype of cached features (None: as computed; bf16 halves the memory on a GPU).
    grid: thresholds ``removal_threshold`` tries (None: ``REMOVAL_GRID``).
    min_batch_size: None, or let later stages' batches shrink with their data (see the field below).
    """

    train: TrainConfig | Sequence[TrainConfig] = field(default_factory=TrainConfig)
    policy: str = "max_softmax"
    thresholds: exits.Thresholds = None
    removal_precision: float = 0.995
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
        if not (isinstance(self.removal_precision, (int, float)) and 0.0 < self.removal_precision <= 1.0):
            raise ThresholdError(f"removal_precision is the accuracy required of removed val samples, in (0, 1]; "
                                 f"got {self.removal_precision!r}. Use e.g. 0.995.")
        if self.thresholds is None:
            return None
        return exits.make_policy(self.policy, self.thresholds).resolved(num_exits)


# ----------------------------------------------------------------------------- the trainer
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


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast(device.type, enabled=False)


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
        with _autocast(device, amp):
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


def _drop_last(n: int, batch_size: int, world: int) -> bool:
    """Drop a last batch of exactly one sample: BatchNorm cannot train on one sample of a 1x1 map."""
    return (n // max(world, 1)) % batch_size == 1 and n // max(world, 1) > batch_size


def _nbytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def _elapsed(device: torch.device, t0: float) -> float:
    synchronize(device)
    return time.perf_counter() - t0


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
    rank, world = init_distributed()
    device = get_device(config.stage_config(0).device) if config.stage_config(0).device else get_device()
    t_setup = time.perf_counter()
    net.to(device)
    images, labels = train[0].to(device), train[1].to(device)
    val_images, val_labels = val[0].to(device), val[1].to(device)
    normalise = DeviceLoader.for_dataset(dataset, images[:1], labels[:1], train=False, device=device)
    setup_seconds = _elapsed(device, t_setup)

    n_train, n_val = len(labels), len(val_labels)
    alive = torch.arange(n_train, device=device)  # training samples still in the cascade
    alive_val = torch.arange(n_val, device=device)
    removed_at = torch.full((n_train,), -1, dtype=torch.long)
    val_removed_at = torch.full((n_val,), -1, dtype=torch.long)
    feats = feats_val = None  # cached h_{k-1} of the alive samples; None: start from raw pixels
    val_correct_removed = 0  # val samples that exited at an earlier head with the right class
    thresholds: list[float | None] = [None] * (num - 1)
    stages, histories, trained_on, timeline = [], [], [], []
    elapsed = setup_seconds
    rule = exits.make_policy(config.policy, 0.5)  # decide() takes thresholds per call

    for k in range(num):
        cfg = config.stage_config(k)
        if config.min_batch_size is not None and k > 0:
            scaled = round(cfg.batch_size * len(alive) / n_train)
            cfg = replace(cfg, batch_size=max(config.min_batch_size, min(cfg.batch_size, scaled)))
        last = k == num - 1
        set_trainable(net, False)
        set_trainable(net.stages[k], True)
        set_trainable(net.heads[k], True)
        cached = feats is not None
        frozen = [] if cached else list(net.stages[:k])
        model = _StageModel(frozen, net.stages[k], net.heads[k])
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        trained_on.append(alive.cpu())
        t0 = time.perf_counter()
        if cached:
            train_loader = DeviceLoader(feats, labels[alive], batch_size=cfg.batch_size, shuffle=True,
                                        device=device, seed=cfg.seed + k,
                                        drop_last=_drop_last(len(alive), cfg.batch_size, world))
            val_loader = DeviceLoader(feats_val, val_labels[alive_val], batch_size=max(cfg.batch_size, 256),
                                      device=device) if len(alive_val) else None
        else:
            train_loader = DeviceLoader.for_dataset(dataset, images[alive], labels[alive], train=True,
                                                    batch_size=cfg.batch_size, device=device, seed=cfg.seed + k,
                                                    drop_last=_drop_last(len(alive), cfg.batch_size, world))
            val_loader = DeviceLoader.for_dataset(dataset, val_images[alive_val], val_labels[alive_val], train=False,
                                                  batch_size=max(cfg.batch_size, 256), device=device) \
                if len(alive_val) else None
        n_val_in = len(alive_val)

        def on_epoch_end(epoch: int, record: dict, k=k, before=elapsed, n_val_in=n_val_in,
                         correct_before=val_correct_removed) -> None:
            acc = record.get("val_accuracy")
            cascade = None if acc is None else (correct_before + acc * n_val_in) / max(n_val, 1)
            timeline.append({"stage": k + 1, "epoch": epoch, "seconds": before + record["cumulative_seconds"],
                             "cascade_val_accuracy": cascade})

        history = fit(model, train_loader, val_loader, cfg, on_epoch_end=on_epoch_end)
        fit_seconds = _elapsed(device, t0)
        histories.append(history)
        record = StageRecord(stage=k + 1, samples_in=len(alive), removed=0, removed_wrong=0,
                             epochs=len(history.epochs), best_epoch=history.best_epoch, threshold=None,
                             fit_seconds=fit_seconds, calibrate_seconds=0.0, preclassify_seconds=0.0,
                             val_in=n_val_in, trainable_parameters=trainable, batch_size=cfg.batch_size)
        modules = [net.stages[k]] if cached else list(net.stages[:k + 1])
        keep = config.cache_features and not last and not all(isinstance(m, nn.Identity) for m in modules)

        # calibration: learner k on the remaining val samples (the last learner needs no pass: fit's
        # final val evaluation already measured it)
        t1 = time.perf_counter()
        if last:
            best = history.best_val_accuracy if cfg.restore_best else None
            record.val_accuracy = best if best is not None else (
                history.epochs[-1].get("val_accuracy") if history.epochs else None)
            if record.val_accuracy is not None:
                correct_k = round(record.val_accuracy * n_val_in)
        elif n_val_in:
            vsrc = feats_val if cached else val_images[alive_val]
            vlogits, vfeats = _pass(modules, net.heads[k], vsrc, None if cached else normalise,
                                    config.chunk_size, keep, config.amp, config.cache_dtype)
            vy = val_labels[alive_val]
            vcorrect = vlogits.argmax(1) == vy
            correct_k = int(vcorrect.sum())
            record.val_accuracy = correct_k / n_val_in
        if record.val_accuracy is not None and n_val:  # learners 1..k as a cascade, k final
            record.cascade_val_accuracy = (val_correct_removed + correct_k) / n_val
        if not last:
            if fixed is not None:
                tau = fixed[k]
            elif n_val_in:
                tau = removal_threshold(vlogits, vy, config.policy, config.removal_precision, config.grid)
            else:
                tau = None
            tau_t = _broadcast(torch.tensor(-1.0 if tau is None else tau, dtype=torch.float64), device)
            tau = None if tau_t.item() < 0 else float(tau_t.item())
            thresholds[k] = record.threshold = tau
            if n_val_in:
                vmask = removal_mask(vlogits, vy, rule, k, thresholds, "confident")  # the inference rule
                record.val_removed = int(vmask.sum())
                record.val_removed_wrong = int((vmask & ~vcorrect).sum())
                val_correct_removed += int((vmask & vcorrect).sum())
                val_removed_at[alive_val[vmask].cpu()] = k
                alive_val = alive_val[~vmask]
                feats_val = vfeats[~vmask] if keep else None
        record.calibrate_seconds = _elapsed(device, t1)

        # pre-classification: learner k over the remaining training samples, removal, caching
        t2 = time.perf_counter()
        if not last:
            src = feats if cached else images[alive]
            logits, kept = _pass(modules, net.heads[k], src, None if cached else normalise,
                                 config.chunk_size, keep, config.amp, config.cache_dtype)
            y = labels[alive]
            local = removal_mask(logits, y, rule, k, thresholds, config.removal)
            mask = _broadcast(local.to(torch.uint8), device).bool()
            diff = (mask != local).sum()
            if _distributed():
                dist.all_reduce(diff)
            record.disagreements = int(diff)
            record.removed = int(mask.sum())
            record.removed_wrong = int((mask & (logits.argmax(1) != y)).sum())
            removed_at[alive[mask].cpu()] = k
            alive = alive[~mask]
            if keep:  # the pass held the previous cache and every remaining sample's new features at once
                record.cache_peak_bytes = _nbytes(src if cached else None, kept, feats_val)
            feats = kept[~mask] if keep else None
            record.cache_bytes = _nbytes(feats, feats_val)
        record.preclassify_seconds = _elapsed(device, t2)
        elapsed += record.seconds
        stages.append(record)
        if not last and len(alive) < max(config.min_samples, 2 * world):
            # (almost) nothing left to train on: later learners stay untrained, so everything exits here
            thresholds[k] = 0.0 if config.policy == "max_softmax" else 1.0
            record.threshold = thresholds[k]
            break

    set_trainable(net, True)
    net.eval()
    policy = exits.make_policy(config.policy, thresholds)
    return CascadeResult(net=net, policy=policy, stages=stages, removed_at=removed_at,
                         val_removed_at=val_removed_at, trained_on=trained_on, histories=histories,
                         timeline=timeline, device=device_name(device), setup_seconds=setup_seconds)


# ----------------------------------------------------------------------------- evaluation helpers
def timed_fit(model: nn.Module, dataset: str, train: tuple[torch.Tensor, torch.Tensor],
              val: tuple[torch.Tensor, torch.Tensor] | None, config: TrainConfig) -> tuple[History, float]:
    """``fit`` on uint8 data through ``DeviceLoader`` (as the cascade's first stage is fed), timed.

    Returns ``(history, seconds)``: seconds = the whole call (data to device, every epoch, val passes).
    """
    device = get_device(config.device) if config.device else get_device()
    synchronize(device)
    t0 = time.perf_counter()
    _, world = init_distributed()
    tr = DeviceLoader.for_dataset(dataset, train[0], train[1], train=True, batch_size=config.batch_size,
                                  device=device, seed=config.seed,
                                  drop_last=_drop_last(len(train[1]), config.batch_size, world))
    va = None if val is None else DeviceLoader.for_dataset(dataset, val[0], val[1], train=False,
                                                           batch_size=max(config.batch_size, 256), device=device)
    history = fit(model, tr, va, config)
    return history, _elapsed(device, t0)


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

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame({"exit": range(1, len(self.exit_counts) + 1), "samples": self.exit_counts,
                             "accuracy_of_exited": self.exit_accuracy, "head_accuracy_on_all": self.head_accuracy})


@torch.no_grad()
def evaluate_cascade(net: ExitNetwork, policy: ExitPolicy, dataset: str, images: torch.Tensor,
                     labels: torch.Tensor, batch_size: int = 512) -> CascadeEvaluation:
    """Run ``net.infer`` (batched early exit) over uint8 ``images``; also every head's own accuracy."""
    device = next(net.parameters()).device
    net.eval()
    if net.costs is None:
        net.measure_costs(tuple(images.shape[1:]))
    loader = DeviceLoader.for_dataset(dataset, images, labels, train=False, batch_size=batch_size, device=device)
    preds, idx, heads, macs = [], [], [], 0
    for x, _ in loader:
        r = net.infer(x, policy)
        preds.append(r.predictions.cpu())
        idx.append(r.exit_index.cpu())
        macs += r.macs
        heads.append(torch.stack([o.argmax(1) for o in net.forward_all(x)]).cpu())
    predictions, exit_index = torch.cat(preds), torch.cat(idx)
    y = labels.cpu()
    correct = predictions == y
    counts = torch.bincount(exit_index, minlength=net.num_exits).tolist()
    exit_acc = [float(correct[exit_index == k].float().mean()) if c else None for k, c in enumerate(counts)]
    head_acc = (torch.cat(heads, 1) == y).float().mean(1).tolist()
    return CascadeEvaluation(float(correct.float().mean()), predictions, exit_index, counts, exit_acc, head_acc,
                             macs / max(len(y), 1))


__all__ = ["SPLIT", "HEADS", "vgg_blocks", "hierarchical_learners", "independent_learners", "learner_stack",
           "vgg16_baseline", "removal_threshold", "removal_mask", "StageRecord", "CascadeResult", "CascadeConfig",
           "train_cascade", "timed_fit", "accuracy_on", "CascadeEvaluation", "evaluate_cascade"]
