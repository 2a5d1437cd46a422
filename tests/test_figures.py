"""Figures a reader can trust: the checker catches overprinted, clipped and data-hiding text, and every
SpeedyCNet and edCNN figure, built from small synthetic tables, passes it and names its data, scale and device."""
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from course_utils import edcnn, exits, speedycnet  # noqa: E402
from course_utils.edcnn import plots as ed_plots  # noqa: E402
from course_utils.figure_checks import legend_hides_data, overlapping_text, problems, visible_texts  # noqa: E402
from course_utils.speedycnet import plots as sc_plots  # noqa: E402

SCALE = "digits (8x8): train 1437, val 180, test 180; width_mult 0.125; max 2 epochs, patience 1"
DEVICE = "cpu (AMD EPYC 7B13, 1 threads)"


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def assert_reads(fig) -> None:
    """No text over another or off the canvas, no legend over data, and the title names data, scale and device."""
    assert overlapping_text(fig) == []
    for ax in fig.axes:
        assert legend_hides_data(ax) == [], ax.get_title()
    suptitle = fig._suptitle.get_text().replace("\n", " ")
    assert "digits" in suptitle and "width_mult 0.125" in suptitle and "AMD EPYC" in suptitle


# ----------------------------------------------------------------------------- the checker itself
def test_checker_catches_overprinted_and_clipped_text():
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.text(0.1, 0.5, "one label", fontsize=14)
    ax.text(0.15, 0.5, "another label", fontsize=14)  # starts inside the first
    ax.set_xticks(range(8), [f"a long tick label {i}" for i in range(8)])  # horizontal, far too wide: they merge
    fig.text(0.9, 0.9, "runs off the right edge", fontsize=12)
    found = overlapping_text(fig)
    assert ("text (axes 0) 'one label'", "text (axes 0) 'another label'") in found
    assert any(a.startswith("xtick") and b.startswith("xtick") for a, b in found)
    assert ("figure text 'runs off the right edge'", "outside the figure") in found
    clean, _ = plt.subplots()
    report = problems({"overprinted": fig, "clean": clean})  # what a notebook publishes: only the bad figures
    assert list(report) == ["overprinted"] and len(report["overprinted"]) == len(found)
    assert "text (axes 0) 'one label' overlaps text (axes 0) 'another label'" in report["overprinted"]


def test_checker_passes_a_clean_figure_and_compares_rotated_labels_as_rotated_boxes():
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([0, 1, 2], [1, 3, 2], label="measured")
    ax.set(title="a clean figure", xlabel="x", ylabel="y")
    ax.set_xticks([0, 1, 2], ["first", "second", "third"])
    ax.legend(loc="lower right")
    fig.tight_layout()
    assert overlapping_text(fig) == [] and legend_hides_data(ax) == []
    assert {"title (axes 0) 'a clean figure'", "legend entry (axes 0) 'measured'"} <= {n for n, _ in visible_texts(fig)}
    # long labels at 45 degrees: their upright boxes overlap, the rotated ones do not
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.set_xticks(range(6), [f"category number {i}" for i in range(6)], rotation=45, ha="right",
                  rotation_mode="anchor")
    fig.tight_layout()
    assert overlapping_text(fig) == []


def test_legend_check_sees_lines_markers_and_bars_under_the_legend():
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(9, 3))
    a.plot([0, 0.5, 1], [0, 1, 0], label="peak at the top")
    a.legend(loc="upper center")
    b.bar([0, 1, 2], [3, 3, 3], label="tall bars")
    b.legend(loc="upper left")
    c.scatter([0, 1], [0, 1], label="points")
    c.axhline(0.5, label="reference")  # spans the axes: not data
    c.legend(loc="center")
    assert legend_hides_data(a) == ["line 'peak at the top'"]
    assert legend_hides_data(b) == ["bar 'tall bars'"]
    assert legend_hides_data(c) == []


# ----------------------------------------------------------------------------- SpeedyCNet
def stage_table() -> pd.DataFrame:
    return pd.DataFrame({"stage": [1, 2, 3, 4], "samples_in": [2000, 1420, 1310, 1285], "removed": [580, 110, 25, 0],
                         "removed_wrong": [3, 2, 1, 0], "fit_seconds": [10.6, 6.8, 8.6, 8.9],
                         "calibrate_seconds": [0.1, 0.1, 0.1, 0.0], "preclassify_seconds": [0.6, 0.3, 0.3, 0.0]})


def test_cascade_figure_compares_totals_with_totals():
    exits_frame = pd.DataFrame({"exit": [1, 2, 3, 4], "samples": [7, 15, 0, 978],
                                "accuracy_of_exited": [1.0, 0.93, None, 0.41],
                                "head_accuracy_on_all": [0.47, 0.46, 0.49, 0.42]})
    stages = stage_table()
    cascade = SimpleNamespace(stages=[SimpleNamespace(seconds=s) for s in
                                      stages[["fit_seconds", "calibrate_seconds", "preclassify_seconds"]].sum(axis=1)],
                              setup_seconds=0.4)
    comparisons = [sc_plots.TimeComparison.of("early stopping", 27.0, cascade),
                   sc_plots.TimeComparison("equal epochs", 30.5, [12.0, 9.0, 9.5, 9.1], 0.4)]
    fig = sc_plots.cascade_figure(stages, exits_frame, 0.40, comparisons, scale=SCALE, device=DEVICE)
    assert_reads(fig)
    time_ax = fig.axes[2]
    texts = [t.get_text() for t in time_ax.texts]
    # the cascade's bar is its total (here slower than VGG16's: a speed-up below 1x), built from its stages
    total = comparisons[0].cascade_seconds
    assert total == pytest.approx(0.4 + stages[["fit_seconds", "calibrate_seconds", "preclassify_seconds"]].sum().sum())
    assert f" {total:.1f} s: speed-up {27.0 / total:.2f}x" in texts and " 27.0 s" in texts
    widths = [p.get_width() for p in time_ax.patches]
    assert sum(widths[1:6]) == pytest.approx(total)  # setup + four learners stacked in one bar


@pytest.mark.parametrize("channels,size,classes", [(1, 8, [str(d) for d in range(10)]),
                                                   (3, 32, ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                                            "frog", "horse", "ship", "truck"])])
def test_removal_examples_are_seeded_random_draws_with_predictions(channels, size, classes):
    torch.manual_seed(0)
    n = 60
    labels = torch.arange(n) % 10
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8)
    removed_at = torch.tensor([0] * 25 + [1] * 10 + [-1] * 25)
    predicted = torch.where(removed_at >= 0, labels, torch.tensor(-1))
    predicted[[3, 30]] = (labels[[3, 30]] + 1) % 10  # removed wrongly: one by learner 1, one by learner 2
    net = speedycnet.hierarchical_learners(10, channels, size, width_mult=0.125).eval()
    result = SimpleNamespace(removed_at=removed_at, removed_prediction=predicted, net=net)
    dataset = "digits" if channels == 1 else "cifar10"
    examples = speedycnet.removal_examples(result, dataset, images, labels, per_group=10, seed=1)
    again = speedycnet.removal_examples(result, dataset, images, labels, per_group=10, seed=1)
    pd.testing.assert_frame_equal(examples, again)
    easy = examples[examples["group"] == speedycnet.EXAMPLE_GROUPS[0]]
    assert len(easy) == 10 and set(easy["index"]) <= set(range(25)) and easy["index"].tolist() != list(range(10))
    assert sorted(examples[examples["group"] == speedycnet.EXAMPLE_GROUPS[1]]["index"]) == [3, 30]
    hard = examples[examples["group"] == speedycnet.EXAMPLE_GROUPS[2]]
    assert len(hard) == 10 and (hard["removed_at"] == 0).all() and hard["prediction"].between(0, 9).all()
    assert examples.loc[examples["index"] == 3, "correct"].tolist() == [False, False]  # easy and wrong rows
    fig = sc_plots.removal_examples_figure(images, examples, classes, scale=SCALE, device=DEVICE, seed=1)
    assert_reads(fig)
    removed_wrong = [ax.get_title() for ax in fig.axes[:20] if ax.get_title().endswith("WRONG")]
    assert len(removed_wrong) == 3  # in the two rows of removed samples: sample 3 in both, sample 30 in one
    last = examples[examples["group"] == speedycnet.EXAMPLE_GROUPS[2]]  # the last learner's own mistakes, marked too
    assert sum(ax.get_title().endswith("WRONG") for ax in fig.axes[20:]) == int((~last["correct"]).sum())


# ----------------------------------------------------------------------------- edCNN
def frontier_tables():
    rows, points = [], []
    for mode in ("frozen", "joint"):
        for k, policy in enumerate(("max_softmax", "entropy")):
            macs = np.linspace(0.26, 1.1, 40)
            rows.append(pd.DataFrame({"mode": mode, "policy": policy, "macs_fraction": macs,
                                      "accuracy": 0.34 + 0.13 * np.sqrt((macs - 0.26) / 0.84) - 0.01 * k}))
            points.append({"mode": mode, "policy": policy, "macs_fraction": 0.7 + 0.1 * k, "accuracy": 0.468})
    return pd.concat(rows, ignore_index=True), pd.DataFrame(points)


def test_frontier_markers_take_their_curves_colour():
    frontier, points = frontier_tables()
    fig = ed_plots.frontier_figure(frontier, points, {"frozen": 0.468, "joint": 0.51}, epsilon=0.0,
                                   scale=SCALE, device=DEVICE)
    assert_reads(fig)
    for ax in fig.axes:
        lines = {line.get_label(): line.get_color() for line in ax.get_lines()}
        for policy in ("max_softmax", "entropy"):
            assert lines[policy] == lines[f"{policy}, calibrated (ε=0.0)"]
        assert lines["max_softmax"] != lines["entropy"]


def timings_table() -> pd.DataFrame:
    names = ["full", "frozen/max_softmax", "frozen/entropy", "joint/max_softmax", "joint/entropy"]
    macs = [12.17e6, 10.21e6, 8.41e6, 8.30e6, 8.67e6]
    return pd.DataFrame([{"name": n, "batch_size": bs, "ms_per_image": ms * f, "macs_per_image": m}
                         for bs, ms in ((1, 7.06), (256, 1.18)) for n, m, f in
                         zip(names, macs, (1.0, 0.92, 0.74, 0.71, 0.91) if bs == 1 else (1.0, 0.93, 0.87, 0.86, 1.01))])


def test_macs_vs_time_has_plain_ticks_no_overprinted_names_and_findings_from_its_numbers():
    fractions = [0.24, 0.38, 0.52, 0.70, 0.88, 1.0]
    exit_ms = {1: [1.5, 2.6, 3.5, 4.7, 5.9, 7.0], 256: [0.56, 0.74, 0.85, 0.96, 1.08, 1.18]}
    fig = ed_plots.macs_vs_time_figure(fractions, exit_ms, timings_table(), scale=SCALE, device=DEVICE)
    assert_reads(fig)
    for ax in fig.axes:
        assert ax.get_yscale() == "linear"
        labels = [t.get_text() for t in ax.get_yticklabels() + ax.get_xticklabels() if t.get_text()]
        assert labels and all(label.endswith("%") and "10^" not in label and "$" not in label for label in labels)
    findings = edcnn.macs_vs_time_findings(fractions, exit_ms, timings_table())
    assert findings[0].startswith("batch 1: leaving at exit 1 costs 24% of the last exit's MACs and 21% of its time")
    assert "more time than its MACs suggest" in findings[1]  # batch 256: 47% of the time for 24% of the MACs
    assert "frozen/max_softmax 16% / 8%" in findings[2] and "(4 of 4 save less time than MACs)" in findings[3]


def test_time_breakdown_shows_no_exit_on_the_full_network():
    from course_utils import models

    torch.manual_seed(0)
    backbone = models.create("mobilenet_v1", 10, small_input=True, width_mult=0.25).eval()
    net = edcnn.attach_exits(backbone, backbone_name="mobilenet_v1")
    x = torch.randn(16, 3, 32, 32)
    full = edcnn.time_breakdown(net, x, None, repeats=1)
    assert not full["part"].str.contains("exit|policy").any()
    assert full["part"].tolist()[-2:] == ["stage 6 + classifier", "Python between stages"]
    assert full["macs"].sum() == len(x) * net.costs.full
    with torch.no_grad():
        conf = torch.softmax(net.forward_all(x)[0], 1).amax(1)
    elastic = edcnn.time_breakdown(net, x, exits.MaxSoftmax(float(conf.median())), repeats=1)
    assert elastic["part"].iloc[0].startswith("exit 1") and elastic["part"].iloc[-1] == "exit policy + compaction"
    fig = ed_plots.time_breakdown_figure({"full": full, "frozen/max_softmax": elastic}, images=len(x),
                                         scale=SCALE, device=DEVICE)
    assert_reads(fig)
    full_labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert full_labels == full["part"].tolist() and not any("exit" in label for label in full_labels)


def test_exits_per_class_legend_is_outside_and_colours_are_distinct():
    from matplotlib.colors import to_rgb

    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    rng = np.random.default_rng(0)
    dists = {}
    for policy in ("max_softmax", "entropy"):
        exit_index = torch.from_numpy(rng.integers(0, 6, 500))
        labels = torch.from_numpy(rng.integers(0, 10, 500))
        dists[policy] = edcnn.exit_distribution(exit_index, labels, 6, classes)
    fig = ed_plots.exits_per_class_figure(dists, mode="frozen", scale=SCALE, device=DEVICE)
    assert_reads(fig)
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    colours = [np.array(to_rgb(c)) for c in ed_plots.EXIT_COLORS[:6]]
    gaps = [np.abs(a - b).sum() for i, a in enumerate(colours) for b in colours[i + 1:]]
    assert min(gaps) > 0.3  # no two exits in near-identical colours
