#!/usr/bin/env python
"""FCOS / ATSS / VarifocalNet training and evaluation script (detectron2 ``train_net.py`` CLI).

Examples (from the repository root)::

    python projects/FCOS_VFNet/train_net.py --config-file projects/FCOS_VFNet/configs/fcos.bccd.res18.yaml
    python projects/FCOS_VFNet/train_net.py --config-file projects/FCOS_VFNet/configs/fcos.R_50_1x.yaml \
        --eval-only MODEL.WEIGHTS FCOS_R_50_1x.pth
    python projects/FCOS_VFNet/train_net.py --num-gpus 8 --config-file projects/FCOS_VFNet/configs/vfnet.r50_fpn_1x.yaml
"""
import os
import sys

# The repo root provides ``common`` and ``projects`` (also without ``pip install -e``); the project
# is imported under its one canonical name so META_ARCH_REGISTRY registration happens once.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from common.engine import DefaultTrainer  # noqa: E402
from common.engine.train_net import run  # noqa: E402
from projects.FCOS_VFNet.fcos_vfnet import add_fcos_vfnet_config  # noqa: E402


class Trainer(DefaultTrainer):
    """detectron2's ``DefaultTrainer`` (default ``DatasetMapper``: resize shortest edge + flip, as the
    authors' FCOS, ATSS and VFNet pipelines)."""


if __name__ == "__main__":
    run([add_fcos_vfnet_config], Trainer)
