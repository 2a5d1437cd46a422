"""The threshold panel and the sweep it wraps: numbers over a grid, slider changes in Python, speed."""
import io

import numpy as np
import pytest
import torch

from course_utils import exits, widgets
from course_utils.errors import CourseError, ThresholdError


def synthetic_scores(n: int = 2000, num_exits: int = 4, seed: int = 0) -> exits.ExitScores:
    """Heads that get better with depth: exit k is right with probability 0.5 + 0.1 k, surer when right."""
    return exits.synthetic_scores(n, num_exits, seed, base=0.5, step=0.1, noise=0.7, margin_right=3.0)


COSTS = exits.ExitCosts([100, 100, 100, 100], [2, 2, 2, 2])
LATENCY = [1.0, 2.0, 3.0, 4.0]


def brute_force(scores, rule, thresholds):
    """Sample by sample: the first head whose rule fires (the last always does), its prediction, and its cost."""
    conf, ent = scores.confidence.numpy(), scores.entropy.numpy()
    preds, labels = scores.predictions.numpy(), scores.labels.numpy()
    enabled = [t is not None for t in thresholds] + [True]
    cumulative = COSTS.cumulative(enabled)
    right, cost, latency, where = 0, 0.0, 0.0, []
    for i in range(len(labels)):
        for k in range(scores.num_exits):
            t = thresholds[k] if k < len(thresholds) else None
            fires = k == scores.num_exits - 1 or (t is not None and (conf[k, i] >= t if rule == "max_softmax"
                                                                     else ent[k, i] <= t))
            if fires:
                right += int(preds[k, i] == labels[i])
                cost += cumulative[k]
                latency += LATENCY[k]
                where.append(k)
                break
    n = len(labels)
    return right / n, cost / n, latency / n, np.bincount(where, minlength=scores.num_exits).tolist()


GRID = [(rule, thr) for rule in ("max_softmax", "entropy")
        for thr in ([0.0, 0.2, 0.5, 0.8, 1.0] + [[0.3, None, 0.9], [0.9, 0.6, 0.3]])]


@pytest.mark.parametrize("rule,thresholds", GRID)
def test_sweep_over_a_grid_equals_the_brute_force_rule(rule, thresholds):
    scores = synthetic_scores(n=600)
    per_exit = [thresholds] * 3 if isinstance(thresholds, float) else thresholds
    result = exits.sweep(scores, COSTS, exits.make_policy(rule, thresholds), LATENCY)
    accuracy, cost, latency, counts = brute_force(scores, rule, per_exit)
    assert result.exit_counts == counts
    assert result.accuracy == pytest.approx(accuracy, abs=1e-12)
    assert result.mean_macs == pytest.approx(cost, abs=1e-9)
    assert result.mean_latency_ms == pytest.approx(latency, abs=1e-9)


def test_sweep_moves_the_right_way_along_the_grid():
    scores = synthetic_scores()
    early = [sum(exits.sweep(scores, COSTS, exits.MaxSoftmax(t)).exit_counts[:-1]) for t in np.linspace(0, 1, 11)]
    assert early[0] == len(scores) and all(a >= b for a, b in zip(early, early[1:]))  # higher tau, fewer leave
    everyone = exits.sweep(scores, COSTS, exits.Entropy(1.0))
    assert everyone.exit_counts[0] == len(scores) and everyone.mean_macs == 102


def test_format_stats_is_exact():
    result = exits.SweepResult(accuracy=0.91234, mean_macs=12_345_678.0, exit_counts=[40, 60],
                               exit_accuracy=[1.0, 0.85], exit_index=torch.zeros(100, dtype=torch.long),
                               predictions=torch.zeros(100, dtype=torch.long), mean_latency_ms=1.234)
    assert widgets.format_stats(result, full_macs=20_000_000) == (
        "accuracy 91.23% · 12.35 M MACs/image (61.7% of full) · 1.23 ms/image est. (batch 1) · exits 40.0% | 60.0%")
    result.mean_latency_ms = None
    assert widgets.format_stats(result) == "accuracy 91.23% · 12.35 M MACs/image · exits 40.0% | 60.0%"


@pytest.fixture
def panel():
    scores = synthetic_scores()
    images = torch.randint(0, 256, (len(scores), 3, 8, 8), dtype=torch.uint8)
    return widgets.ThresholdPanel(scores, COSTS, "max_softmax", exit_latency_ms=LATENCY, images=images,
                                  thresholds=0.9)


def test_panel_follows_its_sliders(panel):
    assert [s.description for s in panel.sliders] == ["exit 1 τ", "exit 2 τ", "exit 3 τ"]
    assert all(s.readout and s.min == 0 and s.max == 1 for s in panel.sliders)
    assert "edcnn-panel-stats" in panel.stats._dom_classes
    first_png = panel.plot.value
    panel.sliders[0].value = 0.55
    panel.sliders[2].value = 0.7
    expected = exits.sweep(panel.scores, COSTS, exits.MaxSoftmax([0.55, 0.9, 0.7]), LATENCY)
    assert panel.stats.value == widgets.format_stats(expected, full_macs=COSTS.full)
    assert panel.stats.value == panel.text_for([0.55, 0.9, 0.7])
    assert panel.result.exit_counts == expected.exit_counts
    assert panel.plot.value != first_png and panel.plot.value[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    width, height = Image.open(io.BytesIO(panel.plot.value)).size
    assert width > 200 and height > 100


def test_budget_slider_picks_thresholds_within_the_budget(panel):
    table = panel.controller.table()
    for fraction in (0.1, 0.5, 0.9):
        budget = panel.budget.min + fraction * (panel.budget.max - panel.budget.min)
        panel.budget.value = budget
        chosen = panel.thresholds()
        assert len(set(chosen)) == 1  # a shared threshold from the frontier
        assert panel.result.mean_macs <= panel.budget.value * 1e6
        fits = table[table["mean_macs"] <= panel.budget.value * 1e6]
        assert panel.result.accuracy == pytest.approx(fits["accuracy"].max())
        assert "(within budget)" in panel.budget_text.value
        assert panel.stats.value == panel.text_for(chosen)


def test_panel_rejects_bad_input(panel):
    with pytest.raises(ThresholdError, match="outside its valid range"):
        panel.set_thresholds([0.5, 1.5, 0.5])
    with pytest.raises(ThresholdError, match="one per early exit"):
        panel.set_thresholds([0.5, 0.5])
    with pytest.raises(CourseError, match="Use 'max_softmax' or 'entropy'"):
        widgets.ThresholdPanel(panel.scores, COSTS, "patience")
    with pytest.raises(CourseError, match="pass the same split"):
        widgets.ThresholdPanel(panel.scores, COSTS, images=torch.zeros(5, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(CourseError, match="not normalised batches"):
        widgets.ThresholdPanel(panel.scores, COSTS, images=torch.zeros(len(panel.scores), 3, 8, 8))
    with pytest.raises(ThresholdError, match="valid range"):
        widgets.ThresholdPanel(panel.scores, COSTS, thresholds=2.0)


def test_panel_saves_and_loads_its_scores(panel, tmp_path):
    panel.set_thresholds([0.6, 0.7, 0.8])
    panel.save(tmp_path / "panel.pt")
    again = widgets.ThresholdPanel.load(tmp_path / "panel.pt")
    assert again.thresholds() == [0.6, 0.7, 0.8] and again.stats.value == panel.stats.value
    assert torch.equal(again.scores.confidence, panel.scores.confidence)


def test_panel_over_10000_samples_shows_the_sweep_after_every_move():
    """Behaviour only: how fast it updates is `benchmarks/panel_update.py`'s to report (goal < 50 ms)."""
    scores = synthetic_scores(n=10_000, num_exits=6)
    costs = exits.ExitCosts([2_000_000] * 6, [10_000] * 6)
    images = torch.randint(0, 256, (10_000, 3, 32, 32), dtype=torch.uint8)
    p = widgets.ThresholdPanel(scores, costs, exit_latency_ms=[1, 2, 3, 4, 5, 6], images=images)
    for value in [0.3, 0.9, 0.55]:
        p.sliders[value > 0.6].value = value
        thresholds = [s.value for s in p.sliders]
        assert p.stats.value == widgets.format_stats(p.sweep(thresholds), full_macs=costs.full)
        assert p.last_update_ms > 0
