"""The early-exit core: real early exit agrees with the all-heads reference, sample for sample."""
import math

import pytest
import torch
import torch.nn as nn

from course_utils import data, exits, pareto, train
from course_utils.errors import ThresholdError, UnknownNameError


def tiny_exit_network(num_exits: int = 4, classes: int = 10) -> exits.ExitNetwork:
    torch.manual_seed(0)
    stages, heads, ch = [], [], 1
    for k in range(num_exits):
        stages.append(nn.Sequential(nn.Conv2d(ch, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()))
        heads.append(nn.Sequential(nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(72, classes)))
        ch = 8
    return exits.ExitNetwork(stages, heads).eval()


@pytest.fixture(scope="module")
def digits_net_and_batch():
    """A 4-exit net trained briefly on real digits (12x12), so heads disagree and confidences spread."""
    x, y = data.load("digits", "train", image_size=12)
    xt, yt = data.load("digits", "test", image_size=12)
    loader = data.DeviceLoader.for_dataset("digits", x, y, train=True)
    net = tiny_exit_network()
    train.fit(net, loader, None, train.TrainConfig(epochs=2, batch_size=64, lr=0.05, progress=False),
              loss_fn=exits.exit_loss([1, 1, 1, 1]))
    net.measure_costs((1, 12, 12))
    batch = data.DeviceLoader.for_dataset("digits", xt, yt, train=False).transform(xt)
    return net, batch[:300], yt[:300]


def median_policy(kind: str, scores: exits.ExitScores) -> exits.ExitPolicy:
    """Thresholds at each head's median score, so that about half the samples exit at each head."""
    conf, ent = scores.confidence.median(1).values.tolist(), scores.entropy.median(1).values.tolist()
    return {
        "max_softmax shared": exits.MaxSoftmax(conf[1]),
        "max_softmax per exit, one disabled": exits.MaxSoftmax([conf[0], None, conf[2]]),
        "entropy shared": exits.Entropy(ent[1]),
        "entropy per exit": exits.Entropy(ent[:3]),
        "patience 1": exits.Patience(1),
        "patience 2": exits.Patience(2),
    }[kind]


@pytest.mark.parametrize("kind", ["max_softmax shared", "max_softmax per exit, one disabled", "entropy shared",
                                  "entropy per exit", "patience 1", "patience 2"])
def test_infer_equals_all_heads_then_rule(kind, digits_net_and_batch):
    net, x, y = digits_net_and_batch
    scores = exits.ExitScores.from_logits(net.forward_all(x), y)
    policy = median_policy(kind, scores)
    reference = exits.sweep(scores, net.costs, policy)
    result = net.infer(x, policy)
    assert torch.equal(result.exit_index, reference.exit_index)
    assert torch.equal(result.predictions, reference.predictions)
    # the MACs infer actually spent equal the sweep's accounting, to the MAC
    assert result.macs == round(reference.mean_macs * len(x))
    assert 0 < sum(reference.exit_counts[:-1]) < len(x), "the policy should exit some samples early, not all"
    # batch-size-1 path: same answers
    for i in range(0, 300, 37):
        pred, k, _ = net.infer_single(x[i:i + 1], policy)
        assert k == int(reference.exit_index[i])
        assert (pred, k) == (int(reference.predictions[i]), int(reference.exit_index[i]))


def test_compaction_runs_later_stages_on_fewer_samples(digits_net_and_batch):
    net, x, y = digits_net_and_batch
    policy = median_policy("entropy shared", exits.ExitScores.from_logits(net.forward_all(x), y))
    result = net.infer(x, policy)
    counts = result.samples_per_stage
    assert counts[0] == len(x) and all(a >= b for a, b in zip(counts, counts[1:])) and counts[-1] < 200


def test_sweep_arithmetic_by_hand():
    # 3 exits, 4 samples; logits chosen so confidences are known exactly.
    big, flat = torch.tensor([10.0, 0.0]), torch.tensor([0.0, 0.0])  # conf ~1.0 and exactly 0.5
    per_exit = [torch.stack([big, flat, big.flip(0), flat]), torch.stack([big, big, flat, flat]),
                torch.stack([big, big.flip(0), big, big.flip(0)])]
    labels = torch.tensor([0, 0, 0, 1])
    scores = exits.ExitScores.from_logits(per_exit, labels)
    r = exits.sweep(scores, [10, 20, 30], exits.MaxSoftmax(0.9))
    # sample 0 exits at 0 (pred 0, right); 1 at 1 (pred 0, right); 2 at 0 (pred 1, wrong); 3 at 2 (pred 1, right)
    assert r.exit_index.tolist() == [0, 1, 0, 2]
    assert r.exit_counts == [2, 1, 1]
    assert r.accuracy == 0.75
    assert r.mean_macs == (10 + 20 + 10 + 30) / 4
    assert r.exit_accuracy == [0.5, 1.0, 1.0]
    costs = exits.ExitCosts(stage_macs=[8, 8, 8], head_macs=[2, 2, 2])
    assert costs.cumulative() == [10, 20, 30] and costs.full == 26
    assert costs.cumulative([False, True, True]) == [10, 18, 28]  # a disabled head costs nothing


def test_bad_thresholds_raise_clear_errors():
    with pytest.raises(ThresholdError, match=r"outside its valid range \[0.0, 1.0\]"):
        exits.MaxSoftmax(1.5)
    with pytest.raises(ThresholdError, match="valid range"):
        exits.Entropy(-0.1)
    with pytest.raises(ThresholdError, match="valid range"):
        exits.MaxSoftmax(float("nan"))
    with pytest.raises(ThresholdError, match="3 values, one per early exit"):
        tiny_exit_network().infer(torch.randn(2, 1, 12, 12), exits.MaxSoftmax([0.5, 0.5]))
    with pytest.raises(ThresholdError, match="integer >= 1"):
        exits.Patience(0)
    with pytest.raises(ThresholdError, match="can never be reached"):
        tiny_exit_network().infer(torch.randn(2, 1, 12, 12), exits.Patience(4))
    with pytest.raises(UnknownNameError, match="unknown exit policy 'softmax'. Use one of: max_softmax, entropy, "
                                             "patience"):
        exits.make_policy("softmax", 0.5)
    with pytest.raises(UnknownNameError, match="Use one of: max_softmax, entropy, patience"):
        exits.calibrate(exits.ExitScores.from_logits([torch.zeros(2, 3)] * 2, torch.zeros(2)), [1, 2], "softmax")


def test_a_policy_holds_its_thresholds():
    logits = torch.tensor([[4.0, 0.0], [0.0, 0.1], [0.0, 4.0]])
    per_exit = exits.MaxSoftmax([0.9, None, 0.5])
    assert per_exit.thresholds == [0.9, None, 0.5] and per_exit.threshold(1) is None
    assert per_exit.decide(logits, 0, {}).tolist() == [True, False, True]
    assert per_exit.decide(logits, 1, {}).tolist() == [False, False, False]  # disabled: nobody leaves
    assert per_exit.enabled(4) == [True, False, True, True] and per_exit.resolved(4) == [0.9, None, 0.5]
    shared = exits.Entropy(0.2)
    assert shared.resolved(3) == [0.2, 0.2] and shared.threshold(7) == 0.2
    with pytest.raises(AttributeError):
        shared.thresholds = 0.5  # read-only: a policy is what it was built with
    patience = exits.Patience(2)
    state = patience.start(3, torch.device("cpu"))
    assert patience.decide(logits, 0, state).tolist() == [False] * 3
    assert patience.decide(logits, 1, state).tolist() == [False] * 3  # one agreement so far
    assert patience.decide(logits, 2, state).tolist() == [True, True, True]


def test_normalized_entropy_bounds():
    assert exits.normalized_entropy(torch.zeros(1, 10)).item() == pytest.approx(1.0)
    assert exits.normalized_entropy(torch.tensor([[100.0, 0.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-6)


def test_calibrate_meets_accuracy_bound_and_saves_cost():
    torch.manual_seed(1)
    n, classes = 2000, 10
    labels = torch.randint(0, classes, (n,))
    # heads get better with depth: exit k is right with probability 0.55 + 0.15 k, confident when right
    per_exit = []
    for k in range(4):
        right = torch.rand(n) < 0.55 + 0.15 * k
        pred = torch.where(right, labels, (labels + 1) % classes)
        logits = torch.randn(n, classes) * 0.3
        logits[torch.arange(n), pred] += torch.where(right, 4.0, 1.0)
        per_exit.append(logits)
    scores = exits.ExitScores.from_logits(per_exit, labels)
    costs = exits.ExitCosts([100, 100, 100, 100], [1, 1, 1, 1])
    cal = exits.calibrate(scores, costs, "max_softmax", epsilon=0.0)
    assert cal.val.accuracy >= cal.full_accuracy
    assert cal.val.mean_macs < costs.cumulative()[-1]
    refined = exits.calibrate(scores, costs, "max_softmax", epsilon=0.0, per_exit=True)
    assert refined.val.accuracy >= refined.full_accuracy and refined.val.mean_macs <= cal.val.mean_macs
    loose = exits.calibrate(scores, costs, "max_softmax", epsilon=0.05)
    assert loose.val.mean_macs <= cal.val.mean_macs and loose.val.accuracy >= cal.full_accuracy - 0.05
    table = exits.frontier(scores, costs, "entropy")
    assert table["pareto"].any() and len(table) == len(exits.DEFAULT_GRID)
    with pytest.raises(ThresholdError, match="epsilon"):
        exits.calibrate(scores, costs, epsilon=-1)


def test_exit_loss_weights_heads():
    outs = [torch.zeros(4, 3, requires_grad=True), torch.zeros(4, 3, requires_grad=True)]
    y = torch.tensor([0, 1, 2, 0])
    loss, final = exits.exit_loss([0.25, 1.0])(outs, y)
    assert loss.item() == pytest.approx(1.25 * math.log(3)) and final is outs[-1]


def test_exit_loss_smooths_every_head_as_cross_entropy_does():
    g = torch.Generator().manual_seed(0)
    outs, y = [torch.randn(8, 5, generator=g) for _ in range(3)], torch.randint(0, 5, (8,), generator=g)
    loss, _ = exits.exit_loss([0.5, 0.25, 1.0], label_smoothing=0.2)(outs, y)
    expected = sum(w * torch.nn.functional.cross_entropy(o, y, label_smoothing=0.2)
                   for w, o in zip([0.5, 0.25, 1.0], outs))
    assert torch.equal(loss, expected)
    assert not torch.equal(loss, exits.exit_loss([0.5, 0.25, 1.0])(outs, y)[0])


def synthetic_scores(n: int = 2000, seed: int = 1) -> exits.ExitScores:
    """Heads that get better with depth: exit k is right with probability 0.55 + 0.15 k, confident when right."""
    return exits.synthetic_scores(n, 4, seed)


def test_targets_by_brute_force_over_the_grid():
    scores, costs = synthetic_scores(), exits.ExitCosts([100, 100, 100, 100], [1, 1, 1, 1])
    grid = [i / 20 for i in range(21)]
    results = {t: exits.sweep(scores, costs, exits.MaxSoftmax(t)) for t in grid}
    full = scores.exit_accuracy()[-1]
    # accuracy within epsilon of the final exit, cheapest first
    cal = exits.calibrate(scores, costs, target=exits.AccuracyTarget(0.02), grid=grid)
    ok = [t for t in grid if results[t].accuracy >= full - 0.02]
    assert cal.policy.thresholds == min(ok, key=lambda t: (results[t].mean_macs, -results[t].accuracy))
    assert cal.feasible and cal.epsilon == 0.02
    # removed (early-exited) samples at least p correct, as many as possible, the strictest of equals
    cal = exits.calibrate(scores, costs, target=exits.RemovalPrecision(0.97), grid=grid)

    def early(t):
        r = results[t]
        return sum(r.exit_counts[:-1]), sum(r.exit_correct[:-1])

    ok = [t for t in grid if early(t)[0] and early(t)[1] >= 0.97 * early(t)[0]]
    assert ok and cal.policy.thresholds == min(ok, key=lambda t: (-early(t)[0], -t))
    # ... certified instead by a one-sided 95% Clopper-Pearson lower bound: stricter, never looser
    certified = exits.calibrate(scores, costs, target=exits.RemovalPrecision(0.97, confidence=0.95), grid=grid)
    ok = [t for t in grid if early(t)[0] and exits.clopper_pearson_lower(early(t)[1], early(t)[0], 0.95) >= 0.97]
    assert ok and certified.policy.thresholds == min(ok, key=lambda t: (-early(t)[0], -t))
    assert early(certified.policy.thresholds)[0] <= early(cal.policy.thresholds)[0]
    # cost within a budget, most accurate first
    cal = exits.calibrate(scores, costs, target=exits.CostBudget(250.0), grid=grid)
    ok = [t for t in grid if results[t].mean_macs <= 250.0]
    assert cal.policy.thresholds == min(ok, key=lambda t: (-results[t].accuracy, results[t].mean_macs))
    with pytest.raises(ThresholdError, match="no setting costs at most 50"):
        exits.calibrate(scores, costs, target=exits.CostBudget(50.0), grid=grid)
    with pytest.raises(ThresholdError, match="either a target or epsilon"):
        exits.calibrate(scores, costs, target=exits.CostBudget(250.0), epsilon=0.1)
    with pytest.raises(ThresholdError, match=r"in \(0, 1\]"):
        exits.RemovalPrecision(0)
    # per-exit tuning keeps the target and only ever improves on the shared threshold
    shared = exits.calibrate(scores, costs, target=exits.CostBudget(250.0))
    tuned = exits.calibrate(scores, costs, target=exits.CostBudget(250.0), per_exit=True)
    assert tuned.val.mean_macs <= 250.0 and tuned.val.accuracy >= shared.val.accuracy


def test_frontier_marks_the_pareto_front_and_the_target():
    scores, costs = synthetic_scores(), exits.ExitCosts([100, 100, 100, 100], [1, 1, 1, 1])
    table = exits.frontier(scores, costs, "max_softmax", target=exits.AccuracyTarget(0.01))
    assert table["pareto"].equals(pareto.pareto_mask(table, "mean_macs", "accuracy"))
    full = scores.exit_accuracy()[-1]
    assert table["meets_target"].tolist() == (table["accuracy"] >= full - 0.01 - 1e-12).tolist()
    patience = exits.frontier(scores, costs, "patience")
    assert patience["threshold"].tolist() == [1, 2, 3]


def test_summarize_is_what_sweep_reports():
    scores, costs = synthetic_scores(300), exits.ExitCosts([10, 10, 10, 10], [1, 1, 1, 1])
    policy = exits.Entropy([0.3, None, 0.5])
    r = exits.sweep(scores, costs, policy)
    again = exits.summarize(r.exit_index, r.predictions, scores.labels, 4, costs.cumulative(policy.enabled(4)))
    assert (again.accuracy, again.mean_macs, again.exit_counts, again.exit_accuracy) == \
        (r.accuracy, r.mean_macs, r.exit_counts, r.exit_accuracy)
    assert r.exit_correct == [round(a * c) if c else 0 for a, c in zip(r.exit_accuracy, r.exit_counts)]


EARLY_EXIT_SOURCES = ["exits", "speedycnet", "edcnn", "widgets.py", "layer_times.py"]


def early_exit_files():
    from pathlib import Path

    root = Path(exits.__file__).resolve().parent.parent
    for name in EARLY_EXIT_SOURCES:
        path = root / name
        yield from (sorted(path.glob("*.py")) if path.is_dir() else [path])


def test_early_exit_modules_stay_small_and_use_no_private_names():
    """The core and both papers' code: files under 500 lines, functions under 80, no other module's _names."""
    import ast

    for path in early_exit_files():
        text = path.read_text()
        assert len(text.splitlines()) <= 500, f"{path.name}: {len(text.splitlines())} lines"
        tree = ast.parse(text)
        modules = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= 80, f"{path.name}: {node.name} has {length} lines"
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports private {private} from {node.module}"
                modules |= {a.asname or a.name for a in node.names}
            if isinstance(node, ast.Import):
                modules |= {a.asname or a.name.split(".")[0] for a in node.names}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules \
                    and node.attr.startswith("_") and not node.attr.startswith("__"):
                raise AssertionError(f"{path.name}: uses {node.value.id}.{node.attr}, another module's private name")


def test_clopper_pearson_lower_bound_exact_values():
    from scipy.stats import beta

    assert exits.clopper_pearson_lower(0, 0) == 0.0 and exits.clopper_pearson_lower(0, 10) == 0.0
    assert exits.clopper_pearson_lower(4, 4, 0.95) == pytest.approx(0.05 ** 0.25)  # 4 of 4 certifies only 47%
    assert exits.clopper_pearson_lower(600, 600, 0.95) == pytest.approx(0.05 ** (1 / 600))  # just over 0.995
    assert exits.clopper_pearson_lower(95, 100, 0.95) == pytest.approx(beta.ppf(0.05, 95, 6))
    # the bound grows with evidence at the same observed precision
    assert exits.clopper_pearson_lower(99, 100) < exits.clopper_pearson_lower(990, 1000) < 0.99
    with pytest.raises(ThresholdError, match="confidence is a level"):
        exits.RemovalPrecision(0.99, confidence=1.0)
