"""Sparse R-CNN dynamic instance interactive head (paper Sec. 3.2, Fig. 4; authors' ``head.py``).

Module and attribute names follow the authors' code so that their released checkpoints load
(keys ``head.head_series.{j}.{self_attn,inst_interact,linear1,...}`` of the released
``r50_100pro_3x_model.pth``, PeizeSun/SparseR-CNN ``projects/SparseRCNN/sparsercnn/head.py``).
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from common.config import configurable
from common.layers import ShapeSpec
from common.modeling.box_regression import Box2BoxTransform
from common.modeling.poolers import ROIPooler
from common.structures import Boxes

__all__ = ["DynamicHead", "RCNNHead", "DynamicConv"]

# Largest log-scale change of a box side per stage: the authors' head.py uses log(1e5 / 16), not
# detectron2's log(1000 / 16).
_DEFAULT_SCALE_CLAMP = math.log(100000.0 / 16)


def _get_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name == "relu":
        return F.relu
    if name == "gelu":
        return F.gelu
    if name == "glu":
        return F.glu
    raise ValueError(f"MODEL.SparseRCNN.ACTIVATION must be relu/gelu/glu, got {name!r}")


class DynamicConv(nn.Module):
    """Instance interaction: two 1x1 "convolutions" whose weights come from the proposal feature.

    For each proposal, ``dynamic_layer`` maps its feature ``(d,)`` to the parameters of a
    ``(d, d_dyn)`` and a ``(d_dyn, d)`` matrix; the ``S*S`` RoI bins ``(S*S, d)`` go through
    ``bmm -> LayerNorm -> ReLU`` twice, are flattened spatial-major (index ``s * d + c``) and
    projected to ``(d,)`` by ``out_layer -> LayerNorm -> ReLU``.
    """

    def __init__(self, hidden_dim: int = 256, dim_dynamic: int = 64, num_dynamic: int = 2, pooler_resolution: int = 7) -> None:
        super().__init__()
        if num_dynamic != 2:
            raise ValueError(
                f"MODEL.SparseRCNN.NUM_DYNAMIC={num_dynamic}: the dynamic head applies exactly two "
                "dynamic layers (as in the authors' code); only 2 is supported"
            )
        self.hidden_dim = hidden_dim
        self.dim_dynamic = dim_dynamic
        self.num_dynamic = num_dynamic
        self.num_params = hidden_dim * dim_dynamic
        self.dynamic_layer = nn.Linear(hidden_dim, num_dynamic * self.num_params)
        self.norm1 = nn.LayerNorm(dim_dynamic)
        self.norm2 = nn.LayerNorm(hidden_dim)
        self.activation = nn.ReLU(inplace=True)
        self.out_layer = nn.Linear(hidden_dim * pooler_resolution**2, hidden_dim)
        self.norm3 = nn.LayerNorm(hidden_dim)

    def forward(self, pro_features: torch.Tensor, roi_features: torch.Tensor) -> torch.Tensor:
        """
        Args:
            pro_features: ``(R, d)`` proposal features (R = images x proposals, image-major).
            roi_features: ``(R, S*S, d)`` pooled RoI features, bins row-major.

        Returns:
            ``(R, d)`` interacted object features.
        """
        params = self.dynamic_layer(pro_features)
        param1 = params[:, : self.num_params].view(-1, self.hidden_dim, self.dim_dynamic)
        param2 = params[:, self.num_params :].view(-1, self.dim_dynamic, self.hidden_dim)

        x = self.activation(self.norm1(torch.bmm(roi_features, param1)))
        x = self.activation(self.norm2(torch.bmm(x, param2)))
        x = self.out_layer(x.flatten(1))
        return self.activation(self.norm3(x))


class RCNNHead(nn.Module):
    """One iterative stage: self-attention, dynamic instance interaction, FFN, cls/reg towers.

    Attribute registration order reproduces the authors' state-dict key order.
    """

    def __init__(
        self,
        d_model: int = 256,
        num_classes: int = 80,
        dim_feedforward: int = 2048,
        nhead: int = 8,
        dropout: float = 0.0,
        activation: str = "relu",
        num_cls: int = 1,
        num_reg: int = 3,
        dim_dynamic: int = 64,
        num_dynamic: int = 2,
        pooler_resolution: int = 7,
        use_focal: bool = True,
        scale_clamp: float = _DEFAULT_SCALE_CLAMP,
        bbox_weights: Tuple[float, float, float, float] = (2.0, 2.0, 1.0, 1.0),
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.inst_interact = DynamicConv(d_model, dim_dynamic, num_dynamic, pooler_resolution)

        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)

        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = _get_activation(activation)

        self.cls_module = nn.Sequential(*self._tower(d_model, num_cls))
        self.reg_module = nn.Sequential(*self._tower(d_model, num_reg))

        # Sigmoid focal loss has no background logit; softmax CE has K + 1 classes.
        self.class_logits = nn.Linear(d_model, num_classes if use_focal else num_classes + 1)
        self.bboxes_delta = nn.Linear(d_model, 4)
        # The authors' ``apply_deltas`` is detectron2's Box2BoxTransform maths; decoding runs in
        # float32 under autocast (detectron2 casts the deltas), so box coordinates keep full precision.
        self.box2box_transform = Box2BoxTransform(bbox_weights, scale_clamp)
        self.scale_clamp = scale_clamp
        self.bbox_weights = tuple(bbox_weights)

    @staticmethod
    def _tower(d_model: int, depth: int) -> List[nn.Module]:
        layers: List[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Linear(d_model, d_model, bias=False), nn.LayerNorm(d_model), nn.ReLU(inplace=True)]
        return layers

    def forward(
        self,
        features: List[torch.Tensor],
        bboxes: torch.Tensor,
        pro_features: torch.Tensor,
        pooler: ROIPooler,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Args:
            features: FPN maps in ``ROI_HEADS.IN_FEATURES`` order, each ``(N, d, H_l, W_l)``.
            bboxes: ``(N, nr, 4)`` XYXY_ABS proposal boxes (input-image pixels).
            pro_features: ``(N, nr, d)`` proposal features.
            pooler: the head's shared ``ROIPooler``.

        Returns:
            class logits ``(N, nr, K)`` (``K + 1`` without focal loss), refined boxes
            ``(N, nr, 4)`` XYXY_ABS float32 (also under autocast) and object features
            ``(N, nr, d)`` for the next stage.
        """
        n, nr = bboxes.shape[:2]
        d = self.d_model
        roi_features = pooler(features, [Boxes(b) for b in bboxes])  # (N*nr, d, S, S), image-major
        roi_features = roi_features.view(n * nr, d, -1).permute(0, 2, 1)  # (N*nr, S*S, d)

        # Self-attention among the proposals of each image (sequence dim = proposals).
        pro = pro_features.view(n, nr, d).permute(1, 0, 2)
        pro = self.norm1(pro + self.dropout1(self.self_attn(pro, pro, value=pro)[0]))

        pro = pro.permute(1, 0, 2).reshape(n * nr, d)
        obj = self.norm2(pro + self.dropout2(self.inst_interact(pro, roi_features)))
        obj = self.norm3(obj + self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(obj))))))

        class_logits = self.class_logits(self.cls_module(obj))
        deltas = self.bboxes_delta(self.reg_module(obj))
        pred_bboxes = self.box2box_transform.apply_deltas(deltas, bboxes.reshape(-1, 4))  # float32
        return class_logits.view(n, nr, -1), pred_bboxes.view(n, nr, 4), obj.view(n, nr, d)


class DynamicHead(nn.Module):
    """``NUM_HEADS`` iterative ``RCNNHead`` stages sharing one ``ROIPooler``.

    Each stage refines the previous stage's boxes (detached, as in the authors' code) and takes
    its object features as proposal features.

    Init (authors' ``_reset_parameters``): Xavier-uniform on every >= 2-D parameter, then the
    focal prior ``-log((1 - pi) / pi)`` on ``class_logits.bias``. Deviation: the authors set the
    prior on *every* parameter whose last dim equals ``NUM_CLASSES`` (with K = 4 that also hits
    ``bboxes_delta.bias``); like OneNet's later fix we only touch ``class_logits.bias``.
    """

    @configurable
    def __init__(
        self,
        *,
        box_pooler: ROIPooler,
        rcnn_head: RCNNHead,
        num_heads: int = 6,
        return_intermediate: bool = True,
        use_focal: bool = True,
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"MODEL.SparseRCNN.NUM_HEADS must be >= 1, got {num_heads}")
        self.box_pooler = box_pooler
        self.head_series = nn.ModuleList([copy.deepcopy(rcnn_head) for _ in range(num_heads)])
        self.return_intermediate = return_intermediate
        self.use_focal = use_focal
        self.prior_prob = prior_prob
        self._reset_parameters()

    @classmethod
    def from_config(cls, cfg, roi_input_shape: Dict[str, ShapeSpec]) -> dict:
        sr = cfg.MODEL.SparseRCNN
        in_features = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
        missing = [f for f in in_features if f not in roi_input_shape]
        if missing:
            raise ValueError(
                f"MODEL.ROI_HEADS.IN_FEATURES {in_features}: {missing} not produced by the backbone "
                f"(it outputs {sorted(roi_input_shape)})"
            )
        channels = {roi_input_shape[f].channels for f in in_features}
        if channels != {sr.HIDDEN_DIM}:
            raise ValueError(
                f"MODEL.SparseRCNN.HIDDEN_DIM={sr.HIDDEN_DIM} must equal the channels of the pooled "
                f"features {in_features} ({sorted(channels)}; set MODEL.FPN.OUT_CHANNELS)"
            )
        resolution = cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION
        pooler = ROIPooler(
            output_size=resolution,
            scales=tuple(1.0 / roi_input_shape[f].stride for f in in_features),
            sampling_ratio=cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO,
            pooler_type=cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE,
        )
        rcnn_head = RCNNHead(
            d_model=sr.HIDDEN_DIM,
            num_classes=sr.NUM_CLASSES,
            dim_feedforward=sr.DIM_FEEDFORWARD,
            nhead=sr.NHEADS,
            dropout=sr.DROPOUT,
            activation=sr.ACTIVATION,
            num_cls=sr.NUM_CLS,
            num_reg=sr.NUM_REG,
            dim_dynamic=sr.DIM_DYNAMIC,
            num_dynamic=sr.NUM_DYNAMIC,
            pooler_resolution=resolution,
            use_focal=sr.USE_FOCAL,
        )
        return {
            "box_pooler": pooler,
            "rcnn_head": rcnn_head,
            "num_heads": sr.NUM_HEADS,
            "return_intermediate": sr.DEEP_SUPERVISION,
            "use_focal": sr.USE_FOCAL,
            "prior_prob": sr.PRIOR_PROB,
        }

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        if self.use_focal:
            bias_value = -math.log((1 - self.prior_prob) / self.prior_prob)
            for head in self.head_series:
                nn.init.constant_(head.class_logits.bias, bias_value)

    def forward(
        self, features: List[torch.Tensor], init_bboxes: torch.Tensor, init_features: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            features: FPN maps in ``ROI_HEADS.IN_FEATURES`` order, each ``(N, d, H_l, W_l)``.
            init_bboxes: ``(N, nr, 4)`` XYXY_ABS initial proposal boxes per image.
            init_features: ``(nr, d)`` learned proposal features (shared by all images).

        Returns:
            ``(S, N, nr, K)`` logits and ``(S, N, nr, 4)`` XYXY_ABS boxes, with ``S = NUM_HEADS``
            stages when ``return_intermediate`` (deep supervision), else ``S = 1`` (last stage).
        """
        bs = features[0].shape[0]
        pro_features = init_features.unsqueeze(0).expand(bs, -1, -1)
        bboxes = init_bboxes
        all_logits, all_boxes = [], []
        for head in self.head_series:
            logits, pred_boxes, pro_features = head(features, bboxes, pro_features, self.box_pooler)
            if self.return_intermediate:
                all_logits.append(logits)
                all_boxes.append(pred_boxes)
            # Gradients do not flow through the box coordinates from one stage to the next.
            bboxes = pred_boxes.detach()
        if self.return_intermediate:
            return torch.stack(all_logits), torch.stack(all_boxes)
        return logits.unsqueeze(0), pred_boxes.unsqueeze(0)
