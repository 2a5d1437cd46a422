"""Timed passes that a long notebook run can resume: each finished pass's figures are kept, and reused.

A standard-tier SpeedyCNet seed with its ablations trains eight networks in about 2.5 hours on two CPU cores,
longer than some sessions have left. ``PassLog`` keeps each finished pass's measured figures (seconds, CPU
seconds, accuracies: a JSON-able dict; or, for a pass whose objects later cells need, the whole value through
``torch.save``) in one file, written atomically. A rerun of the same run on the same device skips the passes
already measured and reports which ones it took from disk.

Why "the same device": a speed-up divides one pass's seconds by another's, and seconds measured on another CPU
(the sessions' machines vary) do not divide with these. A stored pass from another device, or from a run with
other settings, is measured again and overwritten. A file that cannot be read is an error that names it.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .checkpoint import atomic_write, save_checkpoint
from .errors import CheckpointError

FORMAT = "course_utils.passes/1"


def run_key(settings: dict[str, Any]) -> str:
    """A short digest of a run's settings (JSON-able values): the name of its folder of passes."""
    text = json.dumps(settings, sort_keys=True, default=_plain)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _plain(value: Any) -> Any:
    """What JSON makes of a figure it cannot write: a number for tensor and numpy scalars, else its text."""
    return float(value) if hasattr(value, "__float__") else str(value)


class PassLog:
    """The finished passes of one run, kept in ``folder`` (``None`` or ``""``: kept nowhere, every pass runs).

    ``settings`` identify the run (dataset, seed, sizes, format...); ``device`` names where it runs, e.g.
    ``device_name(DEVICE)``. ``run(name, measure)`` returns the stored value of pass ``name`` when it was
    measured with these settings on this device, else calls ``measure()`` and stores what it returns.
    """

    def __init__(self, folder: str | Path | None, settings: dict[str, Any], device: str):
        self.settings = json.loads(json.dumps(settings, default=_plain))  # as it will read back from disk
        self.device = device
        self.folder = Path(folder) / run_key(settings) if folder else None
        self.resumed: list[str] = []  # passes taken from disk, in the order asked for
        self.measured: list[str] = []  # passes measured by this process

    def path(self, name: str, whole: bool = False) -> Path | None:
        """Where pass ``name`` is kept (None without a folder): JSON figures, or ``.pt`` for a whole value."""
        if self.folder is None:
            return None
        slug = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower() or "pass"
        return self.folder / f"{slug}.{'pt' if whole else 'json'}"

    def _read(self, path: Path, whole: bool) -> dict:
        fix = "Delete it (the pass is then measured again), or set the notebook's PASS_DIR to \"\" to keep none."
        try:
            # a whole value is a pickle: only this course's own files, in a folder git ignores, are read back
            entry = torch.load(path, map_location="cpu", weights_only=False) if whole else json.loads(path.read_text())
            ok = entry["format"] == FORMAT and "value" in entry
        except Exception as err:  # truncated, foreign, or written by code whose classes have changed since
            raise CheckpointError(f"cannot read the stored pass {path}: it is corrupt or stale "
                                  f"({type(err).__name__}: {str(err)[:120]}). {fix}") from None
        if not ok:
            raise CheckpointError(f"{path} is not a stored pass ({FORMAT}). {fix}")
        return entry

    def stored(self, name: str, whole: bool = False) -> tuple[bool, Any]:
        """``(True, value)`` of pass ``name`` if measured with these settings on this device, else ``(False, None)``."""
        path = self.path(name, whole)
        if path is None or not path.exists():
            return False, None
        entry = self._read(path, whole)
        if entry.get("settings") != self.settings or entry.get("device") != self.device or entry.get("name") != name:
            print(f"[passes] {name}: stored from {entry.get('device')!r} with other settings or on another "
                  f"device; measuring again on {self.device!r}")
            return False, None
        return True, entry["value"]

    def run(self, name: str, measure: Callable[[], Any], *, whole: bool = False) -> Any:
        """Pass ``name``'s value: from disk when measured here with these settings, else ``measure()``'s.

        ``whole=False``: the value is a dict of figures, kept as JSON. ``whole=True``: any value ``torch.save``
        can write (a trained network, a cascade's result), for passes whose objects later cells need.
        """
        found, value = self.stored(name, whole)
        if found:
            self.resumed.append(name)
            print(f"[passes] {name}: measured earlier on {self.device}, taken from {self.path(name, whole)}")
            return value
        value = measure()
        self.measured.append(name)
        path = self.path(name, whole)
        if path is not None:
            entry = {"format": FORMAT, "name": name, "settings": self.settings, "device": self.device,
                     "written": time.strftime("%Y-%m-%dT%H:%M:%S"), "value": value}
            try:
                if whole:
                    save_checkpoint(entry, path)
                else:
                    text = json.dumps(entry, indent=1, default=_plain)
                    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
            except Exception as err:  # a pass that cannot be kept is still measured: never lose an hour to a file
                print(f"[passes] {name}: not kept ({type(err).__name__}: {err}); a rerun measures it again")
        return value

    def note(self) -> str:
        """One sentence for the run's record: which passes came from an earlier process, if any."""
        if not self.resumed:
            return "Every pass was measured in this process."
        return (f"Resumed: {', '.join(self.resumed)} measured by an earlier process of this run on the same device "
                f"({self.device}); {', '.join(self.measured) or 'nothing else'} measured in this one.")
