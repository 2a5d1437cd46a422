"""PassLog: a long run resumes after its last finished pass, on the same device and settings only."""
from __future__ import annotations

import json

import pytest
import torch

from course_utils.errors import CheckpointError, CourseError
from course_utils.passes import PassLog, run_key

SETTINGS = {"scale": "MNIST: train 54001", "seed": 0, "split": [1, 1, 1, 2]}


class Interrupted(Exception):
    """Stands for a session that ends mid-pass."""


def measured(value: float, calls: list):
    def measure() -> dict:
        calls.append(value)
        return {"train_seconds": value, "history": {"epochs": [{"seconds": value}]}, "none": None}
    return measure


def never() -> dict:
    raise AssertionError("a stored pass was measured again")


def test_an_interrupted_run_resumes_after_its_last_finished_pass(tmp_path):
    calls: list = []
    first = PassLog(tmp_path, SETTINGS, "cpu (AMD EPYC, 2 threads)")
    assert first.run("VGG16, early stopping", measured(2818.4, calls))["train_seconds"] == 2818.4

    def cut_off() -> dict:
        raise Interrupted
    with pytest.raises(Interrupted):
        first.run("Cascade, removal off", cut_off)
    assert sorted(p.name for p in first.folder.iterdir()) == ["vgg16_early_stopping.json"], "no partial file"

    second = PassLog(tmp_path, dict(SETTINGS), "cpu (AMD EPYC, 2 threads)")
    again = second.run("VGG16, early stopping", never)
    assert again == {"train_seconds": 2818.4, "history": {"epochs": [{"seconds": 2818.4}]}, "none": None}
    assert second.run("Cascade, removal off", measured(640.0, calls))["train_seconds"] == 640.0
    assert calls == [2818.4, 640.0]
    assert second.resumed == ["VGG16, early stopping"] and second.measured == ["Cascade, removal off"]
    assert second.note().startswith("Resumed: VGG16, early stopping measured by an earlier process")
    assert first.note() == "Every pass was measured in this process."


def test_a_pass_measured_on_another_device_or_with_other_settings_is_measured_again(tmp_path):
    calls: list = []
    PassLog(tmp_path, SETTINGS, "cpu (AMD EPYC, 2 threads)").run("VGG16", measured(100.0, calls))
    intel = PassLog(tmp_path, SETTINGS, "cpu (Intel Xeon, 2 threads)")
    assert intel.run("VGG16", measured(40.0, calls))["train_seconds"] == 40.0
    assert intel.resumed == [] and calls == [100.0, 40.0]
    # the later measurement replaces the earlier one
    assert PassLog(tmp_path, SETTINGS, "cpu (Intel Xeon, 2 threads)").run("VGG16", never)["train_seconds"] == 40.0
    other = PassLog(tmp_path, {**SETTINGS, "seed": 1}, "cpu (Intel Xeon, 2 threads)")
    assert other.folder != intel.folder and run_key(SETTINGS) != run_key({**SETTINGS, "seed": 1})
    assert other.run("VGG16", measured(41.0, calls))["train_seconds"] == 41.0


def test_without_a_folder_every_pass_runs_and_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls: list = []
    for _ in range(2):
        log = PassLog("", SETTINGS, "cpu")
        log.run("VGG16", measured(1.0, calls))
        assert log.path("VGG16") is None
    assert calls == [1.0, 1.0] and list(tmp_path.iterdir()) == []


def test_tensor_figures_are_stored_as_numbers(tmp_path):
    log = PassLog(tmp_path, SETTINGS, "cpu")
    log.run("Learner 1 alone (all data)", lambda: {"test_accuracy": torch.tensor(0.9916), "thresholds": [0.86, None]})
    entry = json.loads(log.path("Learner 1 alone (all data)").read_text())
    assert entry["value"]["test_accuracy"] == pytest.approx(0.9916) and entry["value"]["thresholds"] == [0.86, None]
    assert log.path("Learner 1 alone (all data)").name == "learner_1_alone_all_data.json"
    assert entry["device"] == "cpu" and entry["settings"] == SETTINGS


def test_a_corrupt_stored_pass_is_an_error_that_names_the_file_and_the_fix(tmp_path):
    log = PassLog(tmp_path, SETTINGS, "cpu")
    log.run("VGG16", lambda: {"train_seconds": 1.0})
    path = log.path("VGG16")
    path.write_text(path.read_text()[:40])  # a file cut short
    with pytest.raises(CheckpointError, match=r"vgg16\.json: it is corrupt .*Delete it") as err:
        PassLog(tmp_path, SETTINGS, "cpu").run("VGG16", never)
    assert isinstance(err.value, CourseError)
    path.write_text(json.dumps({"format": "something else", "value": {}}))
    with pytest.raises(CheckpointError, match="is not a stored pass"):
        PassLog(tmp_path, SETTINGS, "cpu").run("VGG16", never)


def test_a_whole_pass_keeps_its_network_and_an_unpicklable_one_is_measured_not_lost(tmp_path, capsys):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    log = PassLog(tmp_path, SETTINGS, "cpu")
    log.run("VGG16 and SpeedyCNet, early stopping", lambda: {"net": net, "seconds": 2.5}, whole=True)
    assert log.path("VGG16 and SpeedyCNet, early stopping", whole=True).name == "vgg16_and_speedycnet_early_stopping.pt"
    back = PassLog(tmp_path, SETTINGS, "cpu").run("VGG16 and SpeedyCNet, early stopping", never, whole=True)
    assert back["seconds"] == 2.5 and torch.equal(back["net"].weight, net.weight)
    # a value torch.save cannot write is still returned (an hour of training is never lost to a file), and no
    # partial file is left behind
    value = log.run("Cascade, removal off", lambda: {"f": lambda: 1}, whole=True)
    assert value["f"]() == 1 and "Cascade, removal off: not kept" in capsys.readouterr().out
    assert not log.path("Cascade, removal off", whole=True).exists()
    assert [p.name for p in log.folder.iterdir()] == ["vgg16_and_speedycnet_early_stopping.pt"]
    log.path("VGG16 and SpeedyCNet, early stopping", whole=True).write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(CheckpointError, match="it is corrupt or stale"):
        PassLog(tmp_path, SETTINGS, "cpu").run("VGG16 and SpeedyCNet, early stopping", never, whole=True)
