"""Data-parallel training under ``torchrun``: joining the process group, the DDP wrapper, identical buffers.

Outside ``torchrun`` (one process) every function here is a no-op or returns ``(0, 1)``; ``train.fit`` and the
SpeedyCNet cascade call them unconditionally.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn as nn


def init_distributed() -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes; return ``(rank, world_size)``.

    Outside torchrun this returns ``(0, 1)`` and does nothing.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        use_cuda = torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DistributedDataParallel wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def is_distributed() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel when there is more than one process, else as it is."""
    if not is_distributed():
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def sync_buffers(model: nn.Module) -> None:
    """Give every rank bit-identical buffers (BatchNorm running statistics); a no-op in one process.

    DistributedDataParallel broadcasts rank 0's buffers at the *start* of each forward, so after the
    last step every rank holds running statistics updated by its own shard: without this, each rank
    would evaluate with a slightly different model and rank 0's checkpoint would hold rank 0's only.

    * ``running_*`` statistics of modules in training mode are averaged (all_reduce, then / world),
      as timm's ``distribute_bn(reduce=True)`` does: the average uses every rank's data where a
      broadcast of rank 0's would throw the other shards' statistics away, and all_reduce hands
      every rank the same result, so the ranks end bit-identical.
    * every other buffer is broadcast from rank 0: ``num_batches_tracked`` (every rank took the same
      number of steps, so this only makes it a guarantee), constants, and the statistics of frozen
      modules in eval mode (identical already: DDP broadcast them and nothing updated them). A
      broadcast keeps them exact, where averaging equal values could still round them by an ulp
      when the world size is not a power of two.
    Every rank must call it, with the same modules in the same train/eval modes (as ``fit`` does).
    """
    if not is_distributed():
        return
    world = dist.get_world_size()
    for module in unwrap(model).modules():
        for name, buf in module.named_buffers(recurse=False):
            if module.training and buf.is_floating_point() and name.startswith("running_"):
                dist.all_reduce(buf)
                buf.div_(world)
            else:
                dist.broadcast(buf, src=0)


def barrier() -> None:
    if is_distributed():
        dist.barrier()
