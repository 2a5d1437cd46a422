"""Files that are either whole or absent: atomic writes, and ``fit``'s checkpoints.

``atomic_write`` writes to a temporary file in the target's folder and renames it into place, so a
run killed mid-write leaves the previous file (or none), never a partial one that looks complete.
Checkpoints, results, the panel's saved scores: every file the course writes goes through it.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

import torch

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
