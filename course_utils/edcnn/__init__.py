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
``exits``; this package only builds networks for them and measures them.

Modules, one per idea: ``trunk`` (splitting a backbone into tapping points), ``heads`` (branch heads),
``elastic`` (``ElasticNet`` and ``attach_exits``), ``training`` (branch and joint training), ``timing``
(benchmarks, per-stage times, the latency model), ``placement`` (exits at evenly spaced fractions of the
measured time: ``profile_trunk``, ``taps_by_time``), ``budget`` (the budget controller), ``anytime``
(deadline prediction), ``trained`` (a trained model's exits on file, and ``load_trained``), ``reporting`` (exit distribution, the paper's table columns, the MACs-vs-time findings),
``plots`` (the notebook's figures; ``from course_utils.edcnn import plots``, it loads matplotlib).
"""
from __future__ import annotations

from ..device import single_thread  # noqa: F401  (kept for callers of edcnn.single_thread)
from ..experiment_data import dataset_label  # noqa: F401  (kept for callers of edcnn.dataset_label)
from .anytime import AnytimeResult, anytime
from .budget import BudgetChoice, BudgetController, BudgetRun, BudgetWarning
from .elastic import DEFAULT_TAPS, ElasticNet, attach_exits
from .heads import HEADS, make_head
from .placement import TrunkProfile, evenly_spaced, profile_trunk, taps_by_time
from .reporting import (TABLE_COLUMNS, Reference, comparison_table, exit_distribution, headline_row,
                        macs_vs_time_findings)
from .timing import Contender, LatencyModel, benchmark, measure_batches, measure_latency_model, time_breakdown
from .trained import BUNDLE_NAME, find_trained, load_trained, make_bundle, trained_bundle_path
from .training import MODES, WEIGHT_SCHEDULES, ExitLoss, exit_weights, train_branches, train_joint
from .trunk import GlobalPoolClassifier, Trunk, check_trunk, split_backbone, tapping_points

__all__ = [
    "AnytimeResult", "anytime", "BudgetChoice", "BudgetController", "BudgetRun", "BudgetWarning",
    "DEFAULT_TAPS", "ElasticNet", "attach_exits", "HEADS", "make_head", "TrunkProfile", "evenly_spaced",
    "profile_trunk", "taps_by_time", "TABLE_COLUMNS", "Reference",
    "comparison_table", "headline_row", "exit_distribution",
    "macs_vs_time_findings",
    "Contender", "LatencyModel", "benchmark", "measure_batches", "measure_latency_model", "time_breakdown",
    "BUNDLE_NAME", "find_trained", "load_trained", "make_bundle", "trained_bundle_path",
    "MODES", "WEIGHT_SCHEDULES", "ExitLoss", "exit_weights", "train_branches", "train_joint",
    "GlobalPoolClassifier", "Trunk", "check_trunk", "split_backbone", "tapping_points", "single_thread",
    "dataset_label",
]
