"""What the second cell of every notebook calls: smoke mode, seeds, device, and a report."""
from __future__ import annotations

import os

import torch

from .device import describe, get_device, seed_everything


def smoke_requested(smoke: bool) -> bool:
    """``smoke``, or True when the environment sets ``COURSE_SMOKE=1`` (used by nbval and the browser tests)."""
    return bool(smoke) or os.environ.get("COURSE_SMOKE", "") in ("1", "true", "True")


def setup_notebook(smoke: bool = False, seed: int = 0, device: str | None = None,
                   quiet: bool = False) -> tuple[bool, torch.device]:
    """Seed everything, pick the device, print versions; return ``(smoke, device)``.

    Smoke mode (papermill ``-p SMOKE True`` or ``COURSE_SMOKE=1``) shrinks a notebook's work to seconds.
    """
    smoke = smoke_requested(smoke)
    seed_everything(seed)
    dev = get_device(device)
    if dev.type == "cpu" and os.environ.get("COURSE_THREADS"):
        torch.set_num_threads(int(os.environ["COURSE_THREADS"]))
    if not quiet:
        info = describe(dev)
        print(f"mode: {'SMOKE (tiny, for tests)' if smoke else 'full'} | seed {seed}")
        print(" | ".join(f"{k}: {v}" for k, v in info.items() if k in ("device", "torch", "cuda", "python")))
    try:  # crisp figures in JupyterLab; harmless outside IPython
        from IPython import get_ipython

        if get_ipython() is not None:
            get_ipython().run_line_magic("config", "InlineBackend.figure_formats = ['png']")
    except Exception:
        pass
    return smoke, dev


class StopHere(Exception):
    """Ends a notebook's "Run All" at this cell, quietly: what follows is work this run does not need.

    JupyterLab stops running the queued cells at an error; ``_render_traceback_`` replaces the traceback
    with one plain line, so the reader sees why it stopped and how to go on, not a stack.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"Stopped here: {self}"]


def stop_here(reason: str) -> None:
    """Raise ``StopHere(reason)``: the cells below do not run (papermill reports it as the notebook's error)."""
    raise StopHere(reason)
