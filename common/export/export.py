"""ONNX and TorchScript export of an :class:`~common.export.wrappers.ExportWrapper`, and runners.

* ONNX: ``torch.onnx.export(..., dynamo=True)`` (PyTorch's current ``torch.export``-based
  exporter, needs ``onnxscript``), opset 19, fixed input shapes (those of the sample inputs).
  ``torchvision::deform_conv2d`` (``common.layers.DeformConv`` / ``ModulatedDeformConv``) is
  translated to the ONNX ``DeformConv`` operator (opset 19; same offset layout as torchvision:
  ``(y, x)`` pairs per kernel tap), which onnxruntime runs on CPU. The file is checked with
  ``onnx.checker.check_model``.
* TorchScript: ``torch.jit.trace`` of the wrapper (``--export-method tracing``); the traced
  graph is specialised to the sample's shapes as well.

Runners (:class:`OnnxRuntimeRunner`, :class:`TorchScriptRunner`) take and return the same
tensors as the wrapper's ``forward``, so ``wrapper.postprocess`` turns their outputs into
``Instances``. Dependencies: ``pip install -e ".[export]"`` (onnx, onnxruntime, onnxscript).
"""
from __future__ import annotations

import logging
import os
import warnings
from typing import Any, Dict, List, Sequence, Tuple

import torch

from .wrappers import ExportWrapper

__all__ = ["ONNX_OPSET", "export_onnx", "export_torchscript", "OnnxRuntimeRunner", "TorchScriptRunner"]

logger = logging.getLogger(__name__)

#: ONNX opset of the exported files (``DeformConv`` exists from opset 19).
ONNX_OPSET = 19


def _deform_conv2d_translation():
    """onnxscript translation of ``torchvision::deform_conv2d`` to ONNX ``DeformConv`` (opset 19).

    torchvision's op signature: ``(input, weight, offset, mask, bias, stride_h, stride_w, pad_h,
    pad_w, dilation_h, dilation_w, groups, offset_groups, use_mask)``; without a mask torchvision
    passes an unused zero tensor and ``use_mask=False``, so the ONNX node then gets no mask input.
    """
    from onnxscript import opset19 as op

    def deform_conv2d(input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w,
                      dilation_h, dilation_w, groups, offset_groups, use_mask):
        attrs = dict(strides=[int(stride_h), int(stride_w)], pads=[int(pad_h), int(pad_w), int(pad_h), int(pad_w)],
                     dilations=[int(dilation_h), int(dilation_w)], group=int(groups),
                     offset_group=int(offset_groups))
        if use_mask:
            return op.DeformConv(input, weight, offset, bias, mask, **attrs)
        return op.DeformConv(input, weight, offset, bias, **attrs)

    return deform_conv2d


def export_onnx(wrapper: ExportWrapper, inputs: Sequence[torch.Tensor], path: str, opset: int = ONNX_OPSET,
                optimize: bool = True) -> str:
    """Export ``wrapper`` for the shapes of ``inputs`` to ``path`` and check it with ``onnx.checker``.

    Args:
        wrapper: an export wrapper (eval mode).
        inputs: its graph inputs (``wrapper.preprocess(...)[0]``).
        path: the ``.onnx`` file to write (weights embedded).
        opset: ONNX opset (>= 19 for deformable convolutions).
        optimize: run onnxscript's graph optimiser (constant folding) after export.

    Returns:
        ``path``.

    Raises:
        ImportError: onnx / onnxscript missing (``pip install -e ".[export]"``).
        RuntimeError: the exporter failed (its message names the unsupported operator).
        onnx.checker.ValidationError: the written model is invalid.
    """
    try:
        import onnx
        import onnxscript  # noqa: F401  (required by torch.onnx's dynamo exporter)
    except ImportError as e:
        raise ImportError(f"ONNX export needs onnx and onnxscript: pip install -e \".[export]\" ({e})") from e
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    table = {torch.ops.torchvision.deform_conv2d.default: _deform_conv2d_translation()}
    # The constant folder logs a warning for every op it leaves to runtime (harmless): keep it quiet.
    folding_logger = logging.getLogger("onnxscript.optimizer._constant_folding")
    old_level = folding_logger.level
    folding_logger.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)
            program = torch.onnx.export(
                wrapper, tuple(inputs), None, input_names=list(wrapper.input_names),
                output_names=list(wrapper.output_names), opset_version=opset, dynamo=True,
                custom_translation_table=table, optimize=optimize, verbose=False,
            )
    finally:
        folding_logger.setLevel(old_level)
    program.save(path, external_data=False)
    onnx.checker.check_model(path, full_check=True)
    logger.info(f"Wrote {path} (opset {opset}, inputs {[tuple(t.shape) for t in inputs]})")
    return path


def export_torchscript(wrapper: ExportWrapper, inputs: Sequence[torch.Tensor], path: str) -> str:
    """``torch.jit.trace`` ``wrapper`` on ``inputs``, save to ``path`` (``.ts``); returns ``path``.

    Raises:
        RuntimeError: tracing failed.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about Python ints / the deprecation notice
        traced = torch.jit.trace(wrapper, tuple(inputs), check_trace=False, strict=False)
    traced.save(path)
    logger.info(f"Wrote {path} (TorchScript, traced on {[tuple(t.shape) for t in inputs]})")
    return path


class OnnxRuntimeRunner:
    """Run an exported ``.onnx`` with onnxruntime (CPU by default).

    ``runner(*inputs)`` takes the wrapper's graph inputs (tensors or arrays of the export shapes)
    and returns ``[boxes (B, K, 4) float32, scores (B, K) float32, classes (B, K) int64]`` numpy arrays.

    Raises:
        ImportError: onnxruntime missing.
        ValueError: wrong number of inputs.
    """

    def __init__(self, path: str, providers: Sequence[str] = ("CPUExecutionProvider",), num_threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError(f"onnxruntime is needed to run {path}: pip install -e \".[export]\"") from e
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        self.session = ort.InferenceSession(path, sess_options=options, providers=list(providers))
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *inputs: Any) -> List[Any]:
        if len(inputs) != len(self.input_names):
            raise ValueError(f"{len(inputs)} inputs given, the graph takes {self.input_names}")
        feed: Dict[str, Any] = {}
        for name, x in zip(self.input_names, inputs):
            feed[name] = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
        return self.session.run(None, feed)


class TorchScriptRunner:
    """Run a traced ``.ts`` file: ``runner(*inputs)`` -> ``[boxes, scores, classes]`` tensors."""

    def __init__(self, path: str) -> None:
        self.module = torch.jit.load(path, map_location="cpu")
        self.module.eval()

    def __call__(self, *inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        with torch.no_grad():
            return tuple(self.module(*inputs))
