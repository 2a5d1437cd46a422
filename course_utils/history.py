"""What a training run leaves behind: per-epoch records, the best epoch, and where it ran."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class History:
    """Per-epoch records, the best epoch, and where it ran."""

    epochs: list[dict] = field(default_factory=list)
    best_epoch: int | None = None  # 1-based; None without a val set
    best_val_accuracy: float | None = None
    stopped_early: bool = False
    device: str = ""

    @property
    def seconds(self) -> float:
        """Wall-clock seconds of every epoch run, training and evaluation."""
        return sum(e["seconds"] for e in self.epochs)

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds of this process over every epoch: steadier than wall clock on a shared machine."""
        return sum(e.get("cpu_seconds", float("nan")) for e in self.epochs)

    def seconds_to_best(self) -> float:
        """Seconds up to the end of the best epoch: what a run needs once it knows when to stop."""
        last = self.best_epoch or len(self.epochs)
        return sum(e["seconds"] for e in self.epochs[:last])

    def time_to_accuracy(self, target: float) -> float | None:
        """Seconds until val accuracy first reached ``target`` (None if it never did)."""
        total = 0.0
        for e in self.epochs:
            total += e["seconds"]
            if e.get("val_accuracy") is not None and e["val_accuracy"] >= target:
                return total
        return None

    def to_frame(self):
        """The per-epoch records as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.epochs)
