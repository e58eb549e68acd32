"""Compact detectron2-compatible runtime shared by the projects in ``projects/``.

The sub-packages mirror detectron2's layout (``common.config``, ``common.structures``,
``common.modeling``, ``common.data``, ``common.engine``, ``common.evaluation``,
``common.checkpoint``, ``common.solver``, ``common.utils``) and keep its class names,
config keys and file formats, so code written for detectron2 ports by replacing the
``detectron2`` import prefix with ``common``. ``common.losses``, ``common.assigners`` and
``common.ops`` hold the pieces the papers share (focal/GIoU losses, Hungarian matching,
ops the authors shipped as compiled CUDA).
"""

__version__ = "0.1.0"
