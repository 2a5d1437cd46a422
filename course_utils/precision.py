"""Which numeric format trains a given model fastest on this device: decided by a measurement.

bf16 autocast with channels_last trains full-width VGG16-BN about 3x faster than fp32 on a Xeon with
AMX, yet MobileNets got *slower* there (depthwise convolutions have no fast bf16 kernel), and an AMD
EPYC without AVX-512-BF16 emulates bf16 at a loss.  So the course never guesses: ``choose_precision``
times a few real training steps of *this* model in each candidate format, side by side in one process,
and returns the fastest together with every measurement, for the result rows to record.

    choice = choose_precision(model, (128, 3, 32, 32), device)
    print(choice)          # "bf16+channels_last: 41.2 ms/step (fp32 96.0, fp32+channels_last 88.1) on cpu (...)"
    config = TrainConfig(amp=choice.amp, ...)
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn as nn

from .device import autocast, device_name, stopwatch

# (name, autocast dtype or None, channels_last)
CANDIDATES = {"fp32": (None, False), "fp32+channels_last": (None, True), "bf16+channels_last": (torch.bfloat16, True)}


def is_channels_last(net: nn.Module) -> bool:
    """True when the network's first convolution weight whose layout is unambiguous (more than one input channel,
    a kernel larger than 1x1: not a depthwise or pointwise one) is stored channels_last."""
    w = next((q for q in net.parameters() if q.dim() == 4 and q.shape[1] > 1 and q.shape[2] * q.shape[3] > 1), None)
    return w is not None and w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()


def native_bf16(device: str | torch.device) -> bool:
    """True where bf16 has hardware support: CUDA with bf16, or a CPU with AVX-512-BF16 / AMX (oneDNN's check)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass
class PrecisionChoice:
    """The fastest format for one model on one device, and what every candidate measured."""

    name: str  # "fp32", "fp32+channels_last" or "bf16+channels_last"
    ms_per_step: dict[str, float]  # median training-step time of each candidate
    device: str
    native_bf16: bool
    dtype: torch.dtype | None = field(default=None, repr=False)
    channels_last: bool = False

    @property
    def precision(self) -> str:
        """``"bf16"`` or ``"fp32"``: the column every result row records."""
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"

    @property
    def amp(self) -> bool:
        return self.dtype is not None

    def __str__(self) -> str:
        others = ", ".join(f"{k} {v:.1f}" for k, v in self.ms_per_step.items() if k != self.name)
        return (f"{self.name}: {self.ms_per_step[self.name]:.1f} ms/step ({others}) on {self.device}; "
                f"native bf16: {'yes' if self.native_bf16 else 'no'}")


def pick(ms_per_step: dict[str, float], tolerance: float = 0.05) -> str:
    """The fastest candidate; fp32 wins unless another is faster by more than ``tolerance`` (5%).

    The tolerance keeps a within-noise difference from switching a whole table to a reduced precision.
    """
    if not ms_per_step:
        raise ValueError("no candidate was measured")
    best = min(ms_per_step, key=ms_per_step.get)
    baseline = ms_per_step.get("fp32")
    if baseline is not None and ms_per_step[best] > baseline * (1 - tolerance):
        return "fp32"
    return best


def _step_ms(model: nn.Module, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype | None,
             steps: int, warmup: int) -> float:
    """Median ms of one SGD training step (forward, loss, backward, update) of ``model`` on ``(x, y)``."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    times = []
    for i in range(warmup + steps):
        with stopwatch(x.device) as watch:
            with autocast(x.device, enabled=dtype is not None, dtype=dtype):
                out = model(x)
                loss = loss_fn(out[0] if isinstance(out, (tuple, list)) else out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if i >= warmup:
            times.append(watch.ms)
    return float(torch.tensor(times).median())


def choose_precision(model: nn.Module, input_shape: Sequence[int], device: str | torch.device, *,
                     num_classes: int = 10, steps: int = 3, warmup: int = 1,
                     candidates: Sequence[str] | None = None) -> PrecisionChoice:
    """Time ``steps`` training steps of a copy of ``model`` per candidate format; return the fastest.

    input_shape: one batch ``(B, C, H, W)`` as training will use it.  The model itself is not changed.
    """
    device = torch.device(device)
    names = list(candidates or CANDIDATES)
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise ValueError(f"unknown precision candidate(s) {unknown}; use any of {list(CANDIDATES)}")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(tuple(input_shape), generator=g).to(device)
    y = torch.randint(0, num_classes, (input_shape[0],), generator=g).to(device)
    measured = {}
    for name in names:
        dtype, channels_last = CANDIDATES[name]
        trial = copy.deepcopy(model).to(device).train()
        xb = x
        if channels_last:
            trial = trial.to(memory_format=torch.channels_last)
            xb = x.contiguous(memory_format=torch.channels_last)
        measured[name] = _step_ms(trial, xb, y, dtype, steps, warmup)
        del trial
    best = pick(measured)
    dtype, channels_last = CANDIDATES[best]
    return PrecisionChoice(best, measured, device_name(device), native_bf16(device), dtype, channels_last)
