"""Run by test_train.py under `torchrun --nproc_per_node=2`: fit on digits with DDP (gloo), report per rank.

Each rank reports a sha256 of every parameter and every buffer (BatchNorm running statistics), so the
test can check bit-identity, and whether its model matches what rank 0's checkpoint holds.
"""
import hashlib
import json
import sys
from pathlib import Path

import torch

from course_utils import data, train

sys.path.insert(0, str(Path(__file__).parent))
from test_train import small_cnn  # noqa: E402


def hashes(tensors) -> dict[str, str]:
    return {name: hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest() for name, t in tensors}


rank, world = train.init_distributed()
out = Path(sys.argv[1])
x, y = data.load("digits", "train", image_size=16)
xv, yv = data.load("digits", "val", image_size=16)
tr = data.DeviceLoader.for_dataset("digits", x, y, train=True)
va = data.DeviceLoader.for_dataset("digits", xv, yv, train=False)
model = small_cnn()
ckpt = out / "run.pt"  # written by rank 0 only
history = train.fit(model, tr, va, train.TrainConfig(epochs=8, batch_size=64, lr=0.2, progress=False,
                                                     checkpoint=str(ckpt)))
saved = train.load_checkpoint(ckpt)["best_state"]  # the weights fit restored at the end (restore_best)
out.mkdir(parents=True, exist_ok=True)
(out / f"rank{rank}.json").write_text(json.dumps({
    "world_size": world, "val_accuracy": history.best_val_accuracy,
    "val_accuracies": [e["val_accuracy"] for e in history.epochs],
    "parameters": hashes(model.named_parameters()), "buffers": hashes(model.named_buffers()),
    "checkpoint": hashes(saved.items()), "state": hashes(model.state_dict().items()),
    "steps_per_epoch": len(tr.view(batch_size=64, rank=rank, world_size=world))}))
torch.distributed.destroy_process_group()
