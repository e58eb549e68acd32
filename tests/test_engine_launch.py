"""``launch`` with two Gloo CPU processes (spawned; the worker must be a module-level function)."""
import argparse
import os

import torch
import torch.distributed as dist

from common.engine import launch
from common.engine.launch import _opts_request_cpu


def _all_reduce_worker(out_dir):
    from common.utils import comm

    torch.set_num_threads(1)
    rank = comm.get_rank()
    t = torch.tensor([float(rank + 1)])
    dist.all_reduce(t)
    gathered = comm.all_gather(rank * 10)
    with open(os.path.join(out_dir, "rank{}.txt".format(rank)), "w") as f:
        f.write("{} {} {} {} {}".format(
            t.item(), comm.get_world_size(), comm.get_local_rank(), dist.get_backend(), gathered
        ))


def test_launch_two_cpu_processes(tmp_path):
    launch(_all_reduce_worker, 2, dist_url="auto", args=(str(tmp_path),), use_cuda=False)
    for rank in range(2):
        total, world, local_rank, backend, gathered = (tmp_path / "rank{}.txt".format(rank)).read_text().split(" ", 4)
        assert float(total) == 3.0  # 1 + 2
        assert int(world) == 2 and int(local_rank) == rank and backend == "gloo"
        assert gathered == "[0, 10]"


def test_single_process_runs_inline(tmp_path):
    calls = []
    launch(lambda x: calls.append(x), 1, args=(5,))
    assert calls == [5]


def test_cpu_detected_from_opts():
    ns = argparse.Namespace(opts=["SOLVER.BASE_LR", "0.1", "MODEL.DEVICE", "cpu"])
    assert _opts_request_cpu((ns, (), object))
    assert not _opts_request_cpu((argparse.Namespace(opts=["MODEL.DEVICE", "cuda"]),))
    assert not _opts_request_cpu((argparse.Namespace(opts=None),))
