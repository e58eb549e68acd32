"""Associative-embedding pull/push losses of CornerNet (Law & Deng 2018, Sec. 3.3, Eqs. 4-5;
Newell et al. 2017), as CornerNet-Lite and CenterNet-Triplets use them.

For the N_b objects of image b, with top-left / bottom-right embeddings ``e_t``, ``e_b`` and
``ē_k = (e_tk + e_bk) / 2``::

    pull_b = 1/N_b * sum_k [(e_tk - ē_k)^2 + (e_bk - ē_k)^2]
    push_b = 1/(N_b (N_b - 1)) * sum_{j != k} max(0, margin - |ē_j - ē_k|)     (ordered pairs)

Differences from the authors' ``_ae_loss`` (princeton-vl/CornerNet ``models/py_utils/kp_utils.py``,
CornerNet-Lite ``core/models/py_utils/losses.py``): an image with one object has push 0 (the
authors' ``1e-4``-regularised 0/0 gives ~1.0 with zero gradient), and the per-image values are
*averaged* over the images of the batch instead of summed over the images of each GPU's chunk,
so the effective weight does not depend on the per-GPU batch (the authors' weight 0.1 summed over
chunks of ~5 images corresponds to 0.1 x images-per-GPU here).
"""
from __future__ import annotations

from typing import Tuple

import torch

__all__ = ["pull_push_loss"]


def pull_push_loss(
    tl_embedding: torch.Tensor,
    br_embedding: torch.Tensor,
    image_index: torch.Tensor,
    num_images: int,
    margin: float = 1.0,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pull and push losses (float32 scalars), the mean over ``num_images`` images of the
    per-image values of the module docstring; images with no object contribute 0 to both, an
    image with one object 0 to push.

    Args:
        tl_embedding, br_embedding: ``(K,)`` 1-d embeddings of the K objects of the batch, read
            at their top-left / bottom-right corner cells (object k's two corners are a GT pair).
        image_index: ``(K,)`` int64 image of each object, in ``[0, num_images)``.
        num_images: images in the batch (the denominator; >= 1).
        margin: push margin Delta (1 in the paper).

    Returns:
        ``(pull, push)``; with K = 0 both are 0 with a gradient path through the embeddings.

    Raises:
        ValueError: inconsistent shapes or ``num_images < 1``.

    Vectorised: one ``K x K`` same-image mask, no loop over images or objects.
    """
    k = tl_embedding.shape[0]
    if tl_embedding.shape != (k,) or br_embedding.shape != (k,) or image_index.shape != (k,):
        raise ValueError(
            f"pull_push_loss: tl {tuple(tl_embedding.shape)}, br {tuple(br_embedding.shape)} and image_index "
            f"{tuple(image_index.shape)} must all be (K,)"
        )
    if num_images < 1:
        raise ValueError(f"pull_push_loss: num_images must be >= 1, got {num_images}")
    tl, br = tl_embedding.float(), br_embedding.float()
    if k == 0:
        zero = (tl.sum() + br.sum()) * 0.0
        return zero, zero
    counts = torch.bincount(image_index, minlength=num_images).to(tl.dtype)  # (B,)
    n = counts[image_index]  # (K,) objects in the image of each object
    mean = (tl + br) / 2
    pull = (((tl - mean) ** 2 + (br - mean) ** 2) / n).sum() / num_images

    same = image_index[:, None] == image_index[None, :]
    same.fill_diagonal_(False)
    dist = torch.relu(margin - (mean[:, None] - mean[None, :]).abs())
    pair_norm = (n * (n - 1)).clamp(min=1.0)  # (K,); pairs exist only where n >= 2
    push = (torch.where(same, dist, dist.new_zeros(())).sum(1) / pair_norm).sum() / num_images
    return pull, push
