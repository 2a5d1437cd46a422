"""The search space: small CNNs for 28x28 and 32x32 inputs, described one decision at a time.

A child network is ``num_layers`` layers, then global average pooling and a linear classifier.
Layer ``i`` makes these decisions, in this order (the controller emits them in this order too):

    kernel    the convolution's filter size            e.g. 1, 3, 5 (odd, so 'same' padding exists)
    filters   the number of output channels            e.g. 8, 16, 32, 64
    reduce    how it downsamples                       "none", "stride2" (a stride-2 convolution) or
                                                       "maxpool" (a 2x2 max-pool after the convolution)
    skip<-j   for every earlier layer j < i: add j's output to this layer's output (yes/no)

A layer is ``conv(kernel, filters, stride) -> BatchNorm -> ReLU [-> maxpool]``; then each chosen
earlier output is average-pooled to this layer's resolution, passed through a 1x1 convolution + BN
when its width differs, and added.  Zoph & Le (2017) concatenated skip inputs along the channels;
adding them keeps a layer's width equal to its own ``filters`` decision, so that one decision alone
sets the width and the MACs stay easy to read.  ``skip<-(i-1)`` is a residual connection.

Both halves of ``reduce`` halve the resolution rounding up (28 -> 14 -> 7 -> 4 -> 2 -> 1 -> 1), so
every decision sequence is a valid network, from a stack of 1x1 convolutions that can only count
pixel intensities (a poor network) to a 5x5, 64-filter network with residual connections (a good one).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Sequence

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CourseError, UnknownNameError

REDUCTIONS = ("none", "stride2", "maxpool")


@dataclass(frozen=True)
class Layer:
    """One layer of a child network."""

    kernel: int
    filters: int
    reduce: str = "none"
    skips: tuple[int, ...] = ()  # earlier layers whose outputs are added to this one's

    @property
    def key(self) -> str:
        """E.g. ``'3x3-32-stride2+0,1'``."""
        text = f"{self.kernel}x{self.kernel}-{self.filters}-{self.reduce}"
        return text + ("+" + ",".join(map(str, self.skips)) if self.skips else "")


@dataclass(frozen=True)
class Architecture:
    """A child network: its layers, in order.  Hashable; ``key`` is its one-line name."""

    layers: tuple[Layer, ...]

    @property
    def key(self) -> str:
        """E.g. ``'3x3-16-none | 5x5-32-maxpool+0'``; ``Architecture.parse`` reads it back."""
        return " | ".join(layer.key for layer in self.layers)

    def __str__(self) -> str:
        return self.key

    @classmethod
    def parse(cls, key: str) -> "Architecture":
        """The inverse of ``key``."""
        layers = []
        for part in key.split("|"):
            part = part.strip()
            try:
                body, _, skips = part.partition("+")
                kernel, filters, reduce = body.split("-")
                layers.append(Layer(int(kernel.split("x")[0]), int(filters), reduce,
                                    tuple(int(s) for s in skips.split(",")) if skips else ()))
            except ValueError:
                raise CourseError(
                    f"cannot read the layer {part!r} of architecture key {key!r}. A layer reads "
                    "'<k>x<k>-<filters>-<reduce>[+<skip>,<skip>]', e.g. '3x3-32-stride2+0,1'; layers are "
                    "separated by ' | '. Use Architecture.key to write one."
                ) from None
        return cls(tuple(layers))

    def output_shapes(self, input_size: Sequence[int]) -> list[tuple[int, int, int]]:
        """``(C, H, W)`` of every layer's output for one input of shape ``input_size = (C, H, W)``."""
        _, h, w = input_size
        shapes = []
        for layer in self.layers:
            if layer.reduce != "none":  # stride-2 'same' convolution and ceil-mode 2x2 pooling agree
                h, w = math.ceil(h / 2), math.ceil(w / 2)
            shapes.append((layer.filters, h, w))
        return shapes

    def to_frame(self, input_size: Sequence[int] | None = None) -> pd.DataFrame:
        """One row per layer: its decisions (and output shape, given ``input_size = (C, H, W)``)."""
        rows = [{"layer": i, "kernel": f"{l.kernel}x{l.kernel}", "filters": l.filters, "reduce": l.reduce,
                 "skips_from": ", ".join(map(str, l.skips)) or "-"} for i, l in enumerate(self.layers)]
        if input_size is not None:
            for row, shape in zip(rows, self.output_shapes(input_size)):
                row["output"] = "x".join(map(str, shape))
        return pd.DataFrame(rows)


@dataclass(frozen=True)
class Decision:
    """One step of the controller: which layer, what it decides, and the options."""

    index: int  # position in the decision sequence
    layer: int
    kind: str  # "kernel", "filters", "reduce" or "skip"
    choices: tuple
    source: int | None = None  # for "skip": the earlier layer

    @property
    def name(self) -> str:
        return f"L{self.layer}.skip<-{self.source}" if self.kind == "skip" else f"L{self.layer}.{self.kind}"


@dataclass(frozen=True)
class SearchSpace:
    """Which networks a search may propose.  Every sequence of valid choices is a valid network."""

    num_layers: int = 4
    kernel_sizes: tuple[int, ...] = (1, 3, 5)
    filters: tuple[int, ...] = (8, 16, 32, 64)
    reductions: tuple[str, ...] = REDUCTIONS
    skip_connections: bool = True
    decisions_: tuple[Decision, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("kernel_sizes", "filters", "reductions"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.num_layers < 1 or not self.kernel_sizes or not self.filters or not self.reductions:
            raise CourseError(
                f"a search space needs num_layers >= 1 and at least one kernel size, filter count and "
                f"reduction; got num_layers={self.num_layers}, kernel_sizes={self.kernel_sizes}, "
                f"filters={self.filters}, reductions={self.reductions}. Give each a value."
            )
        even = [k for k in self.kernel_sizes if k < 1 or k % 2 == 0]
        if even:
            raise CourseError(
                f"kernel sizes {even} are not odd positive numbers: an even kernel has no 'same' padding, so "
                "layers would shift the image. Use odd sizes such as (1, 3, 5, 7)."
            )
        if any(f < 1 for f in self.filters):
            raise CourseError(f"filter counts must be >= 1, got {self.filters}. Use e.g. (8, 16, 32, 64).")
        unknown = [r for r in self.reductions if r not in REDUCTIONS]
        if unknown:
            raise UnknownNameError(f"unknown reduction {unknown[0]!r}. Use some of: {', '.join(REDUCTIONS)}.")
        steps = []
        for i in range(self.num_layers):
            for kind, choices in (("kernel", self.kernel_sizes), ("filters", self.filters),
                                  ("reduce", self.reductions)):
                steps.append(Decision(len(steps), i, kind, choices))
            if self.skip_connections:
                for j in range(i):
                    steps.append(Decision(len(steps), i, "skip", (False, True), source=j))
        object.__setattr__(self, "decisions_", tuple(steps))

    # ------------------------------------------------------------------ the decision sequence
    def decisions(self) -> tuple[Decision, ...]:
        """Every decision, in the order the controller makes them."""
        return self.decisions_

    def num_choices(self) -> list[int]:
        """How many options each decision has."""
        return [len(d.choices) for d in self.decisions_]

    def size(self) -> int:
        """How many distinct architectures the space holds (the product of the option counts)."""
        return math.prod(self.num_choices())

    def config(self) -> dict:
        """The space as plain values (checkpoints compare it)."""
        return {"num_layers": self.num_layers, "kernel_sizes": list(self.kernel_sizes),
                "filters": list(self.filters), "reductions": list(self.reductions),
                "skip_connections": self.skip_connections}

    def decode(self, actions: Sequence[int]) -> Architecture:
        """Turn one option index per decision into an ``Architecture``."""
        actions = [int(a) for a in actions]
        if len(actions) != len(self.decisions_):
            raise CourseError(
                f"got {len(actions)} decisions but this search space makes {len(self.decisions_)} "
                f"({self.num_layers} layers). Sample from a controller built for this space."
            )
        for d, a in zip(self.decisions_, actions):
            if not 0 <= a < len(d.choices):
                raise CourseError(f"decision {d.name} got option {a}, but it has {len(d.choices)} options "
                                  f"{d.choices}. Use an index in 0..{len(d.choices) - 1}.")
        picks: list[dict] = [{"skips": []} for _ in range(self.num_layers)]
        for d, a in zip(self.decisions_, actions):
            if d.kind == "skip":
                if d.choices[a]:
                    picks[d.layer]["skips"].append(d.source)
            else:
                picks[d.layer][d.kind] = d.choices[a]
        return Architecture(tuple(Layer(p["kernel"], p["filters"], p["reduce"], tuple(p["skips"])) for p in picks))

    def encode(self, arch: Architecture) -> list[int]:
        """The option index of every decision that gives ``arch`` (inverse of ``decode``)."""
        self.validate(arch)
        out = []
        for d in self.decisions_:
            layer = arch.layers[d.layer]
            value = (d.source in layer.skips) if d.kind == "skip" else getattr(layer, d.kind)
            out.append(d.choices.index(value))
        return out

    def validate(self, arch: Architecture) -> None:
        """Raise ``CourseError`` naming the first choice that this space cannot make."""
        if len(arch.layers) != self.num_layers:
            raise CourseError(f"the architecture has {len(arch.layers)} layers but the space has {self.num_layers}. "
                              "Use a SearchSpace with the same num_layers.")
        for i, layer in enumerate(arch.layers):
            for kind, options in (("kernel", self.kernel_sizes), ("filters", self.filters),
                                  ("reduce", self.reductions)):
                if getattr(layer, kind) not in options:
                    raise CourseError(f"layer {i} has {kind}={getattr(layer, kind)!r}, which is not among the "
                                      f"space's options {options}. Add it to the SearchSpace or change the layer.")
            allowed = range(i) if self.skip_connections else range(0)
            if any(j not in allowed for j in layer.skips) or len(set(layer.skips)) != len(layer.skips):
                may = (f"each earlier layer (0..{i - 1}) at most once" if self.skip_connections and i else
                       "nothing: it is the first layer" if self.skip_connections else
                       "nothing: this space has no skip connections")
                raise CourseError(f"layer {i} has skips {layer.skips}, but it may add {may}. Fix its skips.")

    def sample(self, generator: torch.Generator | None = None) -> Architecture:
        """One architecture drawn uniformly: every decision's option independently and uniformly."""
        actions = [int(torch.randint(n, (), generator=generator)) for n in self.num_choices()]
        return self.decode(actions)

    def build(self, arch: Architecture, in_channels: int, num_classes: int) -> "ChildNet":
        """The child network of ``arch`` (fresh weights from the global torch RNG)."""
        self.validate(arch)
        return ChildNet(arch, in_channels, num_classes)


# ----------------------------------------------------------------------------- the child network
class ChildNet(nn.Module):
    """The network an ``Architecture`` describes: ``(B, C, H, W)`` -> logits ``(B, num_classes)``."""

    def __init__(self, arch: Architecture, in_channels: int, num_classes: int):
        super().__init__()
        self.arch = arch
        self.layers = nn.ModuleList()
        self.adapters = nn.ModuleDict()  # "i_j": 1x1 conv + BN taking layer j's width to layer i's
        widths, c = [], in_channels
        for i, layer in enumerate(arch.layers):
            ops = [nn.Conv2d(c, layer.filters, layer.kernel, stride=2 if layer.reduce == "stride2" else 1,
                             padding=layer.kernel // 2, bias=False),
                   nn.BatchNorm2d(layer.filters), nn.ReLU(inplace=True)]
            if layer.reduce == "maxpool":
                ops.append(nn.MaxPool2d(2, ceil_mode=True))
            self.layers.append(nn.Sequential(*ops))
            for j in layer.skips:
                if widths[j] != layer.filters:
                    self.adapters[f"{i}_{j}"] = nn.Sequential(nn.Conv2d(widths[j], layer.filters, 1, bias=False),
                                                              nn.BatchNorm2d(layer.filters))
            widths.append(layer.filters)
            c = layer.filters
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's output, ``(B, filters_i, H_i, W_i)`` each (see ``Architecture.output_shapes``)."""
        outs: list[torch.Tensor] = []
        for i, (layer, op) in enumerate(zip(self.arch.layers, self.layers)):
            y = op(x)
            for j in layer.skips:
                y = y + self._skip(outs[j], i, j, y.shape[-2:])
            outs.append(y)
            x = y
        return outs

    def _skip(self, s: torch.Tensor, i: int, j: int, size) -> torch.Tensor:
        if s.shape[-2:] != size:  # pool before the 1x1 convolution: fewer MACs
            s = F.adaptive_avg_pool2d(s, size)
        key = f"{i}_{j}"
        return self.adapters[key](s) if key in self.adapters else s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)[-1]), 1))


@functools.lru_cache(maxsize=4096)
def child_cost(arch: Architecture, input_size: tuple[int, int, int], num_classes: int) -> tuple[int, int]:
    """``(params, macs)`` of ``arch``'s child for one ``(C, H, W)`` input, counted by ``complexity.profile``.

    The child is built on the ``meta`` device, so counting costs no arithmetic; results are cached.
    """
    from ..complexity import profile

    with torch.device("meta"):
        net = ChildNet(arch, input_size[0], num_classes)
    p = profile(net, (1, *input_size))
    return p.params, p.macs


def layer_costs(arch: Architecture, input_size: tuple[int, int, int], num_classes: int) -> pd.DataFrame:
    """``arch.to_frame`` plus each layer's params and MACs (its skip adapters included) and the head's."""
    from ..complexity import profile

    with torch.device("meta"):
        net = ChildNet(arch, input_size[0], num_classes)
    rows = profile(net, (1, *input_size)).layers
    table = arch.to_frame(input_size)

    def total(prefixes: tuple[str, ...], column: str) -> int:
        return int(rows.loc[rows.name.str.startswith(prefixes), column].sum())

    table["params"] = [total((f"layers.{i}.", f"adapters.{i}_"), "params") for i in range(len(arch.layers))]
    table["macs"] = [total((f"layers.{i}.", f"adapters.{i}_"), "macs") for i in range(len(arch.layers))]
    head = {"layer": "head", "kernel": "-", "filters": num_classes, "reduce": "global avg pool", "skips_from": "-",
            "output": f"{num_classes}", "params": total(("classifier",), "params"),
            "macs": total(("classifier",), "macs")}
    return pd.concat([table, pd.DataFrame([head])], ignore_index=True)
