"""course_utils.data: formats, splits, the device loader, and the errors a user meets."""
import gzip
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from course_utils import data
from course_utils.errors import DataNotFoundError, UnknownNameError


def test_digits_is_embedded_and_split_without_overlap():
    parts = {s: data.load("digits", s) for s in data.SPLITS}
    assert sum(len(y) for _, y in parts.values()) == 1797
    for x, y in parts.values():
        assert x.dtype == torch.uint8 and x.shape[1:] == (1, 8, 8) and y.dtype == torch.int64
        assert int(x.max()) == 255
    # val is class-balanced: every class within one sample of the others
    counts = torch.bincount(parts["val"][1], minlength=10)
    assert counts.max() - counts.min() <= 1


def test_val_split_is_deterministic_class_balanced_and_disjoint():
    labels = np.repeat(np.arange(10), 50)
    rest_a, held_a = data.balanced_split(labels, 0.1, seed=0)
    rest_b, held_b = data.balanced_split(labels, 0.1, seed=0)
    assert np.array_equal(held_a, held_b) and np.array_equal(rest_a, rest_b)
    assert np.bincount(labels[held_a]).tolist() == [5] * 10
    assert not set(rest_a) & set(held_a) and len(rest_a) + len(held_a) == 500
    assert np.all(np.diff(held_a) > 0), "canonical order is kept"


@pytest.mark.parametrize("name,train,shape,first_labels", [
    ("mnist", 60000, (1, 28, 28), [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]),
    ("fashion_mnist", 60000, (1, 28, 28), [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]),
    ("cifar10", 50000, (3, 32, 32), [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]),
])
def test_real_datasets_match_their_published_figures(name, train, shape, first_labels, require_dataset):
    require_dataset(name)
    x_tr, y_tr = data.load(name, "train")
    x_val, y_val = data.load(name, "val")
    x_te, y_te = data.load(name, "test")
    assert len(y_tr) + len(y_val) == train and len(y_te) == 10000
    assert abs(len(y_val) - train // 10) <= 5 and x_te.shape[1:] == shape  # 10% of each class, rounded
    assert y_te[:10].tolist() == first_labels
    per_class = torch.bincount(torch.cat([y_tr, y_val]))
    assert torch.equal(torch.bincount(y_val), (per_class.double() * 0.1).round().long())  # 10% of every class


def test_mnist_pixel_statistics(require_dataset):
    require_dataset("mnist")
    x, _ = data.load("mnist", "test")
    x = x.float() / 255
    assert round(x.mean().item(), 4) == 0.1325 and round(x.std().item(), 4) == 0.3105  # shared/data README


def test_torchvision_layouts_are_read(tmp_path, require_dataset):
    """Uncompressed IDX files and torchvision's cifar-10-batches-py pickles load like the originals."""
    require_dataset("mnist")
    _, src = data.locate("mnist", download=False)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in src.iterdir():
        with gzip.open(f) as i, open(raw / f.name[:-3], "wb") as o:
            shutil.copyfileobj(i, o)
    x, y = data.load("mnist", "test", root=tmp_path, download=False)
    x_ref, y_ref = data.load("mnist", "test")
    assert torch.equal(x, x_ref) and torch.equal(y, y_ref)

    import pickle
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = []
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batch = {"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), "labels": [j % 10 for j in range(20)]}
        batches.append(batch)
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    x, y = data.load("cifar10", "test", root=tmp_path, download=False)
    assert x.shape == (20, 3, 32, 32) and torch.equal(x[3].flatten(), torch.from_numpy(batches[-1]["data"][3]))
    x, y = data.load("cifar10", "train", root=tmp_path, download=False)
    assert len(y) == 90  # 100 minus the 10% val hold-out


def test_explicit_root_comes_first(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "env"))
    roots = data.search_roots(tmp_path / "explicit")
    assert roots[:2] == [tmp_path / "explicit", tmp_path / "env"] and roots[2] == data.REPO_DATA_DIR


def test_missing_data_offline_gives_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "nothing_here"))
    monkeypatch.setattr(data, "REPO_DATA_DIR", tmp_path / "repo_data")

    def offline(self):  # as torchvision does: make the folder, then fail to fetch
        Path(self.raw_folder).mkdir(parents=True, exist_ok=True)
        (Path(self.raw_folder) / "train-images-idx3-ubyte.gz").write_bytes(b"partial")
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    import torchvision.datasets
    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    with pytest.raises(DataNotFoundError) as err:
        data.load("mnist", "train", root=tmp_path / "mine")
    message = str(err.value)
    assert "'mnist' was not found" in message and "download failed (URLError" in message
    for place in ("mine", "nothing_here", "repo_data"):
        assert str(tmp_path / place) in message
    assert "MNIST/raw/" in message and "COURSE_DATA_DIR" in message and "download=True" in message
    assert list((tmp_path / "mine").iterdir()) == [], "no partial download or empty folder left behind"


def test_unknown_names_list_the_known_ones():
    with pytest.raises(UnknownNameError, match="Known datasets: cifar10, digits, fashion_mnist, mnist"):
        data.load("imagenet21k", "train")
    with pytest.raises(UnknownNameError, match="Use one of: train, val, test"):
        data.load("digits", "validation")


def test_corrupt_idx_file_is_named(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"\x00\x00\x08\x03" + (10).to_bytes(4, "big") * 3 + b"\x00" * 50)
    with pytest.raises(DataNotFoundError, match="truncated"):
        data.load("mnist", "test", root=tmp_path, download=False)


def test_image_folder_root(tmp_path):
    from PIL import Image
    for split in ("train", "val"):
        for cls, colour in (("cat", (200, 10, 10)), ("dog", (10, 10, 200))):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(10):
                Image.new("RGB", (48, 40), colour).save(tmp_path / split / cls / f"{i}.png")
    x, y = data.load(str(tmp_path), "train", image_size=16)
    assert x.shape == (18, 3, 16, 16) and y.bincount().tolist() == [9, 9]
    x, y = data.load(str(tmp_path), "test", image_size=16)
    assert x.shape == (20, 3, 16, 16) and x[0, 0, 8, 8] == 200 and x[-1, 2, 8, 8] == 200
    assert data.info(str(tmp_path)).classes == ("cat", "dog")


def test_subset_is_class_balanced_and_deterministic():
    x, y = data.load("digits", "train")
    xs, ys = data.subset(x, y, per_class=7, seed=3)
    assert ys.bincount().tolist() == [7] * 10
    assert torch.equal(xs, data.subset(x, y, per_class=7, seed=3)[0])
    assert len(data.subset(x, y, total=50)[1]) == 50


def test_device_loader_normalises_shuffles_by_seed_and_covers_every_sample():
    x, y = data.load("digits", "train")
    loader = data.DeviceLoader.for_dataset("digits", x, y, train=True, batch_size=100, seed=5)
    batches = list(loader)
    assert len(batches) == len(loader) == 13 and batches[0][0].dtype == torch.float32
    seen = torch.cat([b[1] for b in batches])
    assert torch.equal(seen.sort().values, y.sort().values)
    again = [b[1] for b in data.DeviceLoader.for_dataset("digits", x, y, train=True, batch_size=100, seed=5)]
    assert torch.equal(torch.cat(again), seen), "same seed and epoch, same order"
    loader.set_epoch(1)
    assert not torch.equal(torch.cat([b[1] for b in loader]), seen), "a new epoch reshuffles"
    # normalisation: (x/255 - mean) / std
    plain = data.DeviceLoader.for_dataset("digits", x, y, train=False, batch_size=2000)
    xb, yb = next(iter(plain))
    mean, std = data.info("digits").mean[0], data.info("digits").std[0]
    assert torch.allclose(xb, (x.float() / 255 - mean) / std, atol=1e-5) and torch.equal(yb, y)


def test_random_crop_flip_is_a_translation_and_mirror():
    img = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(64, 1, 1, 1)
    out = data.random_crop_flip(img, pad=1, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == img.shape
    centre_values = {tuple(o[0, 1:3, 1:3].flatten().tolist()) for o in out}
    # every output is the original shifted by at most one pixel, possibly mirrored: its centre is a 2x2
    # window of the reflect-padded original (or its mirror image)
    padded = torch.nn.functional.pad(img[:1].float(), (1, 1, 1, 1), mode="reflect")[0, 0]
    windows = {tuple(padded[r:r + 2, c:c + 2].flatten().int().tolist()) for r in range(1, 4) for c in range(1, 4)}
    mirrored = {tuple(torch.tensor(w).view(2, 2).flip(1).flatten().tolist()) for w in windows}
    assert centre_values <= windows | mirrored and len(centre_values) > 3


def test_ddp_shards_are_disjoint_and_equal_sized():
    x, y = torch.zeros(103, 1, 2, 2, dtype=torch.uint8), torch.arange(103)
    loader = data.DeviceLoader(x, y, batch_size=10, shuffle=True, seed=1)
    shards = [torch.cat([b[1] for b in loader.view(rank=r, world_size=2)]) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 51 and not set(shards[0].tolist()) & set(shards[1].tolist())


def test_loader_benchmark_runs_on_the_mnist_layout_with_the_embedded_digits():
    from course_utils import loader_benchmark

    table = loader_benchmark.run("digits", max_images=300, workers=(0,), repeats=1)
    assert table["loader"].tolist() == ["torchvision Dataset + DataLoader", "course_utils DeviceLoader"]
    assert table["images"].tolist() == [300, 300]  # both loaders saw the same epoch
    assert table.loc[0, "speedup"] == 1.0 and (table["images_per_s"] > 0).all()
