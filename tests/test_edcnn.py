"""edCNN: exits attached to a backbone, branch training, budgets, anytime mode, and the notebook in smoke mode."""
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from course_utils import data, edcnn, exits, models, precision, train
from course_utils.errors import CourseError, ThresholdError, UnknownNameError
from course_utils.models.mobilenetv1 import ConvBNAct

REPO = Path(__file__).resolve().parent.parent


class TinyBackbone(nn.Module):
    """A MobileNet-shaped toy: ``features`` (a Sequential of blocks) + global pool + ``classifier``."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(ConvBNAct(1, 8, 3), ConvBNAct(8, 16, 3, stride=2), ConvBNAct(16, 16, 3),
                                      ConvBNAct(16, 32, 3, stride=2), ConvBNAct(32, 32, 3))
        self.classifier = nn.Linear(32, classes)

    def forward(self, x):
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


def quiet(epochs: int, **kw) -> train.TrainConfig:
    return train.TrainConfig(**{"epochs": epochs, "batch_size": 64, "lr": 0.05, "progress": False, **kw})


@pytest.fixture(scope="module")
def digits():
    x, y = data.load("digits", "train", image_size=16)
    xt, yt = data.load("digits", "test", image_size=16)
    tr = data.DeviceLoader.for_dataset("digits", x, y, train=True)
    te = data.DeviceLoader.for_dataset("digits", xt, yt, train=False)
    return tr, te, te.transform(xt), yt


@pytest.fixture(scope="module")
def trained(digits):
    """A backbone trained for 3 epochs, then branches at three taps trained with the backbone frozen."""
    tr, te, _, _ = digits
    torch.manual_seed(0)
    backbone = TinyBackbone()
    train.fit(backbone, tr, None, quiet(3, lr=0.1))
    net = edcnn.attach_exits(backbone, ["features.1", "features.2", "features.3"], input_shape=(1, 16, 16))
    edcnn.train_branches(net, tr, te, quiet(3, lr=0.2))
    return net.eval()


# ----------------------------------------------------------------------------- attaching
def test_attach_to_mobilenet_reports_each_exits_macs():
    backbone = models.create("mobilenet_v1", 10, small_input=True, width_mult=0.25).eval()
    net = edcnn.attach_exits(backbone, backbone_name="mobilenet_v1")
    assert net.taps == edcnn.DEFAULT_TAPS["mobilenet_v1"] + ["final"]
    full_macs, _ = exits.count_macs(backbone, torch.zeros(1, 3, 32, 32))
    assert net.costs.full == full_macs  # the stages plus the final head are the backbone, MAC for MAC
    table = net.exit_table()
    # pool + linear heads: the pool is free, the linear layer costs channels x classes MACs
    channels = [8, 16, 32, 32, 64, 64, 128, 128, 128, 128, 128, 128, 256, 256]  # features.0..13 at width 0.25
    taps = [3, 5, 7, 9, 11]
    assert table["head_macs"].tolist()[:-1] == [channels[t] * 10 for t in taps]
    stage = net.costs.stage_macs
    expected = [sum(stage[:k + 1]) + sum(table["head_macs"][:k + 1]) for k in range(6)]
    assert table["macs_to_exit"].tolist() == expected
    assert table["fraction_of_full"].iloc[-1] == pytest.approx(expected[-1] / full_macs)
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(net.forward_all(x)[-1], backbone(x), atol=1e-5)  # the final exit is the backbone


def test_conv_head_macs_by_hand():
    backbone = models.create("mobilenet_v1", 10, small_input=True, width_mult=0.25)
    net = edcnn.attach_exits(backbone, ["features.3"], head="conv_pool_linear", head_width=48)
    c, hw = 32, 8 * 8  # features.3 gives 32 x 16 x 16; the stride-2 depthwise conv leaves 8 x 8
    assert net.costs.head_macs[0] == 9 * c * hw + c * 48 * hw + 48 * 10
    wide = edcnn.attach_exits(backbone, ["features.3"], pool_size=2)
    assert wide.costs.head_macs[0] == c * 4 * 10


def test_mobilenet_v2_and_resnet_and_an_explicit_split():
    v2 = edcnn.attach_exits(models.create("mobilenet_v2", 10, small_input=True, width_mult=0.25), 3)
    assert v2.num_exits == 4
    fractions = v2.depth_fractions()
    assert all(abs(f - t) < 0.12 for f, t in zip(fractions, [0.3, 0.6, 0.9]))  # SDN placement by MACs
    resnet = models.create("resnet18", 10, small_input=True)
    assert edcnn.attach_exits(resnet, ["layer2.1", "layer3.1"]).taps == ["layer2.1", "layer3.1", "final"]

    class Branchy(nn.Module):  # a forward that is not a chain of named children
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
            self.fc = nn.Linear(8, 5)

        def forward(self, x):
            return self.fc(self.b(F.relu(self.a(x))).mean((2, 3)))

    model = Branchy()
    with pytest.raises(CourseError, match="Pass an explicit split"):
        edcnn.attach_exits(model, 1)
    trunk = edcnn.Trunk.from_stages([nn.Sequential(model.a, nn.ReLU()), model.b],
                                    nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), model.fc))
    net = edcnn.attach_exits(model, ["stage0"], trunk=trunk, input_shape=(3, 8, 8))
    assert net.heads[0][-1].out_features == 5  # the class count is read from the backbone
    wrong = edcnn.Trunk.from_stages([model.a, model.b], nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), model.fc))
    with pytest.raises(CourseError, match="does not reproduce its forward pass"):
        edcnn.attach_exits(model, ["stage0"], trunk=wrong, input_shape=(3, 8, 8))


def test_exits_placed_by_measured_time_follow_the_clock_not_the_macs():
    from course_utils.edcnn import TrunkProfile, evenly_spaced, profile_trunk, taps_by_time

    # SDN's rule, exactly: targets 0.3, 0.6, 0.9 on a uniform profile; ties go to the earlier point
    assert evenly_spaced([0.1 * k for k in range(1, 10)], 3) == [2, 5, 8]
    assert evenly_spaced([0.5, 0.5, 0.5], 2) == [0, 1], "distinct points even when the profile is flat"
    with pytest.raises(CourseError, match="asked for 4 exits, but there are 3 tapping points; use 1 .. 3"):
        evenly_spaced([0.2, 0.4, 0.6], 4)
    # a first block holding 60% of the time but 20% of the MACs: by MACs exit 1 waits for block c, by time
    # it comes right after block a
    prof = TrunkProfile(list("abcde"), macs=[2, 2, 2, 2, 2], ms={1: [3.0, 0.5, 0.5, 0.5, 0.5], 256: [6, 1, 1, 1, 1]})
    assert prof.time_share() == pytest.approx([0.6, 0.7, 0.8, 0.9, 1.0])
    assert prof.macs_share() == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert taps_by_time(prof, 2) == ["a", "d"]  # targets 0.45 and 0.90 of the time
    assert [prof.names[i] for i in evenly_spaced(prof.macs_share()[:-1], 2)] == ["b", "d"]
    assert list(prof.table().columns) == ["tap", "macs", "ms_bs1", "ms_bs256", "macs_share", "time_share"]
    # measured on a real trunk: every tapping point timed, MACs as attach_exits counts them, shares rising to 1
    backbone = models.create("mobilenet_v1", 10, small_input=True, width_mult=0.25)
    measured = profile_trunk(backbone, (3, 32, 32), batch_sizes=(1, 4), repeats=1)
    assert measured.names == edcnn.tapping_points(backbone) and sorted(measured.ms) == [1, 4]
    every = edcnn.attach_exits(backbone, measured.names[:-1], input_shape=(3, 32, 32))
    assert sum(measured.macs) == sum(every.costs.stage_macs)
    assert all(t > 0 for ms in measured.ms.values() for t in ms)
    share = measured.time_share()
    assert share[-1] == pytest.approx(1.0) and all(a <= b for a, b in zip(share, share[1:]))
    taps = taps_by_time(measured, 5)
    assert len(taps) == 5 and taps == sorted(taps, key=measured.names.index) and measured.names[-1] not in taps
    assert edcnn.attach_exits(backbone, taps).taps == [*taps, "final"]


def test_bad_tapping_points_name_the_valid_ones():
    backbone = models.create("mobilenet_v1", 10, small_input=True, width_mult=0.25)
    with pytest.raises(UnknownNameError, match=r"unknown tapping point 'features\.99'.*points are: features\.0"):
        edcnn.attach_exits(backbone, ["features.99"])
    with pytest.raises(UnknownNameError, match=r"inside features\.3, and exits can only tap between"):
        edcnn.attach_exits(backbone, ["features.3.depthwise"])
    with pytest.raises(CourseError, match="end of the trunk"):
        edcnn.attach_exits(backbone, ["features.13"])
    with pytest.raises(CourseError, match="listed twice"):
        edcnn.attach_exits(backbone, ["features.3", "features.3"])
    with pytest.raises(CourseError, match=r"out of order.*\['features\.3', 'features\.5'\]"):
        edcnn.attach_exits(backbone, ["features.5", "features.3"])
    with pytest.raises(CourseError, match="list of tapping-point names"):
        edcnn.attach_exits(backbone, "features.3")
    with pytest.raises(CourseError, match="use 1 .. 13"):
        edcnn.attach_exits(backbone, 14)
    with pytest.raises(CourseError, match="no default taps"):
        edcnn.attach_exits(backbone)
    with pytest.raises(UnknownNameError, match="unknown head 'mlp'"):
        edcnn.attach_exits(backbone, ["features.3"], head="mlp")


# ----------------------------------------------------------------------------- real early exit
def all_heads_then_rule(net, x, rule, thresholds):
    """The reference: every head on every sample, then the first head whose rule fires (the last always does)."""
    outs = net.forward_all(x)
    score = [exits.confidence(o) if rule == "max_softmax" else exits.normalized_entropy(o) for o in outs]
    preds, where = [], []
    for i in range(len(x)):
        for k, logits in enumerate(outs):
            t = thresholds[k] if k < len(thresholds) else None
            fires = t is not None and (score[k][i] >= t if rule == "max_softmax" else score[k][i] <= t)
            if k == len(outs) - 1 or fires:
                preds.append(int(logits[i].argmax()))
                where.append(k)
                break
    return torch.tensor(preds), torch.tensor(where)


def between_samples(values: torch.Tensor) -> float:
    """A threshold near the median but halfway between two samples' scores, so float noise cannot flip one."""
    v = values.sort().values
    i = len(v) // 2
    return float((v[i - 1] + v[i]) / 2)


@pytest.mark.parametrize("rule", ["max_softmax", "entropy"])
def test_batched_early_exit_equals_all_heads_then_rule(trained, digits, rule):
    net, x = trained, digits[2][:200]
    with torch.no_grad():
        scores = exits.ExitScores.from_logits(net.forward_all(x), digits[3][:200])
    table = scores.confidence if rule == "max_softmax" else scores.entropy
    thresholds = [between_samples(table[k]) for k in range(3)]
    thresholds[1] = None  # a disabled exit is skipped, not computed
    policy = exits.make_policy(rule, thresholds)
    result = net.infer(x, policy)
    preds, where = all_heads_then_rule(net, x, rule, thresholds)
    assert torch.equal(result.exit_index, where) and torch.equal(result.predictions, preds)
    assert 0.2 < (where < 3).float().mean() < 1.0, "some samples must leave early and some must not"
    assert result.samples_per_stage[0] == 200 and result.samples_per_stage[-1] == int((where == 3).sum())
    assert result.macs == sum(net.costs.cumulative([True, False, True, True])[k] for k in where.tolist())
    for i in range(0, 200, 23):  # the batch-size-1 path agrees sample for sample
        pred, k, _ = net.infer_single(x[i:i + 1], policy)
        assert (pred, k) == (int(preds[i]), int(where[i]))


# ----------------------------------------------------------------------------- training
def test_frozen_branch_training_leaves_the_backbone_unchanged(digits, tmp_path):
    tr, te, x, y = digits
    torch.manual_seed(1)
    backbone = TinyBackbone()
    train.fit(backbone, tr, None, quiet(2, lr=0.1))
    net = edcnn.attach_exits(backbone, ["features.1", "features.3"], input_shape=(1, 16, 16), head="conv_pool_linear")
    before = net.backbone_state()
    heads_before = [p.detach().clone() for p in net.heads[0].parameters()]
    with torch.no_grad():
        out_before = backbone.eval()(x)
    history = edcnn.train_branches(net, tr, te, quiet(3, lr=0.2, checkpoint=str(tmp_path / "branches.pt")))
    after = net.backbone_state()
    assert before.keys() == after.keys() and any("running_mean" in k for k in before)
    for k in before:  # weights and BatchNorm statistics, bit for bit
        assert torch.equal(before[k], after[k]), k
    with torch.no_grad():
        assert torch.equal(backbone.eval()(x), out_before)
    assert any(not torch.equal(a, b) for a, b in zip(heads_before, net.heads[0].parameters()))
    assert (tmp_path / "branches.pt").exists() and len(history.epochs) == 3
    assert all(e["exit_weights"] == [1.0, 1.0, 0.0] for e in history.epochs)  # the frozen final head: weight 0
    with torch.no_grad():
        acc = exits.ExitScores.from_logits(net.forward_all(x), y).exit_accuracy()
    assert acc[0] > 0.4, f"the first branch should learn digits from frozen features, got {acc[0]:.2f}"
    net.freeze_backbone(False)
    assert all(p.requires_grad for p in net.parameters())


def test_joint_training_with_sdns_rising_weights(digits, tmp_path):
    tr, te, _, _ = digits
    torch.manual_seed(0)
    net = edcnn.attach_exits(TinyBackbone(), ["features.1", "features.3"], input_shape=(1, 16, 16))
    fractions = net.depth_fractions()
    history = edcnn.train_joint(net, tr, te, quiet(3, checkpoint=str(tmp_path / "joint.pt")), weights="sdn")
    weights = [e["exit_weights"] for e in history.epochs]
    assert weights[0] == pytest.approx([0.01, 0.01, 1.0])
    assert weights[1] == pytest.approx([0.01 + (f - 0.01) / 2 for f in fractions[:-1]] + [1.0])
    assert weights[2] == pytest.approx(fractions[:-1] + [1.0])
    assert history.epochs[-1]["val_accuracy"] > 0.5
    # resume: the finished run is read back, and the schedule continues from the checkpoint's epoch
    again = edcnn.train_joint(net, tr, te, quiet(3, checkpoint=str(tmp_path / "joint.pt")), weights="sdn")
    assert len(again.epochs) == 3


def test_exit_weights_and_their_errors():
    assert edcnn.exit_weights("uniform", [0.3, 0.6, 1.0]) == [1.0, 1.0, 1.0]
    assert edcnn.exit_weights("sdn", [0.3, 0.6, 1.0], 0, 5) == pytest.approx([0.01, 0.01, 1.0])
    assert edcnn.exit_weights("sdn", [0.3, 0.6, 1.0], 4, 5) == pytest.approx([0.3, 0.6, 1.0])
    assert edcnn.exit_weights([0.5, 0.5, 1], [0.3, 0.6, 1.0]) == [0.5, 0.5, 1.0]
    with pytest.raises(UnknownNameError, match="unknown exit-weight schedule 'rising'"):
        edcnn.exit_weights("rising", [0.5, 1.0])
    with pytest.raises(CourseError, match="one weight per exit"):
        edcnn.exit_weights([1.0], [0.5, 1.0])
    with pytest.raises(CourseError, match="non-negative"):
        edcnn.exit_weights([-1.0, 1.0], [0.5, 1.0])


# ----------------------------------------------------------------------------- the budget controller
def synthetic_scores(n=2000, num_exits=4, seed=1):
    """Heads that get better with depth; exit k is right with probability 0.55 + 0.15 k, confident when right."""
    return exits.synthetic_scores(n, num_exits, seed)


def test_controller_meets_a_reachable_mac_budget_with_the_best_accuracy():
    scores, costs = synthetic_scores(), exits.ExitCosts([100, 100, 100, 100], [1, 1, 1, 1])
    controller = edcnn.BudgetController(scores, costs)
    for budget in (150.0, 250.0, 330.0):  # the budget changes between calls
        choice = controller.choose(macs_per_image=budget)
        assert choice.feasible and choice.expected.mean_macs <= budget
        # brute force over the same candidates: nothing that fits is more accurate
        best = max(c.result.accuracy for c in controller.candidates if c.result.mean_macs <= budget)
        assert choice.expected.accuracy == best
    unlimited = controller.choose(macs_per_image=1e9)
    assert unlimited.expected.accuracy == max(c.result.accuracy for c in controller.candidates)
    assert controller.candidates[-1].threshold is None and controller.candidates[-1].result.mean_macs == costs.full
    # the controller's choice is the core's CostBudget target over the same candidates
    pick = exits.best_candidate(controller.candidates, exits.CostBudget(250.0))
    assert controller.choose(macs_per_image=250.0).policy is controller.candidates[pick].policy
    patience = edcnn.BudgetController(scores, costs, "patience")
    assert [c.threshold for c in patience.candidates] == [1, 2, 3]  # include_full adds nothing for patience


def test_controller_refuses_or_falls_back_on_an_unreachable_budget():
    scores, costs = synthetic_scores(), exits.ExitCosts([100, 100, 100, 100], [1, 1, 1, 1])
    with pytest.raises(ThresholdError, match=r"budget of 50 MACs/image cannot be met.*at least 101 MACs/image"):
        edcnn.BudgetController(scores, costs).choose(macs_per_image=50)
    with pytest.warns(edcnn.BudgetWarning, match="unreachable; fallback: the cheapest setting"):
        choice = edcnn.BudgetController(scores, costs, fallback="cheapest").choose(macs_per_image=50)
    assert not choice.feasible and choice.expected_cost == 101 and "exceeds the budget" in choice.note
    with pytest.raises(ThresholdError, match="exactly one budget"):
        edcnn.BudgetController(scores, costs).choose()
    with pytest.raises(ThresholdError, match="positive number"):
        edcnn.BudgetController(scores, costs).choose(macs_per_image=-3)
    with pytest.raises(ThresholdError, match="needs a latency model"):
        edcnn.BudgetController(scores, costs).choose(ms_per_batch=10)


def test_controller_time_budget_uses_the_latency_model():
    scores, costs = synthetic_scores(), exits.ExitCosts([100, 100, 100, 100], [1, 1, 1, 1])
    latency = edcnn.LatencyModel([1.0, 1.0, 1.0, 1.0], [0.01, 0.01, 0.01, 0.01])
    controller = edcnn.BudgetController(scores, costs, latency=latency)
    choice = controller.choose(ms_per_batch=5.0, batch_size=100)  # every stage: 1 ms + 0.01 ms per sample
    counts = torch.tensor(choice.expected.exit_counts, dtype=torch.float64)
    reach = (counts.flip(0).cumsum(0).flip(0) / len(scores)).tolist()  # fraction of images that run stage k
    # a stage's 1 ms is paid by the batches any sample reaches; its 0.01 ms by each sample that does
    assert choice.expected_cost == pytest.approx(sum(1.0 * (1 - (1 - f) ** 100) + 0.01 * f * 100 for f in reach))
    assert choice.expected_cost <= 5.0
    assert controller.cheapest("ms/batch", 100) == pytest.approx(2.0)  # all samples leave at exit 1
    with pytest.raises(ThresholdError, match="cannot be met"):
        controller.choose(ms_per_batch=1.5, batch_size=100)


def test_predicted_time_is_the_exact_expectation_over_batches_of_independent_images():
    """``ms_per_image`` is the mean of ``batch_ms`` over every batch the exit fractions can draw: at batch 1 an image
    pays only the stages it runs (their fixed cost included), and at batch 2 a stage's fixed cost is paid once by
    every pair that reaches it. Enumerated exactly."""
    import itertools

    latency = edcnn.LatencyModel([0.5, 0.4, 0.3, 0.2], [0.1, 0.1, 0.2, 0.2])
    leave = [0.4, 0.3, 0.2, 0.1]  # fraction of images leaving at each exit
    reach = [sum(leave[k:]) for k in range(4)]

    def batch(exits_taken):  # the batch's ms when its images leave at these exits
        return latency.batch_ms([sum(e >= k for e in exits_taken) for k in range(4)])

    one = sum(p * batch([e]) for e, p in enumerate(leave))
    assert one == pytest.approx(sum(p * ms for p, ms in zip(leave, latency.exit_ms(1))))  # the cumulative ms
    assert latency.ms_per_image(reach, 1) == pytest.approx(one, rel=1e-12)
    two = sum(leave[i] * leave[j] * batch([i, j]) for i, j in itertools.product(range(4), repeat=2))
    assert latency.expected_batch_ms(reach, 2) == pytest.approx(two, rel=1e-12)
    assert latency.ms_per_image(reach, 2) == pytest.approx(two / 2, rel=1e-12)
    # every image to the end: the plain batch time, at any batch size
    assert latency.expected_batch_ms([1.0] * 4, 256) == pytest.approx(latency.batch_ms([256] * 4))
    # the old reading (fractional counts, every stage's fixed cost on every batch) overpredicts batch 1
    assert latency.batch_ms(reach) > latency.ms_per_image(reach, 1) + 0.3


def test_controller_runs_batches_and_never_violates_silently(trained, digits):
    net, x, y = trained, digits[2], digits[3]
    with torch.no_grad():
        scores = exits.ExitScores.from_logits(net.forward_all(x), y)
    controller = edcnn.BudgetController(scores, net.costs)
    cheapest, full = controller.cheapest(), net.costs.cumulative()[-1]
    for budget in (cheapest * 1.05, (cheapest + full) / 2, full):  # a new budget every batch
        with warnings.catch_warnings():
            warnings.simplefilter("error", edcnn.BudgetWarning)  # the calibration batch itself: no miss
            run = controller.infer(net, x, macs_per_image=budget)
        assert run.met and run.macs_per_image <= budget and run.ms > 0
        assert run.macs_per_image == pytest.approx(run.choice.expected.mean_macs)
    # calibrated on confident heads, run on a batch that is not: the miss is reported and corrected
    overconfident = exits.ExitScores(scores.predictions, torch.ones_like(scores.confidence),
                                     torch.zeros_like(scores.entropy), scores.labels)
    naive = edcnn.BudgetController(overconfident, net.costs, grid=[1.0], include_full=False)
    with pytest.warns(edcnn.BudgetWarning, match="missed its budget"):
        run = naive.infer(net, x, macs_per_image=cheapest * 1.5)
    assert not run.met and naive.correction["MACs/image"] > 1


def test_anytime_returns_the_deepest_prediction_by_the_deadline(trained, digits):
    net, x = trained, digits[2][:64]
    with torch.no_grad():
        final = net.forward_all(x)[-1].argmax(1)
    r = edcnn.anytime(net, x, deadline_ms=60_000)
    assert r.met and r.exit_index == net.num_exits - 1 and torch.equal(r.predictions, final)
    slow = edcnn.LatencyModel([1e7] * 4, [0.0] * 4)  # predicts every later stage to overrun
    r = edcnn.anytime(net, x, deadline_ms=60_000, latency=slow)
    assert r.met and r.exit_index == 0
    with pytest.warns(edcnn.BudgetWarning, match="deadline 1e-06 ms missed"):
        r = edcnn.anytime(net, x, deadline_ms=1e-6)
    assert not r.met and r.exit_index == 0 and r.answer_ms > r.deadline_ms
    with pytest.raises(ThresholdError, match="missed"):
        edcnn.anytime(net, x, deadline_ms=1e-6, on_miss="raise")
    with pytest.raises(ThresholdError, match="positive number of milliseconds"):
        edcnn.anytime(net, x, deadline_ms=0)


# ----------------------------------------------------------------------------- measuring
def test_benchmark_and_time_breakdown_account_for_every_mac(trained, digits):
    net, x = trained, digits[2][:96]
    with torch.no_grad():
        conf = exits.ExitScores.from_logits(net.forward_all(x), digits[3][:96]).confidence
    policy = exits.MaxSoftmax(between_samples(conf[0]))
    table = edcnn.benchmark([edcnn.Contender("full", net), edcnn.Contender("elastic", net, policy)], x,
                            batch_size=32, repeats=2, warmup=1)
    assert list(table["name"]) == ["full", "elastic"] and (table["ms_per_image"] > 0).all()
    assert table["macs_per_image"][0] == net.costs.full
    assert table["macs_per_image"][1] == net.infer(x, policy).macs / len(x)
    single = edcnn.benchmark([edcnn.Contender("elastic", net, policy)], x[:8], batch_size=1, repeats=1, warmup=0)
    assert single["images"][0] == 8 and single["batch_size"][0] == 1
    parts = edcnn.time_breakdown(net, x, policy, repeats=2)
    result = net.infer(x, policy)
    ran = len(result.samples_per_stage)
    assert parts["samples"].tolist()[:ran] == result.samples_per_stage and parts["samples"][ran:-1].eq(0).all()
    assert parts["macs"].sum() == result.macs
    assert parts["time_share"].sum() == pytest.approx(1.0)
    per_batch = edcnn.measure_batches(net, [(x[:50], digits[3][:50]), (x[50:], digits[3][50:96])], policy)
    assert per_batch["images"].tolist() == [50, 46] and (per_batch["ms"] > 0).all()
    # what a sample costs does not depend on how it was batched
    assert (per_batch["macs_per_image"] * per_batch["images"]).sum() == result.macs
    assert per_batch["exit_counts"].apply(sum).tolist() == [50, 46]
    model = edcnn.measure_latency_model(net, 32, repeats=2)
    per_exit = model.exit_ms(1)
    assert len(per_exit) == 4 and all(a < b for a, b in zip(per_exit, per_exit[1:]))


def test_the_latency_model_feeds_the_layout_the_network_was_trained_in():
    """A channels_last network is timed on channels_last input (NCHW input would add a conversion per stage)."""
    from course_utils.edcnn import timing

    backbone = models.create("mobilenet_v1", 10, small_input=True, width_mult=0.25).eval()
    net = edcnn.attach_exits(backbone, backbone_name="mobilenet_v1")
    seen = []
    hook = net.stages[0].register_forward_pre_hook(
        lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    try:
        assert not precision.is_channels_last(net)
        timing.measure_latency_model(net, 2, repeats=1)
        assert seen and not any(seen), "an NCHW network gets NCHW input"
        seen.clear()
        net.to(memory_format=torch.channels_last)
        assert precision.is_channels_last(net)
        timing.measure_latency_model(net, 2, repeats=1)
        assert seen and all(seen), "a channels_last network gets channels_last input"
    finally:
        hook.remove()


def test_exit_distribution_per_class():
    frame = edcnn.exit_distribution(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 0, 1, 1]), 3, ["a", "b"])
    assert frame.loc["a"].tolist() == [0.5, 0.5, 0.0] and frame.loc["b"].tolist() == [0.0, 0.5, 0.5]


# ----------------------------------------------------------------------------- layer times
class Sleepy(nn.Module):
    """A module whose forward takes a known time."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def forward(self, x):
        import time

        time.sleep(self.seconds)
        return x


def test_module_times_hooks_every_named_module_and_leaves_no_hook():
    from course_utils import layer_times

    model = nn.Sequential(Sleepy(0.02), nn.Linear(4, 4), Sleepy(0.005))
    times = layer_times.module_times(model, torch.zeros(2, 4), ["0", "2"], repeats=3, warmup=2)
    assert set(times) == {"0", "2"} and [len(t) for t in times.values()] == [3, 3]  # warm-up runs not counted
    assert min(times["0"]) >= 20 and min(times["2"]) >= 5 and max(times["2"]) < min(times["0"])
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    default = layer_times.module_times(model, torch.zeros(2, 4), repeats=1, warmup=0)
    assert list(default) == ["0", "1", "2"]  # the direct children
    # a run of one's own: a module that does not run gets no entry
    skipped = layer_times.module_times(model, module_names=["0", "2"], repeats=2, warmup=0,
                                       run=lambda: model[0](torch.zeros(1, 4)))
    assert len(skipped["0"]) == 2 and skipped["2"] == []
    with pytest.raises(ValueError, match="give an input batch"):
        layer_times.module_times(model)


def test_comparison_rows_name_their_reference_and_the_headline_is_chosen_on_val_only():
    from types import SimpleNamespace

    import pandas as pd

    from course_utils.edcnn import LatencyModel, Reference, comparison_table, headline_row

    latency = LatencyModel([0.0, 0.0], [1.0, 1.0])  # ms per image: stage 1 and stage 2 cost the same
    cal = {("frozen", "max_softmax"): (SimpleNamespace(val=SimpleNamespace(reach_fraction=[1.0, 0.5], accuracy=0.90)),
                                       SimpleNamespace(accuracy=0.80, mean_macs=60)),
           ("joint", "max_softmax"): (SimpleNamespace(val=SimpleNamespace(reach_fraction=[1.0, 0.2], accuracy=0.95)),
                                      SimpleNamespace(accuracy=0.95, mean_macs=40))}
    timings = pd.DataFrame([{"name": n, "batch_size": b, "ms_per_image": ms} for b in (1, 256) for n, ms in
                            (("full", 2.0), ("joint (own final exit)", 2.0), ("frozen/max_softmax", 1.5),
                             ("joint/max_softmax", 1.0))])
    original = Reference("original backbone", "full", 0.91, 0.92)
    refs = {"frozen": [original], "joint": [Reference("own final exit", "joint (own final exit)", 0.96, 0.97),
                                            original]}
    table = comparison_table(cal, timings, refs, latency, {"frozen": 100, "joint": 100},
                             context={"dataset": "d", "backbone": "b", "device": "cpu", "scale": "s", "seed": 0})
    assert len(table) == 6 and (table["chosen_on"] == "val").all()
    frozen = table[table["mode"] == "frozen"].iloc[0]
    assert frozen["reference"] == "original backbone" and frozen["time_reduction_pct"] == pytest.approx(25.0)
    assert frozen["val_predicted_time_reduction_pct"] == pytest.approx(100 * (1 - 1.5 / 2.0))
    own = table[(table["mode"] == "joint") & (table["reference"] == "own final exit")].iloc[0]
    assert own["acc_full"] == 0.97 and own["val_acc_full"] == 0.96
    # on val the frozen row falls 1 point short of the original and the joint row holds: the joint row is chosen,
    # although on test the frozen row loses 12 points and would be excluded anyway: test never decides
    pick = headline_row(table, acc_drop=0.003)
    assert pick["mode"] == "joint" and pick["reference"] == "original backbone"
    # a tier that trains mode (b) on one seed only headlines mode (a): here no frozen row holds on val
    assert headline_row(table, acc_drop=0.003, modes=["frozen"]) is None
    assert headline_row(table, acc_drop=0.02, modes=["frozen"])["mode"] == "frozen"
    with pytest.raises(UnknownNameError, match="frozen, joint"):
        headline_row(table, modes=["forzen"])
    # a row predicted (on val) to be slower than its reference is no headline, even the least slow of them
    slower = table.assign(val_predicted_time_reduction_pct=-table["val_predicted_time_reduction_pct"].abs() - 1)
    assert headline_row(slower, acc_drop=0.02) is None
    table.loc[table["mode"] == "joint", "val_acc_edcnn"] = 0.5
    assert headline_row(table, acc_drop=0.003) is None
    extra = comparison_table(cal, timings, refs, latency, {"frozen": 100, "joint": 100},
                             context={"dataset": "d", "backbone": "b", "device": "cpu", "scale": "s", "seed": 0,
                                      "width_mult": 1.0, "train_images": 45000, "precision": "fp32", "recipe": "fast"})
    assert (extra["width_mult"] == 1.0).all() and (extra["train_images"] == 45000).all()
    assert (extra["precision"] == "fp32").all() and (extra["recipe"] == "fast").all()
