#!/usr/bin/env python
"""AutoAssign training and evaluation script (detectron2 ``train_net.py`` CLI).

Examples (from the repository root)::

    python projects/AutoAssign/train_net.py --config-file projects/AutoAssign/configs/autoassign.bccd.res18.yaml
    python projects/AutoAssign/train_net.py --config-file projects/AutoAssign/configs/autoassign.r50_fpn_1x.yaml \
        --eval-only MODEL.WEIGHTS AutoAssign_Res50_FPN_1x.pth
    python projects/AutoAssign/train_net.py --num-gpus 8 --config-file projects/AutoAssign/configs/autoassign.r50_fpn_1x.yaml
"""
import os
import sys

# The repo root provides ``common`` and ``projects`` (also without ``pip install -e``); the project
# is imported under its one canonical name so META_ARCH_REGISTRY registration happens once.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from common.engine import DefaultTrainer  # noqa: E402
from common.engine.train_net import run  # noqa: E402
from projects.AutoAssign.autoassign import add_autoassign_config  # noqa: E402


class Trainer(DefaultTrainer):
    """detectron2's ``DefaultTrainer`` (default ``DatasetMapper``: resize shortest edge + flip, the
    authors' ``ResizeShortestEdge`` + ``RandomFlip`` pipeline)."""


if __name__ == "__main__":
    run([add_autoassign_config], Trainer)
