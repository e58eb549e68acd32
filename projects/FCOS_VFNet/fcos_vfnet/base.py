"""What the FCOS, ATSS and VFNet meta-architectures share: input normalisation and padding, the
train / inference dispatch, and the rescaling of the detections (detectron2's one-stage
``RetinaNet.forward`` / AdelaiDet ``OneStageDetector``)."""
from __future__ import annotations

from typing import Dict, List

import torch
from torch import nn

from common.modeling import detector_postprocess, normalize_and_pad, register_pixel_stats
from common.structures import ImageList, Instances

__all__ = ["DenseDetector", "valid_location_masks"]


def valid_location_masks(image_sizes: List[tuple], grid_sizes: List[tuple], strides: List[int],
                         size_divisibility: int, device: torch.device) -> torch.Tensor:
    """``(B, sum_l H_l W_l)`` bool: location ``(i, j)`` of level ``l`` lies inside image ``b``'s own
    extent padded to ``size_divisibility`` (``i < ceil(pad_h / s)``, ``j < ceil(pad_w / s)``), as
    mmdet's ``AnchorGenerator.valid_flags`` on each image's ``pad_shape``."""
    masks = []
    for h, w in image_sizes:
        if size_divisibility > 1:
            h = -(-h // size_divisibility) * size_divisibility
            w = -(-w // size_divisibility) * size_divisibility
        per_level = []
        for (gh, gw), s in zip(grid_sizes, strides):
            vh, vw = min(-(-h // s), gh), min(-(-w // s), gw)
            rows = torch.arange(gh, device=device) < vh
            cols = torch.arange(gw, device=device) < vw
            per_level.append((rows[:, None] & cols[None, :]).reshape(-1))
        masks.append(torch.cat(per_level))
    return torch.stack(masks)


class DenseDetector(nn.Module):
    """Backbone + dense head meta-architecture base.

    Subclasses set ``self.backbone`` and implement :meth:`losses` and :meth:`inference`.

    Input (detectron2 format): list of dicts with ``"image"`` ``(3, H, W)`` in ``INPUT.FORMAT``
    order (0-255), optional ``"height"``/``"width"`` (output size) and, in training,
    ``"instances"`` with ``gt_boxes`` (XYXY_ABS pixels of the resized image) and ``gt_classes``.

    Output: training -> dict of scalar losses; inference -> one ``{"instances": Instances}`` per
    image with ``pred_boxes`` (XYXY_ABS, rescaled to ``height x width``), ``scores``, ``pred_classes``.
    """

    def _setup_pixels(self, cfg) -> None:
        register_pixel_stats(self, cfg)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: List[dict]) -> ImageList:
        """Normalise with ``MODEL.PIXEL_MEAN/STD`` and pad to the backbone's size divisibility."""
        return normalize_and_pad(self, batched_inputs, self.backbone.size_divisibility)

    def forward(self, batched_inputs: List[dict]):
        """See the class docstring.

        Raises:
            ValueError: training inputs without ``"instances"``.
        """
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        if self.training:
            if any("instances" not in x for x in batched_inputs):
                raise ValueError(f"{type(self).__name__} in training mode needs 'instances' in every input dict")
            gt = [x["instances"].to(self.device) for x in batched_inputs]
            return self.losses(images, features, gt)
        results = self.inference(images, features)
        processed = []
        for result, inputs, size in zip(results, batched_inputs, images.image_sizes):
            height, width = inputs.get("height", size[0]), inputs.get("width", size[1])
            processed.append({"instances": detector_postprocess(result, height, width)})
        return processed

    def losses(self, images: ImageList, features: Dict[str, torch.Tensor], gt: List[Instances]) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def inference(self, images: ImageList, features: Dict[str, torch.Tensor]) -> List[Instances]:
        raise NotImplementedError
