"""Files that are either whole or absent: atomic writes, and ``fit``'s checkpoints (and what they restore).

``atomic_write`` writes to a temporary file in the target's folder and renames it into place, so a
run killed mid-write leaves the previous file (or none), never a partial one that looks complete.
Checkpoints, results, the panel's saved scores: every file the course writes goes through it.
``fingerprint``, ``check_compatible`` and ``rng_state``/``set_rng_state`` are what a resumed run checks
and restores, so that it continues exactly where the interrupted one stopped.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from .errors import CheckpointError


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, fsync, then rename the temporary file onto ``path``; no partial file on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:  # the rename must not overtake the data on a crash
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Write ``state`` with ``torch.save`` atomically (``atomic_write``).

    A crash mid-write leaves the previous checkpoint intact and no partial file behind.
    """
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(state, f)

    atomic_write(path, write)


def load_checkpoint(path: str | os.PathLike, *, expected_format: str) -> dict:
    """Read a checkpoint written by ``save_checkpoint``; a corrupt or foreign file raises ``CheckpointError``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:
        raise CheckpointError(
            f"cannot read checkpoint {path}: it is corrupt or truncated ({type(err).__name__}). "
            "Delete it to start from scratch, or point `checkpoint` at another file."
        ) from None
    if not isinstance(state, dict) or state.get("format") != expected_format:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path} is not a {expected_format} checkpoint (found {found!r}). "
            "Point `checkpoint` at a file that fit() wrote, or delete this one."
        )
    return state


# ----------------------------------------------------------------------------- what a resumed run must restore
def fingerprint(model: nn.Module) -> dict[str, list[int]]:
    """The name and shape of every tensor in ``model.state_dict()``: what a checkpoint's model must match."""
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def check_compatible(state: dict, model: nn.Module, settings: dict[str, Any], path: str | os.PathLike) -> None:
    """Raise ``CheckpointError`` unless ``state`` continues this run.

    state: a checkpoint holding ``fingerprint`` (of its model) and ``config`` (a dict of its settings).
    settings: the current values of the settings that decide the run's trajectory (learning rate, seed...);
        any other setting (a progress bar) may change between the interrupted run and its resumption.
    """
    mine, theirs = fingerprint(model), state["fingerprint"]
    if mine != theirs:
        missing = sorted(set(mine) ^ set(theirs))[:3]
        shapes = [k for k in mine if k in theirs and mine[k] != theirs[k]][:3]
        detail = f"different tensors {missing}" if missing else f"different shapes at {shapes}"
        raise CheckpointError(
            f"checkpoint {path} was saved for another model ({detail}). "
            "Use a new checkpoint path for this model, or delete the old file."
        )
    saved = state["config"]
    diff = [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in settings.items() if saved.get(k) != v]
    if diff:
        raise CheckpointError(
            f"checkpoint {path} was saved with another training config ({'; '.join(diff)}), so resuming "
            "would not continue the same run. Restore those settings, or use a new checkpoint path."
        )


def rng_state() -> dict:
    """The torch (CPU and every GPU) and Python random states, for a checkpoint."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what ``rng_state`` returned (after a round trip through ``torch.save``/``torch.load``)."""
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x):
    # random.setstate wants the nested tuples back that a weights_only load may return as lists
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x
