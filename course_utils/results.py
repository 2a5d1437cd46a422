"""How a notebook hands its measured figures to the batch runner.

A notebook run by ``python -m course_utils reproduce`` gets a ``RESULTS_DIR`` parameter.  At the end
it calls ``publish(RESULTS_DIR, metrics=..., tables=..., figures=...)``, which writes
``metrics.json``, one CSV per table and one PNG per figure there, each atomically (temporary file,
then rename), so a run killed mid-write never leaves a half-written result that looks complete.
With an empty ``RESULTS_DIR`` (an interactive session) it does nothing.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write


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


def publish(results_dir: str | os.PathLike | None, *, metrics: dict[str, Any],
            tables: dict[str, Any] | None = None, figures: dict[str, Any] | None = None) -> Path | None:
    """Write a notebook's results for the batch runner; a no-op when ``results_dir`` is empty.

    metrics: flat figures (numbers and short strings), always including the device that measured them.
    tables: name -> pandas DataFrame, written as ``name.csv``.
    figures: name -> matplotlib Figure, written as ``name.png``.
    """
    if not results_dir:
        return None
    out = Path(results_dir)
    for name, frame in (tables or {}).items():
        atomic_write(out / f"{name}.csv", lambda tmp, f=frame: f.to_csv(tmp, index=False))
    for name, fig in (figures or {}).items():
        atomic_write(out / f"{name}.png", lambda tmp, f=fig: f.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    write_text(out / "metrics.json", json.dumps(_jsonable(metrics), indent=2, sort_keys=True))
    return out
