"""Per-exit logits on file: everything the panel, calibration and the tables need, without the network.

A trained early-exit network takes hours to train on a CPU, but what its exits *decided* fits in a few
megabytes: the logits of every exit on the val and test splits, the labels, and the measured cost of leaving
at each exit.  ``sweep`` needs nothing else, so a student can drag thresholds over a trained network
seconds after opening the notebook.

    bundle = exits.ExitBundle(logits={"val": (E, N, C), "test": ...}, labels={...}, costs=net.costs,
                              exit_ms={1: [...], 256: [...]}, device="cpu (AMD EPYC, 1 threads)", meta={...})
    exits.save_bundle(bundle, "results/edcnn_logits.npz")   # float16 logits, deflate-compressed, atomic
    bundle = exits.load_bundle("results/edcnn_logits.npz")  # clear CheckpointError if corrupt or foreign
    scores = bundle.scores("val")                           # ExitScores, ready for sweep / calibrate / the panel

Why float16: three significant digits of a logit are far finer than any threshold step (0.01), and it halves
the file.  The bundle is the source of truth: every number the panel shows is ``sweep`` on the stored logits.
Why ``numpy.savez_compressed``: a zip of plain arrays (no pickle to execute), readable from any language.
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import atomic_write
from ..errors import CheckpointError, CourseError
from .network import ExitCosts
from .scores import ExitScores

BUNDLE_FORMAT = "course_utils.exits.bundle/1"


@dataclass
class ExitBundle:
    """Per-exit logits of some splits, their labels, and the network's measured per-exit costs.

    logits: split -> ``(E, N, C)`` float tensor; labels: split -> ``(N,)`` long tensor.
    costs: MACs per image of each stage and head (``ExitCosts``).
    exit_ms: batch size -> ms per image to leave at each of the E exits, measured on ``device``.
    meta: what the network is and how it was trained (backbone, width, dataset, accuracies, tier, seed, ...).
    images: optional uint8 ``(M, C, H, W)`` thumbnails of the val samples ``image_index`` ``(M,)``.
    """

    logits: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    costs: ExitCosts
    exit_ms: dict[int, list[float]] = field(default_factory=dict)
    device: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    images: torch.Tensor | None = None
    image_index: torch.Tensor | None = None

    def __post_init__(self) -> None:
        _check(self)

    @property
    def splits(self) -> list[str]:
        return list(self.logits)

    @property
    def num_exits(self) -> int:
        return len(self.costs.stage_macs)

    @classmethod
    def from_scores(cls, scores: dict[str, ExitScores], costs: ExitCosts, **fields: Any) -> "ExitBundle":
        """A bundle of the splits in ``scores`` (each built from logits, as ``collect_logits`` does)."""
        missing = [s for s, sc in scores.items() if sc.logits is None]
        if missing:
            raise CourseError(f"the scores of {missing} hold no logits; build them with exits.collect_logits "
                              "or ExitScores.from_logits")
        return cls(logits={s: sc.logits for s, sc in scores.items()},
                   labels={s: sc.labels for s, sc in scores.items()}, costs=costs, **fields)

    def scores(self, split: str = "val") -> ExitScores:
        """``ExitScores`` of one split (from its stored logits), for ``sweep``, ``calibrate`` and the panel."""
        if split not in self.logits:
            raise CourseError(f"the bundle has no {split!r} split; it has: {', '.join(self.splits)}.")
        return ExitScores.from_logits(self.logits[split], self.labels[split])


def _check(bundle: ExitBundle) -> None:
    """Shapes that agree with each other, or a ``CourseError`` naming the mismatch."""
    e = bundle.num_exits
    if set(bundle.logits) != set(bundle.labels):
        raise CourseError(f"logits for splits {sorted(bundle.logits)} but labels for {sorted(bundle.labels)}")
    for split, logits in bundle.logits.items():
        if logits.ndim != 3 or logits.shape[0] != e or logits.shape[1] != len(bundle.labels[split]):
            raise CourseError(f"{split} logits must be (E={e}, N={len(bundle.labels[split])}, C), "
                              f"got {tuple(logits.shape)}")
    for batch, ms in bundle.exit_ms.items():
        if len(ms) != e:
            raise CourseError(f"exit_ms[{batch}] has {len(ms)} values for {e} exits")
    if (bundle.images is None) != (bundle.image_index is None):
        raise CourseError("images and image_index come together: the thumbnails and which val samples they show")
    if bundle.images is not None and (bundle.images.dtype != torch.uint8 or bundle.images.ndim != 4
                                      or len(bundle.images) != len(bundle.image_index)):
        raise CourseError(f"images must be uint8 (M, C, H, W) with one index each, got {bundle.images.dtype} "
                          f"{tuple(bundle.images.shape)} for {len(bundle.image_index)} indices")


def save_bundle(bundle: ExitBundle, path: str | os.PathLike) -> Path:
    """Write ``bundle`` to ``path`` (float16 logits, compressed), atomically; return the path."""
    arrays: dict[str, np.ndarray] = {}
    for split in bundle.splits:
        arrays[f"logits_{split}"] = bundle.logits[split].detach().cpu().to(torch.float16).numpy()
        arrays[f"labels_{split}"] = bundle.labels[split].detach().cpu().to(torch.int64).numpy()
    if bundle.images is not None:
        arrays["images"] = bundle.images.cpu().numpy()
        arrays["image_index"] = bundle.image_index.cpu().to(torch.int64).numpy()
    header = {"format": BUNDLE_FORMAT, "splits": bundle.splits, "stage_macs": list(map(int, bundle.costs.stage_macs)),
              "head_macs": list(map(int, bundle.costs.head_macs)),
              "exit_ms": {str(b): list(map(float, ms)) for b, ms in bundle.exit_ms.items()},
              "device": bundle.device, "meta": bundle.meta}
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: savez would append ".npz" to a bare temporary name
            np.savez_compressed(f, **arrays)

    atomic_write(path, write)
    return path


def load_bundle(path: str | os.PathLike) -> ExitBundle:
    """Read a bundle written by ``save_bundle``; a missing, corrupt or foreign file raises a clear error."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no exit-logits bundle at {path}. Produce one with the runner's standard tier "
                              "(`python -m course_utils reproduce edcnn --tier standard`) or pass another path.")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        header = json.loads(bytes(arrays.pop("header")).decode())
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError, UnicodeDecodeError) as err:
        raise CheckpointError(f"cannot read exit-logits bundle {path}: it is corrupt or truncated "
                              f"({type(err).__name__}). Restore it with `git checkout -- {path}` or re-create it "
                              "with the runner's standard tier.") from None
    if header.get("format") != BUNDLE_FORMAT:
        raise CheckpointError(f"{path} is not an exit-logits bundle (format {header.get('format')!r}, expected "
                              f"{BUNDLE_FORMAT!r}). Point at a file that exits.save_bundle wrote.")
    try:
        return ExitBundle(
            logits={s: torch.from_numpy(arrays[f"logits_{s}"]).float() for s in header["splits"]},
            labels={s: torch.from_numpy(arrays[f"labels_{s}"]) for s in header["splits"]},
            costs=ExitCosts(header["stage_macs"], header["head_macs"]),
            exit_ms={int(b): ms for b, ms in header["exit_ms"].items()}, device=header["device"], meta=header["meta"],
            images=torch.from_numpy(arrays["images"]) if "images" in arrays else None,
            image_index=torch.from_numpy(arrays["image_index"]) if "image_index" in arrays else None)
    except (KeyError, CourseError) as err:
        raise CheckpointError(f"exit-logits bundle {path} is incomplete or inconsistent ({err}). Re-create it with "
                              "the runner's standard tier.") from None

