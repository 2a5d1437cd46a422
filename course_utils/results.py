"""How a notebook hands its measured figures to the batch runner.

A notebook run by ``python -m course_utils reproduce`` gets a ``RESULTS_DIR`` parameter.  At the end
it calls ``publish(RESULTS_DIR, metrics=..., tables=..., figures=...)``, which writes
``metrics.json``, one CSV per table and one PNG per figure there, each atomically (temporary file,
then rename), so a run killed mid-write never leaves a half-written result that looks complete.
With an empty ``RESULTS_DIR`` (an interactive session) it does nothing.

Every result says which device measured it, on which data and at which scale.  Rather than repeat
those three in every notebook's metrics, pass them once:

    results.publish(RESULTS_DIR, device=DEVICE, scale=SCALE, dataset=DATA_NAME,
                    metrics={"resnet20_test_accuracy": 0.91}, figures={"curves": fig})
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import torch

from .checkpoint import atomic_write
from .device import device_name

_DEVICE_SPEC = re.compile(r"(cpu|cuda|mps|xpu)(:\d+)?")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def device_label(device: str | torch.device) -> str:
    """How results and figures name a device: ``"cpu"`` or ``torch.device("cpu")`` becomes
    ``device.device_name`` (``"cpu (AMD EPYC 7B13, 2 threads)"``); a name already spelled out is kept."""
    if isinstance(device, torch.device) or _DEVICE_SPEC.fullmatch(str(device)):
        return device_name(device)
    return str(device)


def with_context(metrics: dict[str, Any] | None = None, *, device: str | torch.device | None = None,
                 scale: str | None = None, dataset: str | None = None) -> dict[str, Any]:
    """``metrics`` with the context every result carries: ``device``, ``scale``, ``dataset`` (those given).

    A context value that ``metrics`` also holds, with a different value, is an error: one of them is stale.
    """
    merged = dict(metrics or {})
    context = {"device": None if device is None else device_label(device), "scale": scale, "dataset": dataset}
    for key, value in context.items():
        if value is None:
            continue
        if key in merged and merged[key] != value:
            raise ValueError(f"{key!r} given twice, as {merged[key]!r} in metrics and as {value!r}")
        merged[key] = value
    return merged


def check_figures(figures: dict[str, Any]) -> int:
    """Print each figure's reading problems (overlapping or clipped text, a legend over data); return their count."""
    from .figure_checks import problems

    found = problems(figures)
    for name, issues in found.items():
        print(f"figure {name!r} does not read cleanly: {'; '.join(issues)}")
    return sum(map(len, found.values()))


def publish(results_dir: str | os.PathLike | None, *, metrics: dict[str, Any] | None = None,
            tables: dict[str, Any] | None = None, figures: dict[str, Any] | None = None,
            device: str | torch.device | None = None, scale: str | None = None,
            dataset: str | None = None) -> Path | None:
    """Write a notebook's results for the batch runner; a no-op when ``results_dir`` is empty.

    metrics: flat figures (numbers and short strings); with the context below, always including the
        device that measured them.
    tables: name -> pandas DataFrame, written as ``name.csv``.
    figures: name -> matplotlib Figure, written as ``name.png``; each is checked with ``figure_checks.problems``
        and the count of problems is published as the metric ``figure_problems`` (0: every figure reads cleanly).
    device, scale, dataset: the context of every result, written as the metrics of those names
        (``device`` as ``device_label(device)``); see ``with_context``.
    """
    metrics = with_context(metrics, device=device, scale=scale, dataset=dataset)
    if figures:  # every published figure is checked as it is drawn: the runner's PNGs are these figures
        metrics["figure_problems"] = check_figures(figures)
    if not results_dir:
        return None
    out = Path(results_dir)
    for name, frame in (tables or {}).items():
        atomic_write(out / f"{name}.csv", lambda tmp, f=frame: f.to_csv(tmp, index=False))
    for name, fig in (figures or {}).items():
        atomic_write(out / f"{name}.png", lambda tmp, f=fig: f.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    write_text(out / "metrics.json", json.dumps(_jsonable(metrics), indent=2, sort_keys=True))
    return out
