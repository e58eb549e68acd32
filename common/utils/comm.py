"""Distributed helpers with detectron2's names (``detectron2/utils/comm.py``).

All functions work without an initialised process group (single process), so code can call
them unconditionally.
"""
from __future__ import annotations

import functools
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist

_LOCAL_PROCESS_GROUP: Optional[dist.ProcessGroup] = None
"""Process group of the processes on this machine; set by ``common.engine.launch``."""


def is_dist_avail_and_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist_avail_and_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist_avail_and_initialized() else 0


def get_local_rank() -> int:
    """Rank of this process among the processes of its machine (0 without distribution)."""
    if not is_dist_avail_and_initialized() or _LOCAL_PROCESS_GROUP is None:
        return 0
    return dist.get_rank(group=_LOCAL_PROCESS_GROUP)


def get_local_size() -> int:
    if not is_dist_avail_and_initialized() or _LOCAL_PROCESS_GROUP is None:
        return 1
    return dist.get_world_size(group=_LOCAL_PROCESS_GROUP)


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all processes; a no-op for a single process."""
    if get_world_size() > 1:
        if dist.get_backend() == dist.Backend.NCCL and torch.cuda.is_available():
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


@functools.lru_cache()
def _get_global_gloo_group():
    # Python objects are gathered over gloo, which works for CPU tensors whatever the
    # main backend is (NCCL only moves CUDA tensors).
    if dist.get_backend() == "nccl":
        return dist.new_group(backend="gloo")
    return dist.group.WORLD


def all_gather(data: Any, group=None) -> List[Any]:
    """Gather an arbitrary picklable object from every rank.

    Returns:
        list with one entry per rank, in rank order (``[data]`` without distribution).
    """
    if get_world_size() == 1:
        return [data]
    if group is None:
        group = _get_global_gloo_group()
    world_size = dist.get_world_size(group)
    if world_size == 1:
        return [data]
    output: List[Any] = [None for _ in range(world_size)]
    dist.all_gather_object(output, data, group=group)
    return output


def gather(data: Any, dst: int = 0, group=None) -> List[Any]:
    """Gather an arbitrary picklable object on rank ``dst``.

    Returns:
        on ``dst`` a list with one entry per rank; on other ranks an empty list.
    """
    if get_world_size() == 1:
        return [data]
    if group is None:
        group = _get_global_gloo_group()
    world_size = dist.get_world_size(group=group)
    if world_size == 1:
        return [data]
    rank = dist.get_rank(group=group)
    if rank == dst:
        output: List[Any] = [None for _ in range(world_size)]
        dist.gather_object(data, output, dst=dst, group=group)
        return output
    dist.gather_object(data, None, dst=dst, group=group)
    return []


def shared_random_seed() -> int:
    """A random int in [0, 2**31) that is the same on all ranks (drawn on each, rank 0's kept)."""
    ints = np.random.randint(2**31)
    return all_gather(ints)[0]


def reduce_dict(input_dict: Dict[str, torch.Tensor], average: bool = True) -> Dict[str, torch.Tensor]:
    """Reduce scalar tensors in ``input_dict`` onto rank 0 (averaged when ``average``)."""
    world_size = get_world_size()
    if world_size < 2:
        return input_dict
    with torch.no_grad():
        names = sorted(input_dict.keys())
        values = torch.stack([input_dict[k] for k in names], dim=0)
        dist.reduce(values, dst=0)
        if dist.get_rank() == 0 and average:
            values /= world_size
        return {k: v for k, v in zip(names, values)}


def all_reduce_sum(value: float, device: torch.device | str = "cpu") -> float:
    """Sum a Python number over all ranks (used to normalise losses by the global GT count)."""
    if get_world_size() == 1:
        return float(value)
    t = torch.as_tensor(float(value), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())
