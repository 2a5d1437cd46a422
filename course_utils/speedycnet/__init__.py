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
``small_first_learners`` is that variant with a narrow first learner (``first_width`` of the width): every
sample passes learner 1, so its cost per epoch bounds the speed-up.

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

Modules: ``learners`` (VGG pieces and heads), ``removal`` (the removal rule, an ``exits`` calibration
target), ``cascade`` (the trainer: one function per stage, and the loop), ``evaluation`` (timed baselines,
the cascade by real early exit, sample images per removal group), ``plots`` (the notebook's figures; import it
as ``from course_utils.speedycnet import plots``, it loads matplotlib).
"""
from __future__ import annotations

from .cascade import CascadeConfig, CascadeResult, StageRecord, drop_last_batch, train_cascade
from .evaluation import EXAMPLE_GROUPS, CascadeEvaluation, accuracy_on, evaluate_cascade, removal_examples, timed_fit
from .learners import (HEAD_POOL, HEADS, SPLIT, HeadBuilder, hierarchical_learners, independent_learners,
                       learner_stack, small_first_learners, vgg16_baseline, vgg_blocks)
from .removal import REMOVAL_GRID, REMOVAL_RULES, removal_mask, removal_threshold

__all__ = ["SPLIT", "HEADS", "vgg_blocks", "hierarchical_learners", "independent_learners", "small_first_learners",
           "learner_stack", "vgg16_baseline", "removal_threshold", "removal_mask", "StageRecord", "CascadeResult", "CascadeConfig",
           "train_cascade", "timed_fit", "accuracy_on", "CascadeEvaluation", "evaluate_cascade", "EXAMPLE_GROUPS",
           "removal_examples"]
