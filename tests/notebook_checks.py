"""What each notebook must have published after a smoke run, beyond metrics.json with a device.

``tests/test_notebooks.py`` runs every notebook once and then calls ``CHECKS[stem](results_dir)``
when there is an entry, so a notebook's outputs are checked without running it a second time.
"""
import json
from pathlib import Path

import pandas as pd


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
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["device"] and "digits" in metrics["scale"]
    for name in ("nas_rewards", "nas_pareto", "nas_architectures", "nas_cost_history"):
        assert (out / f"{name}.png").stat().st_size > 1000


CHECKS = {"08_nas": check_08_nas}
