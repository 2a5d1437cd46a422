"""The threshold panel and the sweep it wraps: numbers over a grid, slider changes in Python, speed."""
import re

import numpy as np
import pytest
import torch

from course_utils import exits, panel_chart, widgets
from course_utils.edcnn import LatencyModel
from course_utils.errors import CourseError, ThresholdError
from course_utils.panel_view import example_order, panel_view


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
    return widgets.ThresholdPanel(scores, COSTS, "max_softmax", latency=LATENCY_MODEL, images=images, thresholds=0.9,
                                  class_names=NAMES, title="synthetic scores · cpu (test)")


NAMES = [f"class{c}" for c in range(10)]
LATENCY_MODEL = LatencyModel([0.5, 0.4, 0.3, 0.2], [0.1, 0.1, 0.2, 0.2], "cpu (test)")


def test_panel_follows_its_sliders_with_the_sweeps_numbers_in_text_chart_and_examples(panel):
    assert [s.description for s in panel.sliders] == ["exit 1 τ", "exit 2 τ", "exit 3 τ"]
    assert all(s.readout and s.min == 0 and s.max == 1 for s in panel.sliders)
    assert "edcnn-panel-stats" in panel.stats._dom_classes and "edcnn-panel-chart" in panel.chart.widget._dom_classes
    assert panel.chart.library == panel_chart.DEFAULT_LIBRARY == "bqplot"  # the faster redraw in the browser
    assert "validation split: thresholds are set here (2,000 samples)" in panel.header.value
    panel.sliders[0].value = 0.55
    panel.sliders[2].value = 0.7
    expected = exits.sweep(panel.scores, COSTS, exits.MaxSoftmax([0.55, 0.9, 0.7]))
    ms = LATENCY_MODEL.ms_per_image(expected.reach_fraction, 1)
    assert panel.stats.value == widgets.format_stats(expected, full_macs=COSTS.full, ms_per_image=ms, batch_size=1)
    assert panel.stats.value == panel.text_for([0.55, 0.9, 0.7])
    assert panel.result.exit_counts == expected.exit_counts
    assert list(panel.chart.point.x) == [expected.mean_macs / 1e6] and list(panel.chart.point.y) == [
        100 * expected.accuracy]
    right, wrong = (list(bar) for bar in panel.chart.bars.y)
    assert [r + w for r, w in zip(right, wrong)] == expected.exit_counts
    assert sum(right) == round(expected.accuracy * len(panel.scores))
    view = panel_view(expected, panel.scores.labels, example_order(len(panel.scores)))
    captions = re.findall(r'edcnn-example-caption"[^>]*>([^<]*)<', panel.examples.value)
    assert captions == [f"pred {NAMES[e.predicted]} · true {NAMES[e.label]}" for _, row in view.rows for e in row]
    assert len(captions) == 12 and "leave early (exit 1)" in panel.examples.value


def test_ms_per_image_is_the_latency_models_prediction_at_the_chosen_batch():
    result = exits.sweep(synthetic_scores(), COSTS, exits.MaxSoftmax(0.8))
    reach = result.reach_fraction
    by_hand = sum(a + b * f * 256 for a, b, f in zip(LATENCY_MODEL.overhead_ms, LATENCY_MODEL.per_sample_ms, reach)
                  if f > 0) / 256
    assert LATENCY_MODEL.ms_per_image(reach, 256) == pytest.approx(by_hand, rel=1e-12)


def test_latency_model_from_exit_ms_inverts_exit_ms_exactly():
    back = LatencyModel.from_exit_ms({1: LATENCY_MODEL.exit_ms(1), 256: LATENCY_MODEL.exit_ms(256)})
    assert back.overhead_ms == pytest.approx(LATENCY_MODEL.overhead_ms, abs=1e-12)
    assert back.per_sample_ms == pytest.approx(LATENCY_MODEL.per_sample_ms, abs=1e-12)
    with pytest.raises(ValueError, match="exactly two batch sizes"):
        LatencyModel.from_exit_ms({1: LATENCY_MODEL.exit_ms(1)})


@pytest.mark.parametrize("unit,batch", [(widgets.MACS, 1), (widgets.MS, 1), (widgets.MS, 256)])
def test_budget_slider_picks_the_controllers_choice_within_the_budget(panel, unit, batch):
    panel.unit.value, panel.batch.value = unit, batch
    assert panel.budget.description == f"budget {unit}" + (f" at batch {batch}" if unit == widgets.MS else "")
    for fraction in (0.1, 0.5, 0.9):
        budget = panel.budget.min + fraction * (panel.budget.max - panel.budget.min)
        panel.budget.value = budget
        chosen = panel.thresholds()
        assert len(set(chosen)) == 1  # a shared threshold from the frontier
        ask = {"macs_per_image": panel.budget.value * 1e6} if unit == widgets.MACS else \
            {"ms_per_batch": panel.budget.value * batch, "batch_size": batch}
        assert chosen == panel.controller.choose(**ask).policy.resolved(4)
        cost = (panel.result.mean_macs / 1e6 if unit == widgets.MACS else
                LATENCY_MODEL.ms_per_image(panel.result.reach_fraction, batch))
        assert cost <= panel.budget.value + 1e-9
        assert "(within budget)" in panel.budget_text.value
        assert f"controller's choice for this budget: τ = {chosen[0]:.2f} on every exit" in panel.budget_text.value
        assert panel.stats.value == panel.text_for(chosen)


def test_a_test_split_panel_is_labelled_as_the_one_time_report():
    scores = synthetic_scores(300)
    p = widgets.ThresholdPanel(scores, COSTS, split="test")
    assert "test split: the one-time report (set thresholds on the validation panel)" in p.header.value
    assert [f.title for f in p.chart.widget.children[0].children] == ["accuracy against cost (test)",
                                                                      "where samples leave (test)"]
    with pytest.raises(CourseError, match="unknown split 'train'"):
        widgets.ThresholdPanel(scores, COSTS, split="train")


def test_panel_rejects_bad_input(panel):
    with pytest.raises(ThresholdError, match="outside its valid range"):
        panel.set_thresholds([0.5, 1.5, 0.5])
    with pytest.raises(ThresholdError, match="one per early exit"):
        panel.set_thresholds([0.5, 0.5])
    with pytest.raises(CourseError, match="Use 'max_softmax' or 'entropy'"):
        widgets.ThresholdPanel(panel.scores, COSTS, "patience")
    with pytest.raises(CourseError, match="pass the same split"):
        widgets.ThresholdPanel(panel.scores, COSTS, images=torch.zeros(5, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(CourseError, match="5 images but 4 indices"):
        widgets.ThresholdPanel(panel.scores, COSTS, images=torch.zeros(5, 3, 8, 8, dtype=torch.uint8),
                               image_index=torch.arange(4))
    with pytest.raises(CourseError, match="not normalised batches"):
        widgets.ThresholdPanel(panel.scores, COSTS, images=torch.zeros(len(panel.scores), 3, 8, 8))
    with pytest.raises(ThresholdError, match="valid range"):
        widgets.ThresholdPanel(panel.scores, COSTS, thresholds=2.0)


def test_panel_saves_and_loads_its_scores_latency_and_labels(panel, tmp_path):
    panel.set_thresholds([0.6, 0.7, 0.8])
    panel.save(tmp_path / "panel.pt")
    again = widgets.ThresholdPanel.load(tmp_path / "panel.pt")
    assert again.thresholds() == [0.6, 0.7, 0.8] and again.stats.value == panel.stats.value
    assert torch.equal(again.scores.confidence, panel.scores.confidence)
    assert again.latency == panel.latency and again.class_names == NAMES and again.title == panel.title
    assert again.examples.value == panel.examples.value


def test_a_panel_from_a_bundle_uses_its_logits_costs_latency_thumbnails_and_calibrated_thresholds():
    scores = synthetic_scores(1000)
    logits = torch.randn(4, 1000, 10)
    logits[torch.arange(4)[:, None], torch.arange(1000), scores.labels] += torch.arange(4)[:, None] * 1.5 + 1
    val = exits.ExitScores.from_logits(logits, scores.labels)
    bundle = exits.ExitBundle.from_scores(
        {"val": val, "test": val}, COSTS, exit_ms={1: LATENCY_MODEL.exit_ms(1), 256: LATENCY_MODEL.exit_ms(256)},
        device="cpu (test)", meta={"class_names": NAMES, "title": "a bundle", "thresholds": {"max_softmax": [0.8] * 3}},
        images=torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8), image_index=torch.arange(50) * 20)
    p = widgets.ThresholdPanel.from_bundle(bundle)
    assert p.thresholds() == [0.8] * 3 and p.title == "a bundle" and "a bundle" in p.header.value
    assert p.latency.overhead_ms == pytest.approx(LATENCY_MODEL.overhead_ms)
    assert p.stats.value == p.text_for([0.8] * 3)
    assert re.findall(r"pred class\d · true class\d", p.examples.value), "the thumbnailed samples are shown"
    for _, row in p.view.rows:
        assert all(e.index % 20 == 0 for e in row)  # only samples that have a thumbnail
    test_panel = widgets.ThresholdPanel.from_bundle(bundle, split="test")
    assert test_panel.examples.value == "" and "one-time report" in test_panel.header.value


def test_panel_over_10000_samples_shows_the_sweep_after_every_move():
    """Behaviour only: how fast it updates is `benchmarks/panel_update.py`'s to report (goal < 50 ms)."""
    scores = synthetic_scores(n=10_000, num_exits=6)
    costs = exits.ExitCosts([2_000_000] * 6, [10_000] * 6)
    images = torch.randint(0, 256, (10_000, 3, 32, 32), dtype=torch.uint8)
    p = widgets.ThresholdPanel(scores, costs, images=images)
    for value in [0.3, 0.9, 0.55]:
        p.sliders[value > 0.6].value = value
        thresholds = [s.value for s in p.sliders]
        assert p.stats.value == widgets.format_stats(p.sweep(thresholds), full_macs=costs.full)
        assert p.last_update_ms > 0


def test_panel_view_rows_are_never_empty_and_examples_stay_put():
    scores = synthetic_scores(500)
    order = example_order(500)
    assert sorted(order.tolist()) == list(range(500)) and order[:6].tolist() != list(range(6))  # random, all
    everyone_early = exits.sweep(scores, COSTS, exits.MaxSoftmax(0.0))
    view = panel_view(everyone_early, scores.labels, order)
    assert [t for t, _ in view.rows] == ["every sample leaves (exit 1)"]
    late_only = exits.sweep(scores, COSTS, exits.MaxSoftmax(1.0))
    assert [t for t, _ in panel_view(late_only, scores.labels, order).rows] == ["every sample leaves (exit 4)"]
    mixed = exits.sweep(scores, COSTS, exits.MaxSoftmax(0.7))
    rows = panel_view(mixed, scores.labels, order).rows
    first = min(k for k, c in enumerate(mixed.exit_counts) if c)
    last = max(k for k, c in enumerate(mixed.exit_counts) if c)
    assert [t for t, _ in rows] == [f"leave early (exit {first + 1})", f"leave late (exit {last + 1})"]
    again = panel_view(exits.sweep(scores, COSTS, exits.MaxSoftmax(0.7)), scores.labels, order).rows
    assert [[e.index for e in r] for _, r in again] == [[e.index for e in r] for _, r in rows]


@pytest.mark.parametrize("library", sorted(panel_chart.CHARTS))
def test_both_chart_libraries_hold_the_sweeps_numbers(library):
    """plotly's FigureWidget and bqplot draw the same view: the point and the right and wrong bars (the benchmark
    ``benchmarks/panel_browser.py`` compares their redraw in the browser)."""
    scores = synthetic_scores(500)
    p = widgets.ThresholdPanel(scores, COSTS, chart=library, thresholds=[0.4, 0.6, 0.8])
    p.sliders[1].value = 0.3
    expected = exits.sweep(scores, COSTS, exits.MaxSoftmax([0.4, 0.3, 0.8]))
    shown = p.chart.shown()
    assert shown["point"] == [expected.mean_macs / 1e6, 100 * expected.accuracy]
    assert [r + w for r, w in zip(shown["right"], shown["wrong"])] == expected.exit_counts
    assert sum(shown["right"]) == round(expected.accuracy * len(scores))
    ranges = p.chart.ranges  # fixed scales that hold every point and the full bar
    assert ranges["samples"] == (0.0, 1.05 * len(scores))
    assert ranges["macs"][0] < expected.mean_macs / 1e6 < ranges["macs"][1]
    with pytest.raises(CourseError, match="unknown chart library 'vega'"):
        widgets.ThresholdPanel(scores, COSTS, chart="vega")
