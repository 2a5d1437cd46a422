"""Neural architecture search: the space builds valid networks, REINFORCE learns, searches are fair and resumable."""
from pathlib import Path

import pandas as pd
import pytest
import torch

from course_utils import complexity, data, nas
from course_utils.errors import CheckpointError, CourseError, UnknownNameError
from course_utils.train import TrainConfig, evaluate, fit

REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- helpers
def score(arch: nas.Architecture) -> float:
    """A made-up 'accuracy' with a known optimum: wide layers with 3x3 kernels score highest."""
    return 0.2 + 0.1 * sum(l.kernel == 3 for l in arch.layers) + 0.01 * sum(l.filters for l in arch.layers) / 16


class ScoreTrainer:
    """A stand-in for ChildTrainer that records every child it is asked to train."""

    def __init__(self):
        self.calls: list[tuple[str, int]] = []

    def __call__(self, arch, seed):
        self.calls.append((arch.key, seed))
        return nas.ChildResult(score(arch), macs=1000 * len(self.calls), params=10, seconds=0.0)

    def fingerprint(self):
        return {"trainer": "score"}


@pytest.fixture(scope="module")
def digits_loaders():
    """Digits at 8x8: 600 training images, the whole validation split (143)."""
    x, y = data.load("digits", "train")
    x, y = data.subset(x, y, per_class=60, seed=0)
    xv, yv = data.load("digits", "val")
    train = data.DeviceLoader.for_dataset("digits", x, y, train=True, batch_size=32)
    val = data.DeviceLoader.for_dataset("digits", xv, yv, train=False, batch_size=256)
    return train, val


def tiny_trainer(digits_loaders) -> nas.ChildTrainer:
    train, val = digits_loaders
    return nas.ChildTrainer(train, val, TrainConfig(epochs=1, batch_size=32, lr=0.05, progress=False), 10)


TINY_SPACE = nas.SearchSpace(num_layers=3, kernel_sizes=(1, 3), filters=(4, 8))


# ----------------------------------------------------------------------------- the search space
def test_space_counts_its_decisions_and_architectures():
    space = nas.SearchSpace(num_layers=4, kernel_sizes=(1, 3, 5), filters=(8, 16, 32, 64))
    # 3 decisions per layer + one skip decision per earlier layer: 12 + (0 + 1 + 2 + 3)
    assert len(space.decisions()) == 18
    assert [d.name for d in space.decisions()[3:7]] == ["L1.kernel", "L1.filters", "L1.reduce", "L1.skip<-0"]
    assert space.size() == (3 * 4 * 3) ** 4 * 2 ** 6 == 107_495_424
    assert nas.SearchSpace(num_layers=4, skip_connections=False).size() == (3 * 4 * 3) ** 4


@pytest.mark.parametrize("input_size", [(1, 28, 28), (3, 32, 32)])
def test_sampled_networks_are_valid_and_have_the_right_shapes(input_size):
    space = nas.SearchSpace(num_layers=5, kernel_sizes=(1, 3, 5, 7), filters=(4, 8, 16))
    g = torch.Generator().manual_seed(0)
    controller = nas.Controller(space)
    archs = [space.sample(g) for _ in range(8)]
    actions, _, _ = controller.sample(8, g)
    archs += [space.decode(a.tolist()) for a in actions]
    x = torch.randn(2, *input_size)
    for arch in archs:
        assert len(arch.layers) == 5
        assert space.decode(space.encode(arch)) == arch
        assert nas.Architecture.parse(arch.key) == arch
        net = space.build(arch, in_channels=input_size[0], num_classes=10)
        features = net.features(x)
        assert [tuple(f.shape) for f in features] == [(2, *s) for s in arch.output_shapes(input_size)]
        assert net(x).shape == (2, 10)
        p = complexity.profile(net, (1, *input_size))
        assert nas.child_cost(arch, input_size, 10) == (p.params, p.macs)


def test_every_reduction_halves_the_resolution_rounding_up():
    arch = nas.Architecture(tuple(nas.Layer(3, 8, r) for r in ("stride2", "maxpool", "none", "stride2",
                                                                 "maxpool", "stride2", "maxpool")))
    assert [s[1] for s in arch.output_shapes((1, 28, 28))] == [14, 7, 7, 4, 2, 1, 1]
    net = nas.ChildNet(arch, 1, 10)
    assert [f.shape[-1] for f in net.features(torch.randn(2, 1, 28, 28))] == [14, 7, 7, 4, 2, 1, 1]
    assert [s[1] for s in arch.output_shapes((3, 32, 32))] == [16, 8, 8, 4, 2, 1, 1]


def test_skip_connections_add_pooled_and_projected_outputs():
    arch = nas.Architecture((nas.Layer(3, 8), nas.Layer(3, 16, "maxpool"), nas.Layer(1, 16, "none", (0, 1))))
    net = nas.ChildNet(arch, 1, 10).eval()
    assert set(net.adapters) == {"2_0"}  # 8 -> 16 channels needs a projection; 16 -> 16 does not
    x = torch.randn(2, 1, 28, 28)
    o0, o1, o2 = net.features(x)
    skip0 = net.adapters["2_0"](torch.nn.functional.avg_pool2d(o0, 2))
    assert torch.allclose(o2, net.layers[2](o1) + skip0 + o1, atol=1e-6)
    # the adapter is a 1x1 conv (8 * 16 weights) + BN (2 * 16): counted in the child's parameters
    assert sum(p.numel() for p in net.adapters.parameters()) == 8 * 16 + 2 * 16


def test_the_space_holds_poor_and_good_networks(digits_loaders):
    space = nas.SearchSpace(num_layers=3, kernel_sizes=(1, 3), filters=(4, 32))
    poor = nas.Architecture((nas.Layer(1, 4),) * 3)  # sees one pixel at a time: can only count intensities
    good = nas.Architecture((nas.Layer(3, 32), nas.Layer(3, 32, "maxpool", (0,)), nas.Layer(3, 32, "none", (1,))))
    space.validate(poor), space.validate(good)
    trainer = nas.ChildTrainer(*digits_loaders, TrainConfig(epochs=3, batch_size=32, lr=0.05, progress=False), 10)
    p, g = trainer(poor, seed=0), trainer(good, seed=0)
    assert p.val_accuracy < 0.5 < 0.85 < g.val_accuracy
    assert g.macs > 20 * p.macs


def test_space_and_architecture_errors_name_the_fix():
    with pytest.raises(CourseError, match=r"kernel sizes \[2\] are not odd.*Use odd sizes"):
        nas.SearchSpace(kernel_sizes=(2, 3))
    with pytest.raises(UnknownNameError, match=r"unknown reduction 'avgpool'\. Use some of: none, stride2, maxpool"):
        nas.SearchSpace(reductions=("none", "avgpool"))
    with pytest.raises(CourseError, match=r"got 3 decisions but this search space makes 18 .*controller built for"):
        nas.SearchSpace().decode([0, 0, 0])
    with pytest.raises(CourseError, match=r"decision L0.kernel got option 7, but it has 3 options"):
        nas.SearchSpace().decode([7] + [0] * 17)
    with pytest.raises(CourseError, match=r"layer 1 has filters=12, .*Add it to the SearchSpace"):
        nas.SearchSpace(num_layers=2).validate(nas.Architecture((nas.Layer(3, 8), nas.Layer(3, 12))))
    looped = nas.Architecture((nas.Layer(3, 8), nas.Layer(3, 8, "none", (1,))))
    with pytest.raises(CourseError, match=r"layer 1 has skips \(1,\), but it may add each earlier layer \(0\.\.0\) "
                                          r"at most once\. Fix its skips"):
        nas.SearchSpace(num_layers=2).validate(looped)
    residual = nas.Architecture((nas.Layer(3, 8), nas.Layer(3, 8, "none", (0,))))
    with pytest.raises(CourseError, match=r"may add nothing: this space has no skip connections"):
        nas.SearchSpace(num_layers=2, skip_connections=False).validate(residual)
    with pytest.raises(CourseError, match=r"cannot read the layer '3x3-eight-none'.*e\.g\. '3x3-32-stride2\+0,1'"):
        nas.Architecture.parse("3x3-8-none | 3x3-eight-none")
    with pytest.raises(CourseError, match=r"target_macs must be > 0, got 0\. Pass the MACs budget"):
        nas.CostAwareReward(0)


# ----------------------------------------------------------------------------- the controller
def test_controller_sampling_and_teacher_forcing_agree():
    space = nas.SearchSpace(num_layers=3)
    controller = nas.Controller(space)
    actions, log_prob, entropy = controller.sample(6, torch.Generator().manual_seed(3))
    again, _, _ = controller.sample(6, torch.Generator().manual_seed(3))
    assert torch.equal(actions, again) and actions.shape == (6, len(space.decisions()))
    lp, ent = controller.evaluate(actions)
    assert torch.allclose(lp, log_prob, atol=1e-6) and torch.allclose(ent, entropy, atol=1e-6)
    probs = controller.probabilities(actions)
    assert [p.shape[1] for p in probs] == space.num_choices()
    chosen = torch.stack([p[torch.arange(6), actions[:, t]] for t, p in enumerate(probs)], 1)
    assert torch.allclose(chosen.log().sum(1), log_prob, atol=1e-5)
    # initialised in [-0.08, 0.08], the first policy is close to uniform
    assert torch.allclose(probs[0], torch.full_like(probs[0], 1 / 3), atol=0.05)


def test_ema_baseline_arithmetic():
    b = nas.EMABaseline(decay=0.9)
    assert torch.allclose(b.advantage(torch.tensor([0.5, 0.7])), torch.tensor([-0.1, 0.1]))
    assert b.update(torch.tensor([0.5, 0.7])) == pytest.approx(0.6)
    assert torch.allclose(b.advantage(torch.tensor([1.0])), torch.tensor([0.4]))
    assert b.update(torch.tensor([1.0])) == pytest.approx(0.9 * 0.6 + 0.1 * 1.0)


def test_one_reinforce_step_moves_the_probability_with_the_sign_of_the_advantage():
    space = nas.SearchSpace(num_layers=2)
    for reward, direction in ((0.9, 1), (0.1, -1)):
        controller = nas.Controller(space)
        torch.manual_seed(0)
        controller.load_state_dict(nas.Controller(space).state_dict())
        actions = torch.tensor([space.encode(space.sample(torch.Generator().manual_seed(1)))])
        before = controller.evaluate(actions)[0].item()
        baseline = nas.EMABaseline(value=0.5)
        out = nas.reinforce_update(controller, torch.optim.SGD(controller.parameters(), lr=0.1), actions,
                                   torch.tensor([reward]), baseline)
        after = controller.evaluate(actions)[0].item()
        assert (after - before) * direction > 0
        assert out["advantage"].item() == pytest.approx(reward - 0.5)
        assert out["baseline"] == pytest.approx(0.95 * 0.5 + 0.05 * reward)


def test_reinforce_raises_the_probability_of_a_rewarded_decision():
    """Toy reward: 1 when layer 0's kernel is 5, else 0. The controller must learn to pick 5."""
    space = nas.SearchSpace(num_layers=2, kernel_sizes=(1, 3, 5))
    search = nas.ReinforceSearch(space, seed=0, lr=0.05, batch_size=4)
    probe = torch.tensor([space.encode(space.sample(torch.Generator().manual_seed(0)))])

    def p_kernel5() -> float:
        return search.controller.probabilities(probe)[0][0, 2].item()

    start = p_kernel5()
    for _ in range(30):
        archs = [a for a, _ in search.propose(4)]
        search.observe(archs, [float(a.layers[0].kernel == 5) for a in archs])
    assert abs(start - 1 / 3) < 0.05
    assert p_kernel5() > 0.9


def test_entropy_bonus_flattens_a_peaked_policy_when_rewards_carry_no_signal():
    space = nas.SearchSpace(num_layers=1, kernel_sizes=(1, 3, 5))
    controller = nas.Controller(space)
    with torch.no_grad():
        controller.heads[0].bias.copy_(torch.tensor([3.0, 0.0, 0.0]))
    actions = torch.tensor([[0, 0, 0]])
    before = controller.evaluate(actions)[1].item()
    nas.reinforce_update(controller, torch.optim.SGD(controller.parameters(), lr=0.5), actions,
                         torch.tensor([0.5]), nas.EMABaseline(value=0.5), entropy_weight=1.0)
    assert controller.evaluate(actions)[1].item() > before


def test_cost_aware_reward_is_mnasnets():
    soft = nas.CostAwareReward(1e6)
    assert soft(0.9, 1e6) == pytest.approx(0.9)
    assert soft(0.9, 2e6) == pytest.approx(0.9 * 2 ** -0.07)
    assert soft(0.9, 5e5) == pytest.approx(0.9 * 0.5 ** -0.07)
    hard = nas.CostAwareReward(1e6, alpha=0.0, beta=-1.0)
    assert hard(0.9, 5e5) == pytest.approx(0.9) and hard(0.9, 2e6) == pytest.approx(0.45)
    assert nas.AccuracyReward()(0.75, 10**9) == 0.75


# ----------------------------------------------------------------------------- the search loop
def test_random_search_and_the_controller_get_the_same_budget():
    space = nas.SearchSpace(num_layers=3)
    budget = 7
    runs = {}
    for searcher in (nas.RandomSearch(space, seed=0), nas.ReinforceSearch(space, seed=0, batch_size=3)):
        trainer = ScoreTrainer()
        result = nas.run_search(searcher, trainer, budget, seed=5, progress=False)
        runs[searcher.name] = (result, trainer, searcher)
        assert len(trainer.calls) == result.child_trainings == len(result.history) == budget
        assert [seed for _, seed in trainer.calls] == [nas.child_seed(5, k) for k in range(budget)]
        assert result.history["child"].tolist() == list(range(1, budget + 1))
        assert result.finished
    # the controller learned from every child: updates after children 3, 6 and 7 (a partial last batch)
    rl_searcher = runs["reinforce"][2]
    assert rl_searcher.optimizer.state_dict()["state"][0]["step"].item() == 3
    assert rl_searcher.baseline.value is not None
    assert runs["random"][0].history["reward"].tolist() == [score(nas.Architecture.parse(k))
                                                           for k, _ in runs["random"][1].calls]


def test_the_controller_beats_random_search_on_a_noiseless_toy():
    """With its default settings and 200 children, the controller ends near the toy's optimum (0.56)."""
    space = nas.SearchSpace(num_layers=3, kernel_sizes=(1, 3, 5), filters=(8, 16, 32), skip_connections=False)
    rl = nas.run_search(nas.ReinforceSearch(space, seed=0), ScoreTrainer(), 200, progress=False).history["reward"]
    rs = nas.run_search(nas.RandomSearch(space, seed=0), ScoreTrainer(), 200, progress=False).history["reward"]
    assert rl.tail(40).mean() > rl.head(10).mean() + 0.15  # better than its own first samples
    assert rl.tail(40).mean() > rs.tail(40).mean() + 0.15  # and than random search
    assert rl.tail(40).mean() > 0.53


class DiesAfter:
    """Wraps a ChildTrainer: the child after the first ``after`` dies mid-training, as in a killed process."""

    def __init__(self, trainer, after: int):
        self.trainer, self.after = trainer, after

    def __call__(self, arch, seed):
        if self.trainer.calls >= self.after:
            raise KeyboardInterrupt("killed")
        return self.trainer(arch, seed)

    def fingerprint(self):
        return self.trainer.fingerprint()


class RefusesToTrain(DiesAfter):
    """A trainer's fingerprint, but any child it is asked to train fails the test."""

    def __init__(self, trainer):
        super().__init__(trainer, after=0)

    def __call__(self, arch, seed):
        raise AssertionError("a finished search must not train another child")


@pytest.mark.parametrize("method", ["reinforce", "random"])
def test_resume_continues_a_killed_search_to_the_same_history(method, digits_loaders, tmp_path):
    def searcher():
        if method == "random":
            return nas.RandomSearch(TINY_SPACE, seed=1)
        return nas.ReinforceSearch(TINY_SPACE, seed=1, batch_size=2, lr=0.05)

    budget = 5
    reference_searcher = searcher()
    reference = nas.run_search(reference_searcher, tiny_trainer(digits_loaders), budget, seed=1, progress=False)

    ckpt = tmp_path / "search.pt"
    with pytest.raises(KeyboardInterrupt):  # killed while training child 4: mid-batch for the controller
        nas.run_search(searcher(), DiesAfter(tiny_trainer(digits_loaders), after=3), budget, seed=1,
                       checkpoint=ckpt, progress=False)
    resumed_searcher = searcher()
    trainer = tiny_trainer(digits_loaders)
    resumed = nas.run_search(resumed_searcher, trainer, budget, seed=1, checkpoint=ckpt, progress=False)
    assert trainer.calls == budget - 3  # only the missing children were trained
    columns = [c for c in reference.history.columns if c not in ("child_seconds", "search_seconds")]
    pd.testing.assert_frame_equal(resumed.history[columns], reference.history[columns])
    assert resumed.finished and resumed.child_trainings == budget
    if method == "reinforce":
        for k, v in reference_searcher.controller.state_dict().items():
            assert torch.equal(v, resumed_searcher.controller.state_dict()[k]), k
        assert resumed_searcher.baseline.value == reference_searcher.baseline.value
    # a finished search resumes to itself without training anything
    again = nas.run_search(searcher(), RefusesToTrain(trainer), budget, seed=1, checkpoint=ckpt, progress=False)
    pd.testing.assert_frame_equal(again.history, resumed.history)


def test_max_new_children_stops_and_a_later_call_continues(tmp_path):
    space = nas.SearchSpace(num_layers=3)
    ckpt = tmp_path / "s.pt"
    reference = nas.run_search(nas.ReinforceSearch(space, seed=2, batch_size=2), ScoreTrainer(), 6, progress=False)
    parts = []
    for _ in range(3):
        parts.append(nas.run_search(nas.ReinforceSearch(space, seed=2, batch_size=2), ScoreTrainer(), 6,
                                    checkpoint=ckpt, max_new_children=3 if not parts else 1, progress=False))
    assert [p.child_trainings for p in parts] == [3, 4, 5] and not parts[-1].finished
    final = nas.run_search(nas.ReinforceSearch(space, seed=2, batch_size=2), ScoreTrainer(), 6, checkpoint=ckpt,
                           progress=False)
    assert final.finished
    cols = ["arch", "reward", "log_prob", "baseline"]
    pd.testing.assert_frame_equal(final.history[cols], reference.history[cols])
    # the budget may grow: the search continues from child 7
    longer = nas.run_search(nas.ReinforceSearch(space, seed=2, batch_size=2), ScoreTrainer(), 8, checkpoint=ckpt,
                            progress=False)
    assert longer.history["child"].tolist() == list(range(1, 9))


def test_a_checkpoint_from_another_search_is_refused(tmp_path):
    space = nas.SearchSpace(num_layers=3)
    ckpt = tmp_path / "s.pt"
    nas.run_search(nas.ReinforceSearch(space, seed=0), ScoreTrainer(), 2, checkpoint=ckpt, progress=False)
    with pytest.raises(CheckpointError, match=r"saved by another search \(searcher: .*'lr': 0\.01.*'lr': 0\.5.*\)"
                                              r".*Restore those settings, or use a new checkpoint path"):
        nas.run_search(nas.ReinforceSearch(space, seed=0, lr=0.5), ScoreTrainer(), 4, checkpoint=ckpt,
                       progress=False)
    with pytest.raises(CheckpointError, match=r"method.*random"):
        nas.run_search(nas.RandomSearch(space), ScoreTrainer(), 4, checkpoint=ckpt, progress=False)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"corrupt or truncated.*written by run_search or run_enas"):
        nas.run_search(nas.RandomSearch(space), ScoreTrainer(), 4, checkpoint=bad, progress=False)


def test_child_reward_is_the_validation_accuracy_after_the_fixed_budget(digits_loaders):
    trainer = tiny_trainer(digits_loaders)
    arch = TINY_SPACE.sample(torch.Generator().manual_seed(4))
    result = trainer(arch, seed=9)
    model = trainer.build(arch, seed=9)
    fit(model, trainer.train, trainer.val, trainer.config)
    assert result.val_accuracy == evaluate(model, trainer.val)["accuracy"]
    assert (result.params, result.macs) == nas.child_cost(arch, (1, 8, 8), 10)
    assert trainer.calls == 1
    with pytest.raises(CourseError, match=r"has a checkpoint path.*Leave config.checkpoint None"):
        nas.ChildTrainer(*digits_loaders, TrainConfig(checkpoint="x.pt"), 10)
    # 600 images in batches of 599 leave one image for the last batch
    with pytest.raises(CourseError, match=r"600 training images in batches of 599 leave a last batch of 1 image.*"
                                          r"Change config.batch_size \(e.g. to 600\)"):
        nas.ChildTrainer(*digits_loaders, TrainConfig(batch_size=599), 10)


def test_pareto_front_keeps_exactly_the_undominated_rows():
    frame = pd.DataFrame({"macs": [10, 20, 20, 30, 5, 40], "val_accuracy": [0.8, 0.85, 0.7, 0.84, 0.6, 0.9]})
    front = nas.pareto_front(frame)
    assert front.index.tolist() == [4, 0, 1, 5]
    result = nas.SearchResult("x", frame.assign(reward=frame["val_accuracy"], arch="a"), 0.0, 6, True)
    assert result.best(2).index.tolist() == [5, 1]


# ----------------------------------------------------------------------------- ENAS
def test_supernet_slices_compute_the_standalone_children():
    space = nas.SearchSpace(num_layers=4, kernel_sizes=(1, 3, 5), filters=(4, 8, 16))
    torch.manual_seed(0)
    supernet = nas.SuperNet(space, in_channels=3, num_classes=10)
    with torch.no_grad():  # non-trivial BN affine parameters, so that their slicing is checked too
        for p in supernet.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(4, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    for _ in range(6):
        arch = space.sample(g)
        child = supernet.extract(arch).train()  # batch statistics, as in the super-network
        assert torch.allclose(supernet(x, arch), child(x), atol=1e-5), arch.key


def test_enas_trains_no_child_and_resumes_to_the_same_search(digits_loaders, tmp_path, monkeypatch):
    train, val = digits_loaders
    config = nas.ENASConfig(epochs=2, batch_size=64, controller_steps=3, val_batch_size=64, final_samples=3)
    reference = nas.run_enas(TINY_SPACE, train, val, 10, config=config, seed=0, progress=False)
    assert reference.child_trainings == 0
    assert len(reference.trace) == 6 and len(reference.history) == 3
    assert reference.extra["architectures_evaluated"] == 9

    ckpt = tmp_path / "enas.pt"
    real, calls = nas.enas.shared_accuracy, []

    def dies_in_epoch_2(*args):
        calls.append(1)
        if len(calls) > config.controller_steps:
            raise KeyboardInterrupt("killed")
        return real(*args)

    monkeypatch.setattr(nas.enas, "shared_accuracy", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        nas.run_enas(TINY_SPACE, train, val, 10, config=config, seed=0, checkpoint=ckpt, progress=False)
    monkeypatch.setattr(nas.enas, "shared_accuracy", real)
    resumed = nas.run_enas(TINY_SPACE, train, val, 10, config=config, seed=0, checkpoint=ckpt, progress=False)
    pd.testing.assert_frame_equal(resumed.trace, reference.trace)
    pd.testing.assert_frame_equal(resumed.history, reference.history)


# The notebook itself runs in tests/test_notebooks.py; its published table is checked in
# tests/notebook_checks.py (check_08_nas).
