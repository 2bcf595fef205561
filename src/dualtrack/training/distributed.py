"""PyTorch DDP plumbing: process group from ``torchrun``'s environment, rank-0 helpers.

``dualtrack train`` runs unchanged under ``torchrun --nproc_per_node=N`` (and multi-node
``torchrun --nnodes ... --rdzv-endpoint ...``): torchrun sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, and :func:`init_distributed` joins the group
through the ``env://`` rendezvous with NCCL on CUDA and gloo on CPU. Without these variables
training is single-process and every helper here is a no-op.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from dualtrack.utils import resolve_device

__all__ = [
    "DistInfo",
    "init_distributed",
    "barrier",
    "all_reduce_mean",
    "broadcast_object",
    "sync_buffers",
    "cleanup",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job.

    Attributes:
        rank: global rank (0 = the process that writes files and logs).
        world_size: number of processes.
        local_rank: rank on this node (selects the GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), resolve_device(device_name)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if rank != 0:  # rank 0 logs for the job; the others only report problems
        logging.getLogger("dualtrack").setLevel(logging.WARNING)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://")
        log.info("DDP: rank %d/%d (local %d) on %s, backend %s", rank, world, local_rank, device, backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank), device


def barrier() -> None:
    """Wait for every process (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Element-wise mean of ``values`` over processes (identity without a process group)."""
    if dist.is_available() and dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= dist.get_world_size()
    return values


def broadcast_object(obj: object) -> object:
    """Rank 0's ``obj`` on every process (identity without a process group)."""
    if dist.is_available() and dist.is_initialized():
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return obj


def sync_buffers(module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (e.g. BatchNorm running statistics, which DDP keeps per process
    between forwards) to every process (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        for buf in module.buffers():
            dist.broadcast(buf, src=0)


def cleanup() -> None:
    """Leave the process group if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
