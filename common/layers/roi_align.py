"""``ROIAlign`` module over ``torchvision.ops.roi_align`` (detectron2 ``layers/roi_align.py``)."""
from typing import Tuple, Union

import torch
from torch import nn
from torch.nn.modules.utils import _pair
from torchvision.ops import roi_align

__all__ = ["ROIAlign"]


class ROIAlign(nn.Module):
    """Bilinear RoI pooling (Mask R-CNN, He et al. 2017 §3).

    Args:
        output_size: ``(h, w)`` or int, output bins.
        spatial_scale: feature-map cells per input pixel (1/stride).
        sampling_ratio: samples per bin along each axis; ``0`` = adaptive ``ceil(roi_size / output_size)``.
        aligned: if True, box coordinates are shifted by -0.5 px before sampling so that a pixel
            with index i covers ``[i, i+1)`` and its centre is ``i + 0.5`` (the correct
            "ROIAlignV2"). If False (original Detectron), the box is not shifted and a minimum RoI
            size of 1 cell is enforced.

    Source: ``detectron2/layers/roi_align.py``.
    """

    def __init__(self, output_size: Union[int, Tuple[int, int]], spatial_scale: float,
                 sampling_ratio: int, aligned: bool = True):
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: ``(N, C, H, W)`` feature map.
            rois: ``(R, 5)``: batch index, then x1, y1, x2, y2 in input-image pixels (XYXY_ABS).

        Returns:
            ``(R, C, output_h, output_w)``.

        Raises:
            ValueError: when ``rois`` is not ``(R, 5)``.
        """
        if rois.dim() != 2 or rois.size(1) != 5:
            raise ValueError(f"ROIAlign expects rois of shape (R, 5), got {tuple(rois.shape)}")
        if input.is_quantized:
            input = input.dequantize()
        return roi_align(input, rois.to(dtype=input.dtype), self.output_size, self.spatial_scale,
                         self.sampling_ratio, self.aligned)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned})")
