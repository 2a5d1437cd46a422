"""Timing: contenders side by side, per-batch records, where the time goes, and a per-stage latency model.

Every reading goes through ``device.stopwatch`` / ``elapsed_ms`` (device-synchronised); the per-stage split
uses ``layer_times.module_times`` (forward hooks inside the core's own ``infer``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import torch

from .. import exits
from ..device import device_name, elapsed_ms
from ..layer_times import module_times
from ..precision import is_channels_last
from .elastic import ElasticNet

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Contender:
    """One thing to time: ``net`` with early-exit ``policy``, or the original network when ``policy`` is None."""

    name: str
    net: ElasticNet
    policy: exits.ExitPolicy | None = None


def _runners(contenders: Sequence[Contender], x: torch.Tensor, batch_size: int):
    """Per contender: a callable running it over every batch of ``x``, and its MACs per image (spent, exactly)."""
    batches = [x[i:i + batch_size] for i in range(0, len(x), batch_size)]
    runners, macs = {}, {}
    for c in contenders:
        c.net.eval()
        costs = c.net.costs or c.net.measure_costs(c.net.input_shape)
        if c.policy is None:
            runners[c.name] = lambda net=c.net: [net.full_forward(b) for b in batches]
            macs[c.name] = float(costs.full)
            continue
        if batch_size == 1:
            runners[c.name] = lambda net=c.net, p=c.policy: [net.infer_single(b, p) for b in batches]
        else:
            runners[c.name] = lambda net=c.net, p=c.policy: [net.infer(b, p) for b in batches]
        # MACs are input-dependent but not time-dependent: count them once (infer equals infer_single)
        with torch.inference_mode():
            macs[c.name] = sum(c.net.infer(b, c.policy).macs for b in x.split(256)) / len(x)
    return runners, macs


def benchmark(contenders: Sequence[Contender], x: torch.Tensor, *, batch_size: int, repeats: int = 5,
              warmup: int = 1) -> "pd.DataFrame":
    """Wall-clock milliseconds per image of every contender over the same images, timed in turn.

    x: normalised images ``(N, C, H, W)`` on the device.  Batch size 1 uses ``infer_single``, larger batches
    ``infer`` (compaction); the original network is ``net.full_forward``.  Every repeat times each contender
    once over all N images, in alternating order (drift from other load hits all alike); ``warmup`` untimed
    rounds come first.  Returns a DataFrame with one row per contender: name, batch_size, images,
    ms_per_image (median over repeats), ms_p10, ms_p90, macs_per_image (spent, exactly), repeats.
    """
    import numpy as np
    import pandas as pd

    runners, macs = _runners(contenders, x, batch_size)
    times: dict[str, list[float]] = {name: [] for name in runners}
    with torch.inference_mode():
        for r in range(warmup + repeats):
            order = list(runners) if r % 2 == 0 else list(reversed(runners))
            for name in order:
                ms = elapsed_ms(runners[name], x.device)
                if r >= warmup:
                    times[name].append(ms / len(x))
    rows = []
    for name, t in times.items():
        p10, med, p90 = np.percentile(t, [10, 50, 90])
        rows.append({"name": name, "batch_size": batch_size, "images": len(x), "ms_per_image": float(med),
                     "ms_p10": float(p10), "ms_p90": float(p90), "macs_per_image": macs[name], "repeats": repeats})
    return pd.DataFrame(rows)


def measure_batches(net: exits.ExitNetwork, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                    policy: exits.ExitPolicy) -> "pd.DataFrame":
    """Run ``net.infer`` batch by batch and measure each: the per-batch record of a deployed early exit.

    batches: an iterable of ``(x (B, C, H, W), y (B,))``, e.g. a ``DeviceLoader``.  Returns a DataFrame with one
    row per batch: batch, images, ms (wall clock, synchronised), ms_per_image, macs_per_image (actually spent),
    accuracy, exit_counts.
    """
    import pandas as pd

    net.eval()
    rows = []
    with torch.inference_mode():
        for i, (x, y) in enumerate(batches):
            holder: dict[str, exits.EarlyExitResult] = {}
            ms = elapsed_ms(lambda: holder.update(r=net.infer(x, policy)), x.device)
            r = holder["r"]
            rows.append({"batch": i, "images": len(x), "ms": ms, "ms_per_image": ms / len(x),
                         "macs_per_image": r.macs / len(x), "accuracy": float((r.predictions == y).float().mean()),
                         "exit_counts": torch.bincount(r.exit_index, minlength=net.num_exits).tolist()})
    return pd.DataFrame(rows)


@torch.inference_mode()
def time_breakdown(net: ElasticNet, x: torch.Tensor, policy: exits.ExitPolicy | None, *,
                   repeats: int = 3) -> "pd.DataFrame":
    """Where the time of ``net.infer(x, policy)`` goes: per exit, stage and head milliseconds and MACs.

    ``layer_times.module_times`` times every stage and head inside the core's own ``infer``; what is left of the
    wall-clock time is the policy, compaction and Python (the row ``"exit policy + compaction"``).

    ``policy=None`` times the original network instead: the stages in a row, then the backbone's own classifier,
    no branch and no exit decision.  Its rows are ``"stage k (to <tap>)"``, the last one with the classifier, and
    ``"Python between stages"`` for what the hooks did not see.  Medians over ``repeats`` runs after one warm-up.
    Returns a DataFrame with one row per part, columns: part, samples, stage_ms, head_ms, total_ms, macs,
    time_share, macs_share.
    """
    import numpy as np
    import pandas as pd

    net.eval()
    walls, holder, costs, last = [], {}, net.costs, net.num_exits - 1

    def full() -> torch.Tensor:
        h = x
        for stage in net.stages:
            h = stage(h)
        return net.heads[last](h)

    def run() -> None:
        step = full if policy is None else (lambda: net.infer(x, policy))
        walls.append(elapsed_ms(lambda: holder.update(r=step()), x.device))

    names = [f"stages.{k}" for k in range(net.num_exits)]
    names += [f"heads.{k}" for k in range(net.num_exits) if policy is not None or k == last]
    marks = module_times(net, module_names=names, repeats=repeats, warmup=1, device=x.device, run=run)
    walls = walls[1:]  # the first run was the warm-up
    median = {name: float(np.median(marks[name])) if marks[name] else 0.0 for name in names}
    rows = []
    for k in range(net.num_exits):
        stage, head = median[f"stages.{k}"], median.get(f"heads.{k}", 0.0)
        if policy is None:
            part = f"stage {k + 1} + classifier" if k == last else f"stage {k + 1} (to {net.taps[k]})"
            n, head_on = len(x), k == last
        else:
            part, result = f"exit {k + 1} ({net.taps[k]})", holder["r"]
            n = result.samples_per_stage[k] if k < len(result.samples_per_stage) else 0
            head_on = policy.head_needed(k, net.num_exits) and n > 0
        rows.append({"part": part, "samples": n, "stage_ms": stage, "head_ms": head, "total_ms": stage + head,
                     "macs": n * costs.stage_macs[k] + (n * costs.head_macs[k] if head_on else 0)})
    rest = max(float(np.median(walls)) - sum(r["total_ms"] for r in rows), 0.0)
    rows.append({"part": "Python between stages" if policy is None else "exit policy + compaction",
                 "samples": len(x), "stage_ms": 0.0, "head_ms": 0.0, "total_ms": rest, "macs": 0})
    df = pd.DataFrame(rows)
    df["time_share"] = df["total_ms"] / df["total_ms"].sum()
    df["macs_share"] = df["macs"] / max(df["macs"].sum(), 1)
    return df


@dataclass
class LatencyModel:
    """Milliseconds of stage k plus head k for a batch of n: ``overhead_ms[k] + per_sample_ms[k] * n``.

    Fitted from two timed batch sizes; with compaction, stage k runs on the samples still alive.
    """

    overhead_ms: list[float]
    per_sample_ms: list[float]
    device: str = ""

    def exit_ms(self, batch_size: int = 1) -> list[float]:
        """Per-sample ms to leave at exit k when a whole batch of ``batch_size`` goes that far (E values)."""
        per = [a / batch_size + b for a, b in zip(self.overhead_ms, self.per_sample_ms)]
        return torch.tensor(per, dtype=torch.float64).cumsum(0).tolist()

    def batch_ms(self, reaching: Sequence[float]) -> float:
        """Predicted ms of one batch in which ``reaching[k]`` samples run stage k (and head k)."""
        return float(sum(a + b * n for a, b, n in zip(self.overhead_ms, self.per_sample_ms, reaching) if n > 0))

    def expected_batch_ms(self, reach_fraction: Sequence[float], batch_size: int) -> float:
        """Expected ms of a batch of ``batch_size`` images drawn from a split where ``reach_fraction[k]`` of the
        images run stage k (and head k).

        Stage k's per-sample cost is paid by the ``f_k * batch_size`` samples expected to reach it; its fixed cost
        only by the batches that at least one sample reaches, ``1 - (1 - f_k) ** batch_size`` of them (samples
        drawn independently). At batch 1 that is ``f_k``: an image that leaves at exit 2 never pays stage 3's
        launch overhead. (``batch_ms`` with fractional counts would charge it to every batch, overpredicting batch
        1 most: 7.3 ms against 4.9 measured for the standard tier's seed-0 MobileNet.)
        """
        return float(sum(a * (1.0 - (1.0 - min(max(f, 0.0), 1.0)) ** batch_size) + b * f * batch_size
                         for a, b, f in zip(self.overhead_ms, self.per_sample_ms, reach_fraction)))

    def ms_per_image(self, reach_fraction: Sequence[float], batch_size: int) -> float:
        """Expected ms per image at ``batch_size`` when ``reach_fraction[k]`` of the images run stage k."""
        return self.expected_batch_ms(reach_fraction, batch_size) / batch_size

    @classmethod
    def from_exit_ms(cls, exit_ms: dict[int, Sequence[float]], device: str = "") -> "LatencyModel":
        """The model behind ``exit_ms`` at two batch sizes (what ``exit_ms(b)`` returns for each): its inverse.

        Per image at batch b, stage k costs ``overhead_k / b + per_sample_k``; two batch sizes give both.
        """
        if len(exit_ms) != 2:
            raise ValueError(f"need per-exit ms at exactly two batch sizes, got {sorted(exit_ms)}")
        (b1, e1), (b2, e2) = sorted((int(b), list(map(float, ms))) for b, ms in exit_ms.items())
        d1 = [x - y for x, y in zip(e1, [0.0] + e1[:-1])]  # per-stage ms per image at b1
        d2 = [x - y for x, y in zip(e2, [0.0] + e2[:-1])]
        overhead = [(p - q) / (1 / b1 - 1 / b2) for p, q in zip(d1, d2)]
        return cls(overhead, [p - a / b1 for p, a in zip(d1, overhead)], device)


@torch.inference_mode()
def measure_latency_model(net: ElasticNet, batch_size: int = 256, *, repeats: int = 5,
                          device: torch.device | str | None = None) -> LatencyModel:
    """Time every stage + head at batch sizes 1 and ``batch_size`` (medians of ``repeats``) and fit a line."""
    import numpy as np

    net.eval()
    p = next(net.parameters())
    device = torch.device(device) if device is not None else p.device
    # the layout the network was trained in: a channels_last network fed NCHW input converts at every stage, which
    # made this model 33% slower than the measured network at batch 256 (seed 0 of the standard tier)
    layout = torch.channels_last if is_channels_last(net) else torch.contiguous_format
    times = {}
    for n in sorted({1, batch_size}):
        h = torch.randn(n, *net.input_shape, device=device, dtype=p.dtype).contiguous(memory_format=layout)
        per_exit = []
        for stage, head in zip(net.stages, net.heads):
            def run(stage=stage, head=head, h=h):
                head(stage(h))

            run()  # warm-up
            per_exit.append(float(np.median([elapsed_ms(run, device) for _ in range(repeats)])))
            h = stage(h)
        times[n] = per_exit
    one, big = times[1], times[max(times)]
    if batch_size > 1:
        b = [max((tb - t1) / (batch_size - 1), 0.0) for t1, tb in zip(one, big)]
        a = [max(t1 - bk, 0.0) for t1, bk in zip(one, b)]
    else:
        a, b = [0.0] * len(one), list(one)
    return LatencyModel(a, b, device_name(device))
