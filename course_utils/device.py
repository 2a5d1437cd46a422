"""Which device runs the work, how to time it honestly, and how to report it."""
from __future__ import annotations

import os
import platform
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch


def get_device(override: str | torch.device | None = None) -> torch.device:
    """``override``, else ``$COURSE_DEVICE``, else CUDA when available, else the CPU."""
    choice = override if override is not None else os.environ.get("COURSE_DEVICE")
    if choice is not None:
        return torch.device(choice)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize(device: str | torch.device) -> None:
    """Wait for queued GPU work, so that a wall-clock reading covers it (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: str | torch.device) -> str:
    """A human name for the device that produced a result, e.g. ``cpu (AMD EPYC 7B13, 2 threads)``."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"cpu ({model}, {torch.get_num_threads()} threads)"


def describe(device: str | torch.device) -> dict[str, str]:
    """Versions and hardware, for the top of a notebook and for every results record."""
    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- timing, threads, autocast
@dataclass
class Stopwatch:
    """Wall-clock and process CPU seconds of a block, filled in when the block ends.

    On a shared 2-core machine CPU seconds are the steadier measure: another job steals wall
    clock from us but not CPU time.  (On CUDA the CPU seconds count only the host's work.)
    """

    device: torch.device
    seconds: float = float("nan")
    cpu_seconds: float = float("nan")

    @property
    def ms(self) -> float:
        return self.seconds * 1e3


@contextmanager
def stopwatch(device: str | torch.device = "cpu") -> Iterator[Stopwatch]:
    """``with stopwatch(dev) as t: ...`` then ``t.seconds``, ``t.ms``, ``t.cpu_seconds``.

    The device is synchronised on entry and on exit, so queued GPU kernels fall inside the interval.
    The one timing helper of the course: every measured time goes through it.
    """
    watch = Stopwatch(torch.device(device))
    synchronize(watch.device)
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield watch
    finally:
        synchronize(watch.device)
        watch.seconds = time.perf_counter() - wall
        watch.cpu_seconds = time.process_time() - cpu


def elapsed_ms(fn: Callable[[], Any], device: str | torch.device = "cpu") -> float:
    """Milliseconds that ``fn()`` takes, device synchronised (one call of ``stopwatch``)."""
    with stopwatch(device) as watch:
        fn()
    return watch.ms


@contextmanager
def num_threads(threads: int | None) -> Iterator[None]:
    """Run torch on ``threads`` CPU threads inside the block (``None``: leave as is); restored after.

    One thread suits sweeps over cached scores and batch-1 timings: on tensors of ~10^4 elements a
    thread pool only adds wake-up latency, and on a busy machine oversubscribed barriers distort timings.
    """
    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def single_thread():
    """``num_threads(1)``."""
    return num_threads(1)


def autocast(device: str | torch.device, enabled: bool = True, dtype: torch.dtype | None = None):
    """Mixed precision where it pays: bf16 on CUDA (fp16 where bf16 is missing); a no-op context elsewhere.

    On the CPU autocast is off unless ``dtype`` (bf16) is given explicitly: whether bf16 is faster there
    depends on the CPU (AVX-512-BF16/AMX) and on the model (depthwise convolutions got slower), so the
    caller decides from a measurement, never by default.
    """
    device = torch.device(device)
    if enabled and device.type == "cuda":
        if dtype is None:
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    if enabled and device.type == "cpu" and dtype is not None:
        return torch.autocast("cpu", dtype=dtype)
    return torch.autocast(device.type, enabled=False)
