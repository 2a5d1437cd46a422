"""Which device runs the work, how to time it honestly, and how to report it."""
from __future__ import annotations

import os
import platform
import random

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
