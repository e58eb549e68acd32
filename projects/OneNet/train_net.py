#!/usr/bin/env python
"""OneNet training / evaluation script (detectron2 ``train_net.py`` CLI).

Examples (from the repository root)::

    python projects/OneNet/train_net.py --config-file projects/OneNet/configs/onenet.bccd.res18.yaml
    python projects/OneNet/train_net.py --config-file <cfg> --eval-only MODEL.WEIGHTS <model.pth>
    python projects/OneNet/train_net.py --num-gpus 8 --config-file projects/OneNet/configs/onenet.res50.dcn.yaml
"""
import os
import sys

# The repo root provides ``common`` and ``projects`` (also without ``pip install -e``); the project
# is imported under its one canonical name so META_ARCH_REGISTRY registration happens once.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from common.data import build_detection_train_loader  # noqa: E402
from common.engine import DefaultTrainer  # noqa: E402
from common.engine.train_net import run  # noqa: E402
from common.solver import build_optimizer_uniform_decay  # noqa: E402
from projects.OneNet.onenet import OneNetDatasetMapper, add_onenet_config  # noqa: E402


class Trainer(DefaultTrainer):
    """DefaultTrainer with the DETR-style train mapper (``OneNetDatasetMapper``); DDP is built with
    ``find_unused_parameters=True`` as in the authors' fork of detectron2 (``engine/defaults.py``)."""

    find_unused_parameters = True

    @classmethod
    def build_optimizer(cls, cfg, model):
        """The authors' recipe: SOLVER.WEIGHT_DECAY on every parameter (norms and biases included),
        BACKBONE_MULTIPLIER on "backbone" names, AdamW, full-model gradient clipping."""
        return build_optimizer_uniform_decay(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=OneNetDatasetMapper(cfg, is_train=True))


if __name__ == "__main__":
    run([add_onenet_config], Trainer)
