"""SpeedyCNet: the learners, the cascade trainer's removal logic, real early exit, DDP agreement, bad input."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from course_utils import data, exits, models, speedycnet
from course_utils.errors import CourseError, ThresholdError, UnknownNameError
from course_utils.train import TrainConfig, count_parameters

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These nets are tiny: a second thread only adds synchronisation, which costs 10x or more when the
    2 cores are shared with other work (OMP threads wait on each other)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- the learners
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_learner_4_full_stack_is_vgg16(channels, size):
    """The hierarchy is VGG16's conv stack cut in four; with the default head, learner 4's path is VGG16."""
    torch.manual_seed(0)
    net = speedycnet.hierarchical_learners(10, channels, size, width_mult=0.25).eval()
    vgg = models.create("vgg16_bn", 10, in_channels=channels, small_input=True, width_mult=0.25).eval()
    stack = speedycnet.learner_stack(net, 3)
    assert sum(count_parameters(s) for s in net.stages) == count_parameters(vgg.features)
    assert count_parameters(stack) == count_parameters(vgg)
    # copy VGG16's weights in order; the outputs must then agree
    ours = list(stack.state_dict().values())
    theirs = list(vgg.state_dict().values())
    assert [t.shape for t in ours] == [t.shape for t in theirs]
    stack.load_state_dict(dict(zip(stack.state_dict().keys(), theirs)))
    x = torch.randn(4, channels, size, size)
    torch.testing.assert_close(stack(x), vgg(x))
    outs = net.forward_all(x)
    assert [tuple(o.shape) for o in outs] == [(4, 10)] * 4
    torch.testing.assert_close(outs[-1], vgg(x))


def test_each_learner_reads_the_previous_feature_map():
    net = speedycnet.hierarchical_learners(10, 1, 28, width_mult=0.25)
    x = torch.randn(2, 1, 28, 28)
    shapes = []
    for stage in net.stages:
        x = stage(x)
        shapes.append(tuple(x.shape[1:]))
    # VGG16 widths 64/128/256/512 x 0.25, ceil-mode pooling 28 -> 14 -> 7 -> 4 -> (2 ->) 1
    assert shapes == [(16, 14, 14), (32, 7, 7), (64, 4, 4), (128, 1, 1)]
    # the linear head pools to at most 4x4: learner 1's head is Linear(16 * 16, 10)
    assert net.heads[0][-1].in_features == 16 * 4 * 4 and net.heads[3][-1].in_features == 128


def test_split_and_head_are_configurable():
    net = speedycnet.hierarchical_learners(10, 3, 32, width_mult=0.25, split=(2, 1, 1, 1), head="gap")
    blocks = speedycnet.vgg_blocks("vgg16", 3, 0.25)
    assert count_parameters(net.stages[0]) == count_parameters(blocks[0]) + count_parameters(blocks[1])
    assert all(isinstance(h[-1], nn.Linear) and h[-1].in_features == w for h, w in zip(net.heads, (32, 64, 128, 128)))
    mlp = speedycnet.hierarchical_learners(10, 3, 32, width_mult=0.25, head="mlp")
    assert len([m for m in mlp.heads[0] if isinstance(m, nn.Linear)]) == 2
    conv = speedycnet.hierarchical_learners(10, 3, 32, width_mult=0.25, head="conv")
    assert isinstance(conv.heads[1][0], nn.Conv2d) and conv.heads[1][0].in_channels == 32
    custom = speedycnet.hierarchical_learners(
        10, 1, 28, width_mult=0.25, split=(3, 2),
        head=lambda c, s, n: nn.Sequential(nn.Flatten(), nn.Linear(c * s * s, n)))
    assert custom.num_exits == 2 and custom.heads[0][1].in_features == 64 * 4 * 4
    with pytest.raises(CourseError, match=r"use all 5 blocks \(e.g. \(1, 1, 1, 2\)"):
        speedycnet.hierarchical_learners(10, 3, 32, split=(1, 1, 1, 1))
    with pytest.raises(CourseError, match="at least 2 learners"):
        speedycnet.hierarchical_learners(10, 3, 32, split=(5,))
    with pytest.raises(UnknownNameError, match="unknown head design 'dense'. Use one of: linear, gap, mlp, conv"):
        speedycnet.hierarchical_learners(10, 3, 32, head="dense")


def test_small_first_learners_narrow_only_the_first_learner():
    torch.manual_seed(0)
    net = speedycnet.small_first_learners(10, 1, 28, width_mult=0.5, first_width=0.25)
    # learner 1: VGG block 1 at width 0.125 (1->8->8 channels: 80 + 16 + 584 + 16), then 8 x 4 x 4 -> 10 (1,290)
    assert count_parameters(net.heads[0][0]) == 696 == count_parameters(speedycnet.vgg_blocks("vgg16", 1, 0.125)[0])
    assert count_parameters(net.heads[0]) == 696 + 1290
    wide = speedycnet.independent_learners(10, 1, 28, width_mult=0.5)
    assert [count_parameters(h) for h in net.heads[1:]] == [count_parameters(h) for h in wide.heads[1:]]
    assert [tuple(o.shape) for o in net.forward_all(torch.randn(2, 1, 28, 28))] == [(2, 10)] * 4
    costs = net.measure_costs((1, 28, 28))
    assert costs.head_macs[0] < costs.head_macs[1] / 10  # every sample passes learner 1: it must be cheap
    with pytest.raises(CourseError, match=r"first_width 0 must be in \(0, 1\]"):
        speedycnet.small_first_learners(10, 1, 28, first_width=0)


def test_independent_learners_grow_and_read_raw_pixels():
    torch.manual_seed(0)
    net = speedycnet.independent_learners(10, 1, 28, width_mult=0.25)
    assert all(isinstance(s, nn.Identity) for s in net.stages)
    blocks = [count_parameters(b) for b in speedycnet.vgg_blocks("vgg16", 1, 0.25)]
    bodies = [count_parameters(h[0]) for h in net.heads]
    assert bodies == [sum(blocks[:1]), sum(blocks[:2]), sum(blocks[:3]), sum(blocks)]
    # no weights are shared: changing learner 1 leaves learner 2's output alone
    x = torch.randn(2, 1, 28, 28)
    net.eval()
    before = net.heads[1](x)
    with torch.no_grad():
        for p in net.heads[0].parameters():
            p.add_(1.0)
    torch.testing.assert_close(net.heads[1](x), before)
    assert [tuple(o.shape) for o in net.forward_all(x)] == [(2, 10)] * 4


# ----------------------------------------------------------------------------- the removal rule
def test_removal_threshold_by_hand():
    # confidences 0.99 (right), 0.99 (right), 0.9 (wrong), 0.8 (right), 0.5 (wrong)
    probs = torch.tensor([[0.99, 0.01], [0.01, 0.99], [0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    logits = probs.log()
    labels = torch.tensor([0, 1, 1, 1, 1])
    grid = [0.5, 0.8, 0.85, 0.9, 0.95, 0.99]
    # precision 1.0: only {0, 1} qualify (tau 0.95 and 0.99 both remove exactly them; the strictest is kept)
    assert speedycnet.removal_threshold(logits, labels, "max_softmax", 1.0, grid, confidence=None) == pytest.approx(0.99)
    # precision 0.75: tau 0.8 removes {0,1,2,3}, 3 of 4 right; tau 0.5 removes all five, 3 of 5 -> no
    assert speedycnet.removal_threshold(logits, labels, "max_softmax", 0.75, grid, confidence=None) == pytest.approx(0.8)
    # nothing reaches precision 1.0 when the most confident sample is wrong
    assert speedycnet.removal_threshold(logits, torch.tensor([1, 1, 1, 1, 1]), "max_softmax", 1.0, grid, confidence=None) is None
    # entropy: lower is more confident; the loosest qualifying threshold is the largest
    ent = exits.normalized_entropy(logits)
    tau = speedycnet.removal_threshold(logits, labels, "entropy", 1.0, [float(ent[0]) + 1e-6, 0.9],
                                       confidence=None)
    assert tau == pytest.approx(float(ent[0]) + 1e-6)
    # certified (the default): 20 right of 20 removed certify only 0.05 ** (1/20) = 86% at 95% confidence,
    # 100 right of 100 certify 97%: enough for 0.95, where the point estimate would accept both
    for n, expected in ((20, None), (100, 0.9)):
        many = torch.tensor([[4.0, 0.0]] * n).log_softmax(1)
        right = torch.zeros(n, dtype=torch.long)
        assert speedycnet.removal_threshold(many, right, "max_softmax", 0.95, [0.9]) == expected
        assert speedycnet.removal_threshold(many, right, "max_softmax", 0.95, [0.9], confidence=None) == 0.9
    with pytest.raises(ThresholdError, match=r"in \(0, 1\]; got 1.5. Use e.g. 0.995"):
        speedycnet.removal_threshold(logits, labels, "max_softmax", 1.5)


def test_removal_mask_is_the_inference_rule():
    logits = torch.tensor([[4.0, 0.0], [0.0, 4.0], [0.1, 0.0]])
    labels = torch.tensor([0, 0, 0])
    policy = exits.MaxSoftmax([0.9, None])
    # the policy holds its thresholds: the mask at head k is exactly its decide(), which infer uses
    assert speedycnet.removal_mask(logits, labels, policy, 0).tolist() == [True, True, False]
    assert speedycnet.removal_mask(logits, labels, policy, 0, "confident_correct").tolist() == [True, False, False]
    assert speedycnet.removal_mask(logits, labels, policy, 1).tolist() == [False, False, False]
    assert torch.equal(speedycnet.removal_mask(logits, labels, policy, 0), policy.decide(logits, 0, {}))



def test_the_removal_ablations_remove_as_many_at_random_or_none():
    torch.manual_seed(0)
    logits = torch.randn(200, 10) * 3
    labels = torch.randint(0, 10, (200,))
    policy = exits.MaxSoftmax([0.6, None])
    confident = speedycnet.removal_mask(logits, labels, policy, 0)
    draw = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    random = speedycnet.removal_mask(logits, labels, policy, 0, "random", draw())
    assert 0 < int(confident.sum()) < 200 and int(random.sum()) == int(confident.sum())
    assert not torch.equal(random, confident), "random removal is not the confident set"
    assert torch.equal(random, speedycnet.removal_mask(logits, labels, policy, 0, "random", draw())), "seeded"
    assert not speedycnet.removal_mask(logits, labels, policy, 0, "none").any()
    with pytest.raises(UnknownNameError, match="unknown removal rule 'easy'.*confident, confident_correct, random"):
        speedycnet.removal_mask(logits, labels, policy, 0, "easy")

# ----------------------------------------------------------------------------- the cascade trainer
def tiny_config(**overrides) -> speedycnet.CascadeConfig:
    train = TrainConfig(epochs=2, batch_size=64, lr=0.05, progress=False)
    # digits' 143 val samples cannot certify 99% at 95% confidence (that needs ~300 removed, all right),
    # so these tests of the removal mechanics use the point estimate; certification is tested above
    return speedycnet.CascadeConfig(**{"train": train, "removal_precision": 0.99, "removal_confidence": None,
                                       **overrides})


@pytest.fixture(scope="module")
def digits16():
    return (data.load("digits", "train", image_size=16), data.load("digits", "val", image_size=16),
            data.load("digits", "test", image_size=16))


def run_recorded(monkeypatch_fit, digits16, **overrides):
    """Train a tiny cascade while recording exactly what each stage's fit was given."""
    seen = []
    real_fit = speedycnet.cascade.fit

    def recording_fit(model, train_loader, val_loader, config, **kwargs):
        seen.append({"inputs": train_loader.images.clone(), "labels": train_loader.labels.clone(),
                     "val": None if val_loader is None else val_loader.labels.clone(),
                     "frozen": len(model.frozen)})
        return real_fit(model, train_loader, val_loader, config, **kwargs)

    monkeypatch_fit.setattr(speedycnet.cascade, "fit", recording_fit)
    (x, y), val, _ = digits16
    torch.manual_seed(0)
    net = speedycnet.hierarchical_learners(10, 1, 16, width_mult=0.25)
    result = speedycnet.train_cascade(net, "digits", (x, y), val, tiny_config(**overrides))
    monkeypatch_fit.undo()
    return result, seen


@pytest.fixture(scope="module")
def cascades(digits16):
    """The cascade trained with and without feature caching (about 5 s each on a 2-core CPU)."""
    out = {}
    for cache in (True, False):
        mp = pytest.MonkeyPatch()
        out[cache] = run_recorded(mp, digits16, cache_features=cache)
    return out


@pytest.mark.parametrize("cache", [True, False])
def test_a_removed_sample_never_reaches_a_later_stage(cache, cascades, digits16):
    result, seen = cascades[cache]
    (x, y), _, _ = digits16
    net = result.net.eval()
    assert len(seen) == len(result.stages) == 4
    assert sum(s.removed for s in result.stages[:3]) > 0 and result.stages[-1].samples_in > 0
    for k, (stage, record) in enumerate(zip(result.stages, seen)):
        idx = result.trained_on[k]
        # what fit actually trained on is exactly the samples that no earlier learner removed
        expected = torch.nonzero((result.removed_at == -1) | (result.removed_at >= k)).flatten()
        assert torch.equal(idx, expected) and stage.samples_in == len(idx)
        assert torch.equal(record["labels"], y[idx])
        if cache and k > 0:  # cached feature maps of those samples, from the frozen earlier stages
            assert record["frozen"] == 0 and record["inputs"].dtype == torch.float32
            with torch.no_grad():
                h = data.DeviceLoader.for_dataset("digits", x, y, train=False).transform(x[idx])
                for s in net.stages[:k]:
                    h = s(h)
            torch.testing.assert_close(record["inputs"], h)
        else:  # raw pixels through the frozen earlier stages
            assert record["frozen"] == k and torch.equal(record["inputs"], x[idx])
        # no sample removed by an earlier learner is in this stage's data
        for j in range(k):
            gone = torch.nonzero(result.removed_at == j).flatten()
            assert not set(gone.tolist()) & set(idx.tolist())
        # the removed samples are exactly those learner k was confident about, by the inference rule
        if k < 3:
            with torch.no_grad():
                h = data.DeviceLoader.for_dataset("digits", x, y, train=False).transform(x[idx])
                for s in net.stages[:k + 1]:
                    h = s(h)
                logits = net.heads[k](h)
            tau = result.thresholds[k]
            rule = torch.zeros(len(idx), dtype=torch.bool) if tau is None else exits.confidence(logits) >= tau
            assert torch.equal(rule, result.removed_at[idx] == k)
            assert stage.removed == int(rule.sum())
            assert stage.removed_wrong == int((rule & (logits.argmax(1) != y[idx])).sum())
            # the prediction recorded for every removed sample is the removing learner's
            assert torch.equal(result.removed_prediction[idx[rule]], logits.argmax(1)[rule])
        if k + 1 < len(result.stages):
            assert result.stages[k + 1].samples_in == stage.samples_in - stage.removed
    assert ((result.removed_prediction == -1) == (result.removed_at == -1)).all()


def test_stage_records_and_time_accounting(cascades, digits16):
    result, _ = cascades[True]
    (x, y), (xv, yv), _ = digits16
    frame = result.to_frame()
    assert list(frame["stage"]) == [1, 2, 3, 4]
    assert result.seconds == pytest.approx(result.setup_seconds + sum(
        s.fit_seconds + s.calibrate_seconds + s.preclassify_seconds for s in result.stages))
    for s, h in zip(result.stages, result.histories):
        assert s.epochs == len(h.epochs) == 2 and s.fit_seconds >= h.seconds > 0
    assert result.stages[-1].threshold is None and result.stages[-1].removed == 0
    # cached features: what the next stage trains on (train + val), float32
    h = torch.zeros(1, 1, 16, 16)
    for k, s in enumerate(result.stages[:3]):
        with torch.no_grad():
            h = result.net.stages[k](h)
        kept = (s.samples_in - s.removed) + (s.val_in - s.val_removed)
        assert s.cache_bytes == kept * h.numel() * 4 > 0
        # the pass held every remaining training sample's new features (and the previous cache) at once
        assert s.cache_peak_bytes >= (s.samples_in + s.val_in - s.val_removed) * h.numel() * 4
    # the val bookkeeping matches the deployed cascade, by real early exit on the val split
    ev = speedycnet.evaluate_cascade(result.net, result.policy, "digits", xv, yv)
    assert result.stages[-1].cascade_val_accuracy == pytest.approx(ev.accuracy, abs=1.5 / len(yv))
    assert torch.equal(torch.bincount(result.val_removed_at[result.val_removed_at >= 0], minlength=4)[:3],
                       torch.tensor(ev.exit_counts[:3]))
    # timeline: cumulative seconds grow; time to a reached accuracy is a timeline point
    secs = [p["seconds"] for p in result.timeline]
    assert secs == sorted(secs) and len(secs) == 8
    first = result.timeline[0]
    assert result.time_to_accuracy(first["cascade_val_accuracy"]) == first["seconds"]
    assert result.time_to_accuracy(1.01) is None


def test_no_cache_trains_through_frozen_stages_without_changing_them(digits16):
    (x, y), val, _ = digits16
    torch.manual_seed(0)
    net = speedycnet.hierarchical_learners(10, 1, 16, width_mult=0.25)
    before = {}

    def snapshot(model, train_loader, val_loader, config, **kwargs):
        frozen = {n: t.clone() for n, t in model.frozen.state_dict().items()}
        history = real_fit(model, train_loader, val_loader, config, **kwargs)
        for n, t in model.frozen.state_dict().items():  # weights and BatchNorm statistics untouched
            assert torch.equal(t, frozen[n]), n
        before[len(before)] = True
        return history

    real_fit = speedycnet.cascade.fit
    mp = pytest.MonkeyPatch()
    mp.setattr(speedycnet.cascade, "fit", snapshot)
    try:
        speedycnet.train_cascade(net, "digits", (x, y), val, tiny_config(cache_features=False, thresholds=0.9))
    finally:
        mp.undo()
    assert len(before) == 4


def test_confident_correct_removes_only_correct_samples(digits16):
    (x, y), val, _ = digits16
    torch.manual_seed(0)
    net = speedycnet.hierarchical_learners(10, 1, 16, width_mult=0.25)
    result = speedycnet.train_cascade(net, "digits", (x, y), val, tiny_config(removal="confident_correct",
                                                                              thresholds=0.3))
    assert sum(s.removed for s in result.stages) > 0
    assert all(s.removed_wrong == 0 for s in result.stages)


def test_min_batch_size_keeps_steps_per_epoch(digits16):
    (x, y), val, _ = digits16
    torch.manual_seed(0)
    batches = []
    real_fit = speedycnet.cascade.fit
    mp = pytest.MonkeyPatch()
    mp.setattr(speedycnet.cascade, "fit", lambda m, tr, va, cfg, **kw: batches.append(cfg.batch_size) or real_fit(m, tr, va, cfg, **kw))
    try:
        result = speedycnet.train_cascade(
            speedycnet.hierarchical_learners(10, 1, 16, width_mult=0.125), "digits", (x, y), val,
            tiny_config(thresholds=0.3, min_batch_size=16, train=TrainConfig(epochs=1, batch_size=64, progress=False)))
    finally:
        mp.undo()
    n = [s.samples_in for s in result.stages]
    assert n[1] < n[0]
    expected = [64] + [max(16, min(64, round(64 * m / n[0]))) for m in n[1:]]
    assert batches == [s.batch_size for s in result.stages] == expected
    with pytest.raises(CourseError, match="min_batch_size must be None or >= 1"):
        speedycnet.train_cascade(result.net, "digits", (x, y), val, tiny_config(min_batch_size=0))


def test_fixed_thresholds_none_keeps_everyone_and_zero_stops_the_cascade(digits16):
    (x, y), val, _ = digits16
    torch.manual_seed(0)
    keep_all = speedycnet.train_cascade(speedycnet.hierarchical_learners(10, 1, 16, width_mult=0.125), "digits",
                                        (x, y), val, tiny_config(thresholds=[None, None, None],
                                                                 train=TrainConfig(epochs=1, batch_size=128,
                                                                                   progress=False)))
    assert [s.samples_in for s in keep_all.stages] == [len(y)] * 4 and (keep_all.removed_at == -1).all()
    stop = speedycnet.train_cascade(speedycnet.hierarchical_learners(10, 1, 16, width_mult=0.125), "digits",
                                    (x, y), val, tiny_config(thresholds=0.0,
                                                             train=TrainConfig(epochs=1, batch_size=128,
                                                                               progress=False)))
    # max softmax >= 0 holds for everyone: learner 1 removes all, later learners never train
    assert len(stop.stages) == 1 and stop.stages[0].removed == len(y) and (stop.removed_at == 0).all()
    assert stop.thresholds[0] == 0.0


# ----------------------------------------------------------------------------- inference equivalence
@pytest.mark.parametrize("variant", ["hierarchical", "independent"])
def test_batched_early_exit_equals_every_head_then_the_rule(variant, cascades, digits16):
    (x, y), val, (xt, yt) = digits16
    if variant == "hierarchical":
        result = cascades[True][0]
    else:
        torch.manual_seed(0)
        net = speedycnet.independent_learners(10, 1, 16, width_mult=0.125)
        result = speedycnet.train_cascade(net, "digits", (x, y), val, tiny_config(thresholds=[0.9, 0.5, 0.3]))
    net = result.net.eval()
    net.measure_costs((1, 16, 16))
    xb = data.DeviceLoader.for_dataset("digits", xt, yt, train=False).transform(xt)
    with torch.no_grad():
        scores = exits.ExitScores.from_logits(net.forward_all(xb), yt)
    reference = exits.sweep(scores, net.costs, result.policy)
    real = net.infer(xb, result.policy)
    assert torch.equal(real.predictions, reference.predictions)
    assert torch.equal(real.exit_index, reference.exit_index)
    assert 0 < sum(reference.exit_counts[:-1]) < len(yt), "some, not all, samples should leave early"
    assert real.samples_per_stage[0] == len(yt) and real.samples_per_stage[-1] < len(yt)
    for i in range(0, len(yt), 41):
        pred, k, _ = net.infer_single(xb[i:i + 1], result.policy)
        assert (pred, k) == (int(reference.predictions[i]), int(reference.exit_index[i]))
    ev = speedycnet.evaluate_cascade(net, result.policy, "digits", xt, yt, batch_size=100)  # chunked
    assert torch.equal(ev.predictions, reference.predictions) and ev.exit_counts == reference.exit_counts
    assert ev.accuracy == pytest.approx(reference.accuracy)


# ----------------------------------------------------------------------------- bad input
def test_bad_thresholds_and_options_raise_before_training(digits16):
    (x, y), val, _ = digits16
    net = speedycnet.hierarchical_learners(10, 1, 16, width_mult=0.125)

    def run(**overrides):
        speedycnet.train_cascade(net, "digits", (x, y), val, tiny_config(**overrides))

    with pytest.raises(ThresholdError, match=r"threshold for exit 0 is 1.5, outside its valid range \[0.0, 1.0\]"):
        run(thresholds=1.5)
    with pytest.raises(ThresholdError, match="threshold for exit 1 is -0.2"):
        run(thresholds=[0.9, -0.2, 0.5])
    with pytest.raises(ThresholdError, match="got 2 thresholds for a network with 4 exits"):
        run(thresholds=[0.9, 0.8])
    with pytest.raises(ThresholdError, match=r"removal_precision .* in \(0, 1\]; got 0. Use e.g. 0.995"):
        run(removal_precision=0)
    with pytest.raises(ThresholdError, match="must decide from one head's logits: use 'max_softmax' or 'entropy'"):
        run(policy="patience")
    with pytest.raises(ThresholdError, match="use 'max_softmax' or 'entropy', not 'softmax'"):
        run(policy="softmax", thresholds=0.5)
    with pytest.raises(UnknownNameError, match="unknown removal rule 'wrong'. Use one of: confident, confident_correct"):
        run(removal="wrong")
    with pytest.raises(CourseError, match="got 2 TrainConfigs for 4 learners"):
        run(train=[TrainConfig(), TrainConfig()])
    assert all(p.requires_grad for p in net.parameters())  # nothing was trained or frozen


# ----------------------------------------------------------------------------- DDP
@pytest.mark.ddp
def test_ddp_ranks_agree_on_the_removal_set(tmp_path):
    """Two CPU processes (gloo) train the cascade with and without feature caching; ~25 s, mostly start-up."""
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", str(REPO / "tests" / "ddp_speedycnet_worker.py"),
         str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in reports] == [2, 2]
    for mode in ("cache", "nocache"):
        assert reports[0][mode] == reports[1][mode]  # both ranks gathered the same thing
        a, b = reports[0][mode]["all"]
        assert a["removed_at"] == b["removed_at"] and a["val_removed_at"] == b["val_removed_at"]
        assert a["thresholds"] == b["thresholds"] and a["samples_in"] == b["samples_in"]
        assert a["weights_checksum"] == b["weights_checksum"]
        assert a["buffers_checksum"] == b["buffers_checksum"], "fit syncs BatchNorm statistics across ranks"
        assert sum(a["removed"]) > 0, "the test is only meaningful if something was removed"
        # rank 0's broadcast mask is the guarantee; with identical weights and buffers every rank's own
        # pre-classification agrees with it, so a disagreement is a diagnostic of diverged models
        assert a["disagreements"] == [0] * len(a["disagreements"]), "each rank's own decision matched rank 0's"
        assert a["samples_in"][0] == 1295
