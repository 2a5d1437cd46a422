"""Datasets as uint8 tensors, and a loader that keeps a whole split on the device.

``load(name, split)`` returns ``(images, labels)``: uint8 ``(N, C, H, W)`` and int64 ``(N,)``,
on the CPU.  ``DeviceLoader`` moves a split to the device once and then slices, augments and
normalises batches there (the airbench way): no PIL, no per-image Python, no worker processes.

Splits.  ``"train"`` and ``"val"`` are carved from the official training set: ``"val"`` is a
deterministic, class-balanced hold-out (``VAL_FRACTION`` of every class, chosen with a fixed
seed) and ``"train"`` is the rest, so nothing calibrated on ``"val"`` has been trained on.
``"test"`` is the official test set.  ``digits`` has no official test set: a class-balanced
``TEST_FRACTION`` is set aside first, with another fixed seed.

Where data is looked for, in order: the explicit ``root``, ``$COURSE_DATA_DIR``, the repo's
``data/``.  Layouts read: torchvision's own (``MNIST/raw``, ``FashionMNIST/raw``,
``cifar-10-batches-py``) and the course's npz cache (``<root>/cifar10/{train,test}.npz``, uint8
NHWC ``images`` + int64 ``labels``).  If nothing is found, torchvision's downloader is tried; offline,
one ``DataNotFoundError`` names the dataset, every place searched, and how to get the data.
"""
from __future__ import annotations

import copy
import functools
import gzip
import os
import pickle
import shutil
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DataNotFoundError, UnknownNameError

REPO_DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SPLITS = ("train", "val", "test")
VAL_FRACTION = 0.1  # of each class of the official training set
TEST_FRACTION = 0.2  # digits only: it ships as one set
_VAL_SEED, _TEST_SEED = 0, 1
DOWNLOAD_TIMEOUT_S = 20


@dataclass(frozen=True)
class DatasetInfo:
    """What the loaders need to know about a dataset."""

    name: str
    channels: int
    size: int  # native height == width
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, on the [0, 1] scale
    std: tuple[float, ...]
    augment: bool  # random crop + flip in training (natural images only)
    folder: str = ""  # folder name under a data root
    note: str = ""  # provenance, shown next to any figure measured on it


_DIGIT_NAMES = tuple(str(d) for d in range(10))
DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("digits", 1, 8, _DIGIT_NAMES, (0.3056,), (0.3758,), False,
                          note="scikit-learn's bundled UCI handwritten digits, 8x8"),
    "mnist": DatasetInfo("mnist", 1, 28, _DIGIT_NAMES, (0.1307,), (0.3081,), False, folder="MNIST"),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", 1, 28,
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        (0.2860,), (0.3530,), False, folder="FashionMNIST"),
    "cifar10": DatasetInfo(
        "cifar10", 3, 32,
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True, folder="cifar10"),
}
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def available() -> list[str]:
    """The dataset names ``load`` knows (any ImageFolder root path works too)."""
    return sorted(DATASETS)


def info(name: str) -> DatasetInfo:
    """Metadata of a named dataset or of an ImageFolder root (classes from its ``train/`` folder)."""
    if name in DATASETS:
        return DATASETS[name]
    folder = Path(name)
    if (folder / "train").is_dir():
        classes = tuple(sorted(p.name for p in (folder / "train").iterdir() if p.is_dir()))
        return DatasetInfo(str(folder), 3, 0, classes, _IMAGENET_MEAN, _IMAGENET_STD, True,
                           note=f"ImageFolder at {folder}")
    raise UnknownNameError(
        f"unknown dataset {name!r}. Known datasets: {', '.join(available())}, "
        "or the path of an ImageFolder root holding train/<class>/*.jpg (and val/ or test/)."
    )


# ----------------------------------------------------------------------------- locating files
def search_roots(root: str | os.PathLike | None = None) -> list[Path]:
    """Where data is looked for, in order: ``root``, ``$COURSE_DATA_DIR``, the repo's ``data/``."""
    roots = []
    if root is not None:
        roots.append(Path(root))
    if os.environ.get("COURSE_DATA_DIR"):
        roots.append(Path(os.environ["COURSE_DATA_DIR"]))
    roots.append(REPO_DATA_DIR)
    return roots


def _idx_files(folder: Path, official_split: str) -> tuple[Path, Path] | None:
    prefix = "train" if official_split == "train" else "t10k"
    found = []
    for kind in ("images-idx3", "labels-idx1"):
        stem = folder / f"{prefix}-{kind}-ubyte"
        path = next((p for p in (stem, stem.with_name(stem.name + ".gz")) if p.is_file()), None)
        if path is None:
            return None
        found.append(path)
    return found[0], found[1]


def _find(name: str, roots: list[Path]) -> tuple[str, Path] | None:
    """The (format, path) of the first copy of ``name`` found under ``roots``."""
    folder = DATASETS[name].folder
    for r in roots:
        if name in ("mnist", "fashion_mnist"):
            if _idx_files(r / folder / "raw", "train") and _idx_files(r / folder / "raw", "test"):
                return "idx", r / folder / "raw"
        elif name == "cifar10":
            if (r / "cifar10" / "train.npz").is_file() and (r / "cifar10" / "test.npz").is_file():
                return "npz", r / "cifar10"
            if (r / "cifar-10-batches-py" / "test_batch").is_file():
                return "cifar-pickle", r / "cifar-10-batches-py"
    return None


def _how_to_get(name: str) -> str:
    folder = DATASETS[name].folder
    if name == "cifar10":
        layout = ("cifar-10-batches-py/ (torchvision's layout, from cifar-10-python.tar.gz) "
                  "or cifar10/{train,test}.npz (uint8 NHWC 'images', int64 'labels')")
    else:
        layout = f"{folder}/raw/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte[.gz] (torchvision's layout)"
    return (f"Put {layout} under one of those folders, or set COURSE_DATA_DIR to a folder that holds it; "
            f"with internet access, load({name!r}, ..., download=True) fetches it with torchvision.")


def _download(name: str, roots: list[Path]) -> None:
    """Fetch with torchvision into the first writable root; raise DataNotFoundError when offline."""
    import torchvision.datasets as tvd

    target = next((r for r in roots if _writable(r)), None)
    if target is None:
        raise OSError("no writable data folder")
    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    before = set(target.iterdir())
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # torchvision's urllib calls have no timeout
    try:
        for train in (True, False):
            cls(str(target), train=train, download=True)
    except BaseException:
        for created in set(target.iterdir()) - before:  # no partial download or empty folder left behind
            shutil.rmtree(created) if created.is_dir() else created.unlink(missing_ok=True)
        raise
    finally:
        socket.setdefaulttimeout(previous)


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        return os.access(path, os.W_OK)
    except OSError:
        return False


def locate(name: str, root: str | os.PathLike | None = None, download: bool = True) -> tuple[str, Path]:
    """Find (or download) a named dataset; return its format and folder.

    Raises ``DataNotFoundError`` naming every folder searched and how to get the data.
    """
    info(name)  # unknown names fail here, with the list of known ones
    roots = search_roots(root)
    found = _find(name, roots)
    if found is None and download:
        try:
            _download(name, roots)
        except Exception as err:  # offline: URLError, socket timeout, torchvision's RuntimeError
            reason = f"download failed ({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''})"
        else:
            reason = "download finished but the files were not found"
        found = _find(name, roots)
    else:
        reason = "download=False"
    if found is None:
        searched = "\n".join(f"  - {r}" for r in roots)
        raise DataNotFoundError(
            f"dataset {name!r} was not found; {reason}.\nSearched:\n{searched}\n{_how_to_get(name)}"
        )
    return found


def source(name: str, root: str | os.PathLike | None = None) -> str:
    """One line saying where ``name`` is read from, with its provenance note (e.g. a JPEG-decoded copy)."""
    if name == "digits":
        return DATASETS["digits"].note
    if name not in DATASETS:
        return info(name).note
    fmt, path = locate(name, root, download=False)
    text = f"{name} from {path} ({fmt})"
    note_file = path / "SOURCE.md"
    if note_file.is_file():  # the shared CIFAR-10 copy says how it differs from the canonical files
        first = note_file.read_text().splitlines()[0].lstrip("# ").strip()
        text += f": {first}"
    return text


# ----------------------------------------------------------------------------- reading formats
def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataNotFoundError(f"{path} is not a uint8 IDX file (corrupt download?). Delete it and fetch it again.")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataNotFoundError(f"{path} is truncated ({data.size} of {int(np.prod(dims))} values). Fetch it again.")
    return data.reshape(dims)


@functools.lru_cache(maxsize=4)  # train and val are cut from one decompressed file: read it once
def _read_official(name: str, official_split: str, root) -> tuple[np.ndarray, np.ndarray]:
    """uint8 NCHW images and int64 labels of the official train or test split."""
    fmt, path = locate(name, root)
    if fmt == "idx":
        images_path, labels_path = _idx_files(path, official_split)
        images = _read_idx(images_path)[:, None]  # N x 1 x 28 x 28
        labels = _read_idx(labels_path)
    elif fmt == "npz":
        with np.load(path / f"{official_split}.npz") as z:
            images = np.ascontiguousarray(z["images"].transpose(0, 3, 1, 2))  # NHWC -> NCHW
            labels = z["labels"]
    else:  # torchvision's cifar-10-batches-py pickles: rows of 3072 = 3 x 32 x 32
        files = [f"data_batch_{i}" for i in range(1, 6)] if official_split == "train" else ["test_batch"]
        parts = []
        for file in files:
            with open(path / file, "rb") as f:
                parts.append(pickle.load(f, encoding="latin1"))
        images = np.concatenate([p["data"] for p in parts]).reshape(-1, 3, 32, 32)
        labels = np.concatenate([p["labels"] for p in parts])
    return images, labels.astype(np.int64)


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images * (255 / 16)).astype(np.uint8)[:, None]  # 0..16 -> 0..255, N x 1 x 8 x 8
    return images, d.target.astype(np.int64)


def _read_image_folder(folder: Path, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode an ImageFolder split once (resize shorter side, centre crop) into uint8 NCHW."""
    from PIL import Image

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    images, labels = [], []
    for label, cls in enumerate(classes):
        for file in sorted((folder / cls).iterdir()):
            if file.suffix.lower() not in (".jpg", ".jpeg", ".png", ".bmp", ".webp"):
                continue
            with Image.open(file) as im:
                im = im.convert("RGB")
                scale = image_size / min(im.size)
                im = im.resize((max(image_size, round(im.width * scale)), max(image_size, round(im.height * scale))),
                               Image.BILINEAR)
                left, top = (im.width - image_size) // 2, (im.height - image_size) // 2
                im = im.crop((left, top, left + image_size, top + image_size))
                images.append(np.asarray(im).transpose(2, 0, 1))
            labels.append(label)
    if not images:
        raise DataNotFoundError(f"no images found under {folder}/<class>/. Expected an ImageFolder layout.")
    return np.stack(images), np.asarray(labels, dtype=np.int64)


# ----------------------------------------------------------------------------- splits
def balanced_split(labels: np.ndarray | torch.Tensor, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, held_out) with ``round(fraction * n_c)`` of every class c held out.

    Deterministic for a given seed; both index arrays are sorted, so canonical order is kept.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        held.append(rng.permutation(idx)[: int(round(fraction * len(idx)))])
    held_out = np.sort(np.concatenate(held))
    rest = np.setdiff1d(np.arange(len(labels)), held_out)
    return rest, held_out


def load(name: str, split: str = "train", *, root: str | os.PathLike | None = None,
         download: bool = True, image_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a split as ``(images, labels)``: uint8 ``(N, C, H, W)`` and int64 ``(N,)`` on the CPU.

    name: ``"digits"``, ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``, or an ImageFolder root.
    split: ``"train"``, ``"val"`` (class-balanced hold-out from the official train set) or ``"test"``.
    image_size: resize once, here, to ``image_size`` x ``image_size`` (e.g. digits 8 -> 32 for
        networks that downsample five times); ImageFolder data defaults to 64.
    """
    if split not in SPLITS:
        raise UnknownNameError(f"unknown split {split!r}. Use one of: {', '.join(SPLITS)}.")
    info(name)  # an unknown name fails here with the list of known ones
    if name == "digits":
        images, labels = _read_digits()
        rest, test = balanced_split(labels, TEST_FRACTION, _TEST_SEED)
        keep = test if split == "test" else rest
        images, labels = images[keep], labels[keep]
    elif name in DATASETS:
        images, labels = _read_official(name, "test" if split == "test" else "train",
                                        None if root is None else str(root))
    else:  # ImageFolder root: train/ and val/ (ImageNet's name for its test-time split) or test/
        folder = Path(name) / "train"
        if split == "test":
            folder = next((Path(name) / s for s in ("test", "val") if (Path(name) / s).is_dir()), None)
            if folder is None:
                raise DataNotFoundError(f"{name} has no test/ or val/ folder to serve the 'test' split.")
        images, labels = _read_image_folder(folder, image_size or 64)
        image_size = None
    if split != "test":
        train_idx, val_idx = balanced_split(labels, VAL_FRACTION, _VAL_SEED)
        keep = val_idx if split == "val" else train_idx
        images, labels = images[keep], labels[keep]
    x, y = torch.from_numpy(np.array(images)), torch.from_numpy(np.array(labels))  # copies: writable, owned
    if image_size is not None and image_size != x.shape[-1]:
        x = resize(x, image_size)
    return x, y


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 ``(N, C, H, W)`` images to ``size`` x ``size`` (bilinear, antialiased), still uint8."""
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def subset(images: torch.Tensor, labels: torch.Tensor, per_class: int | None = None, *,
           total: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A class-balanced subset: ``per_class`` samples of every class (or ``total`` split evenly).

    Deterministic for a seed; keeps the original order.  Classes with fewer samples give all they have.
    """
    if (per_class is None) == (total is None):
        raise ValueError("give exactly one of per_class or total")
    classes = torch.unique(labels)
    if total is not None:
        per_class = max(1, total // len(classes))
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c in classes:
        idx = torch.nonzero(labels == c).flatten()
        keep.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    keep = torch.sort(torch.cat(keep)).values
    return images[keep], labels[keep]


# ----------------------------------------------------------------------------- the device loader
class DeviceLoader:
    """Batches from a split held on the device as uint8, augmented and normalised there.

    Each epoch's order and augmentation derive from ``(seed, epoch)`` alone, so an interrupted run
    resumes with exactly the batches it would have seen.  Under DDP every rank draws the same
    permutation and takes its own interleaved shard, so ranks never overlap.

    Yields ``(x, y)``: float ``(B, C, H, W)`` normalised (``dtype``, channels_last on CUDA) and int64 ``(B,)``.
    Float inputs (e.g. cached features) are passed through unnormalised and unaugmented.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 256,
                 shuffle: bool = False, augment: bool = False, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, device: str | torch.device = "cpu", seed: int = 0,
                 drop_last: bool = False, dtype: torch.dtype = torch.float32, pad: int = 4,
                 rank: int = 0, world_size: int = 1):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.device = torch.device(device)
        self.images = images.to(self.device)  # kept as uint8: 4x less memory than float
        self.labels = labels.to(self.device)
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.drop_last, self.dtype, self.pad, self.seed = drop_last, dtype, pad, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        # Pad once, as airbench does: each batch then only gathers its crops.
        self._padded = reflect_pad(self.images, pad) if augment and images.dtype == torch.uint8 and pad else None
        self.channels_last = self.device.type == "cuda" and images.ndim == 4
        if images.dtype == torch.uint8:
            channels = images.shape[1]
            mean = torch.tensor(mean if mean is not None else [0.5] * channels)
            std = torch.tensor(std if std is not None else [0.5] * channels)
            # x / 255 - mean) / std folded into one multiply-add
            self._scale = (1 / (255 * std)).view(1, -1, 1, 1).to(self.device, dtype)
            self._shift = (-mean / std).view(1, -1, 1, 1).to(self.device, dtype)
        else:
            self._scale = self._shift = None

    @classmethod
    def for_dataset(cls, name: str, images: torch.Tensor, labels: torch.Tensor, *, train: bool,
                    **kwargs) -> "DeviceLoader":
        """A loader with ``name``'s normalisation; shuffled and augmented (if the dataset wants it) when ``train``."""
        meta = info(name)
        kwargs.setdefault("augment", train and meta.augment)
        kwargs.setdefault("shuffle", train)
        return cls(images, labels, mean=meta.mean, std=meta.std, **kwargs)

    def view(self, *, batch_size: int | None = None, rank: int | None = None,
             world_size: int | None = None) -> "DeviceLoader":
        """The same data (not copied) batched differently or sharded for one DDP rank."""
        other = copy.copy(self)
        other.batch_size = batch_size or self.batch_size
        other.rank = self.rank if rank is None else rank
        other.world_size = self.world_size if world_size is None else world_size
        return other

    def __len__(self) -> int:
        n = self._shard_size()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _shard_size(self) -> int:
        n = len(self.labels)
        return n // self.world_size if self.world_size > 1 else n

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation and augmentation of ``epoch`` (called by ``train.fit``)."""
        self.epoch = epoch

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = self._generator()
        n = len(self.labels)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        if self.world_size > 1:  # equal shards, so every rank runs the same number of steps
            order = order[: self._shard_size() * self.world_size][self.rank::self.world_size]
        order = order.to(self.device)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            if self.drop_last and len(idx) < self.batch_size:
                break
            if self._padded is not None:
                x = crop_flip(self._padded, idx, self.images.shape[-1], g)
                yield self.transform(x), self.labels[idx]
            else:
                yield self.transform(self.images[idx]), self.labels[idx]

    def transform(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, C, H, W)`` -> normalised float (no augmentation): for evaluation batches too."""
        if self._scale is None:
            return images
        x = images.to(self.dtype) * self._scale + self._shift
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def reflect_pad(images: torch.Tensor, pad: int, chunk: int = 4096) -> torch.Tensor:
    """Reflect-pad uint8 ``(N, C, H, W)`` to ``(N, C, H + 2 pad, W + 2 pad)``, still uint8 (chunked to bound memory)."""
    # reflect padding is defined for float only; integral values survive the round trip exactly
    return torch.cat([F.pad(images[i:i + chunk].float(), (pad, pad, pad, pad), mode="reflect").to(images.dtype)
                      for i in range(0, len(images), chunk)])


def crop_flip(padded: torch.Tensor, index: torch.Tensor, size: int,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Random ``size`` x ``size`` windows of the padded images ``padded[index]``, half of them mirrored.

    padded ``(N, C, size + 2 pad, size + 2 pad)``, index ``(B,)`` -> ``(B, C, size, size)``, same dtype.
    The windows come from one advanced-indexing copy of a strided (unfold) view: no padded batch
    is materialised first.
    """
    b = len(index)
    dev = padded.device
    shifts = torch.randint(0, padded.shape[-1] - size + 1, (2, b), generator=generator).to(dev)
    flips = (torch.rand(b, generator=generator) < 0.5).to(dev)
    windows = padded.unfold(2, size, 1).unfold(3, size, 1)  # N x C x shifts x shifts x size x size (a view)
    out = windows[index, :, shifts[0], shifts[1]]  # B x C x size x size
    out[flips] = out[flips].flip(3)
    return out


def random_crop_flip(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (reflect-padded crop) and horizontal flip, per sample.

    images ``(B, C, H, W)`` -> same shape and dtype.  ``DeviceLoader`` pads the whole split once instead.
    """
    return crop_flip(reflect_pad(images, pad), torch.arange(len(images), device=images.device),
                     images.shape[-1], generator)
