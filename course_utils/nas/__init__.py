"""Neural architecture search: a network that designs networks.

  space       the search space (small CNNs for 28x28 / 32x32 inputs) and the child network it builds
  controller  the LSTM controller, REINFORCE with an EMA baseline and entropy bonus, the rewards
  search      the child trainer, random search, the controller search, the resumable outer loop
  enas        ENAS-style weight sharing: one super-network whose slices are the children
  plots       reward curves, layer diagrams, the accuracy/MACs Pareto front, the cost history

    from course_utils import nas
    space = nas.SearchSpace(num_layers=4)
    trainer = nas.ChildTrainer(train, val, TrainConfig(epochs=1, progress=False), num_classes=10)
    rl = nas.run_search(nas.ReinforceSearch(space), trainer, budget=30, checkpoint="ckpt/rl.pt")
    rs = nas.run_search(nas.RandomSearch(space), trainer, budget=30, checkpoint="ckpt/random.pt")
    en = nas.run_enas(space, train, val, num_classes=10)
    nas.retrain(rl.best_architecture, trainer, test, TrainConfig(epochs=10))
"""
from .controller import AccuracyReward, Controller, CostAwareReward, EMABaseline, reinforce_update
from .enas import ENASConfig, SuperNet, run_enas, shared_accuracy
from .plots import COST_HISTORY, draw_architecture, plot_cost_history, plot_pareto, plot_rewards
from .search import (CHECKPOINT_FORMAT, ChildResult, ChildTrainer, RandomSearch, ReinforceSearch, SearchResult,
                     child_seed, pareto_front, retrain, run_search)
from .space import REDUCTIONS, Architecture, ChildNet, Decision, Layer, SearchSpace, child_cost, layer_costs

__all__ = ["AccuracyReward", "Controller", "CostAwareReward", "EMABaseline", "reinforce_update", "ENASConfig",
           "SuperNet", "run_enas", "shared_accuracy", "COST_HISTORY", "draw_architecture", "plot_cost_history",
           "plot_pareto", "plot_rewards", "CHECKPOINT_FORMAT", "ChildResult", "ChildTrainer", "RandomSearch",
           "ReinforceSearch", "SearchResult", "child_seed", "pareto_front", "retrain", "run_search", "REDUCTIONS",
           "Architecture", "ChildNet", "Decision", "Layer", "SearchSpace", "child_cost", "layer_costs"]
