"""Where a forward pass spends its time: milliseconds per named submodule, measured with forward hooks.

    times = module_times(model, x, ["features.0", "features.1", "classifier"], repeats=5)
    {name: median(ms) for name, ms in times.items()}

A pre-hook and a post-hook around each named module read the clock; both synchronise the device first,
so on a GPU the reading covers the module's kernels and nothing queued before it.  That synchronisation
is itself a cost: the hooked run is slower than a plain one, so compare modules with each other, not
with a wall-clock time measured without hooks.  Used by edCNN's ``time_breakdown`` and meant for the
architecture notebooks' per-layer tables.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn as nn

from .device import synchronize


@contextmanager
def timing_hooks(modules: Mapping[str, nn.Module], device: str | torch.device) -> Iterator[dict[str, list[float]]]:
    """Inside the block, every forward call of ``modules[name]`` appends its milliseconds to ``times[name]``.

    Yields ``times`` (one list per name, empty until the module runs); the hooks are removed on exit.
    """
    times: dict[str, list[float]] = {name: [] for name in modules}
    starts: dict[str, float] = {}
    handles = []
    for name, module in modules.items():
        def pre(_m, _inp, name=name):
            synchronize(device)
            starts[name] = time.perf_counter()

        def post(_m, _inp, _out, name=name):
            synchronize(device)
            times[name].append((time.perf_counter() - starts[name]) * 1e3)

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        yield times
    finally:
        for h in handles:
            h.remove()


def module_times(model: nn.Module, x: torch.Tensor | None = None, module_names: Sequence[str] | None = None, *,
                 repeats: int = 3, warmup: int = 1, device: str | torch.device | None = None,
                 run: Callable[[], Any] | None = None) -> dict[str, list[float]]:
    """Milliseconds of every call of each named submodule over ``repeats`` runs, after ``warmup`` untimed runs.

    model: the network; module_names: dotted names as in ``model.named_modules()`` (default: its direct
    children).  A run is ``model(x)`` for an input batch ``x`` ``(B, ...)``, or ``run()`` when given (e.g. an
    early-exit ``infer``, in which a module may run on fewer samples or not at all).  Runs in inference mode.
    Returns ``{name: [ms, ...]}``, one entry per call (usually one per run; none if the module never ran).
    """
    if run is None and x is None:
        raise ValueError("give an input batch x, or run=callable")
    names = list(module_names) if module_names is not None else [n for n, _ in model.named_children()]
    modules = {name: model.get_submodule(name) for name in names}
    if device is None:
        device = x.device if x is not None else next(model.parameters()).device
    step = run if run is not None else (lambda: model(x))
    with torch.inference_mode():
        for _ in range(warmup):
            step()
        with timing_hooks(modules, device) as times:
            for _ in range(repeats):
                step()
    return times


OUTSIDE = "outside layers (add, concat, shuffle, Python)"


def _bytes_moved(leaves: Mapping[str, nn.Module], run: Callable[[], Any],
                 kind_of: Callable[[nn.Module], str]) -> dict[str, float]:
    """Bytes each layer kind reads and writes in one forward: inputs + outputs + its own weights (once per layer)."""
    traffic: dict[str, float] = {}
    handles = []
    for module in leaves.values():
        def post(m, args, out):
            t_in = sum(a.numel() * a.element_size() for a in args if torch.is_tensor(a))
            t_out = out.numel() * out.element_size() if torch.is_tensor(out) else 0
            weights = sum(p.numel() * p.element_size() for p in m.parameters(recurse=False))
            traffic[kind_of(m)] = traffic.get(kind_of(m), 0.0) + t_in + t_out + weights

        handles.append(module.register_forward_hook(post))
    try:
        with torch.inference_mode():
            run()
    finally:
        for h in handles:
            h.remove()
    return traffic


def kind_breakdown(net: nn.Module, shape: Sequence[int], kind_of: Callable[[nn.Module], str], *, runs: int = 5,
                   warmup: int = 2, device: str | torch.device = "cpu"):
    """Per layer kind (``kind_of(leaf module)``): seconds, MACs, bytes moved, and their shares, of one forward.

    shape: the input batch ``(B, C, H, W)`` (random values).  Seconds are the median over ``runs`` of each
    run's per-kind sum; what no leaf module accounts for (residual additions, concatenations, channel
    shuffles, PyTorch's per-module overhead and the hooks') is the ``OUTSIDE`` row.  Returns a pandas
    DataFrame indexed by kind, slowest first, with columns seconds, macs, bytes, time share, MAC share,
    MACs per byte (arithmetic intensity) and GMACs/s.
    """
    import pandas as pd

    from .complexity import profile
    from .device import stopwatch

    net = net.eval().to(device)
    leaves = {name: m for name, m in net.named_modules() if name and next(m.children(), None) is None}
    x = torch.randn(tuple(shape), device=device)
    traffic = _bytes_moved(leaves, lambda: net(x), kind_of)
    per_run = []
    with torch.inference_mode():
        for _ in range(warmup):
            net(x)
        for _ in range(runs):
            with timing_hooks(leaves, device) as times, stopwatch(device) as watch:
                net(x)
            by_kind: dict[str, float] = {}
            for name, ms in times.items():
                by_kind[kind_of(leaves[name])] = by_kind.get(kind_of(leaves[name]), 0.0) + sum(ms) / 1e3
            per_run.append({**by_kind, OUTSIDE: watch.seconds - sum(by_kind.values())})
    layers = profile(net, tuple(shape)).layers
    modules = dict(net.named_modules())
    layers["kind"] = [kind_of(modules[n]) if n in modules else "other" for n in layers["name"]]
    table = pd.DataFrame({"seconds": pd.DataFrame(per_run).median()})
    table["macs"] = layers.groupby("kind")["macs"].sum()
    table["bytes"] = pd.Series(traffic)
    table = table.fillna(0)
    table["time share"] = table["seconds"] / table["seconds"].sum()
    table["MAC share"] = table["macs"] / table["macs"].sum()
    table["MACs per byte"] = (table["macs"] / table["bytes"]).where(table["bytes"] > 0)
    table["GMACs/s"] = (table["macs"] / table["seconds"] / 1e9).where(table["macs"] > 0)
    return table.sort_values("seconds", ascending=False)
