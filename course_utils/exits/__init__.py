"""The early-exit core that SpeedyCNet and edCNN share.

An ``ExitNetwork`` is a sequence of stages, each followed by an exit head (``network``):

    x -> stage_0 -> h_0 -> stage_1 -> h_1 -> ... -> stage_{E-1} -> h_{E-1}
                    |                |                          |
                  head_0           head_1        ...          head_{E-1}  (the final classifier)

``forward_all(x)`` computes every head (training, calibration, the reference path).
``infer(x, policy)`` is the real early exit: after each head the policy picks the samples that
leave, and only the others run the next stage (compaction).  ``infer_single`` is the
batch-size-1 path, which returns as soon as the policy says so.

Exit policies (``policies``) hold their thresholds and turn one head's logits into an "exit here" mask:
``MaxSoftmax(tau)``, ``Entropy(tau)``, ``Patience(t)``; ``make_policy(name, thresholds)`` builds one by name.

``sweep(scores, costs, policy)`` (``scores``) is the pure function behind calibration, the budget controller
and the widget panel: from cached per-exit logits it returns accuracy, mean MACs, the exit histogram and
per-exit accuracy for one policy.  A test checks that ``infer`` and ``sweep`` agree sample for sample:
that is what makes the early exit real.

Calibration (``calibration``) answers a target from cached scores: ``AccuracyTarget(epsilon)``,
``RemovalPrecision(p)`` (SpeedyCNet's removal) or ``CostBudget(budget)`` (edCNN's budget controller),
through ``calibrate``, ``best_candidate`` over ``candidates``, and ``frontier``.

A trained network's per-exit logits and measured costs travel as an ``ExitBundle`` (``bundle``):
``save_bundle`` / ``load_bundle``, float16 and compressed, so the panel needs no training.
"""
from .bundle import BUNDLE_FORMAT, ExitBundle, load_bundle, save_bundle
from .calibration import (DEFAULT_GRID, AccuracyTarget, Calibration, Candidate, CostBudget, RemovalPrecision,
                          Target, best_candidate, calibrate, candidates, clopper_pearson_lower, frontier,
                          shared_grid)
from .network import EarlyExitResult, ExitCosts, ExitNetwork, count_macs, exit_loss
from .policies import (POLICIES, Entropy, ExitPolicy, MaxSoftmax, Patience, Thresholds, confidence, make_policy,
                       normalized_entropy, policy_class)
from .scores import ExitScores, SweepResult, collect_logits, summarize, sweep, synthetic_scores

__all__ = [
    "BUNDLE_FORMAT", "ExitBundle", "load_bundle", "save_bundle",
    "DEFAULT_GRID", "AccuracyTarget", "Calibration", "Candidate", "CostBudget", "RemovalPrecision", "Target",
    "best_candidate", "calibrate", "candidates", "clopper_pearson_lower", "frontier", "shared_grid",
    "EarlyExitResult", "ExitCosts", "ExitNetwork", "count_macs", "exit_loss",
    "POLICIES", "Entropy", "ExitPolicy", "MaxSoftmax", "Patience", "Thresholds", "confidence", "make_policy",
    "normalized_entropy", "policy_class",
    "ExitScores", "SweepResult", "collect_logits", "summarize", "sweep", "synthetic_scores",
]
