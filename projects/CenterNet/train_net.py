#!/usr/bin/env python
"""CenterNet training / evaluation script (detectron2 ``train_net.py`` CLI).

Examples (from the repository root)::

    python projects/CenterNet/train_net.py --config-file projects/CenterNet/configs/centernet.bccd.res18.yaml
    python projects/CenterNet/train_net.py --config-file <cfg> --eval-only MODEL.WEIGHTS <model.pth>
    python projects/CenterNet/train_net.py --num-gpus 8 --config-file projects/CenterNet/configs/ctdet_coco_dla_1x.yaml
"""
import os
import sys

# The repo root provides ``common`` and ``projects``; one canonical import name for the project,
# so that its META_ARCH_REGISTRY registration happens once.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from common.data import build_detection_train_loader  # noqa: E402
from common.engine import DefaultTrainer  # noqa: E402
from common.engine.train_net import run  # noqa: E402
from projects.CenterNet.centernet import CenterNetDatasetMapper, add_centernet_config  # noqa: E402


class Trainer(DefaultTrainer):
    """DefaultTrainer with the authors' augmentation (random scale/crop to a fixed size, flip, colour)."""

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=CenterNetDatasetMapper(cfg, is_train=True))


if __name__ == "__main__":
    run([add_centernet_config], Trainer)
