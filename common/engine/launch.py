"""Multi-process launcher (detectron2 v0.6 ``detectron2/engine/launch.py``).

``launch(main_func, num_gpus_per_machine, ...)`` spawns one process per device with
``torch.multiprocessing`` and initialises ``torch.distributed``: backend NCCL when CUDA is available
and used, otherwise Gloo, so ``--num-gpus 2 MODEL.DEVICE cpu`` runs two CPU processes.

Every argument sent to the children (``main_func``, ``args``) must be picklable: module-level
functions and classes only. Datasets must be registered in each child (the builtin ones are,
when ``common.data`` is imported).
"""
from __future__ import annotations

import logging
import socket
from datetime import timedelta
from typing import Any, Callable, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from common.utils import comm

__all__ = ["DEFAULT_TIMEOUT", "launch"]

DEFAULT_TIMEOUT = timedelta(minutes=30)

logger = logging.getLogger(__name__)


def _find_free_port() -> int:
    # Bind to port 0 so the OS picks a free port. It is released before the workers bind it, so
    # a race is possible but unlikely on one machine.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def _opts_request_cpu(args: Sequence[Any]) -> bool:
    """True if an argparse namespace among ``args`` has ``MODEL.DEVICE cpu`` in its ``opts``."""
    for a in args:
        opts = getattr(a, "opts", None)
        if not opts:
            continue
        opts = list(opts)
        for key, value in zip(opts[0::2], opts[1::2]):
            if key == "MODEL.DEVICE" and str(value).lower().startswith("cpu"):
                return True
    return False


def launch(
    main_func: Callable[..., Any],
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: Optional[str] = None,
    args: Tuple[Any, ...] = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
    *,
    use_cuda: Optional[bool] = None,
) -> None:
    """Run ``main_func(*args)`` in ``num_gpus_per_machine`` processes on each of ``num_machines``.

    Args:
        main_func: a module-level (picklable) function.
        num_gpus_per_machine: processes per machine (one per GPU, or per CPU worker).
        num_machines, machine_rank: multi-machine set-up (ranks are machine_rank * n + local rank).
        dist_url: ``tcp://host:port`` of machine 0, or ``"auto"`` (single machine: a free local port).
        args: arguments of ``main_func`` (picklable).
        timeout: timeout of the process-group operations.
        use_cuda: force the backend (True: NCCL + one GPU per process; False: Gloo on CPU);
            default: CUDA when available unless ``MODEL.DEVICE cpu`` is among ``args[i].opts``.

    Raises:
        ValueError: ``dist_url="auto"`` with several machines, or more processes than GPUs.
    """
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        main_func(*args)
        return
    if use_cuda is None:
        use_cuda = torch.cuda.is_available() and not _opts_request_cpu(args)
    if use_cuda and num_gpus_per_machine > torch.cuda.device_count():
        raise ValueError(
            "--num-gpus {} but only {} CUDA device(s) are visible; add MODEL.DEVICE cpu to run CPU "
            "processes instead.".format(num_gpus_per_machine, torch.cuda.device_count())
        )
    if dist_url is None or dist_url == "auto":
        if num_machines != 1:
            raise ValueError("dist_url=auto is not supported in multi-machine jobs; pass tcp://host:port.")
        dist_url = "tcp://127.0.0.1:{}".format(_find_free_port())
    if num_machines > 1 and dist_url.startswith("file://"):
        logger.warning("file:// is not a reliable init_method in multi-machine jobs. Prefer tcp://")

    mp.start_processes(
        _distributed_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout, use_cuda),
        daemon=False,
        start_method="spawn",
    )


def _distributed_worker(
    local_rank: int,
    main_func: Callable[..., Any],
    world_size: int,
    num_gpus_per_machine: int,
    machine_rank: int,
    dist_url: str,
    args: Tuple[Any, ...],
    timeout: timedelta,
    use_cuda: bool,
) -> None:
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    if use_cuda:
        # Select the device before creating the NCCL group so its communicator binds to it.
        torch.cuda.set_device(local_rank)
    backend = "nccl" if use_cuda else "gloo"
    try:
        dist.init_process_group(
            backend=backend,
            init_method=dist_url,
            world_size=world_size,
            rank=global_rank,
            timeout=timeout,
        )
    except Exception as e:
        logger.error("Process group URL: {}".format(dist_url))
        raise e

    # The group of the processes on this machine (used by comm.get_local_rank/size).
    assert comm._LOCAL_PROCESS_GROUP is None
    num_machines = world_size // num_gpus_per_machine
    for i in range(num_machines):
        ranks_on_i = list(range(i * num_gpus_per_machine, (i + 1) * num_gpus_per_machine))
        pg = dist.new_group(ranks_on_i)
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = pg

    comm.synchronize()
    try:
        main_func(*args)
    finally:
        comm._LOCAL_PROCESS_GROUP = None
        dist.destroy_process_group()
