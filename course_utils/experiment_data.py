"""A dataset made ready for one experiment: the ``digits`` fallback, three splits, three loaders, a label.

Every notebook starts the same way: use the dataset it asks for if it is on this machine, else fall back
to the embedded ``digits`` set and say so; take class-balanced subsets of train / val / test; put each on
the device in a ``DeviceLoader``; and name the data in every figure.  ``prepare`` does all of it:

    d = prepare("cifar10", train_per_class=1000, device=DEVICE, seed=SEED)
    history = train.fit(net, d.train_loader, d.val_loader, config)
    print(d.scale(f"{EPOCHS} epochs"))   # "CIFAR-10 (JPEG-decoded copy): 10000 training images (1000 per class), 10 epochs"

Nothing here is downloaded: a dataset that is not on disk (``$COURSE_DATA_DIR`` or ``data/``) is
replaced by ``digits``, which ships with scikit-learn and is always there.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import data
from .device import get_device
from .errors import DataNotFoundError

FALLBACK = "digits"
_NAMES = {"cifar10": "CIFAR-10", "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "digits": "digits"}


def dataset_label(name: str) -> str:
    """How a figure names its dataset, e.g. ``"CIFAR-10 (JPEG-decoded copy)"`` for the shared CIFAR-10 copy."""
    label = _NAMES.get(name, name)
    if name == "digits":
        return f"{label} (8x8)"
    try:
        if "JPEG" in data.source(name):
            label += " (JPEG-decoded copy)"
    except (DataNotFoundError, OSError):
        pass
    return label


def resolve(name: str, *, fallback: bool = True, verbose: bool = True) -> str:
    """``name`` when it is on this machine, else ``"digits"`` (with one printed line saying so).

    With ``fallback=False`` a missing dataset raises ``DataNotFoundError`` naming where it was looked for.
    An unknown name raises ``UnknownNameError`` listing the known ones, fallback or not.
    """
    data.info(name)
    if name == FALLBACK:
        if verbose:
            print(data.source(name))
        return name
    try:
        where = data.source(name)
    except DataNotFoundError as err:
        if not fallback:
            raise
        if verbose:
            print(f"{name} is not on this machine ({str(err).splitlines()[0]}).\n"
                  f"Falling back to scikit-learn's {FALLBACK} (8x8 handwritten digits): the notebook runs, "
                  "at a much smaller scale. Set COURSE_DATA_DIR to a folder holding the data (see data/README.md).")
        return FALLBACK
    if verbose:
        print(where)
    return name


@dataclass
class ExperimentData:
    """Three splits of one dataset, their device loaders, and how to name them."""

    requested: str  # the dataset the notebook asked for
    name: str  # the dataset actually loaded ("digits" after a fallback)
    label: str  # for figures and tables
    train: tuple[torch.Tensor, torch.Tensor]  # uint8 (N, C, H, W), int64 (N,)
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    train_loader: data.DeviceLoader
    val_loader: data.DeviceLoader
    test_loader: data.DeviceLoader
    train_per_class: int | None = None

    @property
    def fell_back(self) -> bool:
        return self.name != self.requested

    @property
    def in_channels(self) -> int:
        return int(self.train[0].shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train[0].shape[-1])

    @property
    def num_classes(self) -> int:
        return len(data.info(self.name).classes)

    def sizes(self) -> str:
        """E.g. ``"train 10000, val 2000, test 10000 images of (3, 32, 32)"``."""
        return (f"train {len(self.train[1])}, val {len(self.val[1])}, test {len(self.test[1])} images of "
                f"{tuple(self.train[0].shape[1:])}")

    def scale(self, details: str = "") -> str:
        """The scale line every figure carries: dataset, training images, then ``details``."""
        per_class = f"{self.train_per_class} per class" if self.train_per_class else "the whole training split"
        text = f"{self.label}: {len(self.train[1])} training images ({per_class})"
        return f"{text}, {details}" if details else text


def _take(name: str, split: str, per_class: int | None, image_size: int | None,
          seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = data.load(name, split, image_size=image_size)
    return data.subset(x, y, per_class=per_class, seed=seed) if per_class else (x, y)


def prepare(name: str, *, train_per_class: int | None = None, val_per_class: int | None = None,
            test_per_class: int | None = None, image_size: int | None = None, digits_size: int | None = 32,
            batch_size: int = 128, eval_batch_size: int = 500, device: str | torch.device | None = None,
            seed: int = 0, fallback: bool = True, verbose: bool = True) -> ExperimentData:
    """Resolve ``name`` (falling back to ``digits``), load and subset the three splits, build the loaders.

    *_per_class: class-balanced subset sizes; ``None`` or 0 keeps the whole split.
    image_size: resize every split to this side (``None``: native size).
    digits_size: the side the 8x8 ``digits`` are resized to when they are used (``None``: keep 8x8);
        the course's CIFAR-scale networks downsample four or five times and need 32x32.
    The training loader augments (for natural images) and shuffles with ``seed``; val and test do not.
    """
    resolved = resolve(name, fallback=fallback, verbose=verbose)
    side = digits_size if (resolved == "digits" and image_size is None) else image_size
    splits = {split: _take(resolved, split, per_class, side, seed)
              for split, per_class in (("train", train_per_class), ("val", val_per_class),
                                       ("test", test_per_class))}
    loaders = {split: data.DeviceLoader.for_dataset(
        resolved, *splits[split], train=split == "train", batch_size=batch_size if split == "train" else eval_batch_size,
        device=get_device(device), seed=seed) for split in splits}
    label = dataset_label(resolved)
    if resolved == "digits" and side and side != 8:
        label = f"digits (8x8, upscaled to {side}x{side})"
    result = ExperimentData(name, resolved, label, splits["train"], splits["val"], splits["test"],
                            loaders["train"], loaders["val"], loaders["test"], train_per_class or None)
    if verbose:
        print(result.sizes())
    return result
