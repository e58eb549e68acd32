"""Optimizer param groups, gradient clipping and LR schedules (detectron2 ``tests/test_scheduler.py``)."""
import logging
import math

import pytest
import torch
from torch import nn

from common.config import get_cfg
from common.solver import build_lr_scheduler, build_optimizer
from common.solver.lr_scheduler import WarmupCosineLR, WarmupMultiStepLR


def _lrs(cfg, n):
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=cfg.SOLVER.BASE_LR)
    sched = build_lr_scheduler(cfg, opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def _sched_cfg(**solver):
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 5.0
    cfg.SOLVER.WARMUP_FACTOR = 0.001
    cfg.SOLVER.WARMUP_ITERS = 5
    cfg.SOLVER.STEPS = (10, 15, 20)
    cfg.SOLVER.MAX_ITER = 30
    for k, v in solver.items():
        setattr(cfg.SOLVER, k, v)
    return cfg


def test_warmup_multistep_values():
    lrs = _lrs(_sched_cfg(), 30)
    assert lrs[:5] == pytest.approx([0.005, 1.004, 2.003, 3.002, 4.001])
    assert lrs[5:10] == pytest.approx([5.0] * 5)
    assert lrs[10:15] == pytest.approx([0.5] * 5)
    assert lrs[15:20] == pytest.approx([0.05] * 5)
    assert lrs[20:] == pytest.approx([0.005] * 10)


def test_legacy_warmup_multistep_class_matches():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=5.0)
    sched = WarmupMultiStepLR(opt, [10, 15, 20], gamma=0.1, warmup_factor=0.001, warmup_iters=5)
    lrs = []
    for _ in range(30):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx(_lrs(_sched_cfg(), 30))


def test_constant_warmup_and_cosine():
    lrs = _lrs(_sched_cfg(WARMUP_METHOD="constant", LR_SCHEDULER_NAME="WarmupCosineLR"), 30)
    assert lrs[:5] == pytest.approx([0.005] * 5)
    for it in range(5, 30):
        assert lrs[it] == pytest.approx(5.0 * 0.5 * (1 + math.cos(math.pi * it / 30)))
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=5.0)
    legacy = WarmupCosineLR(opt, 30, warmup_factor=0.001, warmup_iters=5, warmup_method="constant")
    for it in range(12):
        opt.step()
        legacy.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(lrs[12])


def test_steps_beyond_max_iter_ignored_with_warning(caplog):
    cfg = _sched_cfg(STEPS=(10, 40), WARMUP_ITERS=0)
    logger = logging.getLogger("common.solver.build")
    logger.addHandler(caplog.handler)
    try:
        lrs = _lrs(cfg, 30)
    finally:
        logger.removeHandler(caplog.handler)
    assert "SOLVER.STEPS" in caplog.text
    assert lrs[0] == pytest.approx(5.0) and lrs[9] == pytest.approx(5.0)
    assert lrs[10:] == pytest.approx([0.5] * 20)


def test_bad_scheduler_keys():
    with pytest.raises(ValueError, match="LR_SCHEDULER_NAME"):
        _lrs(_sched_cfg(LR_SCHEDULER_NAME="Nope"), 1)
    with pytest.raises(ValueError, match="WARMUP_METHOD"):
        _lrs(_sched_cfg(WARMUP_METHOD="exp"), 1)
    with pytest.raises(ValueError, match="SOLVER.STEPS"):
        _lrs(_sched_cfg(STEPS=(15, 10)), 1)


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
        self.head = nn.Linear(4, 2)
        self.head_norm = nn.LayerNorm(2)
        self.tied = nn.Linear(2, 2, bias=False)
        self.tied_again = self.tied  # shared module: its weight must appear once
        self.frozen = nn.Linear(2, 2)
        for p in self.frozen.parameters():
            p.requires_grad_(False)


def _group_of(opt, param):
    (group,) = [g for g in opt.param_groups if any(p is param for p in g["params"])]
    return group


def test_param_groups():
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 0.1
    cfg.SOLVER.WEIGHT_DECAY = 1e-4
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    cfg.SOLVER.BIAS_LR_FACTOR = 2.0
    cfg.SOLVER.WEIGHT_DECAY_BIAS = 0.5
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.25
    model = _Toy()
    opt = build_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.SGD)
    all_params = [p for g in opt.param_groups for p in g["params"]]
    assert len(all_params) == len({id(p) for p in all_params}) == 9  # deduped, frozen skipped
    conv, bn = model.backbone[0], model.backbone[1]
    g = _group_of(opt, conv.weight)
    assert (g["lr"], g["weight_decay"]) == pytest.approx((0.025, 1e-4))
    g = _group_of(opt, conv.bias)  # bias factor, then backbone multiplier
    assert (g["lr"], g["weight_decay"]) == pytest.approx((0.05, 0.5))
    g = _group_of(opt, bn.weight)
    assert (g["lr"], g["weight_decay"]) == pytest.approx((0.025, 0.0))
    g = _group_of(opt, model.head.weight)
    assert (g["lr"], g["weight_decay"]) == pytest.approx((0.1, 1e-4))
    g = _group_of(opt, model.head_norm.weight)
    assert (g["lr"], g["weight_decay"]) == pytest.approx((0.1, 0.0))
    g = _group_of(opt, model.head_norm.bias)  # bias rules apply to norm biases too (detectron2)
    assert (g["lr"], g["weight_decay"]) == pytest.approx((0.2, 0.5))
    assert not any(p is model.frozen.weight for p in all_params)


def test_adamw_and_unknown_optimizer():
    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BASE_LR = 2.5e-5
    opt = build_optimizer(cfg, _Toy())
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["betas"] == (0.9, 0.999)
    cfg.SOLVER.OPTIMIZER = "LAMB"
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_optimizer(cfg, _Toy())


class _TwoParams(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(2))
        self.b = nn.Parameter(torch.zeros(2))


def _step_with_grads(clip_type, grads, clip_value=1.0):
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 1.0
    cfg.SOLVER.MOMENTUM = 0.0
    cfg.SOLVER.WEIGHT_DECAY = 0.0
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    cfg.SOLVER.WEIGHT_DECAY_BIAS = 0.0
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = clip_type is not None
    if clip_type is not None:
        cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = clip_type
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = clip_value
    model = _TwoParams()
    opt = build_optimizer(cfg, model)
    model.a.grad = torch.tensor(grads[0])
    model.b.grad = torch.tensor(grads[1])
    opt.step()  # SGD with lr 1 and no decay: param = -clipped grad
    return (-model.a.detach()).tolist(), (-model.b.detach()).tolist()


def test_gradient_clipping_types():
    grads = ([3.0, 0.0], [0.0, 4.0])
    assert _step_with_grads(None, grads) == ([3.0, 0.0], [0.0, 4.0])
    a, b = _step_with_grads("value", ([3.0, -0.5], [-2.0, 0.25]))
    assert a == pytest.approx([1.0, -0.5]) and b == pytest.approx([-1.0, 0.25])
    # "norm": every parameter separately to norm 1.
    a, b = _step_with_grads("norm", grads)
    assert a == pytest.approx([1.0, 0.0], abs=1e-5) and b == pytest.approx([0.0, 1.0], abs=1e-5)
    # "full_model": global norm 5 -> scaled by 1/5 together.
    a, b = _step_with_grads("full_model", grads)
    assert a == pytest.approx([0.6, 0.0], abs=1e-5) and b == pytest.approx([0.0, 0.8], abs=1e-5)
    with pytest.raises(ValueError, match="CLIP_TYPE"):
        _step_with_grads("bogus", grads)
