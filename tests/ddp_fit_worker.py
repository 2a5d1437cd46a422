"""Run by test_train.py under `torchrun --nproc_per_node=2`: fit on digits with DDP (gloo), report per rank."""
import json
import sys
from pathlib import Path

import torch

from course_utils import data, train

sys.path.insert(0, str(Path(__file__).parent))
from test_train import small_cnn  # noqa: E402

rank, world = train.init_distributed()
x, y = data.load("digits", "train", image_size=16)
xv, yv = data.load("digits", "val", image_size=16)
tr = data.DeviceLoader.for_dataset("digits", x, y, train=True)
va = data.DeviceLoader.for_dataset("digits", xv, yv, train=False)
model = small_cnn()
history = train.fit(model, tr, va, train.TrainConfig(epochs=8, batch_size=64, lr=0.2, progress=False))
checksum = float(sum(p.double().sum() for p in model.parameters()))
out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
(out / f"rank{rank}.json").write_text(json.dumps({
    "world_size": world, "weights_checksum": checksum, "val_accuracy": history.best_val_accuracy,
    "steps_per_epoch": len(tr.view(batch_size=64, rank=rank, world_size=world))}))
torch.distributed.destroy_process_group()
