"""The one-of-each helpers: device timing/threads/autocast, atomic writes, the Pareto front, prepared data."""
import time

import pandas as pd
import pytest
import torch

from course_utils import checkpoint, device, experiment_data, pareto
from course_utils.errors import DataNotFoundError, UnknownNameError


# ----------------------------------------------------------------------------- device
def test_stopwatch_reports_wall_and_cpu_seconds():
    with device.stopwatch("cpu") as idle:
        time.sleep(0.05)  # wall clock passes, almost no CPU time does
    assert idle.seconds >= 0.05 and idle.ms == pytest.approx(idle.seconds * 1e3)
    assert idle.cpu_seconds < idle.seconds
    with device.stopwatch("cpu") as busy:
        sum(i * i for i in range(300_000))
    assert busy.cpu_seconds > 0
    assert device.elapsed_ms(lambda: time.sleep(0.02)) >= 20


def test_num_threads_is_restored_even_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with device.num_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with device.num_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be >= 1"):
        with device.num_threads(0):
            pass


def test_autocast_is_off_on_the_cpu_unless_a_dtype_is_asked_for():
    x = torch.randn(4, 8)
    w = torch.randn(8, 8)
    with device.autocast("cpu"):
        assert (x @ w).dtype == torch.float32
    with device.autocast("cpu", dtype=torch.bfloat16):
        assert (x @ w).dtype == torch.bfloat16
    with device.autocast("cpu", enabled=False, dtype=torch.bfloat16):
        assert (x @ w).dtype == torch.float32


# ----------------------------------------------------------------------------- atomic writes
def test_atomic_write_leaves_the_old_file_or_none(tmp_path):
    target = tmp_path / "out.txt"
    checkpoint.atomic_write(target, lambda tmp: open(tmp, "w").write("first"))

    def broken(tmp):
        open(tmp, "w").write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        checkpoint.atomic_write(target, broken)
    assert target.read_text() == "first" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


# ----------------------------------------------------------------------------- Pareto
def brute_force_front(points):
    """Indices of the points that no other point dominates (cost <= and score >, or cost < and score >=)."""
    keep = []
    for i, (c, s) in enumerate(points):
        dominated = any((c2 <= c and s2 > s) or (c2 < c and s2 >= s) for j, (c2, s2) in enumerate(points) if j != i)
        if not dominated:
            keep.append(i)
    return keep


def test_pareto_front_equals_the_brute_force_definition():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        n = 12
        cost = torch.randint(0, 6, (n,), generator=g).tolist()  # ties on purpose
        score = torch.randint(0, 6, (n,), generator=g).tolist()
        frame = pd.DataFrame({"cost": cost, "score": score})
        front = pareto.pareto_front(frame, "cost", "score")
        expected = brute_force_front(list(zip(cost, score)))
        # exact duplicates: the front keeps one of them (the first); brute force keeps none or all
        got = {(c, s) for c, s in zip(front["cost"], front["score"])}
        assert got == {(cost[i], score[i]) for i in expected}
        assert front["cost"].is_monotonic_increasing and front["score"].is_monotonic_increasing
        assert pareto.pareto_mask(frame, "cost", "score").sum() == len(front)


def test_pareto_front_keeps_the_first_of_identical_rows():
    frame = pd.DataFrame({"label": list("abc"), "macs": [1, 1, 2], "top1": [0.5, 0.5, 0.4]})
    assert pareto.pareto_front(frame, "macs", "top1")["label"].tolist() == ["a"]


# ----------------------------------------------------------------------------- prepared data
def test_prepare_falls_back_to_digits_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(experiment_data.data, "REPO_DATA_DIR", tmp_path)
    d = experiment_data.prepare("cifar10", train_per_class=5, val_per_class=2, test_per_class=3, seed=1)
    out = capsys.readouterr().out
    assert "cifar10 is not on this machine" in out and "Falling back to scikit-learn's digits" in out
    assert d.fell_back and d.name == "digits" and d.requested == "cifar10"
    assert (d.in_channels, d.image_size, d.num_classes) == (1, 32, 10)
    assert [len(s[1]) for s in (d.train, d.val, d.test)] == [50, 20, 30]
    assert d.label == "digits (8x8, upscaled to 32x32)"
    assert d.scale("3 epochs") == "digits (8x8, upscaled to 32x32): 50 training images (5 per class), 3 epochs"
    assert d.train_loader.shuffle and not d.val_loader.shuffle and d.val_loader.batch_size == 500
    with pytest.raises(DataNotFoundError, match="cifar10"):
        experiment_data.prepare("cifar10", fallback=False)


def test_prepare_keeps_native_digits_when_asked_and_rejects_unknown_names():
    d = experiment_data.prepare("digits", digits_size=None, verbose=False)
    assert d.image_size == 8 and not d.fell_back and d.label == "digits (8x8)"
    assert len(d.train[1]) + len(d.val[1]) + len(d.test[1]) == 1797
    with pytest.raises(UnknownNameError, match="Known datasets"):
        experiment_data.prepare("cifar100")


def test_prepare_uses_the_real_dataset_when_present(require_dataset):
    require_dataset("mnist")
    d = experiment_data.prepare("mnist", train_per_class=3, val_per_class=1, test_per_class=1, verbose=False)
    assert not d.fell_back and d.label == "MNIST" and (d.in_channels, d.image_size) == (1, 28)
