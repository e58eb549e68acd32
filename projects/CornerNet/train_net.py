#!/usr/bin/env python
"""CornerNet / CornerNet-Squeeze / CornerNet-Saccade / CenterNet-Triplets training and evaluation (detectron2 ``train_net.py`` CLI).

Examples (from the repository root)::

    python projects/CornerNet/train_net.py --config-file projects/CornerNet/configs/cornernet.bccd.yaml
    python projects/CornerNet/train_net.py --config-file projects/CornerNet/configs/cornernet_saccade.bccd.yaml
    python projects/CornerNet/train_net.py --config-file <cfg> --eval-only MODEL.WEIGHTS <model.pth>
    python projects/CornerNet/train_net.py --config-file projects/CornerNet/configs/cornernet.hg104.yaml \
        --eval-only MODEL.WEIGHTS CornerNet_500000.pkl
    python projects/CornerNet/train_net.py --num-gpus 8 --config-file projects/CornerNet/configs/centernet_triplets.hg104.yaml
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from common.data import build_detection_train_loader  # noqa: E402
from common.engine import DefaultTrainer  # noqa: E402
from common.engine.train_net import run  # noqa: E402
from projects.CornerNet.cornernet import add_cornernet_config, build_cornernet_train_mapper  # noqa: E402


class Trainer(DefaultTrainer):
    """DefaultTrainer with the authors' augmentation of the meta-architecture (CornerNet random crop
    to a fixed size, or CornerNet-Saccade's crops around objects; flip, colour)."""

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=build_cornernet_train_mapper(cfg))


if __name__ == "__main__":
    run([add_cornernet_config], Trainer)
