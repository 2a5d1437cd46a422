"""What each notebook must have published after a smoke run, beyond metrics.json with a device.

``tests/test_notebooks.py`` runs every notebook once and then calls ``CHECKS[stem](results_dir)``
when there is an entry, so a notebook's outputs are checked without running it a second time.
"""
import json
from pathlib import Path

import pandas as pd

# Parameters beyond SMOKE and RESULTS_DIR, as file names inside the results folder: notebook 10 keeps its
# finished passes (so that the smoke run writes them, the whole headline pass included, as the standard tier does).
PATH_PARAMETERS: dict[str, dict[str, str]] = {"10_speedycnet": {"PASS_DIR": "passes"}}


def check_context(out: Path) -> dict:
    """Every result names the device, the scale and the data it came from (``results.publish``'s context)."""
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("device", "scale", "dataset"):
        assert isinstance(metrics.get(key), str) and metrics[key], key
    if list(out.glob("*.png")):  # results.publish checked every figure it wrote; the notebook printed any problem
        assert metrics["figure_problems"] == 0, "a figure has overlapping or clipped text, or a legend over data"
    return metrics


def check_walk(out: Path) -> None:
    """Notebooks 01-07 train on digits in smoke mode, upscaled to 32x32, and their scale line says so."""
    metrics = check_context(out)
    assert metrics["dataset"] == "digits (8x8, upscaled to 32x32)"
    assert metrics["scale"].startswith(metrics["dataset"] + ": ")


def check_08_nas(out: Path) -> None:
    table = pd.read_csv(out / "nas.csv")
    assert table["method"].tolist() == ["random", "reinforce", "enas"]
    assert table["child_trainings"].tolist() == [4, 4, 0]
    for column in ("wall_clock_seconds", "best_val_accuracy", "best_test_accuracy_retrained", "best_macs",
                   "best_params", "device", "scale"):
        assert table[column].notna().all(), column
    assert table["best_test_accuracy_retrained"].between(0, 1).all()
    history = pd.read_csv(out / "nas_history.csv")
    assert history.groupby("method").size().to_dict() == {"random": 4, "reinforce": 4}
    metrics = check_context(out)
    assert "digits" in metrics["scale"] and metrics["dataset"].startswith("digits")
    for name in ("nas_rewards", "nas_pareto", "nas_architectures", "nas_cost_history"):
        assert (out / f"{name}.png").stat().st_size > 1000


def check_10_speedycnet(out: Path) -> None:
    table = pd.read_csv(out / "speedycnet.csv")
    assert list(table.columns) == ["dataset", "model", "device", "train_seconds", "test_accuracy", "speedup_vs_vgg16",
                                   "scale", "seed", "time_to_target_seconds", "protocol", "cpu_seconds",
                                   "cpu_speedup_vs_vgg16", "epochs", "caps_binding", "width_mult", "train_images",
                                   "precision"]
    assert set(table["protocol"]) == {"early_stopping", "equal_epochs"}
    assert {"VGG16", "SpeedyCNet", "Learner 1 alone (all data)", "Cascade, random removal (same counts)",
            "Cascade, removal off", "SpeedyCNet (independent learners)", "SpeedyCNet (small first learner)"} <= \
        set(table["model"])
    assert (table["cpu_seconds"] > 0).all() and set(table["precision"]) <= {"fp32", "bf16"}
    assert (table["width_mult"] == 0.125).all() and (table["epochs"] >= 1).all()
    assert (table["train_seconds"] > 0).all() and table["device"].str.startswith("cpu").all()
    assert (table[table["model"] == "VGG16"]["speedup_vs_vgg16"] == 1.0).all()
    for protocol, rows in table.groupby("protocol"):  # the speed-up is the measured ratio, within one protocol
        base = rows.loc[rows["model"] == "VGG16", "train_seconds"].item()
        assert (rows["speedup_vs_vgg16"] - base / rows["train_seconds"]).abs().max() < 1e-9, protocol
    metrics = check_context(out)
    assert metrics["device"].startswith("cpu") and "width_mult 0.125" in metrics["scale"]
    assert metrics["numeric_format"].startswith(metrics["precision"])  # "fp32+channels_last" is fp32 in a layout
    assert metrics["seconds_total"] > 0  # the measured run time, printed by the last cell
    assert metrics["floor"] is None and metrics["floor_note"].startswith("No accuracy floor for")  # digits: no floor
    assert metrics["removal_speedup_vs_random"] > 0 and metrics["removal_speedup_vs_off"] > 0
    assert metrics["resumed_passes"] == [] and metrics["passes_note"] == "Every pass was measured in this process."
    [kept] = (out / "passes").iterdir()  # one folder per run's settings: the headline pair whole, the rest as figures
    assert sorted(p.suffix for p in kept.iterdir()) == [".json"] * 8 + [".pt"]
    for name in ("speedycnet_plots", "speedycnet_easy_hard"):
        assert (out / f"{name}.png").stat().st_size > 1000


def check_11_edcnn(out: Path) -> None:
    import pytest
    import torch

    from course_utils import edcnn, exits
    from course_utils.widgets import ThresholdPanel, format_stats

    table = pd.read_csv(out / "edcnn.csv")
    assert list(table.columns) == edcnn.TABLE_COLUMNS + ["reference", "chosen_on", "val_acc_full", "val_acc_edcnn",
                                                         "val_predicted_time_reduction_pct", "scale", "seed", "policy",
                                                         "width_mult", "train_images", "precision", "recipe"]
    assert (table["recipe"] == "fast").all() and set(table["precision"]) <= {"fp32", "bf16"}
    assert set(table["reference"]) == {"original backbone", "own final exit"} and set(table["chosen_on"]) == {"val"}
    assert (table.loc[table["mode"] == "frozen", "reference"] == "original backbone").all()  # never another network
    assert set(table["batch_size"]) >= {1, 256} and set(table["mode"]) == {"frozen", "joint"}
    assert set(table["policy"]) == {"max_softmax", "entropy"}
    assert table["dataset"].str.contains("CIFAR-10 \\(JPEG-decoded copy\\)|digits").all()
    assert table["time_reduction_pct"].round(6).equals(
        (100 * (1 - table["ms_per_image_edcnn"] / table["ms_per_image_full"])).round(6))
    metrics = check_context(out)
    assert metrics["device"].startswith("cpu") and "width" in metrics["scale"]
    assert metrics["headline_chosen_on"] == "val" and "headline_time_reduction_pct" in metrics
    assert metrics["recipe"] == "fast" and metrics["backbone_epochs"] >= 1 and "floor" in metrics["floor_note"]
    panel = ThresholdPanel.load(out / "panel.pt")  # the notebook's panel, rebuilt from its published scores
    assert panel.latency is not None and "validation split" in panel.header.value
    ms = panel.latency.ms_per_image(panel.sweep().reach_fraction, 1)
    assert panel.stats.value == format_stats(panel.sweep(), full_macs=panel.costs.full, ms_per_image=ms)
    for value in (0.3, 0.5, 0.75, 0.95):  # what a drag does: the text follows, from the core's sweep, at once
        panel.sliders[0].value = value
        assert panel.thresholds()[0] == value and panel.last_update_ms > 0
        assert panel.stats.value == panel.text_for(panel.thresholds())
    bundle = exits.load_bundle(out / edcnn.BUNDLE_NAME)  # the headline model's exits, for load_trained
    assert bundle.splits == ["val", "test"] and bundle.device.startswith("cpu")
    assert torch.equal(bundle.labels["val"], panel.scores.labels) and sorted(bundle.exit_ms) == [1, 256]
    assert (bundle.scores("val").predictions == panel.scores.predictions).float().mean() > 0.99  # float16 ties
    from_bundle = ThresholdPanel.from_bundle(bundle)
    assert from_bundle.stats.value == from_bundle.text_for(from_bundle.thresholds())
    assert from_bundle.latency.per_sample_ms == pytest.approx(panel.latency.per_sample_ms, rel=1e-6, abs=1e-9)
    assert metrics["seconds_total"] > 0
    for name in ("edcnn_frontier", "edcnn_macs_vs_time", "edcnn_exits_per_class", "edcnn_time_breakdown"):
        assert (out / f"{name}.png").stat().st_size > 1000
    breakdown = pd.read_csv(out / "edcnn_time_breakdown.csv")  # the elastic network's: its exits and its policy
    assert breakdown["part"].iloc[0].startswith("exit 1") and breakdown["part"].iloc[-1] == "exit policy + compaction"


WALK = ["01_imagenet_alexnet_zfnet", "02_vgg", "03_googlenet", "04_inception_v3", "05_resnet", "06_resnext",
        "07_mobilenet_shufflenet"]
CHECKS = {"00_setup_and_data": check_context, **{stem: check_walk for stem in WALK},
          "08_nas": check_08_nas, "09_architecture_comparison": check_context,
          "10_speedycnet": check_10_speedycnet, "11_edcnn": check_11_edcnn}
