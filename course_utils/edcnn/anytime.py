"""Anytime prediction: the deepest answer finished by a deadline."""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import torch

from .. import exits
from ..device import synchronize
from ..errors import ThresholdError, UnknownNameError
from .budget import BudgetWarning
from .timing import LatencyModel


@dataclass
class AnytimeResult:
    """The deepest prediction reached by a deadline."""

    predictions: torch.Tensor  # (B,)
    logits: torch.Tensor  # (B, C)
    exit_index: int  # the head that answered (0-based)
    answer_ms: float  # when that head's answer was ready
    elapsed_ms: float  # when the call returned
    deadline_ms: float
    met: bool  # answer_ms <= deadline_ms


@torch.inference_mode()
def anytime(net: exits.ExitNetwork, x: torch.Tensor, deadline_ms: float, *,
            latency: LatencyModel | None = None, on_miss: str = "warn") -> AnytimeResult:
    """Run ``x`` ``(B, C, H, W)`` head by head and answer with the deepest head finished by the deadline.

    Every sample goes as deep as the time allows (no confidence rule).  With a ``latency`` model, a stage
    predicted to overrun is not started, so no time is wasted; without one, a stage that overruns is
    discarded and the call returns late (``elapsed_ms`` says by how much).  When not even exit 1 is ready
    in time, its answer is returned with ``met=False`` and a ``BudgetWarning`` (``on_miss="raise"``: a
    ``ThresholdError``); the deadline is never missed silently.
    """
    if not (isinstance(deadline_ms, (int, float)) and deadline_ms > 0 and math.isfinite(deadline_ms)):
        raise ThresholdError(f"deadline_ms must be a positive number of milliseconds, got {deadline_ms!r}.")
    if on_miss not in ("warn", "raise"):
        raise UnknownNameError(f"unknown on_miss {on_miss!r}. Use 'warn' or 'raise'.")
    net.eval()
    device = x.device
    synchronize(device)
    start = time.perf_counter()
    answer, answer_k, answer_ms = None, 0, 0.0
    h = x
    for k, (stage, head) in enumerate(zip(net.stages, net.heads)):
        now = (time.perf_counter() - start) * 1e3
        if answer is not None and latency is not None and \
                now + latency.batch_ms([0] * k + [len(x)]) > deadline_ms:
            break  # the next exit would come too late: keep what we have
        h = stage(h)
        logits = head(h)
        synchronize(device)
        now = (time.perf_counter() - start) * 1e3
        if now <= deadline_ms or answer is None:
            answer, answer_k, answer_ms = logits, k, now
        if now >= deadline_ms:
            break
    elapsed = (time.perf_counter() - start) * 1e3
    met = answer_ms <= deadline_ms
    if not met:
        message = (f"deadline {deadline_ms:.3g} ms missed: even exit 1 took {answer_ms:.3g} ms for a batch of "
                   f"{len(x)}. Give a longer deadline or a smaller batch.")
        if on_miss == "raise":
            raise ThresholdError(message)
        warnings.warn(message, BudgetWarning, stacklevel=2)
    return AnytimeResult(answer.argmax(1), answer, answer_k, answer_ms, elapsed, float(deadline_ms), met)
