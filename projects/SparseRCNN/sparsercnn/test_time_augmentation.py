"""Test-time augmentation of Sparse R-CNN (authors' ``SparseRCNNWithTTA``, PeizeSun/SparseR-CNN
``projects/SparseRCNN/sparsercnn/test_time_augmentation.py``, commit 0d29098 "add tta").

Each image is run at every ``TEST.AUG.MIN_SIZES`` short side (long side capped at
``TEST.AUG.MAX_SIZE``) and, with ``TEST.AUG.FLIP``, also horizontally flipped, in the order
``[s0, s0 flipped, s1, s1 flipped, ...]`` (detectron2's ``DatasetMapperTTA``). The boxes of every
run are mapped back to the original image and merged:

* ``TEST.AUG.CVPODS_TTA`` True (the authors' default): with ``TEST.AUG.SCALE_FILTER``, run ``i``
  keeps only boxes with ``lo^2 < w * h < hi^2`` (its network-input pixels) for
  ``(lo, hi) = TEST.AUG.SCALE_RANGES[i // (2 if FLIP else 1)]``; then :func:`soft_vote_merge`
  (class-wise box voting, IoU >= 0.65), at most ``MODEL.SparseRCNN.NUM_PROPOSALS`` detections,
  boxes clipped to the image.
* ``TEST.AUG.CVPODS_TTA`` False: :func:`nms_merge`, i.e. detectron2's
  ``fast_rcnn_inference_single_image`` on the union (clip, score > 1e-8, class-wise NMS at
  ``MODEL.ROI_HEADS.NMS_THRESH_TEST``, top ``TEST.DETECTIONS_PER_IMAGE``).
"""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torchvision.ops import box_iou, nms

from common.data.transforms import HFlipTransform, NoOpTransform, ResizeShortestEdge, ResizeTransform, TransformList
from common.layers import batched_nms
from common.structures import Boxes, Instances

__all__ = ["SparseRCNNWithTTA", "soft_vote_merge", "nms_merge", "tta_inputs"]

# Score below which the decayed members of a voted cluster are dropped (authors' INFERENCE_TH).
_SOFT_VOTE_SCORE_THRESH = 0.05
_SOFT_VOTE_IOU = 0.65


def tta_inputs(
    dataset_dict: dict, min_sizes: Sequence[int], max_size: int, flip: bool
) -> Tuple[List[dict], List[TransformList]]:
    """Augmented copies of one test input (detectron2 v0.6 ``DatasetMapperTTA``).

    Args:
        dataset_dict: ``"image"`` ``(3, h, w)`` uint8 tensor (already resized by the test mapper),
            ``"height"``/``"width"`` of the original image (default: the tensor's size).
        min_sizes, max_size, flip: ``TEST.AUG.MIN_SIZES``, ``TEST.AUG.MAX_SIZE``, ``TEST.AUG.FLIP``.

    Returns:
        the inputs (``"image"`` replaced) and, for each, the transform original image -> input.
    """
    image = dataset_dict["image"]
    numpy_image = image.permute(1, 2, 0).numpy()
    h, w = numpy_image.shape[:2]
    orig_h, orig_w = int(dataset_dict.get("height", h)), int(dataset_dict.get("width", w))
    pre = ResizeTransform(orig_h, orig_w, h, w) if (orig_h, orig_w) != (h, w) else NoOpTransform()
    inputs, tfms = [], []
    for size in min_sizes:
        resize = ResizeShortestEdge(int(size), int(max_size)).get_transform(numpy_image)
        resized = resize.apply_image(numpy_image)
        variants = [([resize], resized)]
        if flip:
            hflip = HFlipTransform(resized.shape[1])
            variants.append(([resize, hflip], hflip.apply_image(resized)))
        for chain, img in variants:
            d = copy.copy(dataset_dict)
            d["image"] = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
            inputs.append(d)
            tfms.append(TransformList([pre, *chain]))
    return inputs, tfms


def soft_vote_merge(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    vote_thresh: float = _SOFT_VOTE_IOU,
    max_detections: int = 100,
    soft_thresh: float = _SOFT_VOTE_SCORE_THRESH,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class-wise "soft_vote" box voting of the authors' ``batched_vote_nms`` / ``bbox_vote``.

    Greedy in score order (the kept boxes are those of NMS with ``IoU >= vote_thresh``): every
    box joins the cluster of the first kept box of its class with ``IoU >= vote_thresh``. A
    cluster of one box is output as is; a larger one gives its score-weighted mean box with the
    kept box's (maximal) score and class, plus each member ``j`` again as itself with score
    ``s_j * (1 - IoU(kept, j))`` when that is ``>= soft_thresh`` (the kept box itself gets 0).
    Everything is sorted by score and cut at ``max_detections``.

    As the authors, classes are separated by shifting boxes by ``label * (max coordinate + 1)``
    and IoUs are computed on the shifted boxes. Vectorised (one NMS, one kept x all IoU matrix)
    instead of their while loop; the sums differ from theirs only in float summation order.

    Args:
        boxes: ``(N, 4)`` XYXY_ABS (original image pixels); scores ``(N,)``; labels ``(N,)`` int.

    Returns:
        boxes ``(D, 4)``, scores ``(D,)`` descending and labels ``(D,)`` int64, ``D <= max_detections``.
    """
    if boxes.numel() == 0:
        return boxes.new_zeros((0, 4)), scores.new_zeros((0,)), labels.new_zeros((0,), dtype=torch.int64)
    boxes, scores = boxes.float(), scores.float()
    order = scores.argsort(descending=True, stable=True)
    boxes, scores, labels = boxes[order], scores[order], labels[order].long()
    offsets = labels.float()[:, None] * (boxes.max() + 1)
    shifted = boxes + offsets

    # torchvision's nms drops IoU > t; the authors merge IoU >= t (a float32 comparison).
    thresh32 = torch.tensor(vote_thresh, dtype=torch.float32)
    keep = nms(shifted, scores, float(np.nextafter(np.float64(thresh32.item()), 0.0)))  # score order
    iou = box_iou(shifted[keep], shifted)  # (K, N)
    member = iou >= thresh32
    cluster = member.to(torch.uint8).argmax(dim=0)  # first kept box claiming each box, (N,)
    k = keep.numel()
    sizes = torch.bincount(cluster, minlength=k)
    weight_sum = scores.new_zeros(k).index_add_(0, cluster, scores)
    voted = shifted.new_zeros((k, 4)).index_add_(0, cluster, shifted * scores[:, None]) / weight_sum[:, None]
    merged_boxes = torch.where((sizes > 1)[:, None], voted, shifted[keep])

    iou_to_kept = iou.gather(0, cluster[None]).squeeze(0)  # (N,)
    soft_scores = scores * (1 - iou_to_kept)
    soft = (sizes[cluster] > 1) & (soft_scores >= soft_thresh)

    out_boxes = torch.cat([merged_boxes, shifted[soft]])
    out_scores = torch.cat([scores[keep], soft_scores[soft]])
    out_labels = torch.cat([labels[keep], labels[soft]])
    order = out_scores.argsort(descending=True, stable=True)
    out_boxes, out_scores, out_labels = out_boxes[order], out_scores[order], out_labels[order]
    out_boxes = out_boxes - out_labels.float()[:, None] * (boxes.max() + 1)
    if max_detections > 0:
        out_boxes, out_scores, out_labels = out_boxes[:max_detections], out_scores[:max_detections], out_labels[:max_detections]
    return out_boxes, out_scores, out_labels


def nms_merge(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    image_size: Tuple[int, int],
    nms_thresh: float,
    max_detections: int,
    score_thresh: float = 1e-8,
) -> Instances:
    """detectron2's ``fast_rcnn_inference_single_image`` on the union of the augmented detections
    (the authors' non-cvpods merge): clip to ``image_size`` ``(h, w)``, keep finite boxes with
    ``score > score_thresh``, class-wise NMS at ``nms_thresh``, top ``max_detections`` by score.

    Returns:
        ``Instances(image_size)`` with ``pred_boxes`` (XYXY_ABS), ``scores``, ``pred_classes``.
    """
    b = Boxes(boxes.float().clone())
    b.clip(image_size)
    boxes = b.tensor
    valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores) & (scores > score_thresh)
    boxes, scores, labels = boxes[valid], scores[valid].float(), labels[valid].long()
    keep = batched_nms(boxes, scores, labels, nms_thresh)
    if max_detections >= 0:
        keep = keep[:max_detections]
    result = Instances(image_size)
    result.pred_boxes = Boxes(boxes[keep])
    result.scores = scores[keep]
    result.pred_classes = labels[keep]
    return result


class SparseRCNNWithTTA(nn.Module):
    """A Sparse R-CNN with test-time augmentation (flip + multi-scale), same call interface as
    :meth:`SparseRCNN.forward` in inference: a list of input dicts -> ``[{"instances": Instances}]``
    in original-image pixels (``height x width``).

    Args:
        cfg: reads ``TEST.AUG.{MIN_SIZES, MAX_SIZE, FLIP, CVPODS_TTA, SCALE_FILTER, SCALE_RANGES}``,
            ``MODEL.SparseRCNN.NUM_PROPOSALS``, ``MODEL.ROI_HEADS.NMS_THRESH_TEST``,
            ``TEST.DETECTIONS_PER_IMAGE``.
        model: a :class:`SparseRCNN` (DDP-wrapped is unwrapped).
        batch_size: augmented images per forward in the NMS-merge mode (the cvpods mode runs them
            one by one, as the authors).

    Raises:
        ValueError: ``TEST.AUG.SCALE_FILTER`` with a number of ``SCALE_RANGES`` different from
            the number of ``MIN_SIZES``, or an empty ``MIN_SIZES``.
    """

    def __init__(self, cfg, model: nn.Module, batch_size: int = 3) -> None:
        super().__init__()
        if isinstance(model, DistributedDataParallel):
            model = model.module
        aug = cfg.TEST.AUG
        self.cfg = cfg.clone()
        self.model = model
        self.min_sizes = [int(s) for s in aug.MIN_SIZES]
        self.max_size = int(aug.MAX_SIZE)
        self.flip = bool(aug.FLIP)
        self.batch_size = int(batch_size)
        self.cvpods_tta = bool(aug.get("CVPODS_TTA", True))
        self.scale_filter = bool(aug.get("SCALE_FILTER", False)) and self.cvpods_tta
        self.scale_ranges = [tuple(float(v) for v in r) for r in aug.get("SCALE_RANGES", ())]
        self.max_detections = int(cfg.MODEL.SparseRCNN.NUM_PROPOSALS)
        if not self.min_sizes:
            raise ValueError("TEST.AUG.MIN_SIZES is empty")
        if self.scale_filter and len(self.scale_ranges) != len(self.min_sizes):
            raise ValueError(
                f"TEST.AUG.SCALE_FILTER: TEST.AUG.SCALE_RANGES has {len(self.scale_ranges)} (min, max) pairs "
                f"for {len(self.min_sizes)} TEST.AUG.MIN_SIZES; give one per size (or SCALE_FILTER False)"
            )

    def _run(self, inputs: List[dict]) -> List[Instances]:
        step = 1 if self.cvpods_tta else max(self.batch_size, 1)
        out: List[Instances] = []
        for i in range(0, len(inputs), step):
            out.extend(self.model(inputs[i : i + step], do_postprocess=False))
        return out

    @torch.no_grad()
    def _inference_one_image(self, dataset_dict: dict) -> Dict[str, Instances]:
        image = dataset_dict["image"]
        orig = (int(dataset_dict.get("height", image.shape[1])), int(dataset_dict.get("width", image.shape[2])))
        inputs, tfms = tta_inputs(dataset_dict, self.min_sizes, self.max_size, self.flip)
        factor = 2 if self.flip else 1
        boxes, scores, labels = [], [], []
        for idx, (output, tfm) in enumerate(zip(self._run(inputs), tfms)):
            b = output.pred_boxes.tensor
            s, c = output.scores, output.pred_classes
            if self.scale_filter:
                lo, hi = self.scale_ranges[idx // factor]
                area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
                keep = (area > lo * lo) & (area < hi * hi)
                b, s, c = b[keep], s[keep], c[keep]
            back = tfm.inverse().apply_box(b.detach().cpu().numpy())
            boxes.append(torch.as_tensor(back, dtype=torch.float32, device=b.device).reshape(-1, 4))
            scores.append(s)
            labels.append(c)
        boxes_t, scores_t, labels_t = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
        if not self.cvpods_tta:
            merged = nms_merge(boxes_t, scores_t, labels_t, orig, self.cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
                               self.cfg.TEST.DETECTIONS_PER_IMAGE)
            return {"instances": merged}
        b, s, c = soft_vote_merge(boxes_t, scores_t, labels_t, _SOFT_VOTE_IOU, self.max_detections)
        result = Instances(orig)
        result.pred_boxes = Boxes(b)
        result.pred_boxes.clip(orig)
        result.scores = s
        result.pred_classes = c
        return {"instances": result}

    def forward(self, batched_inputs: List[dict]) -> List[Dict[str, Instances]]:
        """Inputs as for ``SparseRCNN`` (``"image"`` ``(3, h, w)`` tensor, optional ``"height"``/``"width"``)."""
        if self.model.training:
            raise ValueError("SparseRCNNWithTTA is for inference: call model.eval() first")
        return [self._inference_one_image(x) for x in batched_inputs]
