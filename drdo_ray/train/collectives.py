"""The loop's two collectives across training workers (no-ops in a single process)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from .engine import World


def _comm_device(world: World) -> torch.device | str:
    """Where a collective's tensor must live: the GPU under NCCL, the CPU under gloo."""
    return world.device if dist.get_backend() == "nccl" else "cpu"


def all_true(flag: bool, world: World) -> bool:
    """Whether ``flag`` holds on every worker (each must take the same branch)."""
    if not world.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_comm_device(world))
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def mean_across(metrics: dict[str, float], world: World) -> dict[str, float]:
    """Each metric averaged over the workers (every worker holds the same keys)."""
    if not world.distributed or not metrics:
        return metrics
    keys = sorted(metrics)
    t = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=_comm_device(world))
    dist.all_reduce(t)
    return dict(zip(keys, (t / world.size).tolist()))
