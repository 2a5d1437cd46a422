"""Where to put the exits: at evenly spaced fractions of the measured *time*, not of the MACs.

An exit saves the time of every stage after it, so its place should be read off a clock. SDN places exits at
evenly spaced fractions of the MACs, which assumes MACs are milliseconds. On the course's CPU they are not: the
early blocks work on 32x32 maps, where depthwise convolutions and BatchNorm are limited by memory traffic. For
the standard tier's seed-0 MobileNet v1 x1.0 (2-core AMD EPYC, 1 thread), the stage up to the first default tap
held 39% of the MACs and took 67% of a batch of 256's time (22% at batch 1): an exit meant for "20% of the
work" came after two thirds of the time.

    profile = profile_trunk(backbone, (3, 32, 32))          # per trunk module: MACs and ms at batch 1 and 256
    taps = taps_by_time(profile, 5)                         # five taps at ~18, 36, 54, 72, 90 % of the time
    net = attach_exits(backbone, taps, head="conv_pool_linear")

``evenly_spaced`` is the one placement rule; ``attach_exits(taps=5)`` applies it to the MACs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn as nn

from .. import exits
from ..device import device_name
from ..errors import CourseError
from ..layer_times import module_times
from ..precision import is_channels_last
from .trunk import Trunk, split_backbone

if TYPE_CHECKING:
    import pandas as pd


def evenly_spaced(cumulative: Sequence[float], count: int, *, top: float = 0.9) -> list[int]:
    """Indices of ``count`` distinct points nearest to ``top * (i + 1) / count`` of a rising 0..1 profile.

    cumulative: the share of the whole reached after each candidate point (candidates only: not the end).
    SDN's rule (Kaya et al. 2019): with six exits and ``top = 0.9``, the targets are 0.15, 0.30, ... 0.90.
    Returns sorted indices into ``cumulative``.
    """
    if not 1 <= count <= len(cumulative):
        raise CourseError(f"asked for {count} exits, but there are {len(cumulative)} tapping points; "
                          f"use 1 .. {len(cumulative)}.")
    c = torch.tensor(list(cumulative), dtype=torch.float64)
    chosen: list[int] = []
    for i in range(count):
        order = (c - top * (i + 1) / count).abs().argsort(stable=True).tolist()
        chosen.append(next(j for j in order if j not in chosen))
    return sorted(chosen)


@dataclass
class TrunkProfile:
    """Per trunk module (a tapping point after each): MACs per image and measured ms per image per batch size."""

    names: list[str]
    macs: list[int]
    ms: dict[int, list[float]]  # batch size -> per-module ms per image (median of the repeats)
    device: str = ""

    def time_share(self) -> list[float]:
        """Cumulative share of the trunk's time after each module, averaged over the measured batch sizes."""
        shares = [torch.tensor(ms, dtype=torch.float64).cumsum(0) / sum(ms) for ms in self.ms.values()]
        return (sum(shares) / len(shares)).tolist()

    def macs_share(self) -> list[float]:
        """Cumulative share of the trunk's MACs after each module."""
        return (torch.tensor(self.macs, dtype=torch.float64).cumsum(0) / sum(self.macs)).tolist()

    def table(self) -> "pd.DataFrame":
        """One row per module: name, MACs, ms per image at each batch size, cumulative MAC and time shares."""
        import pandas as pd

        df = pd.DataFrame({"tap": self.names, "macs": self.macs})
        for bs, ms in self.ms.items():
            df[f"ms_bs{bs}"] = ms
        df["macs_share"], df["time_share"] = self.macs_share(), self.time_share()
        return df


@torch.inference_mode()
def profile_trunk(backbone: nn.Module, input_shape: Sequence[int], *, batch_sizes: Sequence[int] = (1, 256),
                  repeats: int = 5, trunk: Trunk | None = None) -> TrunkProfile:
    """Time every trunk module of ``backbone`` (forward hooks, device-synchronised) at each batch size.

    input_shape: one sample ``(C, H, W)``. Inputs are random, in the layout of the backbone's weights (a
    channels_last network fed NCHW input would pay a conversion in its first module). The hooks' own
    synchronisation is charged to every module alike, which is what a share needs. Returns a ``TrunkProfile``.
    """
    trunk = trunk or split_backbone(backbone)
    chain = nn.Sequential(*trunk.modules)  # shares the modules: hooks on its children time the backbone's own
    was_training = backbone.training
    backbone.eval()
    p = next(backbone.parameters())
    layout = torch.channels_last if is_channels_last(backbone) else torch.contiguous_format
    x, macs = torch.zeros(1, *input_shape, device=p.device, dtype=p.dtype), []
    for m in trunk.modules:  # each module counted on the input it sees in the chain
        count, x = exits.count_macs(m, x)
        macs.append(count)
    ms = {}
    for bs in batch_sizes:
        xb = torch.randn(bs, *input_shape, device=p.device, dtype=p.dtype).contiguous(memory_format=layout)
        marks = module_times(chain, xb, [str(i) for i in range(len(chain))], repeats=repeats, warmup=1)
        ms[int(bs)] = [float(torch.tensor(marks[str(i)]).median()) / bs for i in range(len(chain))]
    backbone.train(was_training)
    return TrunkProfile(list(trunk.names), macs, ms, device_name(p.device))


def taps_by_time(profile: TrunkProfile, count: int, *, top: float = 0.9) -> list[str]:
    """``count`` tapping points at evenly spaced fractions of the measured time (``evenly_spaced`` on
    ``profile.time_share()``), from the input to the output; never the trunk's end (the final exit's)."""
    return [profile.names[i] for i in evenly_spaced(profile.time_share()[:-1], count, top=top)]
