"""Rescale detections to the original image size (detectron2 ``modeling/postprocessing.py``)."""
from __future__ import annotations

from typing import Union

import torch

from common.structures import Instances

__all__ = ["detector_postprocess"]


def detector_postprocess(results: Instances, output_height: Union[int, torch.Tensor],
                         output_width: Union[int, torch.Tensor], mask_threshold: float = 0.5, *,
                         clip: bool = True, keep_empty: bool = False) -> Instances:
    """Map predictions made on the resized network input back to the requested output resolution.

    The boxes (``pred_boxes``, or ``proposal_boxes``) are scaled by
    ``(output_width / results.image_size[1], output_height / results.image_size[0])``, clipped to
    ``(output_height, output_width)`` and instances whose clipped box has zero width or height are
    dropped (detectron2's behaviour, the defaults). ``pred_keypoints`` (``(N, K, 3)``) are scaled
    too. Box tensors are scaled in place, as in detectron2.

    Args:
        results: predictions of one image; ``image_size`` = ``(h, w)`` of the network input (unpadded).
        output_height, output_width: desired output size, usually the original image size.
        mask_threshold: unused (no mask support in this runtime); kept for signature compatibility.
        clip: clip the boxes to ``(output_height, output_width)``. ``False`` for detectors whose
            authors evaluate unclipped boxes (xingyizhou/CenterNet ``ctdet_post_process``).
        keep_empty: keep instances whose (clipped) box has zero width or height; the authors'
            CenterNet drops none.

    Returns:
        new :class:`Instances` with ``image_size == (output_height, output_width)``.

    Raises:
        ValueError: no box field, or the results contain ``pred_masks`` (not supported here).

    Source: ``detectron2/modeling/postprocessing.py`` ``detector_postprocess``.
    """
    if isinstance(output_width, torch.Tensor):
        output_width_f, output_height_f = output_width.float(), output_height.float()
    else:
        output_width_f, output_height_f = float(output_width), float(output_height)
    scale_x = output_width_f / results.image_size[1]
    scale_y = output_height_f / results.image_size[0]
    results = Instances((output_height, output_width), **results.get_fields())

    if results.has("pred_boxes"):
        output_boxes = results.pred_boxes
    elif results.has("proposal_boxes"):
        output_boxes = results.proposal_boxes
    else:
        raise ValueError("detector_postprocess: predictions must contain 'pred_boxes' or 'proposal_boxes'")
    if results.has("pred_masks"):
        raise ValueError("detector_postprocess: 'pred_masks' are not supported by this runtime")

    output_boxes.scale(scale_x, scale_y)
    if clip:
        output_boxes.clip(results.image_size)
    if not keep_empty:
        results = results[output_boxes.nonempty()]

    if results.has("pred_keypoints"):
        results.pred_keypoints[:, :, 0] *= scale_x
        results.pred_keypoints[:, :, 1] *= scale_y
    return results
