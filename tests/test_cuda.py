"""The CUDA path, checked on a GPU (`make gpu-check`); every test here skips on a machine without CUDA.

What a CPU run of the suite cannot see: autocast's dtype on the device, channels_last through the
loader and the training loop, data resident on the GPU, the real early exit (compaction with boolean
masks on the device) giving exactly the sweep's answers, and timings that wait for queued kernels.
"""
import time

import pytest
import torch
import torch.nn as nn

from course_utils import data, device, exits, train

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (make gpu-check on a GPU)")]
CUDA = torch.device("cuda")


def small_cnn(channels: int = 1) -> nn.Module:
    return nn.Sequential(nn.Conv2d(channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def test_autocast_runs_matmuls_in_reduced_precision():
    x, w = torch.randn(64, 64, device=CUDA), torch.randn(64, 64, device=CUDA)
    with device.autocast(CUDA):
        y = x @ w
    assert y.dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    with device.autocast(CUDA, enabled=False):
        assert (x @ w).dtype == torch.float32


def test_device_loader_keeps_data_on_the_gpu_in_channels_last():
    x, y = data.load("digits", "train", image_size=16)
    loader = data.DeviceLoader.for_dataset("digits", x, y, train=True, batch_size=64, device=CUDA)
    assert loader.images.device.type == "cuda" and loader.images.dtype == torch.uint8
    xb, yb = next(iter(loader))
    assert xb.device.type == "cuda" and yb.device.type == "cuda"
    assert xb.is_contiguous(memory_format=torch.channels_last)


def test_fit_trains_on_the_gpu_with_autocast_and_channels_last():
    x, y = data.load("digits", "train", image_size=16)
    xv, yv = data.load("digits", "val", image_size=16)
    tr = data.DeviceLoader.for_dataset("digits", x, y, train=True, batch_size=64, device=CUDA)
    va = data.DeviceLoader.for_dataset("digits", xv, yv, train=False, batch_size=256, device=CUDA)
    torch.manual_seed(0)
    model = small_cnn()
    history = train.fit(model, tr, va, train.TrainConfig(epochs=4, lr=0.2, batch_size=64, progress=False))
    assert next(model.parameters()).device.type == "cuda"
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert history.best_val_accuracy > 0.8 and "cuda" in history.device


def test_infer_on_the_gpu_equals_sweep_over_its_cached_logits():
    torch.manual_seed(0)
    stages = [nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU()),
              nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()),
              nn.Sequential(nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU())]
    heads = [nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10)) for c in (8, 16, 16)]
    net = exits.ExitNetwork(stages, heads).to(CUDA).eval()
    x, y = data.load("digits", "test", image_size=16)
    loader = data.DeviceLoader.for_dataset("digits", x, y, train=False, batch_size=128, device=CUDA)
    scores = exits.collect_logits(net, loader)
    costs = net.measure_costs((1, 1, 16, 16))
    for tau in (0.15, 0.3, 0.6):
        policy = exits.make_policy("max_softmax", tau)
        swept = exits.sweep(scores, costs, policy)
        predictions, exit_index = [], []
        with torch.inference_mode():
            for xb, _ in loader:
                result = net.infer(xb, policy)
                predictions.append(result.predictions)
                exit_index.append(result.exit_index)
        assert torch.equal(torch.cat(exit_index).cpu(), swept.exit_index.cpu())
        assert torch.equal(torch.cat(predictions).cpu(), swept.predictions.cpu())


def test_stopwatch_waits_for_queued_kernels():
    a = torch.randn(4096, 4096, device=CUDA)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(20):
        a = a @ a / 64
    unsynchronised = time.perf_counter() - start  # the launches return before the kernels finish
    torch.cuda.synchronize()
    with device.stopwatch(CUDA) as watch:
        for _ in range(20):
            a = a @ a / 64
    assert watch.seconds > unsynchronised
