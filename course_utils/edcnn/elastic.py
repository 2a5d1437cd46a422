"""The elastic network: a backbone's trunk cut at the tapping points, a branch head after each piece.

``attach_exits`` builds an ``ElasticNet`` (an ``exits.ExitNetwork``) from a backbone and tap names (or a
number of exits, placed SDN-style by MACs), sharing the backbone's weights, with every exit's MACs counted.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn as nn

from .. import exits
from ..errors import CourseError, UnknownNameError
from .heads import make_head
from .placement import evenly_spaced
from .trunk import Trunk, check_trunk, split_backbone

if TYPE_CHECKING:
    import pandas as pd

# Exits per backbone for 32x32 inputs: after blocks that end a resolution, or halfway through the long
# 4x4 stage, so that they sit at about 20, 35, 50, 70 and 85 % of the backbone's MACs.
DEFAULT_TAPS = {
    "mobilenet_v1": ["features.3", "features.5", "features.7", "features.9", "features.11"],
    "mobilenet_v2": ["features.3", "features.6", "features.10", "features.13", "features.16"],
}


class ElasticNet(exits.ExitNetwork):
    """An ``ExitNetwork`` whose stages are slices of a backbone's trunk; the last head is its own classifier.

    taps: one name per exit (the last is ``"final"``).
    backbone: the original network (shares every weight with the stages and the final head; not a submodule,
        so its weights appear once in ``state_dict``).
    """

    def __init__(self, stages: Sequence[nn.Module], heads: Sequence[nn.Module], *, taps: Sequence[str],
                 input_shape: Sequence[int], backbone: nn.Module | None = None):
        super().__init__(stages, heads)
        self.taps = list(taps)
        self.input_shape = tuple(input_shape)
        object.__setattr__(self, "backbone", backbone)  # a plain attribute: no duplicate parameters
        self.backbone_frozen = False

    def train(self, mode: bool = True) -> "ElasticNet":
        """Like ``nn.Module.train``, but a frozen backbone stays in eval mode (BatchNorm statistics unchanged)."""
        super().train(mode)
        if self.backbone_frozen:
            for m in (*self.stages, self.heads[-1]):
                m.train(False)
        return self

    def freeze_backbone(self, frozen: bool = True) -> "ElasticNet":
        """Freeze (or unfreeze) the stages and the final classifier: weights and BatchNorm statistics."""
        for m in (*self.stages, self.heads[-1]):
            for p in m.parameters():
                p.requires_grad_(not frozen)
        self.backbone_frozen = frozen
        return self.train(self.training)

    def backbone_state(self) -> dict[str, torch.Tensor]:
        """Copies of every backbone tensor (stages and final head, parameters and buffers)."""
        keep = ("stages.", f"heads.{self.num_exits - 1}.")
        return {k: v.detach().clone() for k, v in self.state_dict().items() if k.startswith(keep)}

    def full_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The original network without any branch: ``(B, C, H, W) -> (B, classes)``."""
        if self.backbone is not None:
            return self.backbone(x)
        for stage in self.stages:
            x = stage(x)
        return self.heads[-1](x)

    def exit_table(self) -> "pd.DataFrame":
        """Per exit: tap, MACs of its stage and head, cumulative MACs to reach and to leave there, as a DataFrame.

        ``macs_to_exit`` counts every earlier head (they must run to decide); ``fraction_of_full`` divides it by
        the MACs of the original network (all stages plus the final classifier, no branch).
        """
        import pandas as pd

        costs = self.costs or self.measure_costs(self.input_shape)
        reach = torch.tensor(costs.stage_macs).cumsum(0).tolist()
        leave = costs.cumulative()
        rows = [{"exit": k + 1, "tap": self.taps[k], "stage_macs": costs.stage_macs[k], "head_macs": costs.head_macs[k],
                 "macs_to_reach": reach[k] + sum(costs.head_macs[:k]), "macs_to_exit": leave[k],
                 "fraction_of_full": leave[k] / costs.full} for k in range(self.num_exits)]
        return pd.DataFrame(rows)

    def depth_fractions(self) -> list[float]:
        """Where each exit sits, as a fraction of the backbone's stage MACs (SDN's exit positions)."""
        costs = self.costs or self.measure_costs(self.input_shape)
        total = sum(costs.stage_macs)
        return [m / total for m in torch.tensor(costs.stage_macs, dtype=torch.float64).cumsum(0).tolist()]


def _resolve_taps(taps: Sequence[str] | int, trunk: Trunk, stage_macs: list[int]) -> list[int]:
    """Tap names (or a count) -> sorted trunk indices; every mistake names the valid choices."""
    names = trunk.names
    valid = names[:-1]
    if isinstance(taps, int) and not isinstance(taps, bool):
        # SDN's placement: exits at evenly spaced fractions of the trunk's MACs (0.15, 0.30, ... for six);
        # placement.taps_by_time applies the same rule to measured time
        cumulative = torch.tensor(stage_macs[:-1], dtype=torch.float64).cumsum(0) / sum(stage_macs)
        return evenly_spaced(cumulative.tolist(), taps)
    if isinstance(taps, str) or not len(taps):
        raise CourseError(f"taps must be a list of tapping-point names (or a number of exits), got {taps!r}; "
                          f"e.g. {valid[len(valid) // 3:len(valid) // 3 + 2]}.")
    index = {n: i for i, n in enumerate(names)}
    chosen = []
    for tap in taps:
        if tap not in index:
            inside = [n for n in names if isinstance(tap, str) and tap.startswith(n + ".")]
            where = f"it is inside {inside[0]}, and exits can only tap between trunk modules. " if inside else ""
            raise UnknownNameError(f"unknown tapping point {tap!r}: {where}Tapping points are: {', '.join(valid)}.")
        if index[tap] == len(names) - 1:
            raise CourseError(f"{tap!r} is the end of the trunk, where the backbone's own classifier is already the "
                              f"final exit; tap an earlier point: {', '.join(valid[-3:])} ...")
        chosen.append(index[tap])
    if len(set(chosen)) != len(chosen):
        raise CourseError(f"tapping point listed twice in {list(taps)}: give each point once.")
    if chosen != sorted(chosen):
        raise CourseError(f"tapping points {list(taps)} are out of order: list them from the input to the output, "
                          f"i.e. {[names[i] for i in sorted(chosen)]}.")
    return chosen


def attach_exits(backbone: nn.Module, taps: Sequence[str] | int | None = None, *, num_classes: int | None = None,
                 head: str = "pool_linear", pool_size: int = 1, head_width: int | None = None,
                 input_shape: Sequence[int] = (3, 32, 32), trunk: Trunk | None = None,
                 backbone_name: str | None = None) -> ElasticNet:
    """Attach branch heads to ``backbone`` at ``taps``; return an ``ElasticNet`` with MACs already counted.

    taps: module names in the trunk (see ``tapping_points``), a number of exits (placed SDN-style at evenly
        spaced fractions of the MACs), or None for ``DEFAULT_TAPS[backbone_name]``.
    head, pool_size, head_width: the branch heads (see ``make_head``); the final exit is the backbone's classifier.
    input_shape: one sample ``(C, H, W)``, for the MAC count and a check that the trunk reproduces the backbone.
    trunk: an explicit split (``Trunk.from_stages``) for a backbone whose layout is not known.
    Raises ``UnknownNameError`` for a tap that is not a tapping point, ``CourseError`` for other bad taps.
    """
    trunk = trunk or split_backbone(backbone)
    logits = check_trunk(backbone, trunk, input_shape)
    num_classes = num_classes or logits.shape[1]
    if taps is None:
        if backbone_name not in DEFAULT_TAPS:
            raise CourseError(f"no default taps for {backbone_name!r}: pass taps=[...] (tapping points: "
                              f"{', '.join(trunk.names[:-1])}), or a number of exits.")
        taps = DEFAULT_TAPS[backbone_name]
    # per-module MACs and output channels, on one sample
    p = next(backbone.parameters())
    x = torch.zeros(1, *input_shape, device=p.device, dtype=p.dtype)
    was_training = backbone.training
    backbone.eval()
    module_macs, channels = [], []
    for m in trunk.modules:
        macs, x = exits.count_macs(m, x)
        module_macs.append(macs)
        channels.append(x.shape[1])
    backbone.train(was_training)
    chosen = _resolve_taps(taps, trunk, module_macs)
    bounds = [*chosen, len(trunk.modules) - 1]
    stages, heads, start = [], [], 0
    for end in bounds:
        stages.append(nn.Sequential(*trunk.modules[start:end + 1]))
        start = end + 1
    for end in chosen:
        heads.append(make_head(head, channels[end], num_classes, pool_size=pool_size, width=head_width))
    heads.append(trunk.tail)
    net = ElasticNet(stages, heads, taps=[trunk.names[i] for i in chosen] + ["final"], input_shape=input_shape,
                     backbone=backbone).to(p.device)
    net.train(was_training)
    net.measure_costs(input_shape)
    return net
