"""Run by test_speedycnet.py under `torchrun --nproc_per_node=2`: the cascade trainer with DDP (gloo, CPU).

Each rank writes what it ended with (removal set, thresholds, weights checksum) and what every rank
holds (all_gather), so the test can check that all ranks agree on which samples were removed.
"""
import hashlib
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from course_utils import data, speedycnet
from course_utils.train import TrainConfig, init_distributed

torch.set_num_threads(1)
rank, world = init_distributed()
x, y = data.load("digits", "train", image_size=16)
xv, yv = data.load("digits", "val", image_size=16)


def run(cache: bool) -> dict:
    torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    net = speedycnet.hierarchical_learners(10, 1, 16, width_mult=0.25)
    config = speedycnet.CascadeConfig(train=TrainConfig(epochs=2, batch_size=64, lr=0.05, progress=False),
                                      removal_precision=0.99, removal_confidence=None, cache_features=cache)
    result = speedycnet.train_cascade(net, "digits", (x, y), (xv, yv), config)
    mine = {
        "removed_at": result.removed_at.tolist(),
        "val_removed_at": result.val_removed_at.tolist(),
        "thresholds": result.thresholds,
        "samples_in": [s.samples_in for s in result.stages],
        "removed": [s.removed for s in result.stages],
        "disagreements": [s.disagreements for s in result.stages],
        "weights_checksum": float(sum(p.double().sum() for p in result.net.parameters())),
        # every stage's BatchNorm statistics, frozen ones included; sha256 of the bytes: equal means bit-identical
        "buffers_checksum": hashlib.sha256(b"".join(b.cpu().numpy().tobytes() for b in result.net.buffers()))
        .hexdigest(),
    }
    everyone = [None] * world
    dist.all_gather_object(everyone, mine)
    return {"all": everyone}


reports = {"cache": run(True), "nocache": run(False)}
out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
(out / f"rank{rank}.json").write_text(json.dumps({"world_size": world, "rank": rank, **reports}))
dist.destroy_process_group()
