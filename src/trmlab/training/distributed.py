"""Hand-rolled data parallelism as in the official trainer (trm-reference §6.6), without DDP.

Every rank builds the identical global batch and takes its slice (the sampler does that); gradients are
summed with one all-reduce per parameter (the loss is already divided by the *global* batch size, so the
sum is the global mean); parameters and buffers are broadcast from rank 0 at the start; only rank 0 logs and
saves.
torchrun is detected from its environment variables; NCCL is used on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from trmlab.errors import ConfigError, DeviceError


@dataclass
class DistContext:
    """Where this process sits: ``rank`` of ``world_size``, its ``device``, whether we opened the group."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(setting: str, local_rank: int = 0) -> torch.device:
    """``auto`` → ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; others as given."""
    if setting == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(setting)
    except RuntimeError:
        raise ConfigError(f"device={setting!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device={setting} but CUDA is not available here; use device=cpu or auto")
        if device.index is None:
            device = torch.device(f"cuda:{local_rank}")
    return device


def setup_distributed(device_setting: str = "auto") -> DistContext:
    """Join the torchrun process group when launched under torchrun (``WORLD_SIZE`` > 1), else run alone.

    A process group that already exists (tests spawn their own) is reused and left open.
    """
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        return DistContext(rank, world, local_rank, _bind(resolve_device(device_setting, local_rank)))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(0, 1, 0, _bind(resolve_device(device_setting, 0)))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = _bind(resolve_device(device_setting, local_rank))
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank, world, local_rank, device, owns_group=True)


def _bind(device: torch.device) -> torch.device:
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def teardown(ctx: DistContext) -> None:
    """Close the process group if :func:`setup_distributed` opened it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_module(module: torch.nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's parameters and buffers (the puzzle table included) to every rank."""
    if not ctx.distributed:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def broadcast_from_main(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Overwrite ``tensor`` with rank 0's value on every rank (a decision all ranks must share)."""
    if ctx.distributed:
        dist.broadcast(tensor, src=0)
    return tensor


def all_reduce_grads(params: list[torch.Tensor], ctx: DistContext) -> None:
    """Sum every gradient over ranks (one all-reduce per parameter, as the official trainer)."""
    if not ctx.distributed:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum a tensor over ranks in place (metrics) and return it."""
    if ctx.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_objects(obj: object, ctx: DistContext) -> list[object]:
    """Every rank's ``obj`` (CPU tensors, dicts, lists) in rank order, on every rank."""
    if not ctx.distributed:
        return [obj]
    gathered: list[object] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()
