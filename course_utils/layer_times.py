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
