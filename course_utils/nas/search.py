"""The search's outer loop: propose architectures, train each child for a fixed budget, learn.

    space = SearchSpace(num_layers=4)
    trainer = ChildTrainer(train_loader, val_loader, TrainConfig(epochs=1, ...), num_classes=10)
    random = run_search(RandomSearch(space, seed=0), trainer, budget=30, checkpoint="ckpt/random.pt")
    rl = run_search(ReinforceSearch(space, seed=0), trainer, budget=30, checkpoint="ckpt/rl.pt")
    random.history        # one row per child: arch, reward, val_accuracy, macs, params, seconds...

A *searcher* proposes architectures and learns from their rewards: ``RandomSearch`` (the honest
baseline: it learns nothing) and ``ReinforceSearch`` (the LSTM controller).  ``run_search`` gives both
the same ``ChildTrainer`` and the same budget, counted in child trainings, so a comparison is fair.

The loop is resumable: after every child it writes, atomically, the searcher's state (controller
weights, optimizer, baseline, RNG state), the batch in flight and the history.  Children are seeded
by their index and the controller samples from its own generator, so on the CPU a search that is
killed and resumed ends with exactly the history of one that was not.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import pandas as pd
import torch

from .. import pareto
from ..data import DeviceLoader
from ..device import stopwatch
from ..errors import CheckpointError, CourseError
from ..train import TrainConfig, evaluate, fit, load_checkpoint, save_checkpoint
from .controller import AccuracyReward, Controller, EMABaseline, reinforce_update
from .space import Architecture, ChildNet, SearchSpace, child_cost

CHECKPOINT_FORMAT = "course_utils.nas/1"
Reward = Callable[[float, int], float]  # (val_accuracy, macs) -> reward
_TRAJECTORY = ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule",
               "warmup_fraction", "label_smoothing", "seed", "patience", "restore_best")


# ----------------------------------------------------------------------------- training a child
def check_last_batch(n: int, batch_size: int, name: str) -> None:
    """Refuse a batch size that leaves a last training batch of one image.

    BatchNorm in training mode cannot normalise one value per channel, which is what a single image
    gives once a child has reduced it to 1x1; such a child would crash mid-search.
    """
    if n % batch_size == 1:
        raise CourseError(
            f"{n} training images in batches of {batch_size} leave a last batch of 1 image, and BatchNorm cannot "
            f"train on a single image once a child reduces it to 1x1. Change {name} (e.g. to {batch_size + 1}) "
            "or use one image more or fewer."
        )


@dataclass(frozen=True)
class ChildResult:
    """What one child training measured."""

    val_accuracy: float  # on the held-out split, after the fixed budget (best epoch if restore_best)
    macs: int  # one forward pass on one image
    params: int
    seconds: float  # wall clock: build + fit


class ChildTrainer:
    """Trains a child from scratch with one fixed ``TrainConfig``; every searcher uses the same one.

    train, val: ``DeviceLoader``s; the child's reward comes from ``val`` (never the test split).
    ``calls`` counts the child trainings, the unit a search's budget is measured in.
    """

    def __init__(self, train: DeviceLoader, val: DeviceLoader, config: TrainConfig, num_classes: int):
        if config.checkpoint:
            raise CourseError("the child TrainConfig has a checkpoint path, so every child would resume the "
                              "previous one's file. Leave config.checkpoint None: the search checkpoints itself.")
        check_last_batch(len(train.labels), config.batch_size, "config.batch_size")
        self.train, self.val, self.config, self.num_classes = train, val, config, num_classes
        self.input_size = tuple(int(s) for s in train.images.shape[1:])  # (C, H, W)
        self.calls = 0

    def build(self, arch: Architecture, seed: int) -> ChildNet:
        """A fresh child with weights drawn from ``seed`` (the global RNG is left as it was)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return ChildNet(arch, self.input_size[0], self.num_classes)

    def __call__(self, arch: Architecture, seed: int) -> ChildResult:
        """Train ``arch`` from scratch for the fixed budget; return its validation accuracy and costs."""
        with stopwatch(self.train.device) as watch:
            model = self.build(arch, seed)
            history = fit(model, self.train, self.val, self.config)
        self.calls += 1
        params, macs = child_cost(arch, self.input_size, self.num_classes)
        return ChildResult(float(history.best_val_accuracy), macs, params, watch.seconds)

    def fingerprint(self) -> dict:
        """What must match for a checkpointed search to continue with this trainer."""
        return {"config": {k: getattr(self.config, k) for k in _TRAJECTORY}, "input_size": list(self.input_size),
                "num_classes": self.num_classes, "train_size": len(self.train.labels),
                "val_size": len(self.val.labels), "data_seed": self.train.seed}


def retrain(arch: Architecture, trainer: ChildTrainer, test: DeviceLoader, config: TrainConfig,
            seed: int = 0) -> dict:
    """Train ``arch`` from scratch on the trainer's data with ``config`` (a longer budget); test it once.

    Returns ``{"test_accuracy", "val_accuracy", "seconds", "macs", "params", "epochs"}``.
    """
    with stopwatch(trainer.train.device) as watch:
        model = trainer.build(arch, seed)
        history = fit(model, trainer.train, trainer.val, config)
        test_accuracy = evaluate(model, test)["accuracy"]
    params, macs = child_cost(arch, trainer.input_size, trainer.num_classes)
    return {"test_accuracy": test_accuracy, "val_accuracy": history.best_val_accuracy,
            "seconds": watch.seconds, "macs": macs, "params": params, "epochs": len(history.epochs)}


# ----------------------------------------------------------------------------- searchers
class Searcher(Protocol):
    """What ``run_search`` needs of a search method.

    propose(n): ``n`` architectures, each with a dict of notes for the history (e.g. its log-probability).
    observe(archs, rewards): learn from a finished batch (``batch_size`` children, fewer at the end).
    state_dict / load_state_dict: everything a resumed search needs, RNG state included.
    fingerprint: plain values that must match for a checkpoint to continue this search.
    """

    name: str
    batch_size: int

    def propose(self, n: int) -> list[tuple[Architecture, dict]]: ...
    def observe(self, archs: list[Architecture], rewards: list[float]) -> None: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...
    def fingerprint(self) -> dict: ...


class RandomSearch:
    """Uniform samples from the space; learns nothing.  The baseline every search method must beat."""

    name = "random"
    batch_size = 1

    def __init__(self, space: SearchSpace, seed: int = 0):
        self.space, self.seed = space, seed
        self.generator = torch.Generator().manual_seed(seed)

    def propose(self, n: int) -> list[tuple[Architecture, dict]]:
        return [(self.space.sample(self.generator), {}) for _ in range(n)]

    def observe(self, archs: list[Architecture], rewards: list[float]) -> None:
        pass

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def fingerprint(self) -> dict:
        return {"method": self.name, "space": self.space.config(), "seed": self.seed}


class ReinforceSearch:
    """Zoph & Le's controller: an LSTM policy, REINFORCE, an EMA baseline and an entropy bonus.

    batch_size: children per controller update (Zoph & Le used 100 in parallel; a small search uses 1-4).
    """

    name = "reinforce"

    def __init__(self, space: SearchSpace, *, seed: int = 0, hidden: int = 64, lr: float = 0.01,
                 batch_size: int = 1, baseline_decay: float = 0.9, entropy_weight: float = 1e-3):
        self.space, self.seed, self.batch_size = space, seed, batch_size
        self.hparams = {"hidden": hidden, "lr": lr, "batch_size": batch_size, "baseline_decay": baseline_decay,
                        "entropy_weight": entropy_weight}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.controller = Controller(space, hidden)
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=lr)
        self.baseline = EMABaseline(baseline_decay)
        self.entropy_weight = entropy_weight
        self.generator = torch.Generator().manual_seed(seed)

    def propose(self, n: int) -> list[tuple[Architecture, dict]]:
        actions, log_prob, entropy = self.controller.sample(n, self.generator)
        return [(self.space.decode(a.tolist()),
                 {"log_prob": float(log_prob[k]), "entropy": float(entropy[k]), "baseline": self.baseline.value})
                for k, a in enumerate(actions)]

    def observe(self, archs: list[Architecture], rewards: list[float]) -> None:
        actions = torch.tensor([self.space.encode(a) for a in archs])
        reinforce_update(self.controller, self.optimizer, actions, torch.tensor(rewards), self.baseline,
                         self.entropy_weight)

    def state_dict(self) -> dict:
        return {"controller": self.controller.state_dict(), "optimizer": self.optimizer.state_dict(),
                "baseline": self.baseline.value, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.controller.load_state_dict(state["controller"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline.value = state["baseline"]
        self.generator.set_state(state["generator"])

    def fingerprint(self) -> dict:
        return {"method": self.name, "space": self.space.config(), "seed": self.seed, **self.hparams}


# ----------------------------------------------------------------------------- the loop
@dataclass
class SearchResult:
    """A search's history (one row per candidate) and what it cost."""

    method: str
    history: pd.DataFrame
    seconds: float  # wall clock of the whole search, summed over resumed sessions
    child_trainings: int  # children trained from scratch during the search
    finished: bool
    trace: pd.DataFrame | None = None  # ENAS: the controller's training samples (shared-weight rewards)
    extra: dict = field(default_factory=dict)

    def best(self, k: int = 1) -> pd.DataFrame:
        """The ``k`` candidates with the highest reward (ties: fewer MACs first)."""
        return self.history.sort_values(["reward", "macs"], ascending=[False, True], kind="stable").head(k)

    @property
    def best_architecture(self) -> Architecture:
        return Architecture.parse(self.best().iloc[0]["arch"])


def child_seed(seed: int, index: int) -> int:
    """The weight-initialisation seed of child ``index`` (0-based) of a search seeded ``seed``."""
    return seed * 1_000_003 + index


def load_search(path: str | Path, fingerprint: dict) -> dict:
    """Read a checkpoint of ``run_search`` or ``run_enas``; ``CheckpointError`` unless it matches ``fingerprint``."""
    try:
        state = load_checkpoint(path, expected_format=CHECKPOINT_FORMAT)
    except CheckpointError as err:
        raise CheckpointError(f"{err} (A NAS search checkpoint is written by run_search or run_enas.)") from None
    saved = state["fingerprint"]
    diff = [f"{k}: {saved.get(k)!r} -> {fingerprint.get(k)!r}" for k in sorted(set(saved) | set(fingerprint))
            if saved.get(k) != fingerprint.get(k)]
    if diff:
        raise CheckpointError(
            f"search checkpoint {path} was saved by another search ({'; '.join(diff)}), so resuming would not "
            "continue the same search. Restore those settings, or use a new checkpoint path."
        )
    return state


def run_search(searcher: Searcher, trainer: ChildTrainer, budget: int, *, seed: int = 0,
               reward: Reward = AccuracyReward(), checkpoint: str | Path | None = None,
               max_new_children: int | None = None, progress: bool = True) -> SearchResult:
    """Train ``budget`` children that ``searcher`` proposes; feed each batch's rewards back to it.

    budget: child trainings in total (a resumed search counts the ones already done).
    reward: ``(val_accuracy, macs) -> float``; ``AccuracyReward()`` or ``CostAwareReward(target)``.
    checkpoint: a file written after every child; when it exists, the search resumes from it
        (``CheckpointError`` if it belongs to another search).  The budget may grow between sessions.
    max_new_children: stop after this many children in this call (a time slice on a shared machine);
        the result then has ``finished=False`` and a later call continues.
    Returns a ``SearchResult`` whose ``history`` has one row per child: child, method, arch, reward,
    val_accuracy, macs, params, child_seconds, search_seconds, and the searcher's notes (e.g. log_prob).
    """
    if budget < 1:
        raise CourseError(f"budget must be >= 1 child training, got {budget}.")
    fingerprint = {"searcher": searcher.fingerprint(), "trainer": trainer.fingerprint(), "reward": repr(reward),
                   "seed": seed}
    rows: list[dict] = []
    pending: list[tuple[str, dict]] = []  # proposed, not yet trained
    done: list[tuple[str, float]] = []  # trained in the current batch, not yet observed
    seconds = 0.0
    if checkpoint and Path(checkpoint).exists():
        state = load_search(checkpoint, fingerprint)
        searcher.load_state_dict(state["searcher"])
        rows, seconds = list(state["history"]), state["seconds"]
        pending = [(k, dict(info)) for k, info in state["pending"]]
        done = [(k, r) for k, r in state["done"]]

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=budget, initial=min(len(rows), budget), desc=f"{searcher.name} search")
    started, new = time.perf_counter() - seconds, 0
    try:
        while len(rows) < budget and (max_new_children is None or new < max_new_children):
            if not pending:
                n = min(searcher.batch_size, budget - len(rows))
                pending = [(arch.key, info) for arch, info in searcher.propose(n)]
            key, info = pending[0]
            arch = Architecture.parse(key)
            result = trainer(arch, child_seed(seed, len(rows)))
            r = reward(result.val_accuracy, result.macs)
            rows.append({"child": len(rows) + 1, "method": searcher.name, "arch": key, "reward": r,
                         "val_accuracy": result.val_accuracy, "macs": result.macs, "params": result.params,
                         "child_seconds": result.seconds, **info})
            pending.pop(0)
            done.append((key, r))
            if not pending:
                searcher.observe([Architecture.parse(k) for k, _ in done], [r for _, r in done])
                done = []
            seconds = time.perf_counter() - started
            rows[-1]["search_seconds"] = seconds
            new += 1
            if checkpoint:
                save_checkpoint({"format": CHECKPOINT_FORMAT, "fingerprint": fingerprint,
                                 "searcher": searcher.state_dict(), "history": rows, "pending": pending,
                                 "done": done, "seconds": seconds}, checkpoint)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(reward=round(r, 4), best=round(max(x["reward"] for x in rows), 4))
    finally:
        if bar is not None:
            bar.close()
    history = pd.DataFrame(rows)
    return SearchResult(searcher.name, history, seconds, len(rows), finished=len(rows) >= budget)


def pareto_front(frame: pd.DataFrame, cost: str = "macs", score: str = "val_accuracy") -> pd.DataFrame:
    """``pareto.pareto_front`` with a search history's columns as the defaults: the children no other beats."""
    return pareto.pareto_front(frame, cost, score)
