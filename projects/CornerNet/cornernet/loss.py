"""CornerNet / CenterNet-Triplets losses of one stack (CornerNet Sec. 3.2-3.3, Eqs. 1-5).

``focal`` (:func:`common.losses.heatmap_focal_loss`, alpha 2, beta 4, over the positives of the
batch) of every heatmap, ``pull``/``push`` (:func:`common.losses.pull_push_loss`) of the corner
embeddings, smooth-L1 offsets (beta 1) summed over the coordinates of the objects divided by the
number of objects + 1e-4 (the authors' ``_regr_loss``). All in float32 with autocast off.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F

from common.losses import clamped_sigmoid, heatmap_focal_loss, pull_push_loss

__all__ = ["offset_loss", "corner_losses"]


def offset_loss(pred: torch.Tensor, batch_index: torch.Tensor, flat_index: torch.Tensor,
                target: torch.Tensor) -> torch.Tensor:
    """``sum_k smoothL1(pred[b_k, :, i_k] - target_k) / (K + 1e-4)``; ``pred (B, 2, H, W)``,
    indices ``(K,)``, ``target (K, 2)``; K = 0 gives 0 with a gradient path."""
    gathered = pred.flatten(2)[batch_index, :, flat_index].float()  # (K, 2)
    return F.smooth_l1_loss(gathered, target.float(), reduction="sum", beta=1.0) / (target.shape[0] + 1e-4)


def corner_losses(out: Dict[str, torch.Tensor], targets: Dict[str, torch.Tensor], alpha: float = 2.0,
                  beta: float = 4.0, margin: float = 1.0) -> Dict[str, torch.Tensor]:
    """Unweighted losses of one stack's outputs (see :class:`~.head.CornerHeads`) against the
    batched targets of :meth:`CornerNet.prepare_targets`.

    Returns ``{"loss_heatmap": sum of the focal losses (tl + br [+ ct]), "loss_pull", "loss_push",
    "loss_offset": sum of the offset losses}``, float32 scalars. Targets ``tl_valid``/``br_valid``
    ``(B, C, H, W)`` (CornerNet-Saccade), when present, mask the focal losses (0 = ignored).
    """
    with torch.autocast(out["tl_heat"].device.type, enabled=False):
        kinds = [k for k in ("tl", "br", "ct") if f"{k}_heat" in out]
        bidx = targets["batch_index"]
        focal = sum(heatmap_focal_loss(clamped_sigmoid(out[f"{k}_heat"]), targets[f"{k}_heatmap"], alpha, beta,
                                       targets.get(f"{k}_valid"))
                    for k in kinds)
        off = sum(offset_loss(out[f"{k}_off"], bidx, targets[f"{k}_index"], targets[f"{k}_offset"]) for k in kinds)
        e_tl = out["tl_tag"].flatten(2)[bidx, 0, targets["tl_index"]].float()
        e_br = out["br_tag"].flatten(2)[bidx, 0, targets["br_index"]].float()
        pull, push = pull_push_loss(e_tl, e_br, bidx, out["tl_heat"].shape[0], margin)
        return {"loss_heatmap": focal, "loss_pull": pull, "loss_push": push, "loss_offset": off}
