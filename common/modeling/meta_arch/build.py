"""Meta-architecture registry and ``build_model`` (detectron2 ``modeling/meta_arch/build.py``)."""
import logging

import torch
from fvcore.common.registry import Registry
from torch import nn

__all__ = ["META_ARCH_REGISTRY", "build_model"]

META_ARCH_REGISTRY = Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = """
Registry for meta-architectures, i.e. whole models (e.g. ``SparseRCNN``, ``OneNet``).

A registered object is called as ``obj(cfg)`` and must return an ``nn.Module``. In training mode
its ``forward(batched_inputs)`` takes the list of dataset dicts produced by the mapper and
returns a dict of scalar losses; in eval mode it returns one ``{"instances": Instances}`` per
input. ``cfg.MODEL.META_ARCHITECTURE`` selects it.
"""

logger = logging.getLogger(__name__)


def build_model(cfg) -> nn.Module:
    """Build ``cfg.MODEL.META_ARCHITECTURE`` and move it to ``cfg.MODEL.DEVICE``.

    Does not load weights (use ``DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)``).

    Raises:
        KeyError: unknown ``MODEL.META_ARCHITECTURE`` (e.g. the project module was not imported).
        RuntimeError: ``MODEL.DEVICE`` is a CUDA device but CUDA is unavailable.
    """
    meta_arch = cfg.MODEL.META_ARCHITECTURE
    model_cls = META_ARCH_REGISTRY.get(meta_arch)
    device = torch.device(cfg.MODEL.DEVICE)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"cfg.MODEL.DEVICE is {cfg.MODEL.DEVICE!r} but CUDA is not available; "
            "set MODEL.DEVICE cpu (e.g. append `MODEL.DEVICE cpu` to the command line)"
        )
    model = model_cls(cfg)
    model.to(device)
    num_params = sum(p.numel() for p in model.parameters())
    logger.info("Built model %s on %s with %.2fM parameters", meta_arch, device, num_params / 1e6)
    torch._C._log_api_usage_once("common.modeling.meta_arch." + meta_arch)
    return model
