"""layer_times.kind_breakdown: per layer kind, MACs equal the profiler's, bytes are counted by hand, shares sum to 1."""
import pytest
import torch.nn as nn

from course_utils import layer_times
from course_utils.complexity import profile


def kind(m: nn.Module) -> str:
    return "conv" if isinstance(m, nn.Conv2d) else "linear" if isinstance(m, nn.Linear) else "other"


def test_kind_breakdown_counts_macs_bytes_and_time_per_kind():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 10, bias=False))
    table = layer_times.kind_breakdown(net, (2, 3, 16, 16), kind, runs=3, warmup=1)
    assert set(table.index) == {"conv", "linear", "other", layer_times.OUTSIDE}
    assert table.loc["conv", "macs"] == 2 * 16 * 16 * 8 * 3 * 9 and table.loc["linear", "macs"] == 2 * 8 * 10
    assert table["macs"].sum() == profile(net, (2, 3, 16, 16)).macs
    f32 = 4
    assert table.loc["conv", "bytes"] == f32 * (2 * 3 * 16 * 16 + 2 * 8 * 16 * 16 + 8 * 3 * 9)
    assert table.loc["linear", "bytes"] == f32 * (2 * 8 + 2 * 10 + 8 * 10)
    assert table["time share"].sum() == pytest.approx(1.0) and (table.drop(layer_times.OUTSIDE)["seconds"] > 0).all()
    assert table["MAC share"].sum() == pytest.approx(1.0)
