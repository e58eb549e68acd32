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


def test_backend_follows_the_device_in_the_yaml(monkeypatch, repo_root):
    # A GPU machine: the bccd configs say MODEL.DEVICE "cpu" in the YAML only, so --num-gpus 2
    # must start 2 CPU (gloo) processes, not NCCL with a CPU model.
    from common.engine import train_net
    from projects.OneNet.onenet import add_onenet_config

    seen = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(train_net, "launch", lambda *a, **k: seen.update(k))
    cfg_file = str(repo_root / "projects" / "OneNet" / "configs" / "onenet.bccd.res18.yaml")
    train_net.run([add_onenet_config], argv=["--config-file", cfg_file, "--num-gpus", "2"])
    assert seen["use_cuda"] is False
    train_net.run([add_onenet_config], argv=["--config-file", cfg_file, "--num-gpus", "2", "MODEL.DEVICE", "cuda"])
    assert seen["use_cuda"] is True


def _resume_where_only_rank0_sees_the_file(root):
    from torch import nn

    from common.checkpoint import DetectionCheckpointer
    from common.engine.defaults import _shared_resume_file
    from common.utils import comm

    torch.set_num_threads(1)
    rank = comm.get_rank()
    model = nn.Linear(2, 2)
    # Each rank runs in its own directory (another machine), with the same relative OUTPUT_DIR;
    # only rank 0's holds checkpoints.
    os.chdir(os.path.join(root, "rank{}".format(rank)))
    ckpt = DetectionCheckpointer(model, "output", save_to_disk=True)
    if rank == 0:
        with torch.no_grad():
            model.weight.fill_(3.0)
        ckpt.save("model_0000009", iteration=9)
        with torch.no_grad():
            model.weight.zero_()
    comm.synchronize()
    path = _shared_resume_file(ckpt, resume=True)
    assert (path == "output/model_0000009.pth") == (rank == 0), path  # rank 1 got a local copy
    extra = ckpt.load(path)
    with open(os.path.join(root, "result{}.txt".format(rank)), "w") as f:
        f.write("{} {}".format(extra["iteration"], model.weight.sum().item()))


def test_resume_when_only_the_main_process_sees_the_checkpoint(tmp_path):
    for r in range(2):
        (tmp_path / "rank{}".format(r)).mkdir()
    launch(_resume_where_only_rank0_sees_the_file, 2, dist_url="auto", args=(str(tmp_path),), use_cuda=False)
    for r in range(2):
        assert (tmp_path / "result{}.txt".format(r)).read_text() == "9 12.0"
