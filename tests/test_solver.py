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


# --------------------------------------------------------------------------- authors' recipes
def test_weight_decay_bias_defaults_to_none_and_follows_weight_decay():
    cfg = get_cfg()
    assert cfg.SOLVER.WEIGHT_DECAY_BIAS is None  # detectron2 v0.6
    cfg.SOLVER.WEIGHT_DECAY = 3e-4
    model = _Toy()
    opt = build_optimizer(cfg, model)
    assert _group_of(opt, model.head.bias)["weight_decay"] == pytest.approx(3e-4)
    assert _group_of(opt, model.head_norm.bias)["weight_decay"] == 0.0  # a norm's bias: WEIGHT_DECAY_NORM
    cfg.merge_from_list(["SOLVER.WEIGHT_DECAY_BIAS", "0.0"])  # a YAML/CLI number still overrides None
    assert _group_of(build_optimizer(cfg, model), model.head.bias)["weight_decay"] == 0.0


def test_uniform_decay_optimizer_toy_and_full_model_clipping():
    from common.solver import build_optimizer_uniform_decay

    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.BASE_LR = 0.1
    cfg.SOLVER.WEIGHT_DECAY = 1e-4
    cfg.SOLVER.BIAS_LR_FACTOR = 2.0  # ignored by the authors' recipe
    cfg.SOLVER.WEIGHT_DECAY_BIAS = 0.5  # ignored
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.25
    model = _Toy()
    opt = build_optimizer_uniform_decay(cfg, model)
    assert type(opt) is torch.optim.SGD and opt.defaults["momentum"] == 0.9
    conv, bn = model.backbone[0], model.backbone[1]
    for p, lr in [(conv.weight, 0.025), (conv.bias, 0.025), (bn.weight, 0.025), (model.head.weight, 0.1),
                  (model.head_norm.weight, 0.1), (model.head_norm.bias, 0.1)]:
        g = _group_of(opt, p)
        assert (g["lr"], g["weight_decay"]) == pytest.approx((lr, 1e-4))
    assert not any(p is model.frozen.weight for g in opt.param_groups for p in g["params"])

    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    m = _TwoParams()
    opt = build_optimizer_uniform_decay(cfg, m)
    assert isinstance(opt, torch.optim.AdamW)
    m.a.grad, m.b.grad = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0])
    opt.step()
    # one clip_grad_norm_ over the model: global norm 5 -> 1, before AdamW's step
    torch.testing.assert_close(m.a.grad, torch.tensor([0.6, 0.0]))
    torch.testing.assert_close(m.b.grad, torch.tensor([0.0, 0.8]))


def _project_trainer(project: str):
    """The ``Trainer`` class of ``projects/<project>/train_net.py`` (the script the users run)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "projects" / project / "train_net.py"
    spec = importlib.util.spec_from_file_location(f"_train_net_{project}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Trainer


def _project_cfg(project: str, config: str, *opts):
    from importlib import import_module
    from pathlib import Path

    adder = {"SparseRCNN": ("projects.SparseRCNN.sparsercnn", "add_sparsercnn_config"),
             "OneNet": ("projects.OneNet.onenet", "add_onenet_config"),
             "CenterNet": ("projects.CenterNet.centernet", "add_centernet_config")}[project]
    cfg = get_cfg()
    getattr(import_module(adder[0]), adder[1])(cfg)
    cfg.merge_from_file(str(Path(__file__).resolve().parents[1] / "projects" / project / "configs" / config))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *opts])
    return cfg


def _lr_wd(opt, model):
    out = {}
    for name, p in model.named_parameters():
        groups = [g for g in opt.param_groups if any(q is p for q in g["params"])]
        assert len(groups) <= 1, name
        out[name] = (groups[0]["lr"], groups[0]["weight_decay"]) if groups else None
    return out


# (config, extra opts, {parameter name: (lr, weight decay) the authors' build_optimizer gives, or
# None = frozen, not optimised}); kinds: conv weight, norm weight/bias, bias, embedding, backbone/head.
_AUTHORS_RECIPES = {
    # PeizeSun/SparseR-CNN train_net.py: AdamW(BASE_LR 2.5e-5), WEIGHT_DECAY 1e-4 on every
    # parameter, lr x BACKBONE_MULTIPLIER on "backbone" names (0.1 here to tell them apart),
    # full-model clip_grad_norm_(1.0). FrozenBN, FREEZE_AT 2: stem and res2 are not optimised.
    "SparseRCNN": ("sparsercnn.res50.100pro.3x.yaml", ["SOLVER.BACKBONE_MULTIPLIER", "0.1"], {
        "backbone.bottom_up.res2.0.conv3.weight": None,
        "backbone.bottom_up.res3.0.conv1.weight": (2.5e-6, 1e-4),
        "backbone.fpn_lateral2.bias": (2.5e-6, 1e-4),
        "head.head_series.0.norm1.weight": (2.5e-5, 1e-4),  # LayerNorm (detectron2 groups: 0)
        "head.head_series.0.inst_interact.norm3.bias": (2.5e-5, 1e-4),
        "head.head_series.1.self_attn.in_proj_weight": (2.5e-5, 1e-4),
        "head.head_series.5.class_logits.bias": (2.5e-5, 1e-4),
        "init_proposal_features.weight": (2.5e-5, 1e-4),  # nn.Embedding
        "init_proposal_boxes.weight": (2.5e-5, 1e-4),
    }),
    # PeizeSun/OneNet train_net.py (same builder): AdamW(5e-5), decay 1e-4 everywhere incl. the
    # trainable BN of the backbone (NORM BN, FREEZE_AT 0), no clipping.
    "OneNet": ("onenet.res50.dcn.yaml", [], {
        "backbone.stem.conv1.weight": (5e-5, 1e-4),
        "backbone.stem.conv1.norm.weight": (5e-5, 1e-4),  # BatchNorm (detectron2 groups: 0)
        "backbone.res5.0.shortcut.norm.bias": (5e-5, 1e-4),
        "head.cls_score.weight": (5e-5, 1e-4),
        "head.cls_score.bias": (5e-5, 1e-4),
    }),
    # xingyizhou/CenterNet src/main.py: torch.optim.Adam(model.parameters(), lr), no decay;
    # ctdet_coco_resdcn18.sh: lr 5e-4, batch 114.
    "CenterNet": ("ctdet_coco_resdcn18.yaml", [], {
        "backbone.body.stem.conv1.weight": (5e-4, 0.0),
        "backbone.body.stem.conv1.norm.weight": (5e-4, 0.0),
        "backbone.deconv.0.dcn.dcn.weight": (5e-4, 0.0),
        "heads.0.reg.2.bias": (5e-4, 0.0),
    }),
}


@pytest.mark.parametrize("project", sorted(_AUTHORS_RECIPES))
def test_project_optimizer_matches_the_authors_recipe(project):
    from common.modeling import build_model

    config, opts, expected = _AUTHORS_RECIPES[project]
    cfg = _project_cfg(project, config, *opts)
    model = build_model(cfg)
    opt = _project_trainer(project).build_optimizer(cfg, model)
    got = _lr_wd(opt, model)
    for name, value in expected.items():
        assert got[name] == (pytest.approx(value) if value else None), (project, name, got[name])
    # Every optimised parameter follows the single rule of the authors' code.
    mult = float(cfg.SOLVER.BACKBONE_MULTIPLIER)
    for name, value in got.items():
        if value is not None:
            lr = cfg.SOLVER.BASE_LR * (mult if "backbone" in name else 1.0)
            assert value == pytest.approx((lr, cfg.SOLVER.WEIGHT_DECAY)), (project, name, value)
    if project == "CenterNet":
        assert type(opt) is torch.optim.Adam
    else:
        assert isinstance(opt, torch.optim.AdamW)
        clipped = project == "SparseRCNN"  # full_model clipping in Base-SparseRCNN; off for OneNet R-50
        assert (type(opt) is not torch.optim.AdamW) == clipped
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["eps"] == 1e-8
    assert opt.defaults["amsgrad"] is False
