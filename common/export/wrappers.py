"""Tensor-in / tensor-out wrappers of the projects' detectors for ONNX and TorchScript export.

A detectron2-style model takes a list of dicts and returns ``Instances``; neither can cross an
exported graph. A wrapper splits the model's inference into three parts, each made of the
model's own functions (no re-implementation of a network or a decoder):

1. :meth:`ExportWrapper.preprocess` (Python, outside the graph): the model's own normalisation
   and padding of the input dicts -> the graph inputs (``images`` ``(B, 3, H, W)`` float32,
   normalised and padded, plus per-model extras such as Sparse R-CNN's ``images_whwh``).
2. :meth:`ExportWrapper.forward` (the exported graph): backbone, head and the model's top-k
   decoding -> ``boxes (B, K, 4)`` XYXY_ABS pixels of the padded network input, ``scores (B, K)``
   float32 descending, ``classes (B, K)`` int64. No NMS: OneNet, Sparse R-CNN and CenterNet's
   max-pool peak decoding are NMS-free.
3. :meth:`ExportWrapper.postprocess` (Python): the model's own mapping back to each image's
   ``height x width`` (``detector_postprocess``; CenterNet's padding offset) -> ``Instances``
   with ``pred_boxes``, ``scores``, ``pred_classes``, exactly as the eager model returns them.

Wrappers are registered per meta-architecture in :data:`EXPORT_WRAPPER_REGISTRY`; a new project
adds one class (see the three below). Configs whose inference is not a fixed tensor program are
refused with :class:`NotExportableError` naming the config key (OneNet's NMS ablation,
CenterNet's multi-scale / soft-NMS test).
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import torch
from fvcore.common.registry import Registry
from torch import nn
from torchvision.ops import box_convert

from common.modeling import detector_postprocess
from common.structures import Boxes, Instances

__all__ = [
    "EXPORT_WRAPPER_REGISTRY",
    "ExportWrapper",
    "NotExportableError",
    "build_export_wrapper",
    "OneNetExport",
    "SparseRCNNExport",
    "CenterNetExport",
]

EXPORT_WRAPPER_REGISTRY = Registry("EXPORT_WRAPPER")
EXPORT_WRAPPER_REGISTRY.__doc__ = "Export wrappers, keyed by the MODEL.META_ARCHITECTURE they wrap."

OUTPUT_NAMES = ("boxes", "scores", "classes")


class NotExportableError(NotImplementedError):
    """The model's inference for this config is not a fixed tensor program (the message says why)."""


def _stack_instances(results: Sequence[Instances]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    boxes = torch.stack([r.pred_boxes.tensor for r in results])
    scores = torch.stack([r.scores for r in results])
    classes = torch.stack([r.pred_classes for r in results]).to(torch.int64)
    return boxes, scores, classes


class ExportWrapper(nn.Module):
    """Base class: holds the (eval-mode) detector and defines the three steps of the module docstring.

    Attributes:
        input_names: names of the graph inputs, in ``forward`` order.
        output_names: ``("boxes", "scores", "classes")``.
    """

    input_names: Tuple[str, ...] = ("images",)
    output_names: Tuple[str, ...] = OUTPUT_NAMES

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.eval()

    def preprocess(self, batched_inputs: List[Dict[str, Any]]) -> Tuple[Tuple[torch.Tensor, ...], Any]:
        """Input dicts (``"image"`` ``(3, h, w)`` 0-255 in ``INPUT.FORMAT``) -> (graph inputs, context)."""
        raise NotImplementedError

    def pad_value(self) -> torch.Tensor:
        """``(C,)`` value of the padding in normalised units (the model's own padding value)."""
        return torch.zeros(self.model.pixel_mean.numel())

    def fit_inputs(self, inputs: Sequence[torch.Tensor], shape: Sequence[int]) -> Tuple[torch.Tensor, ...]:
        """Pad ``inputs[0]`` (images) at the bottom/right with :meth:`pad_value` to the exported
        ``(B, C, H, W)`` shape (a fixed-shape graph runs only on its export shape); other inputs
        are unchanged (they hold unpadded sizes).

        Raises:
            ValueError: an image larger than the export shape or another batch size (names both
                shapes; export with a larger ``--export-size`` / the same batch size).
        """
        images = inputs[0]
        b, c, h, w = (int(v) for v in shape)
        if images.shape[0] != b or images.shape[1] != c or images.shape[2] > h or images.shape[3] > w:
            raise ValueError(
                f"input of shape {tuple(images.shape)} does not fit the exported graph's {(b, c, h, w)}: "
                "export with --export-size H W at least the largest padded test image, and the batch size used"
            )
        if images.shape[2:] == (h, w):
            return tuple(inputs)
        out = self.pad_value().to(images).view(1, c, 1, 1).expand(b, c, h, w).clone()
        out[:, :, : images.shape[2], : images.shape[3]] = images
        return (out, *inputs[1:])

    def postprocess(self, outputs: Sequence[torch.Tensor], context: Any,
                    batched_inputs: List[Dict[str, Any]]) -> List[Dict[str, Instances]]:
        """Graph outputs (tensors or numpy arrays) -> ``[{"instances": Instances}]`` in each
        image's ``height x width`` (default: the input's size), as the eager model returns."""
        raise NotImplementedError

    def forward(self, *inputs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError


def _as_tensors(outputs: Sequence[Any]) -> List[torch.Tensor]:
    return [o if isinstance(o, torch.Tensor) else torch.from_numpy(o) for o in outputs]


def _to_instances(boxes, scores, classes, image_size) -> Instances:
    inst = Instances(tuple(int(v) for v in image_size))
    inst.pred_boxes = Boxes(boxes)
    inst.scores = scores
    inst.pred_classes = classes
    return inst


@EXPORT_WRAPPER_REGISTRY.register()
class OneNetExport(ExportWrapper):
    """OneNet: ``backbone -> head -> OneNet.inference`` (top ``TEST.DETECTIONS_PER_IMAGE``
    (location, class) pairs of stage 1 by sigmoid score; no NMS, no max-pool).

    Graph: ``images (B, 3, H, W)`` normalised, padded to a multiple of 32 -> ``boxes (B, K, 4)``,
    ``scores (B, K)``, ``classes (B, K)`` with ``K = min(TEST.DETECTIONS_PER_IMAGE, N * C)``.

    Raises:
        NotExportableError: ``MODEL.OneNet.NMS`` True (the NMS ablation has a data-dependent K).
    """

    def __init__(self, model: nn.Module) -> None:
        if model.nms:
            raise NotExportableError("MODEL.OneNet.NMS True (the paper's NMS ablation) gives a data-dependent "
                                     "number of boxes; export the NMS-free model (MODEL.OneNet.NMS False)")
        super().__init__(model)

    def preprocess(self, batched_inputs):
        images = self.model.preprocess_image(batched_inputs)
        return (images.tensor,), images.image_sizes

    def forward(self, images: torch.Tensor):
        m = self.model
        feats = m.backbone(images)
        stage = m.head([feats[f] for f in m.in_features])[0]
        size = (images.shape[-2], images.shape[-1])
        results = m.inference(stage["pred_logits"], stage["pred_boxes"], [size] * images.shape[0])
        return _stack_instances(results)

    def postprocess(self, outputs, context, batched_inputs):
        boxes, scores, classes = _as_tensors(outputs)
        processed = []
        for i, (inputs, size) in enumerate(zip(batched_inputs, context)):
            inst = _to_instances(boxes[i], scores[i], classes[i], size)
            height, width = inputs.get("height", size[0]), inputs.get("width", size[1])
            processed.append({"instances": detector_postprocess(inst, height, width)})
        return processed


@EXPORT_WRAPPER_REGISTRY.register()
class SparseRCNNExport(OneNetExport):
    """Sparse R-CNN: ``backbone (FPN) -> learned proposals scaled to each image -> DynamicHead
    (all stages) -> SparseRCNN.inference`` of the last stage (top ``NUM_PROPOSALS`` (proposal,
    class) pairs with focal loss, per-proposal argmax with softmax; no NMS).

    Graph: ``images (B, 3, H, W)`` normalised, padded to the backbone's size divisibility, and
    ``images_whwh (B, 4)`` float32 ``[w, h, w, h]`` of the unpadded images (the proposals are
    fractions of the image, paper Sec. 3.2) -> ``boxes (B, NUM_PROPOSALS, 4)``, ``scores``, ``classes``.
    """

    input_names = ("images", "images_whwh")

    def __init__(self, model: nn.Module) -> None:
        ExportWrapper.__init__(self, model)

    def preprocess(self, batched_inputs):
        images, whwh = self.model.preprocess_image(batched_inputs)
        return (images.tensor, whwh), images.image_sizes

    def forward(self, images: torch.Tensor, images_whwh: torch.Tensor):
        # SparseRCNN.forward from the backbone to inference (projects/SparseRCNN/sparsercnn/detector.py).
        m = self.model
        src = m.backbone(images)
        features = [src[f] for f in m.in_features]
        proposal_boxes = box_convert(m.init_proposal_boxes.weight, "cxcywh", "xyxy")
        proposal_boxes = proposal_boxes.unsqueeze(0) * images_whwh.unsqueeze(1)
        outputs_class, outputs_coord = m.head(features, proposal_boxes, m.init_proposal_features.weight)
        size = (images.shape[-2], images.shape[-1])
        results = m.inference(outputs_class[-1], outputs_coord[-1], [size] * images.shape[0])
        return _stack_instances(results)


@EXPORT_WRAPPER_REGISTRY.register()
class CenterNetExport(ExportWrapper):
    """CenterNet: ``backbone -> last head -> float32 sigmoid (+ flip averaging with
    MODEL.CENTERNET.FLIP_TEST) -> 3x3 max-pool peaks -> top MODEL.CENTERNET.TOPK`` (the model's
    ``_decode_scale`` with the identity affine), boxes in network-input pixels.

    Graph: ``images (B, 3, H, W)`` normalised and padded as the model pads (the authors' centred
    ``keep_res`` padding, or the ``TEST_INPUT_SIZE`` warp) -> ``boxes (B, TOPK, 4)``, ``scores``,
    ``classes``. The map back to the image (padding offset / affine, ``CLIP_BOXES``) is Python.

    Raises:
        NotExportableError: several ``MODEL.CENTERNET.TEST_SCALES`` or ``MODEL.CENTERNET.NMS``
            (soft-NMS is a sequential, data-dependent loop).
    """

    def __init__(self, model: nn.Module) -> None:
        if model.use_soft_nms or len(model.test_scales) != 1 or model.test_scales[0] != 1.0:
            raise NotExportableError(
                "MODEL.CENTERNET.TEST_SCALES other than (1.0,) or MODEL.CENTERNET.NMS True: the multi-scale merge "
                "uses soft-NMS, a sequential data-dependent loop; export the single-scale model"
            )
        super().__init__(model)

    def pad_value(self) -> torch.Tensor:
        """Black in pixel space: ``-mean / std`` (the model's padding)."""
        return (-self.model.pixel_mean / self.model.pixel_std).flatten()

    def preprocess(self, batched_inputs):
        images = [x["image"] for x in batched_inputs]
        if hasattr(self.model, "_test_batch"):
            batch, affines = self.model._test_batch(images, 1.0)  # (a, tx, ty): input = a * image + t
        else:  # older CenterNet: centred padding only
            batch, offsets = self.model._batch(images, centered=self.model.pad_centered)
            affines = [(1.0, float(left), float(top)) for top, left in offsets]
        return (batch,), affines

    def forward(self, images: torch.Tensor):
        m = self.model
        n = images.shape[0]
        batch = torch.cat([images, images.flip(-1)]) if m.flip_test else images
        out = m.heads[-1](m.backbone(batch)[m.in_features[-1]])
        results = m._decode_scale(out, n, [(1.0, 0.0, 0.0)] * n, 1.0)
        return (torch.stack([r[0] for r in results]), torch.stack([r[1] for r in results]),
                torch.stack([r[2] for r in results]).to(torch.int64))

    def postprocess(self, outputs, context, batched_inputs):
        boxes, scores, classes = _as_tensors(outputs)
        clip = bool(getattr(self.model, "clip_boxes", True))
        processed = []
        for i, inputs in enumerate(batched_inputs):
            a, tx, ty = context[i]
            b = (boxes[i] - boxes.new_tensor([tx, ty, tx, ty])) / a
            h, w = int(inputs["image"].shape[1]), int(inputs["image"].shape[2])
            inst = _to_instances(b, scores[i], classes[i], (h, w))
            processed.append({"instances": detector_postprocess(
                inst, inputs.get("height", h), inputs.get("width", w), clip=clip, keep_empty=not clip)})
        return processed


def build_export_wrapper(model: nn.Module, meta_architecture: str) -> ExportWrapper:
    """The registered wrapper ``<meta_architecture>Export`` around ``model`` (put in eval mode).

    Raises:
        KeyError: no wrapper for this MODEL.META_ARCHITECTURE (lists the registered ones).
        NotExportableError: the config cannot be exported (see the wrapper).
    """
    name = f"{meta_architecture}Export"
    if name not in EXPORT_WRAPPER_REGISTRY:
        raise KeyError(
            f"MODEL.META_ARCHITECTURE {meta_architecture!r} has no export wrapper; registered: "
            f"{sorted(k[: -len('Export')] for k, _ in EXPORT_WRAPPER_REGISTRY)} (add one to common.export.wrappers)"
        )
    return EXPORT_WRAPPER_REGISTRY.get(name)(model)
