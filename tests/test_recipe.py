"""recipe: the two recipes' settings, and time to a target accuracy that stops at the first epoch reaching it."""
import pytest
import torch
import torch.nn as nn

from course_utils import data, recipe
from course_utils.errors import UnknownNameError


def test_recipes_differ_only_where_the_docstring_says():
    fast, plain = recipe.fast(10), recipe.plain(10)
    assert (fast.schedule, fast.label_smoothing, fast.ema_decay, fast.tta_flip) == ("onecycle", 0.2, 0.99, True)
    assert (plain.schedule, plain.label_smoothing, plain.ema_decay, plain.tta_flip) == ("step", 0.0, None, False)
    assert fast.lr == pytest.approx(0.1 * 512 / 128) and plain.lr == pytest.approx(0.1)
    assert recipe.recipe("fast", 3, batch_size=256, seed=2).lr == pytest.approx(0.2)
    assert recipe.recipe("plain", 3, precision="bf16").precision == "bf16"
    with pytest.raises(UnknownNameError, match="unknown recipe 'airbench'.*fast, plain"):
        recipe.recipe("airbench", 3)


def test_time_to_accuracy_stops_at_the_first_epoch_that_reaches_the_target():
    x, y = data.load("digits", "train", image_size=16)
    xv, yv = data.load("digits", "val", image_size=16)
    tr = data.DeviceLoader.for_dataset("digits", x, y, train=True, batch_size=64)
    va = data.DeviceLoader.for_dataset("digits", xv, yv, train=False)

    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                             nn.Flatten(), nn.Linear(256, 10))

    config = recipe.plain(6, batch_size=64, progress=False)
    row = recipe.time_to_accuracy(build, tr, va, config, target=0.5)
    assert row["reached"] and row["epochs_run"] < 6 and row["best_val_accuracy"] >= 0.5
    assert 0 < row["seconds_to_target"] <= row["seconds"] and row["cpu_seconds_to_target"] > 0
    never = recipe.time_to_accuracy(build, tr, va, recipe.plain(1, batch_size=64, progress=False), target=1.01)
    assert not never["reached"] and never["seconds_to_target"] is None and never["epochs_run"] == 1
    assert never["device"].startswith("cpu")


def test_the_recipe_benchmark_names_a_bad_model_in_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "recipe_benchmark.py"
    out = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, str(script), "--dataset", "digits", "--model", "resnet9000",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "error: unknown model 'resnet9000'. Available models:" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
