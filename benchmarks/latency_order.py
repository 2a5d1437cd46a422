"""Why the course times competing models interleaved: the same five ResNeXt blocks, timed three ways.

    python benchmarks/latency_order.py

Notebook 06 compares five equal-MAC ResNeXt blocks (256 channels, 56x56, batch 1). Timed one after the
other (``measure_latency`` per block), each block meets whatever state the machine is in while it is
measured; timed interleaved (``measure_latencies``: every round times every block once, the starting
block rotating), the machine's phases fall on all five alike.

Evidence (2-core AMD EPYC, KVM, 2 threads, nothing else running, 2026-11-30; median ms of 20 runs each,
three runs of this script in a row):

    block    in order      reversed      interleaved
    1x64d    12.2 14.7 11.8  10.6 11.3  4.5   6.9 10.2 10.0
    2x40d    13.4 15.0 11.6  12.7 11.1  5.1   5.8 11.0 10.1
    4x24d    12.5 12.8  9.3  12.4 10.9  4.5   8.6 10.4  9.8
    8x14d    11.8 12.5 13.3  13.3 12.3  8.6   8.3 11.9 11.2
    32x4d    14.3 13.1 11.2  13.8 12.6 10.6  11.2 12.2 11.1

This VM runs the same block at 4.5 ms in one phase and 11 ms in another. Sequential timings put that
swing on whichever block was being measured: in the third run, three blocks timed during a fast phase
look twice as fast as the others. Interleaved, the order within a run holds (1-4 groups cheapest, 8 and
32 groups dearest) even though the absolute level moves between runs. Notebook 06's first full run
timed its blocks one after the other and drew 1x64d as the slowest block; it now uses
``measure_latencies``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from course_utils.complexity import measure_latencies, measure_latency  # noqa: E402
from course_utils.device import device_name  # noqa: E402
from course_utils.models.resnet import Bottleneck  # noqa: E402

TEMPLATE = [(1, 64), (2, 40), (4, 24), (8, 14), (32, 4)]  # (cardinality, width per group): ResNeXt's Table 2
SHAPE = (1, 256, 56, 56)
RUNS, WARMUP = 20, 3


def main() -> dict[str, dict[str, float]]:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    blocks = {f"{c}x{w}d": Bottleneck(256, 64, cardinality=c, width_per_group=w) for c, w in TEMPLATE}
    in_order = {n: measure_latency(b, SHAPE, warmup=WARMUP, runs=RUNS).median_ms for n, b in blocks.items()}
    reversed_ = {n: measure_latency(b, SHAPE, warmup=WARMUP, runs=RUNS).median_ms
                 for n, b in reversed(list(blocks.items()))}
    interleaved = {n: lat.median_ms for n, lat in measure_latencies(blocks, SHAPE, warmup=WARMUP, runs=RUNS).items()}
    print(f"{device_name('cpu')}; median ms of {RUNS} runs, batch 1, 256 channels, 56x56")
    print(f"{'block':8s} {'in order':>9s} {'reversed':>9s} {'interleaved':>12s}")
    for n in blocks:
        print(f"{n:8s} {in_order[n]:9.2f} {reversed_[n]:9.2f} {interleaved[n]:12.2f}")
    return {"in_order": in_order, "reversed": reversed_, "interleaved": interleaved}


if __name__ == "__main__":
    main()
