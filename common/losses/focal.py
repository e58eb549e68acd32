"""Sigmoid focal loss and the focal classification cost used by set-prediction matchers.

Sources: Lin et al., "Focal Loss for Dense Object Detection" (ICCV 2017), Eq. 5;
the matching cost is the one of Deformable-DETR / Sparse R-CNN ``loss.py`` (``HungarianMatcher``)
and OneNet ``loss_predefine.py`` (``MinCostMatcher``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss as _tv_sigmoid_focal_loss

__all__ = ["sigmoid_focal_loss", "focal_classification_cost"]

_REDUCTIONS = ("none", "mean", "sum")


def sigmoid_focal_loss(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> torch.Tensor:
    """Binary focal loss on logits, ``FL = -alpha_t (1 - p_t)^gamma log(p_t)`` element-wise.

    Thin wrapper on :func:`torchvision.ops.sigmoid_focal_loss` (same maths as fvcore's
    ``sigmoid_focal_loss_jit`` the authors call) that validates its arguments.

    Args:
        inputs: logits of any shape, e.g. ``(N, K)`` (one column per foreground class, no
            background column).
        targets: same shape as ``inputs``; binary {0, 1} (soft targets in [0, 1] are accepted
            and enter the BCE term as is).
        alpha: weight of the positive class in [0, 1]; ``alpha < 0`` disables weighting.
        gamma: focusing exponent (>= 0); 0 gives (alpha-weighted) BCE.
        reduction: ``"none"`` (same shape as ``inputs``), ``"mean"`` or ``"sum"`` (scalars).
            Detectors usually take ``"sum"`` and divide by the number of GT boxes.

    Returns:
        float32 loss (computed in float32 whatever the dtype of ``inputs``).

    Raises:
        ValueError: shape mismatch or unknown ``reduction``.
    """
    if inputs.shape != targets.shape:
        raise ValueError(
            f"sigmoid_focal_loss: inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} differ in shape"
        )
    if reduction not in _REDUCTIONS:
        raise ValueError(f"sigmoid_focal_loss: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    # float32 under autocast: (1 - p_t)^gamma and the log-terms lose most digits in float16/bfloat16.
    inputs = inputs.float()
    return _tv_sigmoid_focal_loss(inputs, targets.to(inputs.dtype), alpha=alpha, gamma=gamma, reduction=reduction)


def focal_classification_cost(
    logits: torch.Tensor,
    gt_classes: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Focal matching cost between every prediction and every GT class, in float32.

    With ``p = sigmoid(logits)``::

        pos = alpha * (1 - p)^gamma * (-log(p))
        neg = (1 - alpha) * p^gamma * (-log(1 - p))
        cost[i, j] = pos[i, gt_classes[j]] - neg[i, gt_classes[j]]

    i.e. the focal loss of predicting class ``c_j`` as positive minus that of predicting it as
    negative (lower = better match).

    The logs are computed as ``log(p) = logsigmoid(x)`` and ``log(1 - p) = logsigmoid(-x)`` in
    float32 whatever the dtype of ``logits`` (autocast gives float16/bfloat16). Deviation from the
    authors' ``-(p + 1e-8).log()``: that eps is 0 in float16 (a confident logit of 20 gives
    ``-inf``) and caps ``-log`` at 18.4 in float32; the logsigmoid form is exact and finite for all
    finite logits. For ``|x| < 15`` both agree to ~1e-6 relative.

    Args:
        logits: ``(N, K)`` classification logits of N predictions over K foreground classes.
        gt_classes: ``(M,)`` int64 GT class indices in ``[0, K)``.
        alpha, gamma: focal parameters (the authors use 0.25 and 2.0).

    Returns:
        ``(N, M)`` float32 cost; ``(N, 0)`` when there is no GT.

    Raises:
        ValueError: ``logits`` not 2-D, ``gt_classes`` not 1-D or a class outside ``[0, K)``.
    """
    if logits.dim() != 2 or gt_classes.dim() != 1:
        raise ValueError(
            f"focal_classification_cost: expected logits (N, K) and gt_classes (M,), "
            f"got {tuple(logits.shape)} and {tuple(gt_classes.shape)}"
        )
    num_classes = logits.shape[1]
    if gt_classes.numel() and (int(gt_classes.min()) < 0 or int(gt_classes.max()) >= num_classes):
        raise ValueError(
            f"focal_classification_cost: gt class ids must lie in [0, {num_classes}), "
            f"got min {int(gt_classes.min())} max {int(gt_classes.max())}"
        )
    gt_classes = gt_classes.long().to(logits.device)
    x = logits[:, gt_classes].float()  # (N, M): only the GT classes are needed
    prob = x.sigmoid()
    neg = (1 - alpha) * prob.pow(gamma) * (-F.logsigmoid(-x))
    pos = alpha * (1 - prob).pow(gamma) * (-F.logsigmoid(x))
    return pos - neg
