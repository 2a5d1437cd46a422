"""Reporting: which classes leave where, the columns of the paper's table, and what the MACs-vs-time figure says."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import torch

from ..errors import UnknownNameError
from .training import MODES

if TYPE_CHECKING:
    import pandas as pd


def exit_distribution(exit_index: torch.Tensor, labels: torch.Tensor, num_exits: int,
                      class_names: Sequence[str] | None = None) -> "pd.DataFrame":
    """Fraction of each class's samples leaving at each exit: a DataFrame (classes x exits), rows sum to 1."""
    import pandas as pd

    classes = int(labels.max()) + 1
    counts = torch.zeros(classes, num_exits, dtype=torch.float64)
    counts.index_put_((labels.cpu(), exit_index.cpu()), torch.ones(len(labels), dtype=torch.float64), accumulate=True)
    frac = counts / counts.sum(1, keepdim=True).clamp_min(1)
    names = list(class_names) if class_names is not None else [str(c) for c in range(classes)]
    return pd.DataFrame(frac.numpy(), index=names[:classes], columns=[f"exit {k + 1}" for k in range(num_exits)])


TABLE_COLUMNS = ["dataset", "backbone", "mode", "device", "batch_size", "ms_per_image_full", "ms_per_image_edcnn",
                 "time_reduction_pct", "macs_full", "macs_edcnn", "acc_full", "acc_edcnn"]
OPTIONAL_CONTEXT = ("width_mult", "train_images", "precision", "recipe")  # copied to every row when given


def macs_vs_time_findings(exit_macs_fraction: Sequence[float], exit_ms: Mapping[int, Sequence[float]],
                          timings: "pd.DataFrame", *, reference: str = "full", tolerance: float = 0.1) -> list[str]:
    """What the MACs-vs-time figure shows, in sentences computed from its own numbers (never written in advance).

    exit_macs_fraction: per exit, MACs to leave there / MACs to leave at the last exit.  exit_ms: batch size ->
    per-exit cumulative ms (``LatencyModel.exit_ms``).  timings: ``benchmark`` rows (name, batch_size,
    ms_per_image, macs_per_image) with the ``reference`` network at every batch size.  A time share within
    ``tolerance`` (relative) of the MACs share counts as "in proportion".
    """
    def compare(time: float, macs: float) -> str:
        if time > macs * (1 + tolerance):
            return "more time than its MACs suggest"
        if time < macs * (1 - tolerance):
            return "less time than its MACs suggest"
        return "time in proportion to its MACs"

    lines = []
    for bs, ms in exit_ms.items():
        share, macs = ms[0] / ms[-1], exit_macs_fraction[0]
        lines.append(f"batch {bs}: leaving at exit 1 costs {macs:.0%} of the last exit's MACs and {share:.0%} of its "
                     f"time: the first stage takes {compare(share, macs)}.")
    for bs, t in timings.groupby("batch_size", sort=True):
        ref = t[t["name"] == reference].iloc[0]
        saved = [(r.name, 1 - r.macs_per_image / ref["macs_per_image"], 1 - r.ms_per_image / ref["ms_per_image"])
                 for r in t.itertuples() if r.name != reference]
        behind = sum(time < macs for _, macs, time in saved)
        lines.append(f"batch {bs}, MACs saved / time saved against {reference}: "
                     + ", ".join(f"{name} {macs:.0%} / {time:.0%}" for name, macs, time in saved)
                     + f" ({behind} of {len(saved)} save less time than MACs).")
    return lines


@dataclass
class Reference:
    """The network a row is compared with: its name, the ``Contender`` timing it, its val and test accuracy."""

    name: str  # "original backbone" or "own final exit"
    timing: str  # the Contender's name in the timings table
    val_accuracy: float
    test_accuracy: float


def comparison_table(calibrations: Mapping, timings: "pd.DataFrame", references: Mapping[str, Sequence[Reference]],
                     latency, full_macs: Mapping[str, int], *, context: Mapping[str, object]) -> "pd.DataFrame":
    """One row per (mode, policy, batch size, reference): the elastic model against the network it comes from.

    calibrations: (mode, policy) -> (``exits.Calibration`` on val, ``SweepResult`` on test).
    timings: ``benchmark`` rows (name, batch_size, ms_per_image), the references' and every ``mode/policy``'s.
    references: mode -> the networks that mode is compared with (frozen: the original backbone; joint: its own
        final exit, and the original). latency: the ``LatencyModel`` that predicts each row's time from its *val*
        exit fractions, so that the headline row can be chosen on val (``headline_row``).
    full_macs: mode -> MACs per image of that mode's network without early exits.
    context: dataset, backbone, device, scale, seed (the same on every row); and, when given, the
        ``OPTIONAL_CONTEXT`` columns (width_mult, train_images, precision, recipe).
    """
    import pandas as pd

    rows = []
    for (mode, policy), (cal, test) in calibrations.items():
        for bs in (1, 256):
            t = timings[timings["batch_size"] == bs].set_index("name")
            ms = t.loc[f"{mode}/{policy}", "ms_per_image"]
            # the model's own full-network time as the denominator: a bias of the model (its random inputs, its
            # per-stage synchronisations) then cancels in the ratio instead of deciding the headline row
            predicted = latency.ms_per_image(cal.val.reach_fraction, bs) / latency.exit_ms(bs)[-1]
            for ref in references[mode]:
                ref_ms = t.loc[ref.timing, "ms_per_image"]
                rows.append({"dataset": context["dataset"], "backbone": context["backbone"], "mode": mode,
                             "device": context["device"], "batch_size": bs, "ms_per_image_full": ref_ms,
                             "ms_per_image_edcnn": ms, "time_reduction_pct": 100 * (1 - ms / ref_ms),
                             "macs_full": full_macs[mode],
                             "macs_edcnn": test.mean_macs, "acc_full": ref.test_accuracy, "acc_edcnn": test.accuracy,
                             "reference": ref.name, "chosen_on": "val", "val_acc_full": ref.val_accuracy,
                             "val_acc_edcnn": cal.val.accuracy,
                             "val_predicted_time_reduction_pct": 100 * (1 - predicted),
                             "scale": context["scale"], "seed": context["seed"], "policy": policy,
                             **{k: context[k] for k in OPTIONAL_CONTEXT if k in context}})
    return pd.DataFrame(rows)


def headline_row(table: "pd.DataFrame", *, acc_drop: float = 0.003, reference: str = "original backbone",
                 modes: Sequence[str] | None = None):
    """The row to headline, chosen on val only: among rows against ``reference`` whose val accuracy is within
    ``acc_drop`` of the reference's val accuracy and whose time reduction *predicted from val* is positive, the
    largest one; None if none (a row predicted to be slower than its reference is no headline, however small).

    modes: only rows of these modes may headline (None: any).  A tier that trains mode (b) on one seed only
    headlines mode (a), so that its seeds average the same kind of row.
    Its test columns are then reported once; a row picked by its test accuracy would be a defect.
    """
    held = table[(table["reference"] == reference) & (table["val_acc_edcnn"] >= table["val_acc_full"] - acc_drop)
                 & (table["val_predicted_time_reduction_pct"] > 0)]
    if modes:
        unknown = sorted(set(modes) - set(MODES))
        if unknown:
            raise UnknownNameError(f"unknown mode(s) {unknown} for the headline. Use any of: {', '.join(MODES)}.")
        held = held[held["mode"].isin(list(modes))]
    if held.empty:
        return None
    return held.loc[held["val_predicted_time_reduction_pct"].idxmax()]
