"""comparison.py: the published top-1 belongs to the architecture we measure, the measured columns
come from the counter and the timer, and the charts draw one bubble per network, sized by parameters."""
import math

import matplotlib
import numpy as np
import pytest
import torch
import torchvision
from torchvision.models import get_model, get_model_weights

from course_utils import comparison, models
from course_utils.complexity import profile
from course_utils.errors import UnknownNameError
from course_utils.models.mobilenetv1 import input_resolution

matplotlib.use("Agg")

ARCHS = comparison.ARCHITECTURES
WITH_TORCHVISION_TOP1 = [a for a in ARCHS if a.torchvision_weights]


def test_names_are_unique_and_buildable_by_their_builder():
    names = [a.model for a in ARCHS]
    assert len(names) == len(set(names))
    for a in ARCHS:
        known = models.available() if a.builder == "course" else torchvision.models.list_models()
        assert a.model in known, a.model
        assert a.family in comparison.FAMILY_COLOURS
        assert 2012 <= a.year <= 2019  # the walk goes from AlexNet to the searched networks


@pytest.mark.parametrize("arch", WITH_TORCHVISION_TOP1, ids=lambda a: a.model)
def test_the_torchvision_top1_belongs_to_the_same_architecture(arch):
    """Our builder and the builder of the weights that the accuracy comes from have the same parameters."""
    with torch.device("meta"):  # shapes only: no memory, no initialisation arithmetic
        ours = comparison.build(arch)
        theirs = get_model(arch.torchvision_weights, weights=None, **arch.options)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())


def test_top1_is_read_from_torchvision_metadata():
    arch = comparison.find("resnet50")
    enum = get_model_weights("resnet50")
    top1, source = comparison.published_top1(arch)
    assert top1 == enum.IMAGENET1K_V1.meta["_metrics"]["ImageNet-1K"]["acc@1"] == 76.13
    assert source == "torchvision resnet50 IMAGENET1K_V1 metadata"
    newer, source = comparison.published_top1(arch, weights="DEFAULT")
    assert newer == enum.DEFAULT.meta["_metrics"]["ImageNet-1K"]["acc@1"] and newer > top1  # the 2021 recipe
    assert "IMAGENET1K_V2" in source


def test_paper_figures_carry_their_reference_and_nothing_else_is_typed_in():
    for a in ARCHS:
        if a.torchvision_weights:
            assert a.top1 is None and not a.top1_source, f"{a.model}: torchvision has it, do not type it in"
        else:
            assert 0 < a.top1 < 100 and "arXiv:" in a.top1_source and "Table" in a.top1_source, a.model
    # the papers report error rates: the accuracy is 100 - error
    assert comparison.find("zfnet").top1 == pytest.approx(100 - 38.4)
    assert comparison.find("shufflenet_v1_g3").top1 == pytest.approx(100 - 32.6)


def test_mobilenet_v1_published_grid_uses_the_papers_resolutions():
    sides = {side for _, side in comparison.MOBILENET_V1_PUBLISHED}
    assert sides == {input_resolution(rho) for rho in (1, 6 / 7, 5 / 7, 4 / 7)} == {224, 192, 160, 128}
    assert comparison.MOBILENET_V1_PUBLISHED[(1.0, 224)] == comparison.find("mobilenet_v1").top1


def test_unknown_names_say_what_exists():
    with pytest.raises(UnknownNameError, match="no architecture 'resnet9'.*Known: alexnet, zfnet"):
        comparison.find("resnet9")
    with pytest.raises(UnknownNameError, match="no weights 'IMAGENET1K_V9' for resnet18. Use one of: DEFAULT, IMAGENET1K_V1"):
        comparison.published_top1(comparison.find("resnet18"), weights="IMAGENET1K_V9")


def test_measure_uses_the_counter_and_the_timer():
    arch = comparison.find("shufflenet_v2_x0_5")
    row = comparison.measure(arch, resolution=64, latency_runs=3, warmup=1, threads=1)
    p = profile(comparison.build(arch), (1, 3, 64, 64))
    assert (row["params"], row["macs"], row["resolution"]) == (p.params, p.macs, 64)
    assert 0 < row["latency_p10_ms"] <= row["latency_ms"] <= row["latency_p90_ms"]
    assert row["threads"] == 1 and "cpu" in row["device"]
    assert row["top1"] == comparison.published_top1(arch)[0]
    untimed = comparison.measure(comparison.find("inception_v3"), latency_runs=0)
    assert untimed["resolution"] == 299 and math.isnan(untimed["latency_ms"])


def _table():
    rows = [{"model": a.model, "year": a.year, "resolution": 224, "params": (i + 1) * 1_000_000,
             "macs": (i + 1) * 10**8, "top1": 50.0 + i, "top1_source": "x", "latency_ms": 1.0 + i,
             "device": "cpu (test)", "label": a.label, "family": a.family, "idea": a.idea}
            for i, a in enumerate(reversed(ARCHS))]
    return comparison.to_table(rows)


def test_to_table_orders_columns_and_rows():
    table = _table()
    assert list(table.columns[:len(comparison.TABLE_COLUMNS)]) == comparison.TABLE_COLUMNS
    assert table["year"].is_monotonic_increasing
    assert table["model"].iloc[0] == "alexnet"


def test_bubble_chart_draws_one_bubble_per_network_with_area_proportional_to_parameters():
    table = _table()
    for x in ("macs", "latency_ms"):
        fig = comparison.bubble_chart(table, x=x)
        ax = fig.axes[0]
        drawn = [c for c in ax.collections if len(c.get_offsets())]
        assert sum(len(c.get_offsets()) for c in drawn) == len(table)
        sizes = np.concatenate([c.get_sizes() for c in drawn])
        params = np.concatenate([table.loc[table["family"] == f, "params"].to_numpy()
                                 for f in comparison.FAMILY_COLOURS if (table["family"] == f).any()])
        ratio = sizes / params
        assert np.allclose(ratio, ratio[0])
        assert ax.get_xscale() == "log"
        matplotlib.pyplot.close(fig)


def test_timeline_chart_has_accuracy_and_cost_panels():
    table = _table()
    fig = comparison.timeline_chart(table)
    top, bottom = fig.axes
    assert len(top.collections[0].get_offsets()) == len(table)
    assert bottom.get_yscale() == "log"
    matplotlib.pyplot.close(fig)
