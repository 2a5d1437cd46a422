"""course_utils.train: fit, resume-after-interrupt, checkpoints, NaN losses, early stopping, DDP."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from course_utils import data, train
from course_utils.errors import CheckpointError, NonFiniteLossError, UnknownNameError

REPO = Path(__file__).resolve().parent.parent


def small_cnn(seed: int = 0, width: int = 16) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Dropout(0.2),  # dropout draws from the RNG, so resume must restore RNG state too
        nn.Linear(2 * width, 10))


@pytest.fixture(scope="module")
def digits_loaders():
    x, y = data.load("digits", "train", image_size=16)
    xv, yv = data.load("digits", "val", image_size=16)
    return (data.DeviceLoader.for_dataset("digits", x, y, train=True),
            data.DeviceLoader.for_dataset("digits", xv, yv, train=False))


def config(**overrides) -> train.TrainConfig:
    return train.TrainConfig(**{"epochs": 4, "batch_size": 64, "lr": 0.1, "progress": False, **overrides})


def test_fit_learns_digits_and_records_history(digits_loaders):
    tr, va = digits_loaders
    model = small_cnn()
    history = train.fit(model, tr, va, config(epochs=8))
    frame = history.to_frame()
    assert list(frame["epoch"]) == list(range(1, 9))
    assert frame["train_loss"].iloc[-1] < frame["train_loss"].iloc[0]
    assert history.best_val_accuracy > 0.5 and history.device.startswith("cpu")
    assert history.seconds == pytest.approx(frame["seconds"].sum()) and history.seconds_to_best() <= history.seconds
    assert train.evaluate(model, va)["accuracy"] == pytest.approx(history.best_val_accuracy)  # best weights restored
    assert history.time_to_accuracy(2.0) is None


class Interrupt(Exception):
    pass


def test_interrupted_and_resumed_run_ends_with_identical_weights(digits_loaders, tmp_path):
    tr, va = digits_loaders
    reference = small_cnn()
    ref_history = train.fit(reference, tr, va, config())

    ckpt = tmp_path / "run.pt"

    def interrupt_after_two(epoch, record):
        if epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train.fit(small_cnn(), tr, va, config(checkpoint=str(ckpt)), on_epoch_end=interrupt_after_two)
    assert ckpt.exists() and not list(tmp_path.glob(".*tmp")), "only the finished checkpoint, no temp file"
    torch.manual_seed(1234)  # a different global RNG state must not matter: the checkpoint restores it
    resumed = small_cnn(seed=99)  # different initial weights: they are overwritten by the checkpoint
    history = train.fit(resumed, tr, va, config(checkpoint=str(ckpt)))
    assert [e["epoch"] for e in history.epochs] == [1, 2, 3, 4]
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert [e["val_accuracy"] for e in history.epochs] == [e["val_accuracy"] for e in ref_history.epochs]


def test_corrupt_checkpoint_is_named_with_the_fix(digits_loaders, tmp_path):
    tr, va = digits_loaders
    ckpt = tmp_path / "run.pt"
    ckpt.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(CheckpointError, match=r"corrupt or truncated.*Delete it to start from scratch"):
        train.fit(small_cnn(), tr, va, config(checkpoint=str(ckpt)))


def test_checkpoint_of_another_model_or_config_is_refused(digits_loaders, tmp_path):
    tr, va = digits_loaders
    ckpt = tmp_path / "run.pt"
    train.fit(small_cnn(), tr, va, config(epochs=1, checkpoint=str(ckpt)))
    with pytest.raises(CheckpointError, match="saved for another model"):
        train.fit(small_cnn(width=8), tr, va, config(epochs=1, checkpoint=str(ckpt)))
    with pytest.raises(CheckpointError, match=r"another training config \(lr: 0.1 -> 0.2\)"):
        train.fit(small_cnn(), tr, va, config(epochs=1, lr=0.2, checkpoint=str(ckpt)))
    torch.save({"weights": 1}, ckpt)
    with pytest.raises(CheckpointError, match="is not a course_utils.fit/1 checkpoint"):
        train.fit(small_cnn(), tr, va, config(epochs=1, checkpoint=str(ckpt)))


def test_failed_save_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "ckpt.pt"
    train.save_checkpoint({"a": torch.zeros(3)}, target)

    def broken_save(obj, f):
        f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        train.save_checkpoint({"a": torch.ones(3)}, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]
    monkeypatch.undo()
    assert torch.equal(torch.load(target)["a"], torch.zeros(3)), "the previous checkpoint is intact"


def test_nan_loss_stops_with_the_step_named(digits_loaders):
    tr, va = digits_loaders

    class PoisonAtStep(nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.calls = small_cnn(), 0

        def forward(self, x):
            self.calls += self.training
            out = self.net(x)
            return out * float("nan") if self.training and self.calls == 30 else out

    # 21 batches per epoch (1295 / 64, rounded up): training call 30 is epoch 2, step 9
    with pytest.raises(NonFiniteLossError, match=r"at epoch 2, step 9 of 21 \(global step 30\)"):
        train.fit(PoisonAtStep(), tr, va, config())


def test_early_stopping_stops_after_patience(digits_loaders):
    tr, va = digits_loaders
    history = train.fit(small_cnn(), tr, va, config(epochs=30, lr=1e-6, schedule="constant", patience=2))
    assert history.stopped_early and len(history.epochs) == history.best_epoch + 2 < 30


def test_plateau_decays_the_rate_at_each_stall_then_stops(digits_loaders):
    tr, va = digits_loaders
    # lr so small that val accuracy never improves after epoch 1: every epoch after it is a stall
    history = train.fit(small_cnn(), tr, va, config(epochs=30, lr=1e-6, schedule="plateau", patience=1))
    lrs = [e["lr"] for e in history.epochs]
    assert history.stopped_early and history.best_epoch == 1 and len(lrs) == 4, lrs
    assert lrs == pytest.approx([1e-6, 1e-6, 1e-7, 1e-8]), "x0.1 after each of the 2 stalls, then the stop"
    with pytest.raises(ValueError, match="schedule 'plateau' decays the rate.*set patience >= 1"):
        train.TrainConfig(schedule="plateau").validate()


def test_aux_logits_are_weighted_like_googlenet():
    criterion = nn.CrossEntropyLoss()
    main, aux = torch.zeros(2, 3), torch.zeros(2, 3)
    y = torch.tensor([0, 1])
    loss, logits = train.default_loss((main, aux), y, criterion)
    assert logits is main and loss.item() == pytest.approx(1.3 * torch.log(torch.tensor(3.0)).item())


def test_bad_config_names():
    with pytest.raises(UnknownNameError, match="unknown optimizer 'adam'"):
        train.TrainConfig(optimizer="adam").validate()
    with pytest.raises(UnknownNameError, match="unknown schedule 'linear'"):
        train.TrainConfig(schedule="linear").validate()
    with pytest.raises(UnknownNameError, match="unknown precision 'fp8'.*auto, fp32, bf16"):
        train.TrainConfig(precision="fp8").validate()
    with pytest.raises(ValueError, match="ema_decay must be in"):
        train.TrainConfig(ema_decay=1.0).validate()


@pytest.mark.ddp
def test_fit_under_torchrun_with_two_cpu_processes(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", str(REPO / "tests" / "ddp_fit_worker.py"), str(out)],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert reports[0]["world_size"] == reports[1]["world_size"] == 2
    assert any(name.endswith("running_mean") for name in reports[0]["buffers"]), "the model must have BatchNorm"
    # bit-identical: DDP keeps parameters in step, fit's sync_buffers the BatchNorm statistics
    assert reports[0]["parameters"] == reports[1]["parameters"], "ranks must end with identical weights"
    assert reports[0]["buffers"] == reports[1]["buffers"], "ranks must end with identical BatchNorm statistics"
    assert reports[0]["val_accuracies"] == reports[1]["val_accuracies"], "every rank evaluated the same model"
    for r in reports:  # rank 0's checkpoint holds the model every rank ended with, buffers included
        assert r["checkpoint"] == r["state"]
    assert reports[0]["steps_per_epoch"] == 11  # 1295 samples / 2 ranks / 64 per batch, rounded up
    assert reports[0]["val_accuracy"] > 0.3


# ----------------------------------------------------------------------------- the recipe's pieces
def test_ema_arithmetic_and_swap_back():
    from course_utils.ema import WeightEMA

    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = WeightEMA(model, decay=0.5, every=2)
    with torch.no_grad():
        model.weight.fill_(4.0)
    ema.update(model)  # step 1 of 2: nothing yet
    assert torch.equal(ema.shadow["weight"], torch.zeros(1, 2))
    ema.update(model)  # step 2: weight 1 - 0.5**2 = 0.75 on the new value
    assert torch.equal(ema.shadow["weight"], torch.full((1, 2), 3.0))
    with ema.applied(model):
        assert torch.equal(model.weight, torch.full((1, 2), 3.0))
    assert torch.equal(model.weight, torch.full((1, 2), 4.0)), "the live weights come back"
    with pytest.raises(ValueError, match="EMA needs"):
        WeightEMA(model, decay=0.0)
    # the warm-up: early updates lean on the new weights, (1 + t) / (10 + t) at most, then the decay takes over
    ema = WeightEMA(model, decay=0.99)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema.update(model)  # t = 1: decay min(0.99, 2 / 11), so the shadow keeps 2/11 of the 4.0 it started from
    assert ema.shadow["weight"][0, 0].item() == pytest.approx(4.0 * 2 / 11)
    ema.steps = 10_000
    ema.update(model)  # t = 10,001: the decay itself, 0.99
    assert ema.shadow["weight"][0, 0].item() == pytest.approx(4.0 * 2 / 11 * 0.99)


def test_ema_run_resumes_exactly_and_ends_on_evaluated_weights(digits_loaders, tmp_path):
    tr, va = digits_loaders
    settings = dict(ema_decay=0.9, ema_every=2, restore_best=False)
    reference = small_cnn()
    ref_history = train.fit(reference, tr, va, config(**settings))
    assert train.evaluate(reference, va)["accuracy"] == pytest.approx(ref_history.epochs[-1]["val_accuracy"])

    def interrupt_after_two(epoch, record):
        if epoch == 2:
            raise Interrupt

    ckpt = tmp_path / "ema.pt"
    with pytest.raises(Interrupt):
        train.fit(small_cnn(), tr, va, config(checkpoint=str(ckpt), **settings), on_epoch_end=interrupt_after_two)
    resumed = small_cnn(seed=5)
    train.fit(resumed, tr, va, config(checkpoint=str(ckpt), **settings))
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_flip_tta_averages_the_logits_of_the_image_and_its_mirror(digits_loaders):
    _, va = digits_loaders
    model = small_cnn().eval()
    plain = train.evaluate(model, va)
    flipped = train.evaluate(model, va, flip=True)
    x, y = next(iter(va))
    with torch.inference_mode():
        mean = (model(x) + model(x.flip(-1))) / 2
    first = train.evaluate(model, data.DeviceLoader(x, y, batch_size=len(y), mean=None), flip=True)
    assert flipped["n"] == plain["n"]
    assert first["loss"] == pytest.approx(nn.functional.cross_entropy(mean, y).item(), rel=1e-5)


def test_step_schedule_divides_by_ten_at_half_and_three_quarters(digits_loaders):
    tr, _ = digits_loaders
    lrs = []
    train.fit(small_cnn(), tr, None, config(schedule="step", epochs=4, lr=0.2),
              on_epoch_end=lambda epoch, record: lrs.append(record["lr"]))
    assert lrs == pytest.approx([0.2, 0.02, 0.002, 0.002])


def test_bf16_precision_runs_on_the_cpu_and_is_recorded_in_the_layout(digits_loaders):
    tr, va = digits_loaders
    model = small_cnn()
    history = train.fit(model, tr, va, config(epochs=2, precision="bf16"))
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert history.best_val_accuracy > 0.2
    assert train.amp_dtype(config(precision="bf16"), torch.device("cpu")) == (True, torch.bfloat16)
    assert train.amp_dtype(config(), torch.device("cpu")) == (False, None)
    assert train.amp_dtype(config(amp=False, precision="bf16"), torch.device("cpu")) == (False, None)


def test_a_checkpoint_from_before_a_new_setting_existed_still_resumes(digits_loaders, tmp_path):
    tr, va = digits_loaders
    ckpt = tmp_path / "old.pt"
    train.fit(small_cnn(), tr, va, config(epochs=1, checkpoint=str(ckpt)))
    state = torch.load(ckpt, weights_only=True)
    for newer in ("precision", "ema_decay", "ema_every", "tta_flip"):  # fields this checkpoint format gained later
        del state["config"][newer]
    torch.save(state, ckpt)
    history = train.fit(small_cnn(), tr, va, config(epochs=1, checkpoint=str(ckpt)))  # finished: nothing to redo
    assert [e["epoch"] for e in history.epochs] == [1]
    with pytest.raises(CheckpointError, match="precision: 'auto' -> 'bf16'"):
        train.fit(small_cnn(), tr, va, config(epochs=1, checkpoint=str(ckpt), precision="bf16"))
