"""A trained edCNN's exits on file: the bundle notebook 11 writes, and the one call that loads it.

    bundle = edcnn.load_trained()                 # the newest standard- or paper-tier run's bundle under results/
    bundle = edcnn.find_trained()                 # the same, or None (and a printed line) when there is none
    panel = ThresholdPanel.from_bundle(bundle)    # live within seconds, no training, no dataset

Notebook 11 calls ``make_bundle`` for its headline model and publishes ``edcnn_logits.npz`` next to its other
results: the per-exit logits of the val and test splits (float16), the labels, the costs (MACs per stage and
head), the measured per-exit ms at batch 1 and 256 with the CPU named, the thresholds calibrated on val, and
thumbnails of a random subset of val images for the panel's examples.  A quick-tier bundle is a demonstration
of briefly trained networks: ``load_trained`` skips those unless asked for one.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch

from .. import exits
from ..errors import CheckpointError
from .timing import LatencyModel

BUNDLE_NAME = "edcnn_logits.npz"
RESULTS = Path(__file__).resolve().parents[2] / "results"
TRAINED_TIERS = ("paper", "standard")  # in order of preference
# Thumbnails kept for the panel's examples.  A standard-tier bundle (6 exits, 5,000 val and 10,000 test samples)
# holds about 1.6 MiB of compressed float16 logits; 96 CIFAR-10 thumbnails add 0.26 MiB, so the committed file
# stays under the repository's 2 MiB limit for a tracked file (256 took it to 2.3 MiB).  Twelve show at a time.
THUMBNAILS = 96


def make_bundle(val: exits.ExitScores, test: exits.ExitScores, costs: exits.ExitCosts, latency: LatencyModel, *,
                thresholds: dict[str, Sequence[float | None]], images: torch.Tensor | None = None,
                thumbnails: int = THUMBNAILS, seed: int = 0, meta: dict[str, Any] | None = None) -> exits.ExitBundle:
    """A bundle of one model's val and test exits (scores built from logits, as ``collect_logits`` returns them).

    thresholds: policy name -> the thresholds calibrated on val (a disabled exit, None, is stored as the setting
    that never exits there). images: uint8 ``(N_val, C, H, W)``; ``thumbnails`` random ones are kept.
    """
    shown = {}
    for name, values in thresholds.items():
        never = 1.0 if name == "max_softmax" else 0.0  # a slider cannot say "disabled"
        shown[name] = [never if t is None else float(t) for t in values]
    fields: dict[str, Any] = {}
    if images is not None:
        kept = random_subset(len(images), thumbnails, seed)
        fields = {"images": images[kept].cpu(), "image_index": kept}
    return exits.ExitBundle.from_scores(
        {"val": val, "test": test}, costs, exit_ms={b: latency.exit_ms(b) for b in (1, 256)}, device=latency.device,
        meta={**(meta or {}), "thresholds": shown}, **fields)


def random_subset(n: int, k: int, seed: int = 0) -> torch.Tensor:
    """``k`` of ``range(n)`` at random (seeded), in increasing order."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].sort().values


def _tier_of(folder: Path) -> str | None:
    try:
        return json.loads((folder / "record.json").read_text()).get("tier", "quick")
    except (OSError, ValueError):
        return None


def trained_bundle_path(results_dir: str | Path = RESULTS, tiers: Sequence[str] = TRAINED_TIERS) -> Path:
    """The bundle of the newest completed run of the first of ``tiers`` that has one, under ``results_dir``."""
    found = [(p, _tier_of(p.parent)) for p in Path(results_dir).glob(f"runs/edcnn/*/{BUNDLE_NAME}")]
    for tier in tiers:
        mine = sorted((p for p, t in found if t == tier), key=lambda p: p.stat().st_mtime)
        if mine:
            return mine[-1]
    have = sorted({t for _, t in found if t})
    raise CheckpointError(
        f"no {' or '.join(tiers)}-tier edCNN bundle ({BUNDLE_NAME}) under {Path(results_dir) / 'runs' / 'edcnn'}"
        + (f" (there are {', '.join(have)}-tier ones: load_trained(tiers=['quick']) shows a demonstration)"
           if have else "") + ". Produce one with `python -m course_utils reproduce edcnn --tier standard`.")


def load_trained(path: str | Path | None = None, *, tiers: Sequence[str] = TRAINED_TIERS) -> exits.ExitBundle:
    """The trained edCNN's bundle: ``path``, or the newest trained run's under ``results/`` (see module docstring)."""
    return exits.load_bundle(path if path is not None else trained_bundle_path(tiers=tiers))


def find_trained(path: str | Path | None = None, *, results_dir: str | Path = RESULTS) -> exits.ExitBundle | None:
    """``load_trained(path)``, or None (with one printed line) when no trained bundle exists and none was named.

    A named ``path`` that is missing, or any corrupt bundle, still raises: those are mistakes to fix.
    """
    if path:
        return exits.load_bundle(path)
    try:
        found = trained_bundle_path(results_dir)
    except CheckpointError as err:
        print(f"no trained edCNN on file: {err}")
        return None
    return exits.load_bundle(found)
