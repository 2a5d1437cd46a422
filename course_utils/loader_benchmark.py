"""How fast is a device-resident loader?  Measured against torchvision's dataset + DataLoader.

Both sides produce the same thing for one epoch: normalised float batches ``(B, C, H, W)`` with
the same augmentation (reflect-padded random crop + horizontal flip for CIFAR-10, none otherwise).

* baseline: the dataset class torchvision itself provides (``CIFAR10`` / ``MNIST``: a PIL image per
  item, then ``transforms``), batched by ``torch.utils.data.DataLoader`` with 0 and 2 workers;
* ours: ``data.DeviceLoader``: the split sits on the device as uint8, and slicing, augmentation
  and normalisation are a few tensor operations per batch.

The two run in the same process, one after the other, on the same data, so their ratio is
meaningful even on a shared, noisy machine.
"""
from __future__ import annotations

import pickle
import tempfile
from pathlib import Path

import numpy as np
import torch

from . import data
from .device import device_name, stopwatch


def _torchvision_dataset(name: str, images: torch.Tensor, labels: torch.Tensor, folder: Path, augment: bool):
    """torchvision's own dataset class for ``name``, reading our split from its on-disk layout."""
    import torchvision.datasets as tvd
    import torchvision.transforms as T

    meta = data.info(name)
    steps = [T.RandomCrop(images.shape[-1], padding=4, padding_mode="reflect"), T.RandomHorizontalFlip()] if augment else []
    transform = T.Compose(steps + [T.ToTensor(), T.Normalize(meta.mean, meta.std)])
    if name == "cifar10":
        base = folder / "cifar-10-batches-py"
        base.mkdir(parents=True)
        rows = images.numpy().reshape(len(images), -1)  # N x 3072, CHW order as in the original pickles
        for file in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
            with open(base / file, "wb") as f:  # torchvision reads all five train batches
                pickle.dump({"data": rows if file == "data_batch_1" else rows[:0], "labels": labels.tolist()
                             if file == "data_batch_1" else []}, f)
        class LocalCIFAR10(tvd.CIFAR10):
            # Our files are re-packed, so their md5 differs from the official ones; the item path
            # (__getitem__: PIL image, transforms) is torchvision's own.
            def _check_integrity(self) -> bool:
                return True

            def _load_meta(self) -> None:
                self.classes = list(meta.classes)
                self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

        return LocalCIFAR10(str(folder), train=True, transform=transform, download=False)
    # MNIST-like and digits: torchvision's MNIST class over uncompressed IDX files
    raw = folder / "MNIST" / "raw"
    raw.mkdir(parents=True)
    n, _, h, w = images.shape
    with open(raw / "train-images-idx3-ubyte", "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + np.array([n, h, w], dtype=">u4").tobytes() + images.numpy().tobytes())
    with open(raw / "train-labels-idx1-ubyte", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + np.array([n], dtype=">u4").tobytes() + labels.numpy().astype(np.uint8).tobytes())
    for kind in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / kind).touch()  # torchvision only checks that the files of the split it does not load exist
    return tvd.MNIST(str(folder), train=True, transform=transform, download=False)


def _time_epoch(batches, device: torch.device) -> tuple[float, int]:
    """Wall-clock seconds of one pass over ``batches`` with every batch moved to ``device``, and the images seen."""
    n = 0
    with stopwatch(device) as watch:
        for x, y in batches:
            x = x.to(device, non_blocking=True)
            n += len(y)
    return watch.seconds, n


def run(name: str = "cifar10", *, max_images: int | None = 20000, batch_size: int = 256,
        workers: tuple[int, ...] = (0, 2), repeats: int = 2, device: str | torch.device = "cpu",
        root: str | None = None):
    """Images per second of both loaders over one training epoch of ``name``: a pandas DataFrame.

    Columns: loader, workers, images, seconds, images_per_s, speedup (vs the best baseline), device.
    Each loader's best of ``repeats`` epochs is kept (the first may pay for page faults and caches).
    """
    import pandas as pd
    from torch.utils.data import DataLoader

    device = torch.device(device)
    images, labels = data.load(name, "train", root=root)
    if max_images is not None and len(labels) > max_images:
        images, labels = data.subset(images, labels, total=max_images, seed=0)
    augment = data.info(name).augment
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dataset = _torchvision_dataset(name, images, labels, Path(tmp), augment)
        for w in workers:
            loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=w,
                                pin_memory=device.type == "cuda", persistent_workers=w > 0)
            best = min((_time_epoch(loader, device) for _ in range(repeats)), key=lambda r: r[0])
            rows.append({"loader": "torchvision Dataset + DataLoader", "workers": w, "images": best[1], "seconds": best[0]})
            del loader
    ours = data.DeviceLoader.for_dataset(name, images, labels, train=True, batch_size=batch_size, device=device)
    timings = []
    for epoch in range(repeats):
        ours.set_epoch(epoch)
        timings.append(_time_epoch(ours, device))
    best = min(timings, key=lambda r: r[0])
    rows.append({"loader": "course_utils DeviceLoader", "workers": 0, "images": best[1], "seconds": best[0]})
    table = pd.DataFrame(rows)
    table["images_per_s"] = table["images"] / table["seconds"]
    baseline = table.loc[table["loader"].str.startswith("torchvision"), "images_per_s"].max()
    table["speedup"] = table["images_per_s"] / baseline
    table["dataset"] = name
    table["device"] = device_name(device)
    return table


def main(argv: list[str] | None = None) -> None:
    """``python benchmarks/loader_benchmark.py --dataset cifar10``: print the table."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="cifar10", help=f"one of {data.available()}")
    parser.add_argument("--max-images", type=int, default=20000, help="class-balanced subset of the train split")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    table = run(args.dataset, max_images=args.max_images, batch_size=args.batch_size, device=args.device)
    print(table.to_string(index=False, float_format=lambda v: f"{v:,.2f}"))
    ours = table.iloc[-1]
    print(f"\nDeviceLoader is {ours['speedup']:.1f}x the best torchvision configuration on {ours['device']}.")
