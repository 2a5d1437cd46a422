"""Tools for the architecture walk (notebooks 01-04): receptive fields, per-stage costs,
gradient norms, first-layer filters, and the two scaled-down networks the walk trains on a CPU.

    receptive_fields(vgg.features)          # a table: layer, kernel, stride, jump, receptive field
    gradient_receptive_field(features, 224) # the same number, measured by back-propagation
    profile_stages([("stem", stem), ...], (1, 3, 224, 224))  # params / MACs per stage
    with GradientNormProbe({"conv1": net.conv1}) as probe: fit(...)   # probe.frame()
    filter_grid(net.features[0].weight)     # the first layer's filters as images
    SlimGoogLeNet(width_mult=0.25)          # GoogLeNet's topology at a CPU-sized width
    FactorizedNet("3x3+3x3")                # one small net per Inception-v3 factorisation
"""
from __future__ import annotations

import copy
import math
from typing import Iterable, Sequence

import matplotlib.pyplot as plt
import pandas as pd
import torch
import torch.nn as nn

from .complexity import profile
from .errors import CourseError, UnknownNameError
from .models.googlenet import BasicConv2d, GoogLeNet, Inception, InceptionAux, initialize_weights
from .models.vgg import scale_channels

# Pooling and convolution layers move the receptive field; everything else here is point-wise
# in space (ReLU, BatchNorm, dropout, LRN works across channels only) and leaves it alone.
_SPATIAL = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
_POINTWISE = (nn.ReLU, nn.BatchNorm2d, nn.Dropout, nn.Dropout2d, nn.LocalResponseNorm, nn.Identity, nn.Sigmoid,
              nn.Tanh, nn.GELU, nn.SiLU)


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _leaves(layers: nn.Module | Iterable[nn.Module]) -> list[tuple[str, nn.Module]]:
    """Leaf modules in registration order (the execution order of a chain of Sequentials)."""
    if isinstance(layers, nn.Module):
        return [(n, m) for n, m in layers.named_modules() if next(m.children(), None) is None]
    out = []
    for i, layer in enumerate(layers):
        out += [(f"{i}.{n}" if n else str(i), m) for n, m in layer.named_modules() if next(m.children(), None) is None]
    return out


# ----------------------------------------------------------------------------- receptive fields
def receptive_fields(layers: nn.Module | Iterable[nn.Module], input_size: int | None = None) -> pd.DataFrame:
    """The receptive field after every convolution and pooling layer of a chain of layers.

    ``layers`` is an ``nn.Sequential`` (or a list of modules) run in order, e.g. ``vgg.features``.
    One row per conv / pool layer: ``name, type, kernel ("3x3"), stride, jump`` (the input pixels
    between two neighbouring outputs) and ``rf_h, rf_w``: the height and width of the input
    window one output unit sees.  The recurrence (Araujo et al. 2019): ``rf += (k - 1) * jump``,
    then ``jump *= stride``, with dilation ``d`` making ``k`` act as ``d (k - 1) + 1``.
    With ``input_size`` (square), ``out_hw`` holds each layer's output size as well.

    Raises ``CourseError`` for a layer whose spatial effect it cannot follow (a branching
    module, an adaptive pool that is not a no-op): pass the chain up to that layer instead.
    """
    rf, jump = [1, 1], [1, 1]
    size = [input_size, input_size] if input_size else None
    rows = []
    for name, m in _leaves(layers):
        if isinstance(m, _POINTWISE):
            continue
        if isinstance(m, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d) and size is not None:
            if _pair(m.output_size) == tuple(size):
                continue  # a no-op on this grid
        if not isinstance(m, _SPATIAL):
            raise CourseError(
                f"receptive_fields cannot follow layer {name!r} ({type(m).__name__}): it handles chains of "
                "Conv2d, MaxPool2d and AvgPool2d with point-wise layers between them. Pass the layers before it "
                "(e.g. model.features, or a list of the modules up to that point).")
        k, s, p = _pair(m.kernel_size), _pair(m.stride), _pair(m.padding)
        d = _pair(getattr(m, "dilation", 1))
        ceil = getattr(m, "ceil_mode", False)
        for a in range(2):
            k_eff = d[a] * (k[a] - 1) + 1
            rf[a] += (k_eff - 1) * jump[a]
            jump[a] *= s[a]
            if size is not None:
                span = size[a] + 2 * p[a] - k_eff
                size[a] = (-(-span // s[a]) if ceil else span // s[a]) + 1
        row = {"name": name, "type": type(m).__name__, "kernel": f"{k[0]}x{k[1]}", "stride": s[0] if s[0] == s[1]
               else f"{s[0]}x{s[1]}", "jump": jump[0], "rf_h": rf[0], "rf_w": rf[1]}
        if size is not None:
            row["out_hw"] = size[0]
        rows.append(row)
    return pd.DataFrame(rows)


def gradient_receptive_field(layers: nn.Module, input_size: int, in_channels: int | None = None) -> tuple[int, int]:
    """The receptive field of the centre output unit, measured: which input pixels get a gradient.

    ``layers`` maps ``(1, C, input_size, input_size)`` to ``(1, C', H', W')``.  A copy is run in
    float64 with every conv weight set to ``1 / fan_in`` and no bias, and max-pools replaced by
    average pools of the same geometry (a max-pool sends the gradient to one pixel per window,
    which would hide the rest of the window), so every path carries a positive gradient.
    Returns ``(height, width)`` of the input region with a non-zero gradient; it equals
    ``receptive_fields`` when ``input_size`` is large enough that the window is not clipped.
    """
    net = copy.deepcopy(layers).double().eval()
    for name, m in list(net.named_modules()):
        if isinstance(m, nn.MaxPool2d):
            avg = nn.AvgPool2d(m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode, count_include_pad=True)
            parent = net.get_submodule(name.rsplit(".", 1)[0]) if "." in name else net
            setattr(parent, name.rsplit(".", 1)[-1], avg)
        elif isinstance(m, nn.Conv2d):
            with torch.no_grad():
                m.weight.fill_(1.0 / m.weight[0].numel())
                if m.bias is not None:
                    m.bias.zero_()
    if in_channels is None:
        first = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
        in_channels = first.in_channels if first is not None else 1
    x = torch.ones(1, in_channels, input_size, input_size, dtype=torch.float64, requires_grad=True)
    y = net(x)
    h, w = y.shape[-2:]
    y[0, :, h // 2, w // 2].sum().backward()
    seen = x.grad[0].abs().sum(0) > 0
    rows, cols = seen.any(1).nonzero().flatten(), seen.any(0).nonzero().flatten()
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


# ----------------------------------------------------------------------------- costs per stage
def profile_stages(stages: Sequence[tuple[str, nn.Module]], input_size: Sequence[int], *,
                   device: str | torch.device | None = None) -> pd.DataFrame:
    """``complexity.profile`` of each stage of a network, fed the shape the previous stage produced.

    stages: ``(name, module)`` pairs that, run in order, are the network's forward pass.
    input_size: the first stage's input, batch first, e.g. ``(1, 3, 224, 224)``.
    Returns one row per stage: ``stage, output_shape, params, macs, activation_bytes`` and the
    stage's share of the total params and MACs (columns ``params_share``, ``macs_share``, in %).
    The sums equal ``profile`` of the whole network when the stages cover all of it.
    """
    shape = tuple(input_size)
    rows = []
    for name, stage in stages:
        out: dict[str, tuple] = {}
        handle = stage.register_forward_hook(lambda m, i, o: out.__setitem__("shape", tuple(o.shape)))
        try:
            p = profile(stage, shape, device=device)
        finally:
            handle.remove()
        rows.append({"stage": name, "output_shape": out["shape"], "params": p.params, "macs": p.macs,
                     "activation_bytes": p.activation_bytes})
        shape = out["shape"]
    table = pd.DataFrame(rows)
    for col in ("params", "macs"):
        total = table[col].sum()
        table[f"{col}_share"] = (100 * table[col] / total).round(1) if total else 0.0
    return table


# ----------------------------------------------------------------------------- gradient norms
class GradientNormProbe:
    """Records the L2 norm of some layers' parameter gradients at every backward pass.

        with GradientNormProbe({"conv1": net.conv1, "inception3a": net.inception3a}) as probe:
            fit(net, train, val, config)
        probe.frame()   # columns: step, layer, grad_norm

    A tensor hook on each parameter fires when its gradient is computed, so the probe works
    inside any training loop and does not care about optimisers or gradient accumulation.
    The norms are kept as tensors on the device (no host sync per step) and read once in ``frame``.
    A layer's norm is over all its parameters: ``sqrt(sum of squared gradient entries)``.
    """

    def __init__(self, layers: dict[str, nn.Module]) -> None:
        self.layers = {name: [p for p in m.parameters() if p.requires_grad] for name, m in layers.items()}
        for name, params in self.layers.items():
            if not params:
                raise CourseError(f"layer {name!r} has no trainable parameters to probe; pick a conv or linear layer.")
        self._squares: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
        self._handles: list = []

    def __enter__(self) -> "GradientNormProbe":
        for name, params in self.layers.items():
            for p in params:
                self._handles.append(p.register_hook(lambda g, name=name: self._record(name, g)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _record(self, name: str, grad: torch.Tensor) -> None:
        self._squares[name].append(grad.detach().float().pow(2).sum())

    def frame(self) -> pd.DataFrame:
        """One row per (backward pass, layer): ``step`` (0-based), ``layer``, ``grad_norm``."""
        rows = []
        for name, squares in self._squares.items():
            k = len(self.layers[name])
            if not squares:
                continue
            per_step = torch.stack(squares).view(-1, k).sum(1).sqrt().cpu()
            rows += [{"step": i, "layer": name, "grad_norm": float(v)} for i, v in enumerate(per_step)]
        return pd.DataFrame(rows, columns=["step", "layer", "grad_norm"])


# ----------------------------------------------------------------------------- filters
def filter_grid(weight: torch.Tensor, *, columns: int = 16, title: str = "", scale: float = 1.0,
                order_by_norm: bool = False):
    """Show first-layer filters ``(C_out, C_in, kh, kw)`` as small images; returns the Figure.

    ``C_in`` must be 3 (shown in colour) or 1 (grey).  Each filter is stretched to [0, 1] on its
    own, over all its channels together, so colour balance is kept and weak filters stay visible.
    ``order_by_norm`` sorts filters from the largest L2 norm to the smallest.
    """
    w = weight.detach().float().cpu()
    if w.ndim != 4 or w.shape[1] not in (1, 3):
        raise CourseError(f"filter_grid shows first-layer filters shaped (C_out, 1 or 3, kh, kw); got "
                          f"{tuple(w.shape)}. Pass the first convolution's weight, e.g. model.features[0].weight.")
    if order_by_norm:
        w = w[w.flatten(1).norm(dim=1).argsort(descending=True)]
    lo = w.flatten(1).min(1).values.view(-1, 1, 1, 1)
    hi = w.flatten(1).max(1).values.view(-1, 1, 1, 1)
    w = (w - lo) / (hi - lo).clamp_min(1e-12)
    n = len(w)
    rows = max(1, math.ceil(n / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 0.45 * scale, rows * 0.45 * scale), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            img = w[i].permute(1, 2, 0) if w.shape[1] == 3 else w[i, 0]
            ax.imshow(img, cmap=None if w.shape[1] == 3 else "gray", interpolation="nearest")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(pad=0.2)
    return fig


# ----------------------------------------------------------------------------- a GoogLeNet a CPU can train
# The paper's Table 1: name -> (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj).
GOOGLENET_WIDTHS: dict[str, tuple[int, int, int, int, int, int]] = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}


class SlimGoogLeNet(GoogLeNet):
    """GoogLeNet's small-input topology with every width scaled by ``width_mult``.

    The same stem, nine Inception modules, two auxiliary classifiers (after 4a and 4d) and
    global-average-pooled head as ``models.create("googlenet", small_input=True)``, and the
    same ``forward`` (inherited), so with ``width_mult=1`` and ``stem_stride=1`` the two
    networks have identical parameter shapes.  ``stem_stride=2`` makes the first conv strided,
    so the modules see 16/8/4 grids instead of 32/16/8: a quarter of the MACs.
    Input ``(N, in_channels, 32, 32)``; output logits ``(N, num_classes)``, or in training with
    ``aux_logits`` ``GoogLeNetOutputs(logits, aux2, aux1)``.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width_mult: float = 0.25, stem_stride: int = 1,
                 aux_logits: bool = True, dropout: float = 0.2, dropout_aux: float = 0.7) -> None:
        nn.Module.__init__(self)  # GoogLeNet.__init__ hard-codes the widths; its forward is what we reuse

        def s(c: int) -> int:
            return scale_channels(c, width_mult)

        self.aux_logits = aux_logits
        self.conv1 = BasicConv2d(in_channels, s(64), kernel_size=3, stride=stem_stride, padding=1)
        self.maxpool1 = nn.Identity()
        self.conv2 = BasicConv2d(s(64), s(64), kernel_size=1)
        self.conv3 = BasicConv2d(s(64), s(192), kernel_size=3, padding=1)
        self.maxpool2 = nn.Identity()
        channels = s(192)
        widths_in: dict[str, int] = {}
        for name, widths in GOOGLENET_WIDTHS.items():
            w = [s(c) for c in widths]
            setattr(self, name, Inception(channels, *w))
            widths_in[name] = channels
            channels = w[0] + w[2] + w[4] + w[5]  # the concatenation of the four branches
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.aux1 = self._aux(widths_in["inception4b"], s, num_classes, dropout_aux) if aux_logits else None
        self.aux2 = self._aux(widths_in["inception4e"], s, num_classes, dropout_aux) if aux_logits else None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(channels, num_classes)
        initialize_weights(self)

    @staticmethod
    def _aux(in_channels: int, s, num_classes: int, dropout: float) -> InceptionAux:
        aux = InceptionAux(in_channels, num_classes, dropout)
        # Same layers as the paper's head (4x4 pool, 1x1 conv 128, fc 1024, fc classes), scaled.
        aux.conv = BasicConv2d(in_channels, s(128), kernel_size=1)
        aux.fc1 = nn.Linear(s(128) * 16, s(1024))
        aux.fc2 = nn.Linear(s(1024), num_classes)
        return aux

    def drop_aux(self) -> "SlimGoogLeNet":
        """Remove the auxiliary classifiers (in place): the same body, trained on the main loss only."""
        self.aux1 = self.aux2 = None
        self.aux_logits = False
        return self

    def stages(self) -> list[tuple[str, nn.Module]]:
        """``(name, module)`` pairs that run the inference path in order (for ``profile_stages``)."""
        return googlenet_stages(self)


def googlenet_stages(net: GoogLeNet) -> list[tuple[str, nn.Module]]:
    """A GoogLeNet's inference path as named pieces: stem, each Inception module (with the pool
    before it), head.  Works for ``models.create("googlenet")`` and ``SlimGoogLeNet``."""
    pieces = [("stem", nn.Sequential(net.conv1, net.maxpool1, net.conv2, net.conv3, net.maxpool2))]
    for name in GOOGLENET_WIDTHS:
        module = getattr(net, name)
        if name == "inception4a":
            module = nn.Sequential(net.maxpool3, module)
        elif name == "inception5a":
            module = nn.Sequential(net.maxpool4, module)
        pieces.append((name, module))
    pieces.append(("head", nn.Sequential(net.avgpool, nn.Flatten(1), net.dropout, net.fc)))
    return pieces


# ----------------------------------------------------------------------------- factorised convolutions
# Inception-v3's factorisations of one 5x5 window: kernels per conv, all with BN + ReLU after.
FACTORIZATIONS: dict[str, tuple[tuple[int, int], ...]] = {
    "5x5": ((5, 5),),
    "3x3+3x3": ((3, 3), (3, 3)),  # Fig. 1 of the paper: 18/25 of the weights
    "3x1+1x3 (x2)": ((3, 1), (1, 3), (3, 1), (1, 3)),  # Fig. 3, applied to both 3x3s: 12/25
}


class FactorizedBlock(nn.Sequential):
    """A 5x5 receptive field built as ``FACTORIZATIONS[kind]``: ``(N, C_in, H, W) -> (N, C_out, H, W)``.

    Each conv is ``BasicConv2d`` (conv, BatchNorm, ReLU), as in Inception-v3; the first maps
    ``C_in -> C_out`` and the rest keep ``C_out``.
    """

    def __init__(self, kind: str, in_channels: int, out_channels: int) -> None:
        if kind not in FACTORIZATIONS:
            raise UnknownNameError(f"unknown factorisation {kind!r}. Use one of: {', '.join(FACTORIZATIONS)}.")
        convs = []
        for i, (kh, kw) in enumerate(FACTORIZATIONS[kind]):
            convs.append(BasicConv2d(in_channels if i == 0 else out_channels, out_channels,
                                     kernel_size=(kh, kw), padding=(kh // 2, kw // 2)))
        super().__init__(*convs)


class FactorizedNet(nn.Module):
    """A small CIFAR network whose every block is one ``FactorizedBlock(kind)``.

    stem 3x3 conv (``width``) -> block at 32x32 -> max-pool, 1x1 conv to 2 ``width`` -> block at
    16x16 -> max-pool, 1x1 conv to 4 ``width`` -> block at 8x8 -> global average pool -> linear.
    The width changes in the cheap 1x1 convs, so every block maps C to C channels and its conv
    weights are exactly 25, 18 or 12 C² (``FACTORIZATIONS``); only ``kind`` changes between the
    variants, so their accuracies compare the factorisations.
    Input ``(N, in_channels, 32, 32)`` (28x28 works too); output logits ``(N, num_classes)``.
    """

    def __init__(self, kind: str, num_classes: int = 10, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        w = [width, 2 * width, 4 * width]
        self.features = nn.Sequential(
            BasicConv2d(in_channels, w[0], kernel_size=3, padding=1),  # N x w x 32 x 32
            FactorizedBlock(kind, w[0], w[0]),  # N x w x 32 x 32
            nn.MaxPool2d(2, ceil_mode=True),  # N x w x 16 x 16
            BasicConv2d(w[0], w[1], kernel_size=1),  # N x 2w x 16 x 16
            FactorizedBlock(kind, w[1], w[1]),  # N x 2w x 16 x 16
            nn.MaxPool2d(2, ceil_mode=True),  # N x 2w x 8 x 8
            BasicConv2d(w[1], w[2], kernel_size=1),  # N x 4w x 8 x 8
            FactorizedBlock(kind, w[2], w[2]),  # N x 4w x 8 x 8
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w[2], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))  # N x num_classes

    def blocks(self) -> list[FactorizedBlock]:
        """The three factorised blocks, from the 32x32 grid to the 8x8 one."""
        return [m for m in self.features if isinstance(m, FactorizedBlock)]


__all__ = ["receptive_fields", "gradient_receptive_field", "profile_stages", "GradientNormProbe", "filter_grid",
           "GOOGLENET_WIDTHS", "SlimGoogLeNet", "googlenet_stages", "FACTORIZATIONS", "FactorizedBlock",
           "FactorizedNet"]
