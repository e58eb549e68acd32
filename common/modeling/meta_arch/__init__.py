"""Meta-architectures registry; projects register their detectors here."""
from .build import META_ARCH_REGISTRY, build_model

__all__ = ["META_ARCH_REGISTRY", "build_model"]
