"""precision: the fastest numeric format is chosen from a measurement, with fp32 kept within noise."""
import pytest
import torch
import torch.nn as nn

from course_utils import precision


def test_pick_prefers_fp32_unless_another_is_clearly_faster():
    assert precision.pick({"fp32": 100.0, "fp32+channels_last": 97.0, "bf16+channels_last": 96.0}) == "fp32"
    assert precision.pick({"fp32": 100.0, "fp32+channels_last": 90.0, "bf16+channels_last": 40.0}) == "bf16+channels_last"
    assert precision.pick({"fp32": 100.0, "fp32+channels_last": 80.0, "bf16+channels_last": 140.0}) == "fp32+channels_last"
    assert precision.pick({"bf16+channels_last": 5.0}) == "bf16+channels_last"
    with pytest.raises(ValueError, match="no candidate"):
        precision.pick({})


def test_choose_precision_measures_every_candidate_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    choice = precision.choose_precision(model, (8, 3, 16, 16), "cpu", steps=2, warmup=1)
    assert set(choice.ms_per_step) == set(precision.CANDIDATES)
    assert all(ms > 0 for ms in choice.ms_per_step.values())
    assert choice.name == precision.pick(choice.ms_per_step)
    assert choice.precision in ("fp32", "bf16") and choice.amp == (choice.precision == "bf16")
    assert choice.device.startswith("cpu") and "ms/step" in str(choice)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the model is not trained"
    assert model[0].weight.is_contiguous(), "the caller's model keeps its memory format"
    with pytest.raises(ValueError, match="unknown precision candidate"):
        precision.choose_precision(model, (8, 3, 16, 16), "cpu", candidates=["int8"])
