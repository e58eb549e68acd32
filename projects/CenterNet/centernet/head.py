"""CenterNet prediction heads (Zhou et al. 2019, Sec. 4 and 6; [XZ] ``src/lib/models/networks/*.py``)."""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

__all__ = ["CenterNetHead", "HEAD_INITS"]

# Initialisation of the size/offset branches in each of the authors' networks
# ([XZ] src/lib/models/networks/): every conv N(0, 0.001) + bias 0 (resnet_dcn.py fill_fc_weights);
# only the last conv so (msra_resnet.py init_weights); PyTorch default weights with biases 0
# (pose_dla_dcn.py fill_fc_weights); PyTorch default (large_hourglass.py).
HEAD_INITS = ("resnet_dcn", "msra_resnet", "pose_dla_dcn", "large_hourglass")


def _branch(in_channels: int, head_conv: int, out_channels: int) -> nn.Sequential:
    if head_conv > 0:
        return nn.Sequential(
            nn.Conv2d(in_channels, head_conv, 3, padding=1, bias=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(head_conv, out_channels, 1, bias=True),
        )
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=True))


class CenterNetHead(nn.Module):
    """Three branches on one stride-R feature map: ``hm`` (C class heatmaps, logits), ``wh``
    (object width, height in output-map pixels) and ``reg`` (sub-pixel centre offset).

    Each branch is 3x3 conv (``head_conv`` channels, bias) -> ReLU -> 1x1 conv (``head_conv = 0``:
    a single 1x1 conv). Keys ``hm.0``, ``hm.2``, ``wh.*``, ``reg.*`` as the authors'. Init: the
    last ``hm`` bias is ``prior_bias`` (-2.19, prior ~0.1), other ``hm`` parameters PyTorch's
    default; ``wh``/``reg`` as the authors' network ``init`` (one of :data:`HEAD_INITS`):
    ``"resnet_dcn"`` every conv N(0, 0.001) with bias 0; ``"msra_resnet"`` the last conv so, the
    3x3 default; ``"pose_dla_dcn"`` default weights, biases 0; ``"large_hourglass"`` default.

    ``forward(x (N, in_channels, H, W))`` -> ``{"hm": (N, C, H, W), "wh": (N, 2, H, W), "reg": (N, 2, H, W)}``.
    """

    def __init__(self, in_channels: int, num_classes: int, head_conv: int = 64, prior_bias: float = -2.19,
                 init: str = "resnet_dcn"):
        super().__init__()
        if init not in HEAD_INITS:
            raise ValueError(f"MODEL.CENTERNET.HEAD_INIT must be one of {HEAD_INITS} or 'auto', got {init!r}")
        if num_classes < 1:
            raise ValueError(f"MODEL.CENTERNET.NUM_CLASSES must be >= 1, got {num_classes}")
        if head_conv < 0:
            raise ValueError(f"MODEL.CENTERNET.HEAD_CONV must be >= 0, got {head_conv}")
        self.hm = _branch(in_channels, head_conv, num_classes)
        self.wh = _branch(in_channels, head_conv, 2)
        self.reg = _branch(in_channels, head_conv, 2)
        nn.init.constant_(self.hm[-1].bias, prior_bias)
        for branch in (self.wh, self.reg):
            convs = [m for m in branch.modules() if isinstance(m, nn.Conv2d)]
            if init == "msra_resnet":
                convs = convs[-1:]
            for m in convs:
                if init in ("resnet_dcn", "msra_resnet"):
                    nn.init.normal_(m.weight, std=0.001)
                if init != "large_hourglass":
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"hm": self.hm(x), "wh": self.wh(x), "reg": self.reg(x)}
